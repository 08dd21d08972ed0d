"""`dgm evaluators list` and `dgm eval` as a plugin author meets them: a broken plugin fails the
listing, and a candidate that a later stage finds invalid is reported invalid with that stage's reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.stage_plugin import LATER_STAGE_INVALID, agent, install


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    install(site)
    return {**os.environ, "PYTHONPATH": str(site)}


def dgm(env, *args):
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=120)


def test_a_broken_plugin_is_listed_with_its_fault_and_the_listing_fails(env):
    res = dgm(env, "evaluators", "list")
    assert res.returncode == 1
    assert "broken" in res.stdout and "BROKEN" in res.stdout and "dgm_no_such_module" in res.stdout
    assert "binpacking" in res.stdout and "circle_packing" in res.stdout  # the others are still listed
    listed = json.loads(dgm(env, "evaluators", "list", "--json").stdout)
    assert "error" in next(r for r in listed if r["name"] == "broken")


def test_the_listing_succeeds_when_every_plugin_loads():
    res = dgm(dict(os.environ), "evaluators", "list")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "BROKEN" not in res.stdout


def test_eval_reports_a_candidate_only_a_later_stage_rejects_as_invalid(env, tmp_path):
    candidate = agent(tmp_path / "agent", LATER_STAGE_INVALID)
    res = dgm(env, "eval", "--evaluator", "binpacking", candidate)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "valid: false" in res.stdout
    assert "error: stage full: choose_bin returned 5, but 0 bins are open" in res.stdout
    out = json.loads(dgm(env, "eval", "--evaluator", "binpacking", candidate, "--json").stdout)
    assert out["valid"] is False and out["complete"] is False and out["score"] is None
    assert out["error"] == "stage full: choose_bin returned 5, but 0 bins are open"
    assert [s["stage"] for s in out["stages"]] == ["smoke", "small", "full"]


def test_eval_of_a_gated_candidate_is_valid_without_a_score(env, tmp_path):
    candidate = agent(tmp_path / "agent", {"smoke": {"score": 0.9}, "small": {"score": 0.2}})
    res = dgm(env, "eval", "--evaluator", "binpacking", candidate, "--json")
    out = json.loads(res.stdout)
    assert res.returncode == 0 and out["valid"] and not out["complete"] and out["gated"] == "small" and out["score"] is None


def test_a_bad_option_names_the_evaluator_the_option_and_the_value(tmp_path):
    from evaluators.optimizer import OptimizerEvaluator

    res = dgm(dict(os.environ), "eval", "--evaluator", "optimizer", OptimizerEvaluator().seed_agent(), "--option", "timeout_s=-3")
    assert res.returncode != 0
    assert "evaluator 'optimizer': option 'timeout_s' = -3: must be > 0" in res.stderr and "Traceback" not in res.stderr
