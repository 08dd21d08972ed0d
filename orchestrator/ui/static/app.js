// The page: views (tree, node, progress, compare) chosen by the URL hash, live polling, filters.
"use strict";

(function (dgm) {
  const POLL_MS = 1000;
  const SERIES_MIN_MS = 2000;
  const STATUSES = ["admitted", "rejected", "invalid", "failed", "evaluating", "proposed"];
  const $ = id => document.getElementById(id);
  const el = dgm.el, f = dgm.fmt, src = dgm.source;

  const app = {
    runs: [],           // RunModel per run
    run: 0,             // the run shown by tree, node and progress
    view: "tree",
    series: new Map(),  // run → {cursor, data, at}
    pollOk: true,
    lastPoll: null,
    detailMs: null,
  };

  const tree = new dgm.TreeView({
    canvas: $("tree-canvas"), wrap: $("tree-wrap"), tooltip: $("tooltip"), empty: $("tree-empty"),
    onSelect: id => showNodeInPanel(id),
    onChange: () => { updateCounts(); },
  });

  // ---- node links and pages ------------------------------------------------------------

  function nodeLink(id) {
    return el("a", { class: "node-link", "data-node": id, text: String(id), on: { click: () => selectNode(id) } });
  }

  function selectNode(id) {
    if (app.view === "node") { location.hash = `#node/${app.run}/${id}`; return; }
    tree.reveal(id);
    tree.select(id);
    tree.centerOn(id);
    showNodeInPanel(id);
  }

  async function showNodeInPanel(id) {
    const panel = $("node-panel"), t0 = performance.now();
    panel.dataset.loading = String(id);
    try {
      const d = await src.node(app.run, id);
      if (panel.dataset.loading !== String(id)) return;  // a later click won
      const extras = el("div", { class: "links" },
        el("a", { href: `#node/${app.run}/${id}`, text: "open as a page" }), " · ",
        el("a", { class: "node-link", text: "collapse/expand subtree", on: { click: () => tree.toggle(id) } }));
      dgm.renderNode(panel, d, nodeLink, extras);
      app.detailMs = performance.now() - t0;
    } catch (e) {
      panel.replaceChildren(el("p", { class: "error-box", text: `node ${id}: ${e.message}` }));
    }
  }

  async function showNodePage(run, id) {
    const page = $("view-node");
    try {
      const d = await src.node(run, id);
      dgm.renderNode(page, d, nodeLink, el("div", { class: "links" }, el("a", { href: "#tree", text: "back to the tree" })));
    } catch (e) {
      page.replaceChildren(el("p", { class: "error-box", text: `node ${id}: ${e.message}` }));
    }
  }

  // ---- filters -------------------------------------------------------------------------

  function checkboxes(fieldset, values, onChange) {
    const have = new Set(Array.from(fieldset.querySelectorAll("input")).map(i => i.value));
    for (const v of values) {
      if (have.has(v)) continue;
      const box = el("input", { type: "checkbox", value: v, checked: true, "data-filter": fieldset.id, on: { change: onChange } });
      fieldset.append(el("label", {}, box, " ", el("span", { text: v }), el("span", { class: "n", "data-count": v })));
    }
  }

  function readFilters() {
    const pick = id => {
      const boxes = Array.from($(id).querySelectorAll("input"));
      const on = boxes.filter(b => b.checked).map(b => b.value);
      return on.length === boxes.length ? null : new Set(on);
    };
    tree.setFilters({ statuses: pick("filter-status"), operators: pick("filter-operator"), stage: $("filter-stage").value });
  }

  function refreshFilterChoices(model) {
    checkboxes($("filter-status"), STATUSES, readFilters);
    checkboxes($("filter-operator"), Array.from(model.operators).sort(), readFilters);
    const sel = $("filter-stage"), have = new Set(Array.from(sel.options).map(o => o.value));
    for (const s of ["", ...Array.from(model.stages).sort()]) {
      if (!have.has(s)) sel.append(el("option", { value: s, text: s === "" ? "none (not evaluated)" : s }));
    }
    const counts = {};
    for (const n of model.byId.values()) counts[n.status] = (counts[n.status] || 0) + 1;
    for (const span of $("filter-status").querySelectorAll("[data-count]")) span.textContent = ` ${counts[span.dataset.count] || 0}`;
  }

  function updateCounts() {
    const c = tree.counts();
    $("match-count").textContent = `${f.int(c.match)} of ${f.int(c.total)} nodes match`;
    $("visible-count").textContent = `${f.int(c.visible)} drawn (collapsed subtrees hidden)`;
    $("match-count").dataset.match = String(c.match);
    $("match-count").dataset.total = String(c.total);
  }

  function legend() {
    const box = $("legend");
    const shape = (s, label) => {
      const c = document.createElement("canvas");  // drawn with the tree's own shapes
      c.width = 14; c.height = 14;
      tree._shape(c.getContext("2d"), s, 7, 7, 4.5, "#9e9e9e", "#37474f", 1);
      return el("span", {}, c, " " + label);
    };
    const stops = d3.range(0, 1.01, 0.1).map(t => d3.interpolateViridis(t)).join(",");
    const bar = el("span", { class: "bar" });
    bar.style.background = `linear-gradient(to right, ${stops})`;
    const range = tree.scoreRange || [0, 1, 0];
    box.replaceChildren(
      shape("circle", "admitted"), shape("square", "rejected"), shape("triangle", "invalid"), shape("cross", "failed"), shape("diamond", "in flight"),
      el("span", {}, "score ", el("span", { text: f.score(range[0]) }), " ", bar, " ", el("span", { text: f.score(range[1]) }), " (grey: no score)"),
      el("span", { style: `color:${dgm.TreeView.PATH};font-weight:600`, text: "━ path to the best" }));
  }

  // ---- summary and live state ----------------------------------------------------------

  function renderSummary() {
    const m = app.runs[app.run];
    if (!m || !m.summary) return;
    const s = m.summary, c = s.counts;
    const counts = STATUSES.filter(k => c[k]).map(k => `${k} ${c[k]}`).join(", ");
    const best = s.best ? `best node ${s.best.id} (${f.score(s.best.score)})` : "no admitted node yet";
    $("summary").textContent = `${m.campaign || ""} · ${s.iterations} iterations, ${s.nodes} nodes (${counts}) · ${best} · seed ${f.score(s.seed_score)} · ` +
      `FM ${s.fm_calls} calls, ${f.int(s.tokens)} tokens, ${f.usd(s.cost_usd)}`;
  }

  function renderLive() {
    const live = $("live");
    if (!src.live) { live.textContent = "static export"; live.className = "live off"; return; }
    const t = app.lastPoll ? app.lastPoll.toLocaleTimeString() : "–";
    const loading = app.runs.filter(m => m.loading).map(m => `${f.int(m.loading.loaded)} of ${f.int(m.loading.rows)}`);
    live.textContent = !app.pollOk ? `server unreachable, retrying (last update ${t})`
      : loading.length ? `live · reading nodes: ${loading.join(", ")} · updated ${t}` : `live · updated ${t}`;
    live.className = app.pollOk ? "live" : "live off";
  }

  async function pollRun(m) {
    const page = await src.nodes(m.index, m.cursor);
    const n = m.apply(page);
    return n || page.reset;
  }

  async function poll() {
    try {
      let changedCurrent = false, changedAny = false;
      for (const m of app.runs) {
        const changed = await pollRun(m);
        if (changed && m.index === app.run) changedCurrent = true;
        if (changed) changedAny = true;
      }
      app.pollOk = true;
      app.lastPoll = new Date();
      if (changedCurrent) onRunChanged();
      else if (changedAny && app.view === "compare") refreshCompare();
    } catch (e) {
      app.pollOk = false;
    }
    renderLive();
  }

  function onRunChanged() {
    const m = app.runs[app.run];
    refreshFilterChoices(m);
    renderSummary();
    if (app.view === "tree") { tree.update(); }
    updateCounts();
    legendSoon();
    if (app.view === "progress") refreshSeries(app.run);
    if (app.view === "compare") refreshCompare();
  }

  let legendTimer = null;
  function legendSoon() {
    if (legendTimer) return;
    legendTimer = setTimeout(() => { legendTimer = null; legend(); }, 50);
  }

  // charts are refetched when their run changed, at most every SERIES_MIN_MS (then once more after)
  let chartTimer = null;
  function chartsLater() {
    if (chartTimer) return;
    chartTimer = setTimeout(() => {
      chartTimer = null;
      if (app.view === "progress") refreshSeries(app.run);
      if (app.view === "compare") refreshCompare();
    }, SERIES_MIN_MS);
  }

  // the series of a run and the node cursor they were fetched at
  async function seriesOf(run) {
    const m = app.runs[run], have = app.series.get(run);
    if (have && have.cursor === m.cursor) return have;
    if (have && performance.now() - have.at < SERIES_MIN_MS) { chartsLater(); return have; }
    const cursor = m.cursor, data = await src.series(run);
    const entry = { cursor, data, at: performance.now() };
    app.series.set(run, entry);
    return entry;
  }

  // Chart.js is loaded on first use, so the tree's first render does not wait for it
  let chartsLoading = null;
  function ensureCharts() {
    if (window.Chart && dgm.drawProgress) return Promise.resolve();
    if (!chartsLoading) {
      const load = src => new Promise((resolve, reject) => {
        const s = document.createElement("script");
        s.src = src;
        s.onload = resolve;
        s.onerror = () => reject(new Error("cannot load " + src));
        document.body.append(s);
      });
      chartsLoading = (window.Chart ? Promise.resolve() : load("static/chart.umd.min.js"))
        .then(() => (dgm.drawProgress ? null : load("static/charts.js")));
    }
    return chartsLoading;
  }

  async function refreshSeries(run) {
    await ensureCharts();
    const got = await seriesOf(run);
    if (app.view === "progress" && run === app.run) {
      dgm.drawProgress(got.data);
      $("view-progress").dataset.cursor = String(got.cursor);  // what the charts show
    }
  }

  async function refreshCompare() {
    await ensureCharts();
    const rows = [];
    for (const m of app.runs) rows.push({ name: m.name, series: (await seriesOf(m.index)).data, summary: m.summary });
    if (app.view !== "compare") return;
    dgm.drawCompare(rows);
    const head = ["run", "nodes", "iterations", "admitted", "invalid", "failed", "best", "seed", "FM calls", "tokens", "cost"];
    $("compare-table").replaceChildren(
      el("tr", {}, head.map(h => el("th", { text: h }))),
      ...rows.map(r => {
        const s = r.summary || { counts: {} };
        return el("tr", {}, [r.name, s.nodes, s.iterations, s.counts.admitted || 0, s.counts.invalid || 0, s.counts.failed || 0,
          s.best ? `${f.score(s.best.score)} (node ${s.best.id})` : "–", f.score(s.seed_score), s.fm_calls, f.int(s.tokens), f.usd(s.cost_usd)]
          .map(v => el("td", { text: String(v) })));
      }));
    $("view-compare").dataset.runs = String(rows.length);
  }

  // ---- views ---------------------------------------------------------------------------

  function route() {
    const h = location.hash.replace(/^#/, "") || "tree";
    const parts = h.split("/");
    let view = parts[0];
    if (!["tree", "node", "progress", "compare"].includes(view)) view = "tree";
    if (view === "node" && parts.length === 3) {
      const run = Number(parts[1]);
      if (run >= 0 && run < app.runs.length) setRun(run);
      showNodePage(app.run, Number(parts[2]));
    }
    app.view = view;
    for (const s of document.querySelectorAll(".view")) s.classList.toggle("active", s.id === "view-" + view);
    for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.view === view || (view === "node" && a.dataset.view === "tree"));
    if (view === "tree") { tree._resize(); tree.update(); }
    if (view === "progress") refreshSeries(app.run);
    if (view === "compare") refreshCompare();
    document.body.dataset.view = view;
  }

  function setRun(i) {
    if (i === app.run && tree.model) return;
    app.run = i;
    $("run-select").value = String(i);
    const m = app.runs[i];
    for (const id of ["filter-operator"]) for (const l of Array.from($(id).querySelectorAll("label"))) l.remove();
    refreshFilterChoices(m);
    readFilters();
    tree.setModel(m);
    $("node-panel").replaceChildren(el("p", { class: "hint", text: "Click a node to see its details." }));
    renderSummary();
    legend();
    if (app.view === "progress") refreshSeries(i);
  }

  async function start() {
    performance.mark("dgm:start");
    const infos = await src.runs();
    app.runs = infos.map(info => new dgm.RunModel(info));
    const sel = $("run-select");
    sel.replaceChildren(...infos.map(r => el("option", { value: String(r.index), text: r.name })));
    sel.addEventListener("change", () => { setRun(Number(sel.value)); route(); });
    $("btn-fit").addEventListener("click", () => tree.fit());
    $("btn-expand").addEventListener("click", () => tree.expandAll());
    $("btn-collapse").addEventListener("click", () => tree.collapseOffPath());
    $("filter-stage").addEventListener("change", readFilters);
    await Promise.all(app.runs.map(pollRun));
    performance.mark("dgm:nodes");
    app.lastPoll = new Date();
    setRun(0);
    window.addEventListener("hashchange", route);
    route();
    renderLive();
    dgm.ready = true;
    document.body.dataset.ready = "1";
    if (src.live) {
      const loop = async () => { await poll(); setTimeout(loop, POLL_MS); };
      setTimeout(loop, POLL_MS);
    }
  }

  dgm.tree = tree;
  // hooks for tests and benchmarks (read-only views of the page's state)
  window.dgmUI = {
    get ready() { return !!dgm.ready; },
    nodeCount: run => (app.runs[run === undefined ? app.run : run] || { size: 0 }).size,
    counts: () => tree.counts(),
    screenPos: id => tree.screenPos(id),
    firstRenderMs: () => tree.firstRenderMs,
    timings: () => ({ layoutMs: tree.lastLayoutMs, drawMs: tree.lastDrawMs, detailMs: app.detailMs }),
    selected: () => tree.selected,
  };

  start().catch(e => {
    $("live").textContent = "failed to load: " + e.message;
    $("live").className = "live off";
  });
})(window.dgm);
