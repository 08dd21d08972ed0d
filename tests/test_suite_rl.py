"""The rl_objective suite: environments and metric helpers with exact values, reference orderings,
and the cheats and faults an objective can commit, each driven through the real pipeline and sandbox."""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from evaluators import registry
from evaluators.api import CandidateInvalid
from evaluators.pipeline import evaluate
from evaluators.rl_objective import RLObjectiveEvaluator, core, suite
from evaluators.rl_objective.evaluator import build_runs, load_checkpoint, summarise
from evaluators.rl_objective.metrics import mean_std, normalise, optimal_return
from sandboxes.base import Sandbox
from sandboxes.factory import make_sandbox

HERE = Path(__file__).resolve().parents[1] / "evaluators" / "rl_objective"
SEED, VANILLA, RANDOM = HERE / "seed", HERE / "reference" / "vanilla_pg", HERE / "reference" / "random"
SEED_SOURCE = (SEED / "objective.py").read_text()


# -- metric helpers --------------------------------------------------------------------------------
def test_normalise_maps_random_to_0_and_reference_to_1():
    assert normalise(50.0, 50.0, 450.0) == 0.0
    assert normalise(450.0, 50.0, 450.0) == 1.0
    assert normalise(250.0, 50.0, 450.0) == 0.5
    assert normalise(10.0, 50.0, 450.0) == -0.1
    with pytest.raises(ValueError, match="not above"):
        normalise(1.0, 2.0, 2.0)
    with pytest.raises(ValueError, match="non-finite"):
        normalise(math.nan, 0.0, 1.0)


def test_mean_std_is_sample_std():
    assert mean_std([1.0, 2.0, 3.0, 4.0]) == (2.5, math.sqrt(5.0 / 3.0))
    assert mean_std([7.0]) == (7.0, 0.0)


def test_optimal_returns():
    assert optimal_return({"kind": "cartpole"}) == 500.0
    assert optimal_return({"kind": "cartpole", "max_steps": 200}) == 200.0
    assert optimal_return({"kind": "bandit", "means": [0.2, 0.9, 0.5]}) == 0.9
    # public maze: down the left column to row 4, along row 4, one step down: 4 + 5 + 1 moves
    assert core.grid_shortest_path(6, suite.GRID_WALLS) == 10
    assert optimal_return(suite.PUBLIC_ENVS["grid"]) == 1.0 - 0.01 * 10
    assert core.grid_shortest_path(3, [[0, 1], [1, 1], [2, 1]]) is None


def test_summarise_averages_public_envs_per_seed_and_keeps_heldout_private():
    per_run = [
        {"name": "cartpole", "kind": "cartpole", "returns": [100.0, 300.0], "random": 20.0, "reference": 300.0, "norm": [0.5, 1.0]},
        {"name": "bandit", "kind": "bandit", "returns": [0.6, 0.7], "random": 0.5, "reference": 0.7, "norm": [0.5, 0.0]},
        {"name": None, "kind": "grid", "returns": [0.5, 0.7], "random": -1.0, "reference": 0.9, "norm": [0.25, 0.75]},
    ]
    out = summarise(per_run)
    # per-seed means over public envs: (0.5 + 0.5) / 2 = 0.5 and (1.0 + 0.0) / 2 = 0.5
    assert out.score == 0.5
    assert out.metrics["norm_return_std"] == 0.0
    assert out.metrics["cartpole_norm"] == 0.75 and out.metrics["bandit_norm"] == 0.25
    assert out.metrics["cartpole_return"] == 200.0
    assert out.metrics["heldout_frac_optimal"] == 0.5 and out.metrics["heldout_grid"] == 0.5
    assert out.metrics["heldout_frac_std"] == math.sqrt(0.125)
    assert "grid" not in out.feedback and "held" not in out.feedback


