"""dgm ui in a real headless Chromium (Debian's, driven by Playwright): load the tree, click a node
and read its diff, filter, collapse, watch nodes arrive while this test writes to the archive, the
progress, compare and node pages, and the static export opened offline. Every wait is on page state
with a deadline; every view leaves a screenshot under the test's temporary directory (and, when
DGM_UI_SCREENS names a directory, a copy there)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from archive import Archive
from orchestrator.ui.browser import find_chromium, launch
from orchestrator.ui.export import export_html
from orchestrator.ui.server import UIServer
from tests.campaign_helpers import distinct_grids, write_config
from tests.fm_server import ScriptedFMServer

DEADLINE_MS = 15_000
DGM = [sys.executable, "-m", "orchestrator.cli"]


@pytest.fixture(scope="module")
def browser():
    if find_chromium() is None:
        pytest.fail("no Chromium: `make test` installs it as root (apt-get install chromium), or set DGM_CHROMIUM")
    with sync_playwright() as p:
        b = launch(p)
        yield b
        b.close()


class Page:
    """A page plus what it logged; fails the test on any console error (CSP violations included)."""

    def __init__(self, browser, shots: Path, **context):
        self.context = browser.new_context(viewport={"width": 1400, "height": 900}, **context)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        self.shots = shots

    def shot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path))
        if os.environ.get("DGM_UI_SCREENS"):
            Path(os.environ["DGM_UI_SCREENS"]).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(os.environ["DGM_UI_SCREENS"]) / path.name)
        return path

    def wait_tree(self) -> None:
        self.page.wait_for_selector("body[data-ready='1']", state="attached", timeout=DEADLINE_MS)
        self.page.wait_for_selector("#tree-canvas[data-rendered='1']", state="attached", timeout=DEADLINE_MS)

    def click_node(self, node_id: int) -> None:
        pos = self.page.evaluate("id => dgmUI.screenPos(id)", node_id)
        assert pos is not None, f"node {node_id} is not drawn"
        self.page.mouse.click(pos["x"], pos["y"])

    def close(self) -> None:
        self.context.close()
        assert self.errors == [], self.errors


@pytest.fixture
def shots(tmp_path) -> Path:
    d = tmp_path / "screens"
    d.mkdir()
    return d


@pytest.fixture
def page(browser, shots):
    """Ask for it after ``server``: fixtures close in reverse order, so the page stops polling first."""
    p = Page(browser, shots)
    yield p
    p.close()


IDEA = "Grow each circle's radius until it touches a neighbour or a wall, then move the centres a little."


def make_run(d: Path, campaign: str = "cp", better: float = 0.0, idea: str = "") -> Path:
    """seed → 1 (admitted) → 2 (invalid), 4 (admitted, best); seed → 3 (rejected). With ``idea``, the
    prompts of 1 and 2 carried it."""
    with Archive.create(d, campaign) as arc:
        full = lambda s: [{"stage": "smoke", "valid": True, "passed_gate": True, "score": s * 0.9},  # noqa: E731
                          {"stage": "full", "valid": True, "passed_gate": True, "score": s}]
        arc.add_node(parent_id=None, status="admitted", operator="seed", files={"main.py": "STEP = 0.1\n"}, message="seed",
                     score=0.5, stages=full(0.5), fm_model="")
        arc.add_node(parent_id=0, status="admitted", operator="diff", files={"main.py": "STEP = 0.25\n"}, message="c",
                     score=0.6 + better, stages=full(0.6), public_metrics={"sum_radii": 2.4}, private_metrics={"hidden": 2.3},
                     prompt="Improve STEP" + (f". {idea}" if idea else ""), response="STEP = 0.25", prompt_tokens=120, completion_tokens=30,
                     cost_usd=0.002, fm_model="m", timings={"fm_s": 1.2, "eval_s": 3.4}, idea=idea)
        arc.add_node(parent_id=1, status="invalid", operator="tweak", message="bad", error="no edit found in the answer",
                     prompt_tokens=100, completion_tokens=10, fm_model="m", timings={"fm_s": 0.8}, idea=idea)
        arc.add_node(parent_id=0, status="rejected", operator="tweak", files={"main.py": "STEP = 0.05\n"}, message="r",
                     score=0.4, stages=full(0.4)[:1], error="gate smoke: below 0.45", fm_model="m")
        arc.add_node(parent_id=1, status="admitted", operator="diff", files={"main.py": "STEP = 0.3\n"}, message="b",
                     score=0.7 + better, stages=full(0.7), fm_model="m", timings={"fm_s": 0.9, "eval_s": 2.0})
    return d


@pytest.fixture
def run(tmp_path) -> Path:
    return make_run(tmp_path / "run")


@pytest.fixture
def server(run):
    srv = UIServer([run], port=0).start()
    yield srv
    srv.stop()


def test_tree_loads_and_a_click_shows_the_nodes_diff(server, page):
    p = page.page
    p.goto(server.url)
    page.wait_tree()
    expect(p.locator("#match-count")).to_have_text("5 of 5 nodes match", timeout=DEADLINE_MS)
    expect(p.locator("#summary")).to_contain_text("best node 4 (0.7000)")
    page.shot("tree")
    page.click_node(4)
    p.wait_for_selector("#node-panel[data-node='4']", state="attached", timeout=DEADLINE_MS)
    diff = p.locator("#node-panel [data-section='diff'] pre")
    expect(diff).to_contain_text("-STEP = 0.25")
    expect(diff).to_contain_text("+STEP = 0.3")
    expect(p.locator("#node-panel .node-head")).to_contain_text("lineage: 0 → 1 → 4")
    assert p.evaluate("dgmUI.selected()") == 4
    page.shot("tree-node")


def test_filters_by_status_operator_and_stage_and_collapse(server, page):
    p = page.page
    p.goto(server.url)
    page.wait_tree()
    for status in ("admitted", "rejected", "failed", "evaluating", "proposed"):
        p.locator(f"#filter-status input[value='{status}']").uncheck()
    expect(p.locator("#match-count")).to_have_attribute("data-match", "1", timeout=DEADLINE_MS)  # node 2, invalid
    page.shot("filter-invalid")
    for status in ("admitted", "rejected"):
        p.locator(f"#filter-status input[value='{status}']").check()
    p.locator("#filter-operator input[value='tweak']").uncheck()
    expect(p.locator("#match-count")).to_have_attribute("data-match", "3")  # seed, 1, 4
    p.locator("#filter-operator input[value='tweak']").check()
    p.locator("#filter-stage").select_option("smoke")
    expect(p.locator("#match-count")).to_have_attribute("data-match", "1")  # 3 stopped at the smoke gate
    p.locator("#filter-stage").select_option("*")
    expect(p.locator("#match-count")).to_have_attribute("data-match", "5")
    # shift-click collapses node 1's subtree (2 and 4), a second one opens it again
    pos = p.evaluate("dgmUI.screenPos(1)")
    p.keyboard.down("Shift")
    p.mouse.click(pos["x"], pos["y"])
    p.keyboard.up("Shift")
    p.wait_for_selector("#tree-canvas[data-visible='3']", state="attached", timeout=DEADLINE_MS)
    page.shot("collapsed")
    pos = p.evaluate("dgmUI.screenPos(1)")
    p.mouse.dblclick(pos["x"], pos["y"])
    p.wait_for_selector("#tree-canvas[data-visible='5']", state="attached", timeout=DEADLINE_MS)


def test_nodes_arrive_live_while_the_archive_is_written(server, page, run):
    p = page.page
    p.goto(server.url)
    page.wait_tree()
    expect(p.locator("#match-count")).to_have_attribute("data-total", "5", timeout=DEADLINE_MS)
    with Archive.open(run) as arc:  # a campaign's writer
        arc.add_node(parent_id=4, status="invalid", operator="tweak", message="x", error="unparsable answer")
        expect(p.locator("#match-count")).to_have_attribute("data-total", "6", timeout=DEADLINE_MS)
        arc.add_node(parent_id=4, status="evaluating", operator="diff", files={"main.py": "STEP = 0.35\n"}, message="e")
        expect(p.locator("#match-count")).to_have_attribute("data-total", "7", timeout=DEADLINE_MS)
        expect(p.locator("#filter-status [data-count='evaluating']")).to_have_text(" 1", timeout=DEADLINE_MS)
        page.shot("live-evaluating")
        arc.update_node(6, status="admitted", score=0.8, stages=[{"stage": "full", "valid": True, "passed_gate": True, "score": 0.8}])
        expect(p.locator("#summary")).to_contain_text("best node 6 (0.8000)", timeout=DEADLINE_MS)
        expect(p.locator("#filter-status [data-count='evaluating']")).to_have_text(" 0")
        for i in range(3):
            arc.add_node(parent_id=6, status="rejected", operator="fit", files={"main.py": f"STEP = 0.3{i}\n"},
                         message="r", score=0.79)
    expect(p.locator("#match-count")).to_have_attribute("data-total", "10", timeout=DEADLINE_MS)
    expect(p.locator("#filter-operator input[value='fit']")).to_be_checked()
    assert p.evaluate("dgmUI.screenPos(9)") is not None  # drawn, without a reload
    page.shot("live-arrived")
    page.click_node(6)
    expect(p.locator("#node-panel [data-section='diff'] pre")).to_contain_text("+STEP = 0.35", timeout=DEADLINE_MS)


def test_node_page_shows_stages_metrics_prompt_answer(server, page):
    p = page.page
    p.goto(server.url + "#node/0/1")
    p.wait_for_selector("#view-node[data-node='1']", state="attached", timeout=DEADLINE_MS)
    node = p.locator("#view-node")
    expect(node.locator("h2")).to_contain_text("node 1")
    expect(node.locator("[data-section='stages']")).to_contain_text("smoke")
    metrics = node.locator("[data-section='metrics']")
    expect(metrics).to_contain_text("public (shown to the FM)")
    expect(metrics).to_contain_text("private (never shown to the FM)")
    expect(metrics).to_contain_text("hidden")
    node.locator("[data-section='prompt'] summary").click()
    expect(node.locator("[data-section='prompt'] pre")).to_have_text("Improve STEP")
    node.locator("[data-section='usage'] summary").click()
    expect(node.locator("[data-section='usage']")).to_contain_text("fm_s")
    page.shot("node-page")


def test_progress_and_compare_views(page, run, tmp_path):
    other = make_run(tmp_path / "run2", campaign="cp2", better=0.1, idea=IDEA)
    srv = UIServer([run, other], port=0).start()
    try:
        p = page.page
        p.goto(srv.url + "#progress")
        p.wait_for_selector("#view-progress[data-cursor='5']", state="attached", timeout=DEADLINE_MS)
        best = "() => { const d = dgm.charts['chart-score'].data.datasets[0].data; return d[d.length - 1]; }"
        assert p.evaluate(best) == {"x": 4, "y": 0.7}
        expect(p.locator("#ideas-chart")).to_be_hidden()  # no prompt of this run carried an idea
        page.shot("progress")
        with Archive.open(run) as arc:  # the charts follow the run
            arc.add_node(parent_id=4, status="admitted", operator="diff", files={"main.py": "STEP = 0.4\n"}, message="n", score=0.75)
        p.wait_for_selector("#view-progress[data-cursor='6']", state="attached", timeout=DEADLINE_MS)
        assert p.evaluate(best) == {"x": 5, "y": 0.75}
        p.goto(srv.url + "#compare")
        p.wait_for_selector("#view-compare[data-runs='2']", state="attached", timeout=DEADLINE_MS)
        table = p.locator("#compare-table")
        expect(table).to_contain_text("0.7500 (node 5)")
        expect(table).to_contain_text("0.8000 (node 4)")
        page.shot("compare")
        p.locator("#run-select").select_option("1")
        p.locator("#nav a[data-view='progress']").click()
        expect(p.locator("#ideas-chart")).to_be_visible()
        ideas = "() => { const c = dgm.charts['chart-ideas']; return [c.data.labels, c.data.datasets.map(d => d.data)]; }"
        assert p.evaluate(ideas) == [[IDEA], [[2], [1], [1], [1]]]  # attempts, valid, better than parent, than seed
        page.shot("progress-ideas")
        p.locator("#nav a[data-view='tree']").click()
        expect(p.locator("#summary")).to_contain_text("cp2")
    finally:
        page.page.goto("about:blank")  # stop polling before the server goes
        srv.stop()


def test_static_export_opens_offline(browser, shots, run, tmp_path):
    html = tmp_path / "run.html"
    html.write_text(export_html([run]))
    page = Page(browser, shots, offline=True)
    requests: list[str] = []
    page.page.on("request", lambda r: requests.append(r.url))
    try:
        p = page.page
        p.goto(html.as_uri())
        page.wait_tree()
        expect(p.locator("#live")).to_have_text("static export")
        expect(p.locator("#match-count")).to_have_text("5 of 5 nodes match")
        page.click_node(1)
        expect(p.locator("#node-panel [data-section='diff'] pre")).to_contain_text("+STEP = 0.25", timeout=DEADLINE_MS)
        page.shot("export")
        p.locator("#nav a[data-view='progress']").click()
        p.wait_for_selector("#view-progress[data-cursor]", state="attached", timeout=DEADLINE_MS)
    finally:
        page.close()
    assert requests and all(u.startswith("file://") or u.startswith("data:") for u in requests), requests


def test_a_real_campaign_appears_live(browser, shots, tmp_path):
    """`dgm run` (a scripted FM server over HTTP, real circle-packing evaluations) writes while the
    page is open: its nodes arrive without a reload, and the best one's diff is the model's edit."""
    env = {**os.environ, "DGM_TEST_KEY": "sk-test"}
    camp = tmp_path / "camp"
    subprocess.run([*DGM, "init", str(camp), "--template", "circle_packing"], check=True, capture_output=True, env=env)
    with ScriptedFMServer(responder=distinct_grids(prompt_tokens=50, completion_tokens=20)) as fm:
        cfg = write_config(camp, fm.base_url, iterations=1)
        subprocess.run([*DGM, "run", str(cfg), "--no-live"], check=True, capture_output=True, env=env, timeout=300)
        srv = UIServer([camp / "run"], port=0).start()
        page = Page(browser, shots)
        try:
            p = page.page
            p.goto(srv.url)
            page.wait_tree()
            expect(p.locator("#match-count")).to_have_attribute("data-total", "2", timeout=DEADLINE_MS)
            proc = subprocess.Popen([*DGM, "run", str(cfg), "--iterations", "4", "--no-live"], env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            try:
                expect(p.locator("#match-count")).to_have_attribute("data-total", "5", timeout=300_000)
                assert proc.wait(timeout=300) == 0, proc.stderr.read()
            finally:
                if proc.poll() is None:
                    proc.kill()
            with Archive.open(camp / "run", readonly=True) as arc:
                best = arc.best(1)[0].id
            expect(p.locator("#summary")).to_contain_text(f"best node {best}", timeout=DEADLINE_MS)
            page.shot("real-campaign")
            page.click_node(best)
            expect(p.locator("#node-panel [data-section='diff'] pre")).to_contain_text("np.arange(5)", timeout=DEADLINE_MS)
            page.shot("real-campaign-node")
            p.goto("about:blank")
        finally:
            page.close()
            srv.stop()
