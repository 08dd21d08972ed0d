"""How fast dgm ui is on synthetic runs of 1,000, 10,000 and 100,000 nodes → bench/results/ui.json.

Each run is a real archive (SQLite + git) written through the Archive API (orchestrator/ui/synthetic.py).
For each size: the server starts on it and answers at once while it reads every node in the
background (``server_answers_ms``, ``server_load_ms``: until every node is read and in the ledger);
at 100,000 a page opened at once shows the nodes read so far (``while_loading``). Once all is read,
a fresh headless Chromium page (Debian's, driven by Playwright) opens the tree, REPEATS times:

- first render: ``performance.now()`` when the tree's first full draw ends, i.e. milliseconds from
  the start of navigation to a drawn tree with every node loaded (fetch, parse, layout, draw);
- node page: a real mouse click on a node → its details fetched and rendered in the panel
  (measured in the page from the click handler to the end of rendering), for NODE_CLICKS nodes;
  and the API alone (``GET /api/runs/0/nodes/{id}``, from Python) for API_SAMPLES nodes;
- usability: nodes drawn after the automatic collapse, the time of one redraw after a zoom, of
  expanding one collapsed subtree, of "expand all", of redrawing the whole expanded tree at the
  fitted zoom, and of a poll that finds nothing new;
- live: a node written to the archive → the page's node count shows it (1,000 only).

Targets (issue 12): first render ≤ 1 s at 1,000 nodes and ≤ 3 s at 10,000; node page ≤ 200 ms;
100,000 usable. Usage: python bench/bench_ui.py [--sizes 1000 10000 100000] [--cache DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from archive import Archive  # noqa: E402
from orchestrator.ui import synthetic  # noqa: E402
from orchestrator.ui.browser import find_chromium, launch  # noqa: E402
from orchestrator.ui.server import UIServer  # noqa: E402

REPEATS = 3
NODE_CLICKS = 5
API_SAMPLES = 30
DEADLINE_MS = 120_000


def build(cache: Path, n: int) -> tuple[Path, float | None]:
    d = cache / f"run{n}"
    if (d / "archive.db").exists():
        with Archive.open(d, readonly=True) as arc:
            if arc.count() == n:
                return d, None
        raise SystemExit(f"{d} holds a run of another size; remove it")
    t0 = time.perf_counter()
    synthetic.build(d, n, seed_value=n)
    return d, time.perf_counter() - t0


def ms(xs: list[float]) -> dict:
    return {"median": round(statistics.median(xs), 1), "max": round(max(xs), 1), "n": len(xs)}


def get_ms(url: str) -> float:
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as r:
        r.read()
    return (time.perf_counter() - t0) * 1000


def open_tree(browser, url: str):
    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    page = ctx.new_page()
    page.goto(url)
    page.wait_for_selector("#tree-canvas[data-rendered='1']", state="attached", timeout=DEADLINE_MS)
    return ctx, page


def click_node(page, node_id: int) -> float:
    """Zoom to the node (at the fitted zoom of a big tree, nodes overlap), then click it."""
    page.evaluate("id => window.dgm.tree.centerOn(id)", node_id)
    pos = page.evaluate("id => dgmUI.screenPos(id)", node_id)
    page.mouse.click(pos["x"], pos["y"])
    page.wait_for_selector(f"#node-panel[data-node='{node_id}']", state="attached", timeout=DEADLINE_MS)
    return page.evaluate("dgmUI.timings().detailMs")


def depth(run_dir: Path) -> dict:
    """The tree's shape: a deep tree costs the ledger (its clade walk is O(depth) per node)."""
    with Archive.open(run_dir, readonly=True) as arc:
        parent = {r[0]: r[1] for r in arc.store.skeleton()}
    d: dict[int, int] = {}
    for i in sorted(parent):
        d[i] = 0 if parent[i] is None else d[parent[i]] + 1
    return {"max": max(d.values()), "mean": round(statistics.mean(d.values()), 1)}


