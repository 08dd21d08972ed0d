// Progress and compare charts (Chart.js), fed by /api/runs/{r}/series (orchestrator/ui/series.py).
"use strict";
window.dgm = window.dgm || {};

(function (dgm) {
  const PALETTE = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666"];
  Chart.defaults.animation = false;
  Chart.defaults.font.size = 11;
  Chart.defaults.maintainAspectRatio = false;

  const charts = {};

  function put(id, config) {
    const old = charts[id];
    if (old && old.config.type === config.type) {
      old.data = config.data;
      old.options = config.options;
      old.update("none");
      return old;
    }
    if (old) old.destroy();
    charts[id] = new Chart(document.getElementById(id), config);
    return charts[id];
  }

  function xy(xs, ys) {
    const out = [];
    for (let i = 0; i < xs.length; i++) if (ys[i] !== null && ys[i] !== undefined) out.push({ x: xs[i], y: ys[i] });
    return out;
  }

  const linear = title => ({ type: "linear", title: { display: true, text: title } });

  dgm.drawProgress = function (s) {
    const p = s.progress;
    const pts = st => p.scores.filter(q => q[2] === st).map(q => ({ x: q[0], y: q[1] }));
    put("chart-score", {
      type: "scatter",
      data: {
        datasets: [
          { type: "line", label: "best admitted", data: xy(p.iteration, p.best), borderColor: "#d95f02", backgroundColor: "#d95f02", stepped: true, pointRadius: 0, borderWidth: 2 },
          { type: "line", label: "mean admitted", data: xy(p.iteration, p.mean), borderColor: "#7570b3", backgroundColor: "#7570b3", pointRadius: 0, borderWidth: 1.5 },
          { label: "admitted node", data: pts("admitted"), backgroundColor: "rgba(26,152,80,.45)", pointRadius: 2.5 },
          { label: "rejected node", data: pts("rejected"), backgroundColor: "rgba(120,120,120,.4)", pointRadius: 2.5 },
        ],
      },
      options: { scales: { x: linear("iteration (node id)"), y: { title: { display: true, text: "score" } } }, parsing: false },
    });
    const yieldSets = y => y.keys.map((k, i) => ({ label: k.replace(/_/g, " "), data: y[k], backgroundColor: PALETTE[i] }));
    put("chart-yield", {
      type: "bar",
      data: { labels: s.yield.operator, datasets: yieldSets(s.yield) },
      options: { scales: { y: { ticks: { precision: 0 }, title: { display: true, text: "nodes" } } } },
    });
    // ideas are sentences: horizontal bars, each label cut short, the whole idea in the tooltip
    const ideas = s.ideas || { idea: [] };
    document.getElementById("ideas-chart").hidden = !ideas.idea.length;
    if (ideas.idea.length) {
      const short = t => (t.length > 48 ? t.slice(0, 47) + "…" : t);
      put("chart-ideas", {
        type: "bar",
        data: { labels: ideas.idea, datasets: yieldSets(ideas) },
        options: {
          indexAxis: "y",
          scales: { x: { ticks: { precision: 0 }, title: { display: true, text: "nodes" } }, y: { ticks: { callback: function (v) { return short(this.getLabelForValue(v)); } } } },
          plugins: { tooltip: { callbacks: { title: items => items[0].label } } },
        },
      });
    }
    const u = s.usage;
    const span = u.elapsed_s.length ? u.elapsed_s[u.elapsed_s.length - 1] : 0;
    const [unit, div] = span > 7200 ? ["hours", 3600] : span > 600 ? ["minutes", 60] : ["seconds", 1];
    const when = u.elapsed_s.map(t => t / div);
    put("chart-usage", {
      type: "line",
      data: {
        datasets: [
          { label: "FM tokens (cumulative)", data: xy(when, u.tokens), borderColor: PALETTE[0], backgroundColor: PALETTE[0], pointRadius: 0, yAxisID: "y" },
          { label: "cost USD (cumulative)", data: xy(when, u.cost_usd), borderColor: PALETTE[1], backgroundColor: PALETTE[1], borderDash: [5, 4], pointRadius: 0, yAxisID: "y1" },
        ],
      },
      options: {
        parsing: false,
        scales: { x: linear(`${unit} since the seed`), y: { title: { display: true, text: "tokens" } }, y1: { position: "right", title: { display: true, text: "USD" }, grid: { drawOnChartArea: false } } },
      },
    });
    const t = s.time;
    document.getElementById("time-title").textContent = t.size === 1 ? "where the time goes (per node)" : `where the time goes (mean per node, buckets of ${t.size})`;
    put("chart-time", {
      type: "bar",
      data: {
        labels: t.first_id.map(String),
        datasets: [
          { label: "FM s", data: t.fm_s, backgroundColor: PALETTE[2] },
          { label: "evaluation s", data: t.eval_s, backgroundColor: PALETTE[3] },
          { label: "loop bookkeeping s", data: t.bookkeeping_s, backgroundColor: PALETTE[7] },
        ],
      },
      options: { scales: { x: { stacked: true, title: { display: true, text: "node id" } }, y: { stacked: true, title: { display: true, text: "seconds" } } } },
    });
  };

  dgm.drawCompare = function (runs) {
    // runs: [{name, series, summary}]
    put("chart-compare-best", {
      type: "line",
      data: { datasets: runs.map((r, i) => ({ label: r.name, data: xy(r.series.progress.iteration, r.series.progress.best), borderColor: PALETTE[i % 8], backgroundColor: PALETTE[i % 8], stepped: true, pointRadius: 0 })) },
      options: { parsing: false, scales: { x: linear("iteration (node id)"), y: { title: { display: true, text: "best admitted score" } } } },
    });
    const ops = Array.from(new Set(runs.flatMap(r => r.series.yield.operator))).sort();
    put("chart-compare-yield", {
      type: "bar",
      data: {
        labels: ops,
        datasets: runs.map((r, i) => {
          const y = r.series.yield;
          return { label: r.name, backgroundColor: PALETTE[i % 8], data: ops.map(o => { const j = y.operator.indexOf(o); return j < 0 || !y.attempts[j] ? null : y.valid[j] / y.attempts[j]; }) };
        }),
      },
      options: { scales: { y: { min: 0, max: 1, title: { display: true, text: "valid / attempts" } } } },
    });
  };

  dgm.charts = charts;
})(window.dgm);
