"""The dgm command line, end to end: init → run (over real HTTP to a scripted server) → inspect,
and kill -9 in mid-campaign followed by a resume."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from archive import Archive, NodeStatus
from tests.campaign_helpers import distinct_grids, write_config
from tests.fm_server import ScriptedFMServer

DGM = [sys.executable, "-m", "orchestrator.cli"]


def dgm(*args, check=True, env=None, timeout=120):
    proc = subprocess.run([*DGM, *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"dgm {args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def env(monkeypatch):
    return {**os.environ, "DGM_TEST_KEY": "sk-test"}


def test_init_run_and_inspect(tmp_path, env):
    out = dgm("init", tmp_path / "camp", "--template", "circle_packing", env=env)
    assert "campaign.toml" in out.stdout
    assert (tmp_path / "camp" / "seed" / "packing.py").is_file()
    # point the generated config's FM at the scripted server (a real user would use provider = "openai")
    with ScriptedFMServer(responder=distinct_grids(prompt_tokens=50, completion_tokens=20)) as srv:
        cfg = write_config(tmp_path / "camp", srv.base_url, iterations=3)
        res = dgm("run", cfg, "--no-live", env=env)
    assert "reached 3 iterations" in res.stdout
    run_dir = tmp_path / "camp" / "run"  # default: run/ beside the campaign file

    status = json.loads(dgm("status", run_dir, "--json").stdout)
    assert status["iterations"] == 3 and status["counts"]["admitted"] == 4
    assert status["best"]["score"] == pytest.approx(2.54 / 2.635)
    assert status["tokens"] == 3 * 70

    nodes = json.loads(dgm("archive", "list", run_dir, "--json").stdout)
    assert [n["id"] for n in nodes] == [0, 1, 2, 3]
    assert {"id", "parent_id", "status", "stages", "public_metrics", "private_metrics", "score", "commit",
            "fm_model", "prompt_tokens", "completion_tokens", "cost_usd", "timings", "error"} <= set(nodes[1])
    shown = json.loads(dgm("archive", "show", run_dir, "1", "--json").stdout)
    assert "Use a 5x5 grid." in shown["response"] and "## Task" in shown["prompt"]

    lineage = json.loads(dgm("archive", "lineage", run_dir, "best", "--json").stdout)
    assert lineage[0]["id"] == 0 and lineage[-1]["score"] == pytest.approx(2.54 / 2.635)
    diff = dgm("archive", "diff", run_dir, "1").stdout
    assert "+    xs = (np.arange(5) + 0.5) / 5" in diff
    dot = dgm("archive", "export", run_dir, "--format", "dot").stdout
    assert dot.startswith("digraph") and "n0 -> n1;" in dot
    exported = json.loads(dgm("archive", "export", run_dir, "--format", "json").stdout)
    assert len(exported["nodes"]) == 4
    assert "ok: 4 nodes" in dgm("archive", "check", run_dir).stdout

    # checkout: the best node's files, ready for `dgm eval`; a non-empty destination is refused
    out = dgm("archive", "checkout", run_dir, "best", tmp_path / "best").stdout
    best_id = lineage[-1]["id"]
    assert f"node {best_id} " in out
    with Archive.open(run_dir, readonly=True) as arc:
        assert {p: (tmp_path / "best" / p).read_bytes() for p in arc.read_files(best_id)} == arc.read_files(best_id)
    res = dgm("archive", "checkout", run_dir, "0", tmp_path / "best", check=False)
    assert res.returncode == 1 and "not empty" in res.stderr and "Traceback" not in res.stderr


def test_clear_errors_not_tracebacks(tmp_path, env):
    bad = tmp_path / "bad.toml"
    bad.write_text('[evaluator]\nname = "circle_packing"\n[fm]\ntimeout_s = -3\n')
    res = dgm("run", bad, check=False, env=env)
    assert res.returncode == 2
    assert f"{bad}: [fm].timeout_s = -3" in res.stderr and "Traceback" not in res.stderr
    res = dgm("status", tmp_path, check=False)
    assert res.returncode == 2 and "is not a dgm run directory" in res.stderr
    cfg = tmp_path / "c.toml"
    cfg.write_text('[evaluator]\nname = "nope"\n')
    res = dgm("run", cfg, check=False, env=env)
    assert res.returncode == 2 and "no evaluator named 'nope'" in res.stderr
    # a bad policy name is caught before the model starts
    cfg.write_text('[evaluator]\nname = "circle_packing"\n[selection]\nper_operator = { fit = "bset" }\n')
    res = dgm("run", cfg, check=False, env=env)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert f"{cfg}: [selection].per_operator.fit = 'bset': unknown selection method 'bset'" in res.stderr
    assert "FM ready" not in res.stdout


def test_kill_9_mid_campaign_then_resume(tmp_path, env):
    # six answers come at once; later ones are held until the kill, so attempts are in flight then
    # and the run cannot have finished before it
    grids, served, release = distinct_grids(), itertools.count(), threading.Event()

    def respond(request):
        if next(served) >= 6:
            release.wait(120)
        return grids(request)

    with ScriptedFMServer(responder=respond) as srv:
        cfg = write_config(tmp_path, srv.base_url, iterations=12)
        proc = subprocess.Popen([*DGM, "run", str(cfg), "--no-live"], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        run_dir = tmp_path / "run"
        deadline = time.time() + 60
        while time.time() < deadline:  # wait until a few children are recorded
            try:
                with Archive.open(run_dir, readonly=True) as a:
                    if a.count() >= 5:
                        break
            except Exception:
                pass
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        release.set()
        with Archive.open(run_dir, readonly=True) as a:
            before = {n.id: n for n in a.nodes()}
        admitted_before = {i for i, n in before.items() if n.status == NodeStatus.ADMITTED}
        assert 5 <= len(before) < 13

        res = dgm("run", cfg, "--no-live", env=env)
        assert "reached 12 iterations" in res.stdout

    assert "ok: 13 nodes" in dgm("archive", "check", run_dir).stdout
    with Archive.open(run_dir, readonly=True) as a:
        after = {n.id: n for n in a.nodes()}
    assert sorted(after) == list(range(13))  # 12 children + seed: nothing duplicated, nothing miscounted
    assert sum(n.parent_id is None for n in after.values()) == 1
    assert admitted_before <= {i for i, n in after.items() if n.status == NodeStatus.ADMITTED}
    assert all(n.status.finished for n in after.values())  # in-flight nodes were re-evaluated
    for i, n in before.items():
        assert after[i].commit == n.commit


def test_a_campaign_file_written_for_a_script_keeps_its_random_seed_and_operator_mix(tmp_path):
    """bench_efficacy runs random seeds 1, 2, ... with its own mix: the kept campaign file must say
    so, or `dgm run` (resume) and `dgm remeasure` on the run work under random seed 0."""
    from orchestrator.cli.init_cmd import write_campaign
    from orchestrator.config import load_config

    cfg = load_config(write_campaign(tmp_path / "c", "optimizer", random_seed=2, operators={"diff": 0.5, "fit": 0.5},
                                     mutation={"idea_choice": "yield", "exemplars": 1, "run_repairs": 3,
                                               "ideas": ["Try a momentum term."]}))
    assert cfg.campaign.random_seed == 2 and cfg.mutation.operators == {"diff": 0.5, "fit": 0.5}
    assert (cfg.mutation.idea_choice, cfg.mutation.exemplars, cfg.mutation.run_repairs) == ("yield", 1, 3)
    assert cfg.mutation.ideas == ["Try a momentum term."]
    default = load_config(write_campaign(tmp_path / "d", "optimizer"))
    assert default.campaign.random_seed == 0 and default.mutation.operators["fit"] == 0.25
    assert default.mutation.idea_choice == "uniform" and '# idea_choice = "uniform"' in (tmp_path / "d" / "campaign.toml").read_text()
    for bad, words in [({"run_repair": 2}, "[mutation] run_repair: no such key"), ({"operators": {"diff": 1.0}}, "operators"),
                       ({"fit": {"trials": 8}}, "[mutation] fit = {'trials': 8}")]:
        with pytest.raises(ValueError, match=re.escape(words)):
            write_campaign(tmp_path / "bad", "optimizer", mutation=bad)
        assert not (tmp_path / "bad").exists()  # nothing written


@pytest.mark.parametrize("template", ["circle_packing", "continual", "fewshot", "rl_objective", "optimizer"])
def test_init_templates_give_loadable_campaigns(tmp_path, template):
    from evaluators.agent import load_manifest
    from orchestrator.cli.init_cmd import write_campaign
    from orchestrator.config import load_config

    cfg = load_config(write_campaign(tmp_path / template, template))
    assert cfg.evaluator.name == template
    assert cfg.campaign.seed_agent == (tmp_path / template / "seed").resolve()
    manifest = load_manifest(cfg.campaign.seed_agent)
    assert manifest.editable
    if template != "circle_packing":
        assert cfg.evaluator.stages == ["smoke", "small"]  # "full" is sized for a GPU
