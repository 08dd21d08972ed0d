"""The optimizer suite: metric helpers and tasks with exact values, the tuned-Adam pairing, reference
orderings, and the cheats and faults an update rule can commit, through the real pipeline and sandbox."""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from evaluators import registry
from evaluators.api import CandidateInvalid
from evaluators import guard
from evaluators.optimizer import OptimizerEvaluator, suite, tasks
from evaluators.optimizer.evaluator import build_tasks, load_params, task_data
from evaluators.optimizer.metrics import aggregate, choose_lr, log_ratio
from evaluators.pipeline import evaluate
from sandboxes.base import Sandbox
from sandboxes.factory import make_sandbox

HERE = Path(__file__).resolve().parents[1] / "evaluators" / "optimizer"
SEED, SGD = HERE / "seed", HERE / "reference" / "sgd"
SEED_SOURCE = (SEED / "update_rule.py").read_text()


# -- metric helpers --------------------------------------------------------------------------------
def test_log_ratio_floor_and_clip():
    assert log_ratio(2.0, 1.0, 0.0) == pytest.approx(math.log(2.0), abs=1e-12)
    assert log_ratio(1.0, 2.0, 0.0) == pytest.approx(-math.log(2.0), abs=1e-12)
    assert log_ratio(0.0, 0.0, 1.0) == 0.0  # both solved: parity
    assert log_ratio(1e-3, 0.0, 1.0) == pytest.approx(math.log(11.0))  # eps = 1e-4 x initial loss 1.0
    assert log_ratio(100.0, 1.0, 0.0) == 3.0 and log_ratio(1.0, 100.0, 0.0) == -3.0
    with pytest.raises(ValueError, match="finite"):
        log_ratio(math.inf, 1.0, 1.0)


def test_choose_lr_takes_lowest_mean_log_loss_first_on_ties_and_skips_nan():
    assert choose_lr([[0.0, 0.0], [-1.0, -1.0], [-2.0, 0.0]]) == 1
    assert choose_lr([[math.nan, -5.0], [1.0, 1.0]]) == 1
    with pytest.raises(ValueError, match="diverged"):
        choose_lr([[math.nan], [math.nan]])


def test_aggregate_means_over_tasks_per_seed_then_spreads_over_seeds():
    assert aggregate([[1.0, 2.0], [3.0, 4.0]]) == (2.5, math.sqrt(0.5))
    assert aggregate([[0.5]]) == (0.5, 0.0)


# -- tasks -----------------------------------------------------------------------------------------
def test_rosenbrock_gradient_matches_autograd_and_minimum_moves_with_seed():
    spec = {"kind": "rosenbrock", "dim": 4, "steps": 1}
    x_star = tasks.optimum(spec, [3, 4])
    assert not torch.equal(x_star[0], x_star[1])
    assert tasks.heldout_loss(spec, {}, {"x": x_star}, [3, 4]).tolist() == [0.0, 0.0]
    x = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(tasks.rosenbrock_loss(x, x_star.double()).sum(), x)
    assert torch.allclose(g, tasks.rosenbrock_grad(x.detach(), x_star.double()), atol=1e-9)
    start = tasks.init_params(spec, {}, [3])["x"] - x_star[:1] + 1.0  # classic start, jittered by 0.1 x N(0, 1)
    assert (start - torch.tensor([-1.2, 1.0, -1.2, 1.0])).abs().max() < 0.5


def test_quadratic_is_zero_at_its_optimum_and_half_sum_of_eigenvalues_one_unit_away():
    spec = {"kind": "quadratic", "dim": 3, "cond": 100.0, "noise": 0.0, "rotate": False, "steps": 1}
    train, held = tasks.make_task_data(spec, 0)
    assert held["eig"].tolist() == pytest.approx([0.01, 0.1, 1.0])
    x_star = tasks.optimum(spec, [9])
    assert tasks.heldout_loss(spec, held, {"x": x_star}, [9]).item() == 0.0
    assert tasks.heldout_loss(spec, held, {"x": x_star + 1.0}, [9]).item() == pytest.approx(0.555, rel=1e-6)


