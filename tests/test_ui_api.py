"""dgm ui without a browser: the series (exact values), the HTTP API over real archives, the change
cursor while a writer adds and updates nodes, the token and host checks, dgm plot and the HTML export."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from archive import Archive, Node, NodeStatus
from orchestrator.ledger import Ledger
from orchestrator.ui import data as ui_data
from orchestrator.ui import series, synthetic
from orchestrator.ui.server import BindError, UIServer, check_bind

DGM = [sys.executable, "-m", "orchestrator.cli"]


def node(i, parent, status, score=None, op="diff", **kw) -> Node:
    return Node(id=i, campaign="c", parent_id=parent, status=status, commit="", operator=op, score=score, **kw)


def get(url: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def get_json(url: str, **kw):
    status, _, body = get(url, **kw)
    assert status == 200, (status, body[:300])
    return json.loads(body)


@pytest.fixture
def run(tmp_path) -> Path:
    """seed (0.5) → 1 admitted 0.6 → 2 invalid; 0 → 3 rejected 0.4; 1 → 4 admitted 0.7 (self step)."""
    d = tmp_path / "run"
    with Archive.create(d, "cp") as arc:
        arc.add_node(parent_id=None, status="admitted", operator="seed", files={"main.py": "x = 1\n"}, message="seed",
                     score=0.5, stages=[{"stage": "full", "valid": True, "passed_gate": True, "score": 0.5}])
        arc.add_node(parent_id=0, status="admitted", operator="diff", files={"main.py": "x = 2\n"}, message="c", score=0.6,
                     public_metrics={"sum": 2.4}, private_metrics={"hidden": 2.3}, prompt="PROMPT-1", response="ANSWER-1",
                     prompt_tokens=100, completion_tokens=20, cost_usd=0.01, fm_model="m",
                     timings={"fm_s": 1.5, "eval_s": 2.5, "select_s": 0.1, "archive_s": 0.2},
                     stages=[{"stage": "smoke", "valid": True, "passed_gate": True, "score": 0.55},
                             {"stage": "full", "valid": True, "passed_gate": True, "score": 0.6, "per_seed": {"0": 0.61, "1": 0.59}}])
        arc.add_node(parent_id=1, status="invalid", operator="tweak", message="bad", error="no edit found\nsecond line",
                     prompt_tokens=50, completion_tokens=5, cost_usd=0.002, fm_model="m", timings={"fm_s": 0.5})
        arc.add_node(parent_id=0, status="rejected", operator="tweak", files={"main.py": "x = 0\n"}, message="r", score=0.4,
                     error="not better", fm_model="m")
        arc.add_node(parent_id=1, status="admitted", operator="self", files={"main.py": "x = 3\n"}, message="s", score=0.7,
                     prompt="TRANSCRIPT", response="OUTPUT")
    return d


@pytest.fixture
def server(run):
    srv = UIServer([run], port=0).start()
    yield srv
    srv.stop()


# ---- series: exact values ---------------------------------------------------------------------


def test_progress_best_and_mean_of_admitted_only():
    nodes = [node(0, None, NodeStatus.ADMITTED, 0.5, op="seed"), node(1, 0, NodeStatus.REJECTED, 0.9),
             node(2, 0, NodeStatus.ADMITTED, 0.7), node(3, 2, NodeStatus.INVALID), node(4, 2, NodeStatus.ADMITTED, 0.6)]
    p = series.progress(nodes)
    assert p["iteration"] == [0, 1, 2, 3, 4]
    assert p["best"] == [0.5, 0.5, 0.7, 0.7, 0.7]  # the rejected 0.9 is never best
    assert p["mean"] == pytest.approx([0.5, 0.5, 0.6, 0.6, 0.6])
    assert p["scores"] == [[0, 0.5, "admitted"], [1, 0.9, "rejected"], [2, 0.7, "admitted"], [4, 0.6, "admitted"]]
    assert p["admitted"] == 3


def test_progress_thins_long_runs_keeping_exact_values_and_the_ends():
    nodes = [node(i, None if i == 0 else 0, NodeStatus.ADMITTED, float(i)) for i in range(1000)]
    p = series.progress(nodes, max_points=11)
    assert p["iteration"] == [0, 99, 199, 299, 399, 499, 599, 699, 799, 899, 999]
    assert p["best"] == [float(i) for i in p["iteration"]]


def test_usage_and_time_per_node():
    nodes = [node(0, None, NodeStatus.ADMITTED, 0.5, created_at=100.0),
             node(1, 0, NodeStatus.ADMITTED, 0.6, prompt_tokens=10, completion_tokens=5, cost_usd=0.5, created_at=103.0,
                  timings={"fm_s": 2.0, "eval_s": 4.0, "select_s": 0.5}),
             node(2, 0, NodeStatus.INVALID, prompt_tokens=1, cost_usd=0.25, created_at=104.5, timings={"fm_s": 1.0})]
    u = series.usage(nodes)
    assert u == {"iteration": [0, 1, 2], "elapsed_s": [0.0, 3.0, 4.5], "tokens": [0, 15, 16], "cost_usd": [0.0, 0.5, 0.75]}
    t = series.time_per_node(nodes)
    assert t == {"first_id": [0, 1, 2], "size": 1, "fm_s": [0.0, 2.0, 1.0], "eval_s": [0.0, 4.0, 0.0], "bookkeeping_s": [0.0, 0.5, 0.0]}
    t2 = series.time_per_node(nodes, max_bars=2)
    assert t2["size"] == 2 and t2["first_id"] == [0, 2] and t2["fm_s"] == [1.0, 1.0] and t2["eval_s"] == [2.0, 0.0]


def test_operator_yield_is_the_ledgers():
    nodes = [node(0, None, NodeStatus.ADMITTED, 0.5, op="seed"), node(1, 0, NodeStatus.ADMITTED, 0.6, op="diff"),
             node(2, 0, NodeStatus.INVALID, op="diff"), node(3, 0, NodeStatus.REJECTED, 0.4, op="tweak")]
    y = series.operator_yield(Ledger(nodes).summary())
    assert y == {"operator": ["diff", "tweak"], "keys": list(series.YIELD_KEYS), "attempts": [2, 1], "valid": [1, 1], "better_than_parent": [1, 0],
                 "better_than_seed": [1, 0]}


def test_idea_yield_is_the_ledgers_most_tried_first():
    grow, lp = "Grow each radius until it touches a neighbour.", "Solve a linear program for the radii."
    nodes = [node(0, None, NodeStatus.ADMITTED, 0.5, op="seed"), node(1, 0, NodeStatus.ADMITTED, 0.6, op="diff", idea=lp),
             node(2, 0, NodeStatus.INVALID, op="diff", idea=grow), node(3, 1, NodeStatus.REJECTED, 0.55, op="tweak", idea=grow),
             node(4, 0, NodeStatus.ADMITTED, 0.7, op="fit")]
    summary = Ledger(nodes).summary()
    assert list(summary["ideas"]) == [grow, lp]  # two attempts before one; fit showed none
    assert series.idea_yield(summary) == {"idea": [grow, lp], "keys": list(series.YIELD_KEYS), "attempts": [2, 1], "valid": [1, 1],
                                          "better_than_parent": [0, 1], "better_than_seed": [1, 1]}
    assert series.idea_yield(Ledger(nodes[:1]).summary())["idea"] == []


# ---- the HTTP API ---------------------------------------------------------------------------------


def test_nodes_summary_and_series_match_the_archive(server, run):
    base = server.url
    runs = get_json(base + "api/runs")
    assert runs == [{"index": 0, "name": f"{run} (cp)", "run_dir": str(run), "campaign": "cp"}]
    page = get_json(base + "api/runs/0/nodes?since=0")
    assert page["reset"] is True and page["total"] == 5
    rows = [dict(zip(page["fields"], r)) for r in page["rows"]]
    assert [(r["id"], r["parent"], r["status"], r["operator"], r["score"]) for r in rows] == [
        (0, None, "admitted", "seed", 0.5), (1, 0, "admitted", "diff", 0.6), (2, 1, "invalid", "tweak", None),
        (3, 0, "rejected", "tweak", 0.4), (4, 1, "admitted", "self", 0.7)]
    assert rows[1]["stage"] == "full" and rows[1]["tokens"] == 120 and rows[1]["fm_s"] == 1.5 and rows[1]["eval_s"] == 2.5
    assert rows[2]["note"] == "no edit found" and rows[2]["stage"] == ""
    with Archive.open(run, readonly=True) as arc:
        want = Ledger(arc.nodes()).summary()
    assert page["summary"] == {"run_dir": str(run), "campaign": "cp", **json.loads(json.dumps(want))}
    assert page["summary"]["best"]["id"] == 4
    s = get_json(base + "api/runs/0/series")
    assert s["progress"]["best"] == [0.5, 0.6, 0.6, 0.6, 0.7]
    assert s["yield"]["operator"] == ["diff", "self", "tweak"]


def test_node_page_has_code_diff_stages_metrics_prompt_answer(server):
    d = get_json(server.url + "api/runs/0/nodes/1")
    n = d["node"]
    assert "-x = 1" in d["diff"] and "+x = 2" in d["diff"]
    assert d["files"] == {"main.py": {"binary": False, "bytes": 6, "text": "x = 2\n", "truncated": False}}
    assert n["public_metrics"] == {"sum": 2.4} and n["private_metrics"] == {"hidden": 2.3}
    assert n["prompt"] == "PROMPT-1" and n["response"] == "ANSWER-1"
    assert [s["stage"] for s in n["stages"]] == ["smoke", "full"] and n["stages"][1]["per_seed"] == {"0": 0.61, "1": 0.59}
    assert d["lineage"] == [0, 1] and d["children"] == [2, 4] and d["parent_score"] == 0.5
    seed = get_json(server.url + "api/runs/0/nodes/0")
    assert "+x = 1" in seed["diff"] and seed["lineage"] == [0]
    status, _, body = get(server.url + "api/runs/0/nodes/99")
    assert status == 404 and b"no node 99" in body
    status, _, body = get(server.url + "api/runs/3/nodes")
    assert status == 404 and b"no run 3" in body


def test_cursor_sends_each_change_once_while_a_writer_adds_and_updates(server, run):
    base = server.url + "api/runs/0/nodes"
    first = get_json(base + "?since=0")
    cur = first["cursor"]
    assert get_json(f"{base}?since={cur}")["rows"] == []
    with Archive.open(run) as arc:  # the campaign's writer, in this process
        arc.add_node(parent_id=4, status="evaluating", operator="diff", files={"main.py": "x = 4\n"}, message="e")
        page = _poll_until(base, cur, lambda p: p["rows"])
        assert [(r[0], r[2]) for r in page["rows"]] == [(5, "evaluating")] and page["total"] == 6
        cur = page["cursor"]
        arc.update_node(5, status="admitted", score=0.9)
        page = _poll_until(base, cur, lambda p: p["rows"])
        assert [(r[0], r[2], r[4]) for r in page["rows"]] == [(5, "admitted", 0.9)]
        assert page["summary"]["best"]["id"] == 5 and page["summary"]["counts"]["admitted"] == 4
    stale = get_json(f"{base}?since=999999")  # a cursor this server never issued: start over
    assert stale["reset"] is True and len(stale["rows"]) == 6


def _poll_until(base, cursor, ok, deadline_s=10.0):
    import time

    end = time.monotonic() + deadline_s
    while True:
        page = get_json(f"{base}?since={cursor}")
        if ok(page):
            return page
        if time.monotonic() > end:
            raise AssertionError(f"no change after {deadline_s} s: {page}")
        time.sleep(0.05)


def test_change_to_an_old_finished_node_shows_up_on_a_full_scan(run, monkeypatch):
    view = ui_data.RunView(run, min_interval_s=0)
    try:
        monkeypatch.setattr(ui_data, "RECENT", 0)
        monkeypatch.setattr(ui_data, "SLACK_S", 0.0)
        cur = view.changes(0)["cursor"]
        with Archive.open(run) as arc:
            arc.update_node(1, score=0.65)  # finished, and older than the RECENT window
            arc.add_node(parent_id=4, status="invalid", operator="diff", message="n", error="e")
            page = view.changes(cur)  # a quick refresh reads new ids only
            assert [(r[0], r[4]) for r in page["rows"]] == [(5, None)]
            arc.update_node(5, error="later")  # newer than node 1's edit
            cur = view.changes(page["cursor"])["cursor"]
        monkeypatch.setattr(ui_data, "FULL_SCAN_S", 0.0)
        page = view.changes(cur)
        assert [(r[0], r[4]) for r in page["rows"]] == [(1, 0.65)]
    finally:
        view.close()


def test_a_big_run_is_served_while_it_loads(run):
    view = ui_data.RunView(run, load=False)
    try:
        page = view.changes(0)
        assert page["rows"] == [] and page["loading"] == {"loaded": 0, "rows": 5}
        view.load(chunk=2)
        page = view.changes(0)
        assert [r[0] for r in page["rows"]] == [0, 1, 2, 3, 4] and page["loading"] is None
        assert page["summary"]["nodes"] == 5 and page["cursor"] == 5
    finally:
        view.close()


def test_assets_are_served_from_the_package_and_reference_no_network(server):
    status, headers, body = get(server.url)
    assert status == 200 and b"static/d3.min.js" in body and b"http" not in body.lower().replace(b"http-equiv", b"")
    assert "default-src 'self'" in headers["content-security-policy"]
    for name in ("d3.min.js", "chart.umd.min.js", "app.js", "tree.js", "node.js", "charts.js", "data.js", "app.css"):
        status, headers, body = get(server.url + "static/" + name)
        assert status == 200 and len(body) > 500, name
    static = Path(ui_data.__file__).parent / "static"
    for path in static.glob("*.js"):
        text = path.read_text()
        assert "fetch(\"http" not in text and "src=\"http" not in text and "//cdn" not in text, path


# ---- safety: loopback, token, host -----------------------------------------------------------------


def test_non_loopback_bind_without_token_is_refused():
    for host in ("0.0.0.0", "192.168.1.5", "::"):
        with pytest.raises(BindError, match="refusing to serve on"):
            check_bind(host, None)
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        check_bind(host, None)
    check_bind("0.0.0.0", "s3cret")


def test_cli_refuses_non_loopback_without_token(run, monkeypatch):
    env = {k: v for k, v in __import__("os").environ.items() if k != "DGM_UI_TOKEN"}
    proc = subprocess.run([*DGM, "ui", str(run), "--host", "0.0.0.0", "--port", "0"], capture_output=True, text=True,
                          timeout=60, env=env)
    assert proc.returncode == 2
    assert "refusing to serve on 0.0.0.0" in proc.stderr and "--token" in proc.stderr and "Traceback" not in proc.stderr


def test_token_is_required_on_every_request(run):
    srv = UIServer([run], host="0.0.0.0", port=0, token="s3cret").start()
    try:
        url = f"http://127.0.0.1:{srv.port}/"
        for path in ("", "api/runs", "api/runs/0/nodes?since=0", "api/runs/0/nodes/1", "static/app.js"):
            status, _, body = get(url + path)
            assert status == 401 and b"needs its token" in body, path
        assert get(url + "api/runs", headers={"Authorization": "Bearer wrong"})[0] == 401
        assert get(url + "api/runs?token=wrong")[0] == 401
        assert get(url + "api/runs", headers={"Authorization": "Bearer s3cret"})[0] == 200
        status, headers, _ = get(url + "?token=s3cret")
        assert status == 200 and "dgm_ui_token=s3cret" in headers["set-cookie"] and "HttpOnly" in headers["set-cookie"]
        assert get(url + "api/runs", headers={"Cookie": "dgm_ui_token=s3cret"})[0] == 200
    finally:
        srv.stop()


def test_loopback_server_answers_loopback_host_names_only(server):
    assert get(server.url + "api/runs", headers={"Host": f"localhost:{server.port}"})[0] == 200
    status, _, body = get(server.url + "api/runs", headers={"Host": "evil.example"})
    assert status == 403 and b"loopback" in body


# ---- dgm plot, dgm archive export --format html -----------------------------------------------------


def test_plot_writes_pngs_to_the_current_directory_by_default(run, tmp_path):
    out = tmp_path / "cwd"
    out.mkdir()
    (out / "ideas.png").write_bytes(b"an earlier run's chart")
    proc = subprocess.run([*DGM, "plot", str(run)], cwd=out, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert not (out / "ideas.png").exists()  # this run has no ideas: no chart of another run's beside its own
    for name in ("progress.png", "yield.png", "cost.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, name
    proc = subprocess.run([*DGM, "plot", str(run), "--out", str(tmp_path / "pngs")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and sorted(p.name for p in (tmp_path / "pngs").iterdir()) == ["cost.png", "progress.png", "yield.png"]
    with Archive.open(run) as arc:  # a prompt that carried an idea: its yield gets a chart of its own
        arc.add_node(parent_id=1, status="admitted", operator="diff", files={"main.py": "x = 4\n"}, message="i", score=0.8,
                     prompt="Idea: grow each radius.", idea="grow each radius.", fm_model="m")
    proc = subprocess.run([*DGM, "plot", str(run), "--out", str(tmp_path / "pngs")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and (tmp_path / "pngs" / "ideas.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_html_export_is_one_self_contained_file(run):
    proc = subprocess.run([*DGM, "archive", "export", str(run), "--format", "html"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    page = proc.stdout
    assert page.startswith("<!doctype html>")
    assert "<script src=" not in page and "<link " not in page  # every asset inline
    start = page.index("window.DGM_DATA=") + len("window.DGM_DATA=")
    data = json.loads(page[start : page.index(";</script>", start)])
    run0 = data["runs"][0]
    assert data["static"] is True and run0["nodes"]["total"] == 5
    assert "+x = 2" in run0["details"]["1"]["diff"] and run0["details"]["4"]["node"]["prompt"] == "TRANSCRIPT"


def test_synthetic_runs_are_consistent_archives(tmp_path):
    d = synthetic.build(tmp_path / "syn", 200, seed_value=3)
    with Archive.open(d, readonly=True) as arc:
        assert arc.check() == []
        counts = Ledger(arc.nodes()).summary()["counts"]
    assert sum(counts.values()) == 200 and all(counts[s] for s in ("admitted", "rejected", "invalid", "failed"))


def test_dgm_ui_command_serves_until_interrupted(run):
    import re
    import signal

    proc = subprocess.Popen([*DGM, "ui", str(run), "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        m = re.search(r"at (http://127\.0\.0\.1:\d+/)", line)
        assert m and "1 run(s), 5 nodes" in line, line
        url = m[1]
        page = _poll_until(url + "api/runs/0/nodes", 0, lambda p: p["loading"] is None)
        assert page["total"] == 5
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) in (0, 130)
    finally:
        if proc.poll() is None:
            proc.kill()