# -- environments ----------------------------------------------------------------------------------
def test_cartpole_step_matches_the_classic_equations():
    env = core.CartPole(1, 2, torch.Generator().manual_seed(0))
    env.reset()
    env.state = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [0.01, -0.02, 0.03, 0.04]]])
    obs, reward, done = env.step(torch.tensor([[1, 0]]))
    for i, (x, x_dot, th, th_dot) in enumerate([(0.0, 0.0, 0.0, 0.0), (0.01, -0.02, 0.03, 0.04)]):
        force = 10.0 if i == 0 else -10.0
        temp = (force + 0.05 * th_dot**2 * math.sin(th)) / 1.1
        th_acc = (9.8 * math.sin(th) - math.cos(th) * temp) / (0.5 * (4 / 3 - 0.1 * math.cos(th) ** 2 / 1.1))
        x_acc = temp - 0.05 * th_acc * math.cos(th) / 1.1
        want = [x + 0.02 * x_dot, x_dot + 0.02 * x_acc, th + 0.02 * th_dot, th_dot + 0.02 * th_acc]
        assert obs[0, i].tolist() == pytest.approx(want, abs=1e-6)
    assert reward.tolist() == [[1.0, 1.0]] and done.tolist() == [[False, False]]


def test_cartpole_ends_when_the_pole_falls_and_resets():
    env = core.CartPole(1, 1, torch.Generator().manual_seed(0))
    env.reset()
    env.state = torch.tensor([[[0.0, 0.0, 0.25, 0.0]]])  # already past 12 degrees
    obs, _, done = env.step(torch.tensor([[0]]))
    assert done.item() and obs.abs().max().item() <= 0.05


def test_grid_walls_block_and_goal_pays():
    env = core.Grid(1, 1, torch.Generator(), n=3, walls=[[0, 1]])
    env.reset()
    _, reward, done = env.step(torch.tensor([[3]]))  # right: into the wall, stays at (0, 0)
    assert env.pos.item() == 0 and reward.item() == pytest.approx(-0.01) and not done.item()
    for action in (1, 1, 3):  # down, down, right
        env.step(torch.tensor([[action]]))
    _, reward, done = env.step(torch.tensor([[3]]))  # right onto the goal (2, 2)
    assert reward.item() == pytest.approx(0.99) and done.item() and env.pos.item() == 0


def test_bandit_returns_are_exact_expectations():
    spec = {"kind": "bandit", "means": [0.1, 0.4, 0.7, 0.2]}
    params = core.init_params(1, 4, [0, 1])
    params["pi.w2"].zero_()
    params["pi.b2"].zero_()  # uniform policy
    returns = core.episode_returns(spec, params, 3, seed=0)
    assert returns.shape == (2, 3) and returns.flatten().tolist() == pytest.approx([0.35] * 6)
    params["pi.b2"][1, 0, 2] = 50.0  # seed 1 always pulls arm 2
    assert core.episode_returns(spec, params, 1, seed=0)[:, 0].tolist() == pytest.approx([0.35, 0.7])


def test_heldout_draws_are_deterministic_solvable_and_on_the_update_grid():
    a, b = suite.draw_heldout(3, 2), suite.draw_heldout(3, 2)
    assert a == b and a != suite.draw_heldout(4, 2)
    assert [spec["kind"] for spec, _ in a] == ["cartpole", "cartpole", "bandit", "bandit", "grid", "grid"]
    for spec, budget in a:
        per_update = suite.ROLLOUT[spec["kind"]]["num_envs"] * suite.ROLLOUT[spec["kind"]]["num_steps"]
        assert budget % per_update == 0 and budget > 0
        if spec["kind"] == "grid":
            assert core.grid_shortest_path(spec["n"], spec["walls"], spec["goal"]) >= spec["n"]
            assert spec not in suite.PUBLIC_ENVS.values()


def test_training_seeds_and_eval_material_depend_on_the_evaluation_seed():
    r0, r1 = build_runs("small", suite.PLANS["small"], 0), build_runs("small", suite.PLANS["small"], 1)
    assert [r["public"] for r in r0] == ["cartpole", "bandit", "grid", None, None, None]
    assert r0[0]["seeds"] != r1[0]["seeds"] and r0[3]["env"] != r1[3]["env"]
    assert all(r["public"] is not None for r in build_runs("smoke", suite.PLANS["smoke"], 0))


# -- checkpoints -----------------------------------------------------------------------------------
def _run_spec(seeds=1):
    return {"id": "r0", "env": {"kind": "bandit", "means": [0.5, 0.6]}, "seeds": list(range(seeds))}


def _save(path, params):
    np.savez(path, **{k: v.numpy() for k, v in params.items()})


