// Where the page's data comes from (the dgm ui server, or the data inlined by a static export),
// and the nodes of each run kept in the browser, updated from the server's change cursor.
"use strict";
window.dgm = window.dgm || {};

(function (dgm) {
  const STATIC = window.DGM_DATA || null;

  async function getJSON(path) {
    const res = await fetch(path, { credentials: "same-origin", cache: "no-store" });
    if (!res.ok) {
      let msg = res.status + " " + res.statusText;
      try { msg = (await res.json()).error || msg; } catch (e) { /* not JSON */ }
      throw new Error(msg);
    }
    return res.json();
  }

  // One interface, two back ends.
  dgm.source = STATIC ? {
    live: false,
    runs: async () => STATIC.runs.map(r => ({ index: r.index, name: r.name, run_dir: r.run_dir, campaign: r.campaign })),
    nodes: async (run, since) => since > 0 ? { ...STATIC.runs[run].nodes, rows: [], reset: false } : STATIC.runs[run].nodes,
    node: async (run, id) => {
      const d = STATIC.runs[run].details[String(id)];
      if (!d) throw new Error("node " + id + " is not in this export");
      return d;
    },
    series: async run => STATIC.runs[run].series,
  } : {
    live: true,
    runs: () => getJSON("api/runs"),
    nodes: (run, since) => getJSON(`api/runs/${run}/nodes?since=${since}`),
    node: (run, id) => getJSON(`api/runs/${run}/nodes/${id}`),
    series: run => getJSON(`api/runs/${run}/series`),
  };

  // The nodes of one run, as rows turned into objects; children lists in id order.
  class RunModel {
    constructor(info) {
      Object.assign(this, info);
      this.byId = new Map();
      this.children = new Map();
      this.cursor = 0;
      this.summary = null;
      this.version = 0;  // bumped whenever nodes change
      this.operators = new Set();
      this.stages = new Set();
    }

    apply(page) {
      if (page.reset) {
        this.byId.clear();
        this.children.clear();
      }
      const f = page.fields;
      for (const row of page.rows) {
        const n = {};
        for (let i = 0; i < f.length; i++) n[f[i]] = row[i];
        const had = this.byId.has(n.id);
        this.byId.set(n.id, n);
        if (!had && n.parent !== null) {
          let c = this.children.get(n.parent);
          if (!c) this.children.set(n.parent, (c = []));
          c.push(n.id);
        }
        if (n.operator) this.operators.add(n.operator);
        if (n.stage) this.stages.add(n.stage);
      }
      this.cursor = page.cursor;
      this.summary = page.summary;
      this.loading = page.loading || null;  // {loaded, rows} while the server reads a big run
      if (page.rows.length || page.reset) this.version++;
      return page.rows.length;
    }

    get size() { return this.byId.size; }

    bestPath() {
      const path = new Set();
      const best = this.summary && this.summary.best;
      let id = best ? best.id : null;
      while (id !== null && id !== undefined && this.byId.has(id) && !path.has(id)) {
        path.add(id);
        id = this.byId.get(id).parent;
      }
      return path;
    }
  }

  dgm.RunModel = RunModel;

  dgm.fmt = {
    score: s => (s === null || s === undefined) ? "–" : (Math.abs(s) >= 1000 || (Math.abs(s) < 0.001 && s !== 0) ? s.toExponential(3) : s.toFixed(4)),
    secs: s => (s === null || s === undefined) ? "–" : (s < 1 ? (s * 1000).toFixed(0) + " ms" : s.toFixed(2) + " s"),
    usd: c => "$" + (c || 0).toFixed(4),
    int: n => (n || 0).toLocaleString("en-US"),
  };
})(window.dgm);