def test_mlp_data_split_is_disjoint_standardised_rotated_and_secret_dependent():
    spec = suite.PUBLIC_TASKS["digits"]
    (train, held), (train2, _) = tasks.make_task_data(spec, 1), tasks.make_task_data(spec, 2)
    assert (len(train["x"]), len(held["x"])) == (1797 - 539, 539)
    assert np.abs(train["x"].mean(0)).max() < 1e-4  # rotation of centred data stays centred
    assert not np.allclose(train["x"][:5], train2["x"][:5])
    rows = {r.tobytes() for r in train["x"]}
    assert not any(r.tobytes() in rows for r in held["x"])
    X, _ = tasks.load_dataset("digits")
    assert not np.isin(np.round(held["x"][:, :3], 4), np.round(X[:, :3], 4)).all()  # not the raw features


def test_hidden_tasks_are_deterministic_and_unseen():
    a = suite.draw_hidden(7, 6)
    assert a == suite.draw_hidden(7, 6) and a != suite.draw_hidden(8, 6)
    assert [t["kind"] for t in a] == ["mlp", "quadratic", "rosenbrock"] * 2
    assert not any(t in suite.PUBLIC_TASKS.values() for t in a)
    names = [t["name"] for t in build_tasks("small", suite.PLANS["small"], 7)]
    assert names == [*suite.PUBLIC_TASKS, None, None]


def test_guard_messages():
    assert guard.problems(SEED_SOURCE, "update_rule.py") == []
    found = guard.problems("import numpy as np\nfrom . import x\nx = open('f')\ny = torch.load\nz = t.__class__\n", "u.py")
    assert found == [
        "u.py:1: import of numpy is not allowed (allowed: __future__, abc, collections, dataclasses, enum, "
        "functools, itertools, math, operator, torch, typing)",
        "u.py:2: from . import x is not allowed (allowed: __future__, abc, collections, dataclasses, enum, "
        "functools, itertools, math, operator, torch, typing)",
        "u.py:3: open is not available to the component",
        "u.py:4: attribute .load is not available to the component",
        "u.py:5: attribute .__class__ is not available to the component",
    ]
    assert guard.problems("def f(:\n", "u.py") == ["u.py:1: syntax error: invalid syntax"]


def test_params_loader_checks_shapes_finiteness_and_links(tmp_path):
    task = {"spec": suite.PUBLIC_TASKS["wine"], "seeds": [1, 2]}
    params = tasks.init_params(task["spec"], {}, task["seeds"])
    np.savez(tmp_path / "ok.npz", **{k: v.numpy() for k, v in params.items()})
    assert set(load_params(tmp_path / "ok.npz", task)) == {"w0", "b0", "w1", "b1"}
    with pytest.raises(CandidateInvalid, match="expected"):
        load_params(tmp_path / "ok.npz", {**task, "seeds": [1]})
    params["w1"][1, 0, 0] = math.inf
    np.savez(tmp_path / "inf.npz", **{k: v.numpy() for k, v in params.items()})
    with pytest.raises(CandidateInvalid, match="^diverged: final parameters w1"):
        load_params(tmp_path / "inf.npz", task)
    os.symlink(tmp_path / "ok.npz", tmp_path / "link.npz")
    with pytest.raises(CandidateInvalid, match="link.npz.* is a symlink: refused"):
        load_params(tmp_path / "link.npz", task)


# -- through the pipeline and the real sandbox -------------------------------------------------------
def _agent(tmp_path: Path, source: str, name: str = "cand") -> Path:
    d = tmp_path / name
    shutil.copytree(SEED, d)
    (d / "update_rule.py").write_text(textwrap.dedent(source))
    return d


def _eval(agent: Path, stage: str, seed: int = 0, sandbox: Sandbox | None = None, **options):
    return evaluate(OptimizerEvaluator(**options), agent, sandbox or make_sandbox("auto"), seed=seed, stages=[stage])


@pytest.fixture
def no_hidden(monkeypatch):
    monkeypatch.setitem(suite.PLANS, "small", suite.Plan(seeds=3))


def test_registered_and_well_formed():
    assert registry.problems(registry.load_class("optimizer")) == []


def test_seed_is_adam_at_one_grid_point_so_it_is_near_but_not_above_tuned_adam(no_hidden):
    stage = _eval(SEED, "small").stages[0]
    assert stage.valid, stage.error
    assert 0.5 < stage.score <= 1.0 + 1e-12
    ratios = [stage.public[f"{name}_ratio"] for name in suite.PUBLIC_TASKS]
    assert all(r >= 1.0 - 1e-9 for r in ratios)
    # wherever the tuned rate is 0.01 the baseline run is the seed's run, number for number
    assert ratios.count(1.0) >= 1 and "(lr 0.01) → ratio 1.000" in stage.feedback