def test_checkpoint_loader_checks_shapes_finiteness_and_links(tmp_path):
    params = core.init_params(1, 2, [0])
    _save(tmp_path / "ok.npz", params)
    assert set(load_checkpoint(tmp_path / "ok.npz", _run_spec())) == set(params)
    with pytest.raises(CandidateInvalid, match="expected"):
        load_checkpoint(tmp_path / "ok.npz", _run_spec(seeds=2))
    params["v.b1"][0, 0, 3] = math.nan
    _save(tmp_path / "nan.npz", params)
    with pytest.raises(CandidateInvalid, match="^diverged: policy weights v.b1"):
        load_checkpoint(tmp_path / "nan.npz", _run_spec())
    os.symlink(tmp_path / "ok.npz", tmp_path / "link.npz")
    with pytest.raises(CandidateInvalid, match="link.npz.* is a symlink: refused"):
        load_checkpoint(tmp_path / "link.npz", _run_spec())
    (tmp_path / "pickle.npz").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(CandidateInvalid, match="not a numpy"):
        load_checkpoint(tmp_path / "pickle.npz", _run_spec())


# -- through the pipeline and the real sandbox -------------------------------------------------------
def _agent(tmp_path: Path, source: str, name: str = "cand") -> Path:
    d = tmp_path / name
    shutil.copytree(SEED, d)
    (d / "objective.py").write_text(textwrap.dedent(source))
    return d


def _eval(agent: Path, stage: str, seed: int = 0, sandbox: Sandbox | None = None, **options):
    ev = RLObjectiveEvaluator(**options)
    return evaluate(ev, agent, sandbox or make_sandbox("auto"), seed=seed, stages=[stage])


@pytest.fixture
def cartpole_only(monkeypatch):
    """``small`` shrunk to the calibrated CartPole budget, 3 seeds, no held-out envs (~4 s)."""
    monkeypatch.setitem(suite.PLANS, "small", suite.Plan(budgets={"cartpole": 65536}, seeds=3))


def test_registered_and_well_formed():
    assert registry.problems(registry.load_class("rl_objective")) == []


def test_seed_ppo_is_far_above_random_on_cartpole(cartpole_only):
    res = _eval(SEED, "small")
    stage = res.stages[0]
    assert stage.valid, stage.error
    assert stage.public["cartpole_return"] > 150  # a uniformly random policy gets ~22
    assert 0.4 < stage.score < 1.6 and stage.score == stage.public["cartpole_norm"]
    assert "cartpole: return" in stage.feedback


def test_reference_orderings_random_zero_vanilla_distinct(cartpole_only):
    rand = _eval(RANDOM, "small").stages[0]
    assert rand.valid and abs(rand.public["cartpole_norm"]) < 0.1 and rand.public["cartpole_return"] < 30
    vanilla = _eval(VANILLA, "small").stages[0]
    assert vanilla.valid and vanilla.public["cartpole_return"] > 5 * rand.public["cartpole_return"]
    seed = _eval(SEED, "small").stages[0]
    assert vanilla.public["cartpole_return"] != seed.public["cartpole_return"]


def test_nan_objective_is_invalid_with_diverged(tmp_path):
    agent = _agent(tmp_path, """
        def objective(ratio, advantage, log_ratio, entropy, lifetime_fraction):
            return ratio * float("nan")
    """)
    res = _eval(agent, "smoke")
    assert not res.stages[0].valid
    assert res.error.startswith("stage smoke: diverged: the loss became non-finite at update 1/")


def test_objective_with_the_wrong_shape_is_told_so(tmp_path):
    agent = _agent(tmp_path, """
        def objective(ratio, advantage, log_ratio, entropy, lifetime_fraction):
            return -(ratio * advantage).mean()
    """)
    res = _eval(agent, "smoke")
    assert not res.stages[0].valid and "expected a tensor of shape (1, 512)" in res.error


def test_static_guard_rejects_file_and_frame_access(tmp_path):
    agent = _agent(tmp_path, "import os\nimport sys\n" + SEED_SOURCE + "\nF = sys._getframe\n")
    res = _eval(agent, "smoke")
    assert res.error.startswith("stage smoke: rejected before running: objective.py:1: import of os is not allowed")
    assert "attribute ._getframe" in res.error


