// The lineage tree on a canvas: d3.tree lays it out, d3.zoom pans and zooms, d3.quadtree finds
// the node under the pointer. Colour = score (viridis over the run's scored nodes), shape = status,
// the path seed → best drawn thick. Collapsed subtrees show as one node with "+N".
"use strict";

(function (dgm) {
  const DX = 18, DY = 70, R = 5;
  const LABEL_PX = 36;  // ids are drawn once siblings are this far apart on screen
  const AUTO_COLLAPSE_ABOVE = 20000;  // bigger runs open with subtrees collapsed ...
  const AUTO_VISIBLE = 8000;          // ... to about this many visible nodes
  const NO_SCORE = "#bdbdbd";
  const PATH = "#ff6f00";
  const SHAPES = {
    admitted: "circle", rejected: "square", invalid: "triangle", failed: "cross", evaluating: "diamond", proposed: "diamond",
  };

  class TreeView {
    constructor(opts) {
      this.canvas = opts.canvas;
      this.wrap = opts.wrap;
      this.tooltip = opts.tooltip;
      this.empty = opts.empty;
      this.onSelect = opts.onSelect;
      this.onChange = opts.onChange || (() => {});
      this.ctx = this.canvas.getContext("2d");
      this.model = null;
      this.perRun = new Map();  // run index → {collapsed, transform, fitted}
      this.filters = { statuses: null, operators: null, stage: "*" };  // null = all
      this.selected = null;
      this.builtVersion = -1;
      this.layout = [];
      this.pos = new Map();
      this.transform = d3.zoomIdentity;
      this.firstRenderMs = null;
      this.lastLayoutMs = 0;
      this.lastDrawMs = 0;
      this._frame = null;
      this.zoom = d3.zoom().scaleExtent([0.0005, 12]).on("zoom", ev => {
        this.transform = ev.transform;
        this.state().transform = ev.transform;
        if (ev.sourceEvent) this.state().touched = true;  // the user panned or zoomed: stop fitting
        this.requestDraw();
      });
      d3.select(this.canvas).call(this.zoom).on("dblclick.zoom", null);
      this.canvas.addEventListener("click", ev => this._click(ev));
      this.canvas.addEventListener("dblclick", ev => this._toggleAt(ev));
      this.canvas.addEventListener("mousemove", ev => this._hover(ev));
      this.canvas.addEventListener("mouseleave", () => { this.tooltip.hidden = true; });
      new ResizeObserver(() => this._resize()).observe(this.wrap);
    }

    state() {
      const i = this.model ? this.model.index : -1;
      if (!this.perRun.has(i)) this.perRun.set(i, { collapsed: new Set(), transform: null, touched: false, auto: false });
      return this.perRun.get(i);
    }

    setModel(model) {
      if (this.model === model) return;
      this.model = model;
      this.builtVersion = -1;
      this.selected = null;
      this.update();
    }

    // ---- layout ------------------------------------------------------------------------

    update() {
      if (!this.model) return;
      if (this.builtVersion !== this.model.version) this._layout();
      this.requestDraw();
    }

    _subtreeSizes() {
      // nodes in each subtree; a child's id is larger than its parent's, so one pass from the end
      const m = this.model, size = new Map();
      const ids = Array.from(m.byId.keys()).sort((a, b) => b - a);
      for (const id of ids) size.set(id, 1);
      for (const id of ids) {
        const p = m.byId.get(id).parent;
        if (p !== null && size.has(p)) size.set(p, size.get(p) + size.get(id));
      }
      return size;
    }

    _autoCollapse(path) {
      // Breadth first from the seed; a node whose children would push the visible count past
      // AUTO_VISIBLE is collapsed (never one on the path to the best node).
      const st = this.state(), m = this.model;
      const queue = [0];
      let shown = 1;
      for (let qi = 0; qi < queue.length; qi++) {
        const id = queue[qi], kids = m.children.get(id);
        if (!kids || !kids.length) continue;
        if (!path.has(id) && shown + kids.length > AUTO_VISIBLE) { st.collapsed.add(id); continue; }
        shown += kids.length;
        for (const k of kids) queue.push(k);
      }
    }

    _layout() {
      const t0 = performance.now();
      const m = this.model, st = this.state();
      this.builtVersion = m.version;
      this.path = m.bestPath();
      const root = m.byId.get(0);
      this.empty.hidden = !!root;
      if (!root) { this.layout = []; this.pos = new Map(); this.onChange(); return; }
      if (!st.auto && m.size > AUTO_COLLAPSE_ABOVE) {  // once per run (a big run may arrive in parts)
        this._autoCollapse(this.path);
        st.auto = true;
      }
      this.sizes = this._subtreeSizes();
      const collapsed = st.collapsed;
      const h = d3.hierarchy(root, n => {
        if (collapsed.has(n.id)) return null;
        const c = m.children.get(n.id);
        return c && c.length ? c.map(id => m.byId.get(id)) : null;
      });
      d3.tree().nodeSize([DX, DY]).separation((a, b) => (a.parent === b.parent ? 1 : 1.4))(h);
      const layout = [];
      const pos = new Map();
      h.each(d => {
        const item = { d: d.data, x: d.x, y: d.y, px: d.parent ? d.parent.x : null, py: d.parent ? d.parent.y : null };
        layout.push(item);
        pos.set(d.data.id, item);
      });
      this.layout = layout;
      this.pos = pos;
      this.quad = d3.quadtree(layout, p => p.x, p => p.y);
      const scored = [];
      for (const n of m.byId.values()) if (n.score !== null && (n.status === "admitted" || n.status === "rejected")) scored.push(n.score);
      const lo = scored.length ? d3.min(scored) : 0, hi = scored.length ? d3.max(scored) : 1;
      this.color = d3.scaleSequential(d3.interpolateViridis).domain(lo === hi ? [lo - 1e-9, hi + 1e-9] : [lo, hi]);
      this.scoreRange = [lo, hi, scored.length];
      for (const p of layout) p.fill = this.fill(p.d);  // once per layout, not per frame
      this.lastLayoutMs = performance.now() - t0;
      if (!st.transform || !st.touched) this.fit(); else this.transform = st.transform;  // a growing run stays in view until the user moves it
      this.onChange();
    }

    fit() {
      if (!this.layout.length) return;
      const w = this.canvas.clientWidth, h = this.canvas.clientHeight;
      this._fitPending = !w || !h;  // hidden: fit once it has a size
      if (this._fitPending) return;
      const [x0, x1] = d3.extent(this.layout, p => p.x), [y0, y1] = d3.extent(this.layout, p => p.y);
      const k = Math.min(4, 0.92 * Math.min(w / (x1 - x0 + 2 * DX), h / (y1 - y0 + 2 * DY)));
      const t = d3.zoomIdentity.translate(w / 2 - k * (x0 + x1) / 2, h / 2 - k * (y0 + y1) / 2).scale(k);
      d3.select(this.canvas).call(this.zoom.transform, t);
    }

    // ---- filters, collapse -------------------------------------------------------------

    matches(n) {
      const f = this.filters;
      if (f.statuses && !f.statuses.has(n.status)) return false;
      if (f.operators && !f.operators.has(n.operator)) return false;
      if (f.stage !== "*" && (n.stage || "") !== f.stage) return false;
      return true;
    }

    setFilters(filters) {
      Object.assign(this.filters, filters);
      this.onChange();
      this.requestDraw();
    }

    counts() {
      let match = 0;
      if (this.model) for (const n of this.model.byId.values()) if (this.matches(n)) match++;
      return { total: this.model ? this.model.size : 0, match, visible: this.layout.length };
    }

    toggle(id) {
      const kids = this.model.children.get(id);
      if (!kids || !kids.length) return;
      const c = this.state().collapsed;
      this.state().auto = true;
      if (c.has(id)) c.delete(id); else c.add(id);
      this.builtVersion = -1;
      this.update();
    }

    expandAll() { this.state().collapsed.clear(); this.state().auto = true; this.builtVersion = -1; this.update(); }

    collapseOffPath() {
      const c = this.state().collapsed, path = this.model.bestPath();
      for (const [id, kids] of this.model.children) if (kids.length && !path.has(id)) c.add(id);
      this.builtVersion = -1;
      this.update();
    }

    reveal(id) {
      // expand every collapsed ancestor so the node is drawn
      const c = this.state().collapsed, m = this.model;
      let p = m.byId.has(id) ? m.byId.get(id).parent : null, changed = false;
      while (p !== null && p !== undefined) {
        if (c.delete(p)) changed = true;
        p = m.byId.get(p).parent;
      }
      if (changed) { this.builtVersion = -1; this.update(); }
    }

    select(id) {
      this.selected = id;
      this.requestDraw();
    }

    // ---- drawing -----------------------------------------------------------------------

    _resize() {
      const dpr = window.devicePixelRatio || 1;
      this.canvas.width = Math.max(1, Math.round(this.canvas.clientWidth * dpr));
      this.canvas.height = Math.max(1, Math.round(this.canvas.clientHeight * dpr));
      if (this._fitPending) this.fit();
      this.requestDraw();
    }

    requestDraw() {
      if (this._frame !== null) return;
      this._frame = requestAnimationFrame(() => { this._frame = null; this.draw(); });
    }

    fill(n) {
      return n.score === null ? NO_SCORE : this.color(n.score);
    }

    draw() {
      const t0 = performance.now();
      if (this.model && this.builtVersion !== this.model.version) this._layout();
      const ctx = this.ctx, dpr = window.devicePixelRatio || 1, t = this.transform, k = t.k;
      const w = this.canvas.width, h = this.canvas.height;
      ctx.setTransform(1, 0, 0, 1, 0, 0);
      ctx.clearRect(0, 0, w, h);
      if (!this.layout.length) return;
      ctx.setTransform(dpr * k, 0, 0, dpr * k, dpr * t.x, dpr * t.y);
      // the part of layout space on screen (cull the rest)
      const vx0 = -t.x / k - DX, vx1 = (w / dpr - t.x) / k + DX, vy0 = -t.y / k - DY, vy1 = (h / dpr - t.y) / k + DY;
      const onScreen = p => p.x >= vx0 && p.x <= vx1 && p.y >= vy0 && p.y <= vy1;
      const px = 1 / k;  // one screen pixel in layout units

      ctx.lineWidth = px;
      ctx.strokeStyle = "#c7c7c7";
      ctx.beginPath();
      for (const p of this.layout) {
        if (p.px === null) continue;
        if ((p.x < vx0 && p.px < vx0) || (p.x > vx1 && p.px > vx1) || p.py > vy1 || p.y < vy0) continue;
        ctx.moveTo(p.px, p.py + R);
        ctx.lineTo(p.x, p.y - R);
      }
      ctx.stroke();
      // path to the best node
      ctx.lineWidth = Math.max(3 * px, 1.5);
      ctx.strokeStyle = PATH;
      ctx.beginPath();
      for (const id of this.path) {
        const p = this.pos.get(id);
        if (!p || p.px === null) continue;
        ctx.moveTo(p.px, p.py);
        ctx.lineTo(p.x, p.y);
      }
      ctx.stroke();

      const r = Math.max(R, 1.6 * px);
      const collapsed = this.state().collapsed;
      const tiny = R * k < 2;  // a node is a dot of a pixel or two: squares, no outline (much faster)
      let alpha = -1;
      for (const p of this.layout) {
        if (!onScreen(p)) continue;
        const n = p.d, a = this.matches(n) ? 1 : 0.12;
        if (a !== alpha) ctx.globalAlpha = alpha = a;
        if (tiny) {
          ctx.fillStyle = n.status === "failed" ? "#b71c1c" : p.fill;
          ctx.fillRect(p.x - r, p.y - r, 2 * r, 2 * r);
          continue;
        }
        this._shape(ctx, SHAPES[n.status] || "circle", p.x, p.y, r, p.fill, n.status === "failed" ? "#b71c1c" : "#37474f", px);
        if (collapsed.has(n.id)) {
          ctx.lineWidth = 1.5 * px;
          ctx.strokeStyle = "#37474f";
          ctx.beginPath(); ctx.arc(p.x, p.y, r + 3 * px + 1, 0, 2 * Math.PI); ctx.stroke();
        }
      }
      ctx.globalAlpha = 1;
      // rings: best node, selected node
      const best = this.model.summary && this.model.summary.best;
      if (best && this.pos.has(best.id)) this._ring(ctx, this.pos.get(best.id), r + 4 * px, PATH, 2.5 * px);
      if (this.selected !== null && this.pos.has(this.selected)) this._ring(ctx, this.pos.get(this.selected), r + 6 * px, "#d50000", 3 * px);
      // labels when zoomed in enough to read them
      if (k * DX >= LABEL_PX) {
        ctx.fillStyle = "#263238";
        ctx.font = `${11 * px}px system-ui, sans-serif`;
        ctx.textAlign = "center";
        for (const p of this.layout) {
          if (!onScreen(p)) continue;
          ctx.fillText(String(p.d.id), p.x, p.y + r + 12 * px);
          if (collapsed.has(p.d.id)) ctx.fillText(`+${(this.sizes.get(p.d.id) || 1) - 1}`, p.x, p.y + r + 24 * px);
        }
      } else if (k * DX >= LABEL_PX / 3) {  // collapsed subtrees say how much they hide, when it is legible
        ctx.fillStyle = "#263238";
        ctx.font = `${11 * px}px system-ui, sans-serif`;
        ctx.textAlign = "left";
        for (const id of collapsed) {
          const p = this.pos.get(id);
          if (p && onScreen(p)) ctx.fillText(`+${(this.sizes.get(id) || 1) - 1}`, p.x + r + 3 * px, p.y + 4 * px);
        }
      }
      this.lastDrawMs = performance.now() - t0;
      if (this.firstRenderMs === null && this.layout.length) {
        this.firstRenderMs = performance.now();
        this.canvas.dataset.rendered = "1";
      }
      this.canvas.dataset.visible = String(this.layout.length);
    }

    _shape(ctx, shape, x, y, r, fill, stroke, px) {
      ctx.fillStyle = fill;
      ctx.strokeStyle = stroke;
      ctx.lineWidth = px;
      ctx.beginPath();
      if (shape === "circle") ctx.arc(x, y, r, 0, 2 * Math.PI);
      else if (shape === "square") ctx.rect(x - r * 0.9, y - r * 0.9, 1.8 * r, 1.8 * r);
      else if (shape === "triangle") { ctx.moveTo(x, y - r * 1.15); ctx.lineTo(x + r * 1.1, y + r * 0.85); ctx.lineTo(x - r * 1.1, y + r * 0.85); ctx.closePath(); }
      else if (shape === "diamond") { ctx.moveTo(x, y - r * 1.2); ctx.lineTo(x + r * 1.2, y); ctx.lineTo(x, y + r * 1.2); ctx.lineTo(x - r * 1.2, y); ctx.closePath(); }
      else if (shape === "cross") {
        const a = r * 0.45, b = r * 1.05;
        ctx.moveTo(x - b, y - b + a); ctx.lineTo(x - b + a, y - b); ctx.lineTo(x, y - a); ctx.lineTo(x + b - a, y - b); ctx.lineTo(x + b, y - b + a);
        ctx.lineTo(x + a, y); ctx.lineTo(x + b, y + b - a); ctx.lineTo(x + b - a, y + b); ctx.lineTo(x, y + a); ctx.lineTo(x - b + a, y + b);
        ctx.lineTo(x - b, y + b - a); ctx.lineTo(x - a, y); ctx.closePath();
      }
      if (shape === "diamond" && fill === NO_SCORE) ctx.fillStyle = "#e1f5fe";
      ctx.fill();
      ctx.stroke();
    }

    _ring(ctx, p, r, colour, width) {
      ctx.lineWidth = width;
      ctx.strokeStyle = colour;
      ctx.beginPath();
      ctx.arc(p.x, p.y, r, 0, 2 * Math.PI);
      ctx.stroke();
    }

    // ---- pointer -----------------------------------------------------------------------

    _at(ev) {
      if (!this.quad) return null;
      const rect = this.canvas.getBoundingClientRect();
      const [x, y] = this.transform.invert([ev.clientX - rect.left, ev.clientY - rect.top]);
      const hit = this.quad.find(x, y, Math.max(R * 1.6, 8 / this.transform.k));
      return hit || null;
    }

    _click(ev) {
      if (ev.defaultPrevented) return;
      const hit = this._at(ev);
      if (!hit) return;
      if (ev.shiftKey || ev.altKey) { this.toggle(hit.d.id); return; }
      this.select(hit.d.id);
      this.onSelect(hit.d.id);
    }

    _toggleAt(ev) {
      const hit = this._at(ev);
      if (hit) this.toggle(hit.d.id);
    }

    _hover(ev) {
      const hit = this._at(ev);
      if (!hit) { this.tooltip.hidden = true; this.canvas.style.cursor = "grab"; return; }
      const n = hit.d, f = dgm.fmt;
      const hidden = this.state().collapsed.has(n.id) ? ` · ${(this.sizes.get(n.id) || 1) - 1} hidden below` : "";
      this.tooltip.textContent = `node ${n.id} · ${n.status} · ${n.operator || "?"} · score ${f.score(n.score)}` +
        (n.stage ? ` · reached ${n.stage}` : "") + hidden + (n.note ? `\n${n.note}` : "");
      this.tooltip.style.whiteSpace = "pre-wrap";
      const rect = this.canvas.getBoundingClientRect();
      this.tooltip.style.left = (ev.clientX - rect.left + 14) + "px";
      this.tooltip.style.top = (ev.clientY - rect.top + 10) + "px";
      this.tooltip.hidden = false;
      this.canvas.style.cursor = "pointer";
    }

    // where a node is on the page (for tests and benchmarks that click it)
    screenPos(id) {
      const p = this.pos.get(id);
      if (!p) return null;
      const rect = this.canvas.getBoundingClientRect();
      const [x, y] = this.transform.apply([p.x, p.y]);
      return { x: rect.left + x, y: rect.top + y };
    }

    centerOn(id) {
      const p = this.pos.get(id);
      if (!p) return;
      const w = this.canvas.clientWidth, h = this.canvas.clientHeight, k = Math.max(this.transform.k, LABEL_PX / DX);
      this.state().touched = true;
      d3.select(this.canvas).call(this.zoom.transform, d3.zoomIdentity.translate(w / 2 - k * p.x, h / 2 - k * p.y).scale(k));
    }
  }

  TreeView.SHAPES = SHAPES;
  TreeView.PATH = PATH;
  dgm.TreeView = TreeView;
})(window.dgm);
