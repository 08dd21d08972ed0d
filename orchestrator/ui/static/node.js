// A node's page: every field of one attempt. All text from the archive (the model's answers,
// programs, errors) is put in with textContent, never parsed as HTML.
"use strict";

(function (dgm) {
  const f = dgm.fmt;

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "text") e.textContent = v;
      else if (k === "on") for (const [ev, fn] of Object.entries(v)) e.addEventListener(ev, fn);
      else e.setAttribute(k, v === true ? "" : v);
    }
    for (const kid of kids.flat(Infinity)) if (kid !== null && kid !== undefined) e.append(kid instanceof Node ? kid : String(kid));
    return e;
  }
  dgm.el = el;

  function section(title, body, open, id) {
    return el("details", { open: !!open, "data-section": id }, el("summary", { text: title }), el("div", { class: "body" }, body));
  }

  function pre(text, cls) { return el("pre", { class: cls, text: text || "" }); }

  function diffPre(text) {
    const p = el("pre", { class: "diff" });
    if (!text) { p.textContent = "(no change in code against the parent)"; return p; }
    for (const line of text.split("\n")) {
      let cls = null;
      if (line.startsWith("+++") || line.startsWith("---") || line.startsWith("diff ") || line.startsWith("index ")) cls = "meta";
      else if (line.startsWith("@@")) cls = "hunk";
      else if (line.startsWith("+")) cls = "add";
      else if (line.startsWith("-")) cls = "del";
      p.append(cls ? el("span", { class: cls, text: line }) : document.createTextNode(line + "\n"));
    }
    return p;
  }

  function kvTable(obj, tag) {
    const keys = Object.keys(obj || {});
    if (!keys.length) return el("p", { class: "hint", text: "none" });
    return el("table", { class: "table" },
      el("tr", {}, el("th", { text: "metric" }), el("th", { text: "value" })),
      keys.sort().map(k => el("tr", {}, el("td", {}, k, tag ? el("span", { class: "tag " + tag, text: tag }) : null), el("td", { text: fmtValue(obj[k]) }))));
  }

  function fmtValue(v) {
    if (typeof v === "number") return Number.isInteger(v) ? String(v) : f.score(v);
    if (Array.isArray(v)) return v.map(fmtValue).join(", ");
    if (v && typeof v === "object") return JSON.stringify(v);
    return v === null || v === undefined ? "–" : String(v);
  }

  const STAGE_KNOWN = new Set(["stage", "valid", "passed_gate", "score", "public", "private", "feedback", "error", "wall_s", "sandbox_s", "start_overhead_s", "limit_hit"]);

  function stagesBlock(stages) {
    if (!stages || !stages.length) return el("p", { class: "hint", text: "not evaluated (no stage ran)" });
    const out = [];
    out.push(el("table", { class: "table" },
      el("tr", {}, ["stage", "valid", "through gate", "score", "wall", "in sandbox", "limit hit"].map(h => el("th", { text: h }))),
      stages.map(s => el("tr", {},
        el("td", { text: s.stage }), el("td", { text: s.valid ? "yes" : "no" }), el("td", { text: s.passed_gate ? "yes" : "no" }),
        el("td", { text: f.score(s.score) }), el("td", { text: f.secs(s.wall_s) }), el("td", { text: f.secs(s.sandbox_s) }),
        el("td", { text: s.limit_hit || "" })))));
    for (const s of stages) {
      const parts = [];
      parts.push(el("h4", { text: "public metrics (shown to the FM)" }), kvTable(s.public, "public"));
      parts.push(el("h4", { text: "private metrics (never shown to the FM)" }), kvTable(s.private, "private"));
      const extra = Object.keys(s).filter(k => !STAGE_KNOWN.has(k));
      for (const k of extra) {
        // per-seed values, transcripts or anything else an evaluator records on a stage
        parts.push(el("h4", { text: k.replace(/_/g, " ") }), typeof s[k] === "object" && s[k] !== null && !Array.isArray(s[k]) ? kvTable(s[k]) : pre(fmtValue(s[k])));
      }
      if (s.feedback) parts.push(el("h4", { text: "feedback" }), pre(s.feedback));
      if (s.error) parts.push(el("h4", { text: "error" }), pre(s.error, "error-box"));
      out.push(section(`stage ${s.stage}`, parts, false, "stage-" + s.stage));
    }
    return out;
  }

  function filesBlock(files) {
    const paths = Object.keys(files || {});
    if (!paths.length) return el("p", { class: "hint", text: "no files" });
    const view = el("div");
    const show = path => {
      const file = files[path];
      view.replaceChildren(file.binary ? el("p", { class: "hint", text: `binary file, ${f.int(file.bytes)} bytes` })
        : pre(file.text + (file.truncated ? "\n… (cut)" : ""), "code"));
    };
    const pick = el("select", { class: "files", on: { change: e => show(e.target.value) } }, paths.map(p => el("option", { value: p, text: `${p} (${f.int(files[p].bytes)} bytes)` })));
    const main = paths.find(p => p.endsWith(".py")) || paths[0];
    pick.value = main;
    show(main);
    return [pick, view];
  }

  function usageBlock(n) {
    const rows = [
      ["FM model", n.fm_model || "–"], ["prompt tokens", f.int(n.prompt_tokens)], ["completion tokens", f.int(n.completion_tokens)],
      ["cost", f.usd(n.cost_usd)], ["created", new Date(n.created_at * 1000).toISOString()], ["updated", new Date(n.updated_at * 1000).toISOString()],
      ["commit", n.commit],
    ];
    for (const [k, v] of Object.entries(n.timings || {}).sort()) rows.push([k, f.secs(v)]);
    return el("table", { class: "table" }, rows.map(([k, v]) => el("tr", {}, el("th", { text: k }), el("td", { text: v }))));
  }

  // seed → … → node; a long chain shows its first and last steps
  function lineage(ids, nodeLink) {
    const shown = ids.length > 30 ? [...ids.slice(0, 5), null, ...ids.slice(-20)] : ids;
    return shown.map((id, i) => [i ? " → " : "", id === null ? `… (${ids.length - 25} more)` : nodeLink(id)]);
  }

  // Render one node's details into container; nodeLink(id) makes a link that selects a node.
  dgm.renderNode = function (container, detail, nodeLink, extras) {
    const n = detail.node;
    const head = el("div", { class: "node-head" },
      el("h2", {}, `node ${n.id} `, el("span", { class: "badge " + n.status, text: n.status }), ` ${n.operator || ""}`),
      el("div", {}, `score ${f.score(n.score)}`, detail.parent_score !== null && detail.parent_score !== undefined ? ` (parent ${f.score(detail.parent_score)})` : "",
        ` · ${f.int(n.prompt_tokens + n.completion_tokens)} tokens · ${f.usd(n.cost_usd)}`),
      el("div", { class: "links" }, "lineage: ", lineage(detail.lineage, nodeLink)),
      el("div", { class: "links" }, `children (${detail.children.length}): `, detail.children.slice(0, 60).map(id => nodeLink(id)), detail.children.length > 60 ? "…" : ""),
      extras || null);
    const parts = [head];
    if (n.draws && n.draws.length > 1) {
      parts.push(el("p", { "data-section": "draws" }, el("strong", { text: "evaluated " + n.draws.length + " times: " }),
        n.draws.map(f.score).join(", "), " (the score is their mean)"));
    }
    if (n.error) parts.push(el("div", { class: "error-box", "data-section": "error" }, el("strong", { text: "error: " }), pre(n.error)));
    if (detail.final_feedback) parts.push(el("p", {}, el("strong", { text: "feedback: " }), detail.final_feedback));
    parts.push(section("diff against the parent", diffPre(detail.diff), true, "diff"));
    parts.push(section("stages", stagesBlock(n.stages), true, "stages"));
    parts.push(section("metrics", [el("h4", { text: "public (shown to the FM)" }), kvTable(n.public_metrics, "public"),
      el("h4", { text: "private (never shown to the FM)" }), kvTable(n.private_metrics, "private")], true, "metrics"));
    parts.push(section("code", filesBlock(detail.files), false, "code"));
    // a self-improvement step keeps its improver's model calls in `prompt` and its output in `response`
    const self = n.operator === "self";
    parts.push(section(self ? "improver transcript (model calls)" : "prompt", pre(n.prompt || "(no prompt: this node called no model)"), self, "prompt"));
    parts.push(section(self ? "improver output" : "answer", pre(n.response || "(no answer)"), false, "answer"));
    if (n.feedback) parts.push(section("feedback (all of it)", pre(n.feedback), false, "feedback"));
    if (detail.transcript) parts.push(section("improver transcript", pre(typeof detail.transcript === "string" ? detail.transcript : JSON.stringify(detail.transcript, null, 1)), false, "transcript"));
    parts.push(section("usage and timings", usageBlock(n), false, "usage"));
    container.replaceChildren(...parts);
    container.dataset.node = String(n.id);
  };
})(window.dgm);