class SpySandbox(Sandbox):
    """The real sandbox, plus a copy of every file left in the work directory (read by the test)."""

    name = "spy"

    def __init__(self):
        self.inner, self.files = make_sandbox("auto"), {}

    def run(self, argv, workdir, limits, env=None, ro_paths=(), **kw):
        result = self.inner.run(argv, workdir, limits, env=env, ro_paths=ro_paths, **kw)
        self.files = {p.name: p.read_bytes() for p in Path(workdir).iterdir() if p.is_file()}
        return result


LISTING_OBJECTIVE = """
    import os, json
    found = sorted(os.listdir("."))
    config = json.load(open("_dgm_config.json"))
    raise RuntimeError("LISTING " + json.dumps([found, [r["env"]["kind"] for r in config["runs"]]]))
"""


def test_candidate_finds_no_evaluation_material_in_its_workdir(tmp_path):
    agent = _agent(tmp_path, LISTING_OBJECTIVE)
    for stage, kinds in (("smoke", ["cartpole", "bandit"]), ("small", ["cartpole", "bandit", "grid"] * 2)):
        spy = SpySandbox()
        res = _eval(agent, stage, seed=11, sandbox=spy, static_guard=False)
        listing = json.loads(res.error.rsplit("LISTING ", 1)[1].splitlines()[0])
        # the evaluator's trusted files and the agent's own, nothing else
        agent_files = [p.name for p in agent.iterdir() if p.is_file()]
        assert {"agent.toml", "objective.py"} <= set(agent_files)
        assert listing == [sorted(["_dgm_config.json", "_dgm_core.py", "_dgm_harness.py", "_dgm_runtime.py", *agent_files]), kinds]
        # the evaluation seeds and the reference returns live only in the evaluator
        runs = build_runs(stage, suite.PLANS[stage], 11)
        eval_seeds = [str(random.Random(f"rl_objective/eval/11/{stage}/{r['id']}").getrandbits(31)) for r in runs]
        blob = b"".join(spy.files.values()).decode()
        assert not any(s in blob for s in eval_seeds)
        config = spy.files["_dgm_config.json"].decode()
        reference = json.loads((HERE / "reference_returns.json").read_text())
        assert not any(str(v["ppo"]) in config for v in reference.values())


FORGER = SEED_SOURCE + '''
import atexit, glob, json, os

for name in ("score.json", "result.json", "metrics.json", "reference_returns.json"):
    with open(name, "w") as f:
        json.dump({"score": 1e9, "norm_return": 1e9, "cartpole_return": 500.0, "ppo": 1e-9}, f)
'''

OVERWRITER = SEED_SOURCE + '''
import atexit, glob
import numpy as np

def _swap():  # replace the trained policy by an all-zero (uniform) one after training
    for path in glob.glob("ckpt_*.npz"):
        with np.load(path) as d:
            zeros = {k: np.zeros_like(d[k]) for k in d.files}
        np.savez(path, **zeros)

atexit.register(_swap)
'''


def test_fake_score_files_change_nothing(tmp_path):
    honest = _eval(SEED, "smoke", seed=5).stages[0]
    forged = _eval(_agent(tmp_path, FORGER), "smoke", seed=5, static_guard=False).stages[0]
    assert forged.valid and forged.score == honest.score and forged.public == honest.public


def test_swapped_checkpoint_is_scored_as_what_it_is(tmp_path):
    res = _eval(_agent(tmp_path, OVERWRITER), "smoke", seed=5, static_guard=False).stages[0]
    assert res.valid and abs(res.public["cartpole_norm"]) < 0.1 and abs(res.public["bandit_norm"]) < 1e-5


def test_objective_that_ignores_the_policy_trains_only_the_critic(tmp_path):
    agent = _agent(tmp_path, """
        import torch

        def objective(ratio, advantage, log_ratio, entropy, lifetime_fraction):
            return torch.zeros_like(ratio)  # no gradient reaches the policy
    """)
    stage = _eval(agent, "smoke").stages[0]
    assert stage.valid, stage.error
    # the policy stays at its near-uniform initialisation (policy-head gain 0.01)
    assert abs(stage.public["bandit_norm"]) < 0.01 and abs(stage.public["cartpole_norm"]) < 0.1