def test_sgd_is_far_worse_on_the_ill_conditioned_quadratic(no_hidden):
    stage = _eval(SGD, "small").stages[0]
    assert stage.valid, stage.error
    assert stage.public["quadratic_ratio"] > 10.0
    assert stage.score < 0.2 and not stage.passed_gate


def test_nan_rule_is_invalid_with_diverged(tmp_path):
    agent = _agent(tmp_path, """
        def init_state(param):
            return {}

        def update(param, grad, state, step, total_steps):
            return param * float("nan"), state
    """)
    res = _eval(agent, "smoke")
    assert not res.stages[0].valid
    assert res.error == "stage smoke: diverged: the training loss became non-finite at step 2/60"


def test_rule_that_cannot_run_under_vmap_falls_back_to_a_loop(tmp_path):
    agent = _agent(tmp_path, SEED_SOURCE.replace(
        "    m = BETA1", "    if float(grad.abs().max()) > 1e9:\n        grad = grad * 0\n    m = BETA1"))
    forged, honest = _eval(agent, "smoke", seed=3).stages[0], _eval(SEED, "smoke", seed=3).stages[0]
    assert forged.valid, forged.error
    assert forged.score == pytest.approx(honest.score, rel=1e-4)


def test_static_guard_rejects_file_access(tmp_path):
    res = _eval(_agent(tmp_path, "import os\n" + SEED_SOURCE), "smoke")
    assert res.error.startswith("stage smoke: rejected before running: update_rule.py:1: import of os is not allowed")


class SpySandbox(Sandbox):
    """The real sandbox, plus a copy of every file left in the work directory (read by the test)."""

    name = "spy"

    def __init__(self):
        self.inner, self.files = make_sandbox("auto"), {}

    def run(self, argv, workdir, limits, env=None, ro_paths=(), **kw):
        result = self.inner.run(argv, workdir, limits, env=env, ro_paths=ro_paths, **kw)
        self.files = {p.name: p.read_bytes() for p in Path(workdir).iterdir() if p.is_file()}
        return result


SNOOPER = """
    import glob, json
    import numpy as np
    found = {p: sorted(np.load(p).files) for p in sorted(glob.glob("*.npz"))}
    found["other"] = sorted(p for p in glob.glob("*") if not p.endswith(".npz"))
    raise RuntimeError("SNOOP " + json.dumps(found))
"""


def test_candidate_finds_no_heldout_data_in_its_workdir(tmp_path):
    spy = SpySandbox()
    res = _eval(_agent(tmp_path, SNOOPER), "small", seed=4, sandbox=spy, static_guard=False)
    found = json.loads(res.error.rsplit("SNOOP ", 1)[1].splitlines()[0])
    # the evaluator's trusted files and the agent's own, nothing else
    agent_files = [p.name for p in SEED.iterdir() if p.is_file()]
    assert found["other"] == sorted(["_dgm_config.json", "_dgm_harness.py", "_dgm_runtime.py", "_dgm_tasks.py", *agent_files])
    assert {"agent.toml", "update_rule.py"} <= set(agent_files)
    for tid in ("t0", "t1", "t2"):  # the three MLP tasks: training arrays only
        assert found[f"_dgm_task_{tid}.npz"] == ["x", "y"]
    for t in build_tasks("small", suite.PLANS["small"], 4):
        train, held = task_data(t)
        with np.load(io.BytesIO(spy.files[f"_dgm_task_{t['id']}.npz"])) as saved:
            if t["spec"]["kind"] == "mlp":
                assert len(saved["x"]) == len(train["x"])
                train_rows = {r.tobytes() for r in saved["x"]}
                assert not any(r.tobytes() in train_rows for r in held["x"])
    config = json.loads(spy.files["_dgm_config.json"])
    assert all("secret" not in t for t in config["tasks"])


FORGER = SEED_SOURCE + '''
import atexit, json

for name in ("score.json", "result.json", "metrics.json"):
    with open(name, "w") as f:
        json.dump({"score": 1e9, "rel_adam": 20.0, "log_ratio": -3.0, "digits_loss": 0.0}, f)
'''


def test_fake_score_files_change_nothing(tmp_path):
    honest = _eval(SEED, "smoke", seed=6).stages[0]
    forged = _eval(_agent(tmp_path, FORGER), "smoke", seed=6, static_guard=False).stages[0]
    assert forged.valid and forged.score == honest.score and forged.public == honest.public