def bench_size(browser, run_dir: Path, n: int, shots: Path | None = None) -> dict:
    out: dict = {"nodes": n, "depth": depth(run_dir)}
    t0 = time.perf_counter()
    srv = UIServer([run_dir], port=0).start(wait_loaded=False)  # answers at once, reads in the background
    out["server_answers_ms"] = round((time.perf_counter() - t0) * 1000, 1)
    try:
        if n >= 100_000:  # a page opened at once shows the nodes read so far
            ctx, page = open_tree(browser, srv.url)
            out["while_loading"] = {"first_render_ms": round(page.evaluate("dgmUI.firstRenderMs()"), 1),
                                    "nodes_in_first_render": page.evaluate("dgmUI.counts().total")}
            if shots:
                page.screenshot(path=str(shots / f"tree-{n}-loading.png"))
            ctx.close()
        while not srv.runs[0].loaded:
            time.sleep(0.05)
        out["server_load_ms"] = round((time.perf_counter() - t0) * 1000, 1)
        first, layout, draw = [], [], []
        for _ in range(REPEATS):
            ctx, page = open_tree(browser, srv.url)
            first.append(page.evaluate("dgmUI.firstRenderMs()"))
            t = page.evaluate("dgmUI.timings()")
            layout.append(t["layoutMs"])
            draw.append(t["drawMs"])
            visible = page.evaluate("dgmUI.counts().visible")
            if shots:
                page.screenshot(path=str(shots / f"tree-{n}.png"))
            ctx.close()
        out["first_render_ms"] = ms(first)
        out["first_layout_ms"] = ms(layout)
        out["first_draw_ms"] = ms(draw)
        out["drawn_after_auto_collapse"] = visible

        ctx, page = open_tree(browser, srv.url)
        # nodes that are drawn, spread over the run
        drawn = page.evaluate("() => { const out = []; for (let i = 0; i < 400000 && out.length < 200; i += 7) if (dgmUI.screenPos(i)) out.push(i); return out; }")
        step = max(1, len(drawn) // NODE_CLICKS)
        clicks = [click_node(page, i) for i in drawn[::step][:NODE_CLICKS]]
        if shots:
            page.screenshot(path=str(shots / f"node-{n}.png"))
        out["node_page_click_to_rendered_ms"] = ms(clicks)
        out["node_api_ms"] = ms([get_ms(f"{srv.url}api/runs/0/nodes/{i}") for i in range(0, n, max(1, n // API_SAMPLES))][:API_SAMPLES])

        # a redraw after a zoom (wheel), and expanding one collapsed subtree
        page.mouse.move(700, 500)
        page.mouse.wheel(0, -300)
        page.wait_for_timeout(50)
        out["redraw_after_zoom_ms"] = round(page.evaluate("dgmUI.timings().drawMs"), 1)
        collapsed = page.evaluate("() => { const c = []; for (const [i, s] of window.dgm.tree.perRun) for (const id of s.collapsed) c.push(id); return c.slice(0, 1); }")
        if collapsed:
            out["expand_one_subtree_ms"] = round(page.evaluate(
                "id => { const t0 = performance.now(); window.dgm.tree.toggle(id); window.dgm.tree.draw(); return performance.now() - t0; }",
                collapsed[0]), 1)
        out["expand_all_ms"] = round(page.evaluate(
            "() => { const t0 = performance.now(); window.dgm.tree.expandAll(); window.dgm.tree.draw(); return performance.now() - t0; }"), 1)
        out["drawn_after_expand_all"] = page.evaluate("dgmUI.counts().visible")
        out["redraw_all_expanded_fitted_ms"] = round(page.evaluate(  # every node on screen
            "() => { window.dgm.tree.fit(); const t0 = performance.now(); window.dgm.tree.draw(); return performance.now() - t0; }"), 1)
        ctx.close()
        cursor = json.loads(urllib.request.urlopen(f"{srv.url}api/runs/0/nodes?since=0", timeout=60).read())["cursor"]
        time.sleep(0.4)  # past the refresh throttle, so the poll reads the database
        out["idle_poll_ms"] = ms([get_ms(f"{srv.url}api/runs/0/nodes?since={cursor}") for _ in range(10)])
        out["full_nodes_api_ms"] = ms([get_ms(f"{srv.url}api/runs/0/nodes?since=0") for _ in range(3)])
        if n <= 1000:
            out["live_ms"] = live_latency(browser, run_dir, n)
    finally:
        srv.stop()
    return out


def live_latency(browser, run_dir: Path, n: int) -> dict:
    """A node written → shown in the page's count (the page polls every second); on a copy of the run."""
    live = run_dir.with_name(run_dir.name + "-live")
    shutil.rmtree(live, ignore_errors=True)
    shutil.copytree(run_dir, live)
    srv = UIServer([live], port=0).start()
    ctx, page = open_tree(browser, srv.url)
    lat = []
    with Archive.open(live) as arc:
        for k in range(3):
            total = n + k + 1
            t0 = time.perf_counter()
            arc.add_node(parent_id=0, status="invalid", operator="diff", message="live", error="bench")
            page.wait_for_selector(f"#match-count[data-total='{total}']", state="attached", timeout=DEADLINE_MS)
            lat.append((time.perf_counter() - t0) * 1000)
    ctx.close()
    srv.stop()
    shutil.rmtree(live, ignore_errors=True)
    return ms(lat)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--cache", type=Path, default=Path("/tmp/dgm-bench-ui"), help="where the synthetic runs are kept")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ui.json")
    ap.add_argument("--shots", type=Path, default=None, help="save a screenshot of each size's tree and node page here")
    args = ap.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    chromium = find_chromium()
    version = subprocess.run([chromium, "--version"], capture_output=True, text=True).stdout.strip() if chromium else None
    results = {
        "what": __doc__.strip().split("\n")[0],
        "method": "see bench/bench_ui.py docstring; times in ms; median and max over n tries",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "chromium": version, "note": "CPU cores shared with other jobs while measured; see load_avg per size"},
        "targets": {"first_render_ms": {"1000": 1000, "10000": 3000}, "node_page_ms": 200},
        "sizes": [],
    }
    with sync_playwright() as p:
        browser = launch(p)
        for n in args.sizes:
            run_dir, build_s = build(args.cache, n)
            print(f"{n} nodes: {'built in %.1f s' % build_s if build_s else 'cached'} at {run_dir}", flush=True)
            load_before = os.getloadavg()[0]
            if args.shots:
                args.shots.mkdir(parents=True, exist_ok=True)
            r = bench_size(browser, run_dir, n, args.shots)
            r["load_avg_1min"] = {"before": round(load_before, 1), "after": round(os.getloadavg()[0], 1)}
            if build_s is not None:
                r["archive_build_s"] = round(build_s, 1)
            results["sizes"].append(r)
            print(json.dumps(r), flush=True)
        browser.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
