"""Learned policy objectives (LPO): evolve the surrogate loss of a fixed PPO-style trainer.

Recipe per stage: write the training plan (public environments, seeds, held-out environments and
budgets drawn from the evaluation seed) → run the fixed trainer with the candidate's
``objective()`` in the sandbox; it saves only the final policy weights → load them here, outside
the sandbox, and roll them out on the evaluator's own environments with seeds the candidate never
saw → normalise: public environments between a uniformly random policy (0) and the PPO-clip
reference (1, calibrated once, ``reference_returns.json``); held-out environments between random
(0) and the best achievable return (1). Nothing the candidate writes besides weights is read.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from evaluators.api import CandidateRun, Evaluator, MetricSpec, Stage, StageOutcome, load_npz_artifact
from evaluators.harness_run import GuardedHarnessOptions, Harness
from evaluators.rl_objective import suite
from evaluators.rl_objective.metrics import mean_std, normalise, optimal_return
from evaluators.tensors import checked_tensors, one_thread
from sandboxes.base import Limits

HERE = Path(__file__).parent
HARNESS = Harness(HERE / "harness.py", support={"_dgm_core.py": HERE / "core.py"})
REFERENCE_FILE = HERE / "reference_returns.json"
MAX_CKPT_BYTES = 64 << 20

TASK = """Improve the POLICY OBJECTIVE of a fixed PPO-style reinforcement-learning trainer (learned
policy optimisation). objective.py defines
    objective(ratio, advantage, log_ratio, entropy, lifetime_fraction) -> per-sample loss
All arguments are float torch tensors of the same shape (seeds, minibatch); seeds are independent
training runs, so reduce over the last axis only, if at all. ratio = pi_new(a|s)/pi_old(a|s) for
the sampled action, log_ratio its exact log, advantage = GAE (gamma 0.99, lambda 0.95) normalised
per minibatch, entropy of pi_new(.|s), lifetime_fraction = share of the training budget already
spent, in [0, 1). Return a tensor of the same shape; the trainer minimises its mean (plus a fixed
value loss) with Adam over 4 epochs of 4 minibatches per rollout. Everything else (network, GAE,
Adam, gradient clipping, step budgets) is fixed. The trainer runs on CartPole, a 20-armed
Bernoulli bandit and a 6x6 grid maze, and on unseen environments and budgets. The evaluator rolls
out the trained policies itself: score = return normalised between a random policy (0) and PPO's
clipped objective (1), averaged over environments. A non-finite loss is invalid ("diverged").
Ideas: different clipping/drift functions of ratio or log_ratio, asymmetric treatment of positive
and negative advantages, schedules over lifetime_fraction, entropy terms that decay."""


class RLObjectiveEvaluator(Evaluator):
    name = "rl_objective"
    task = TASK
    stages = (
        Stage("smoke", limits=Limits(wall_s=60, cpu_s=60, memory_mb=2048, pids=64, file_mb=64),
              gate={"valid": 1.0}, description="1 seed, CartPole 16k steps + bandit 1k steps: finite weights"),
        Stage("small", limits=Limits(wall_s=300, cpu_s=300, memory_mb=3072, pids=64, file_mb=64),
              gate={"score": 0.75}, description="6 seeds on CartPole 64k, bandit 2k, grid 12k steps; 3 held-out envs x 2 seeds"),
        Stage("full", limits=Limits(wall_s=1800, cpu_s=1800, memory_mb=4096, pids=64, file_mb=64),
              description="16 seeds on the public envs; 9 held-out envs x 4 seeds"),
    )
    metrics = (
        MetricSpec("valid", 0.0, 1.0, description="1 when training finished with finite weights"),
        MetricSpec("norm_return", -10.0, 10.0, description="mean over public envs of (R - R_random) / (R_ppo - R_random)"),
        MetricSpec("norm_return_std", 0.0, 20.0, higher_is_better=False, description="spread across training seeds"),
        MetricSpec("cartpole_norm", -10.0, 10.0, description="CartPole normalised return"),
        MetricSpec("bandit_norm", -10.0, 10.0, description="bandit normalised return"),
        MetricSpec("grid_norm", -10.0, 10.0, description="grid-maze normalised return"),
        MetricSpec("cartpole_return", 0.0, 500.0, description="CartPole raw return (max 500)"),
        MetricSpec("bandit_return", 0.0, 1.0, description="bandit expected reward per pull"),
        MetricSpec("grid_return", -10.0, 1.0, description="grid-maze raw return"),
        MetricSpec("heldout_frac_optimal", -100.0, 1.001, public=False,
                   description="held-out envs: (R - R_random) / (R_optimal - R_random), mean over envs"),
        MetricSpec("heldout_frac_std", 0.0, 100.0, public=False, higher_is_better=False,
                   description="held-out: spread over (env, seed)"),
        MetricSpec("heldout_cartpole", -100.0, 1.001, public=False),
        MetricSpec("heldout_bandit", -100.0, 1.001, public=False),
        MetricSpec("heldout_grid", -100.0, 1.001, public=False),
    )

    Options = GuardedHarnessOptions

    def seed_agent(self) -> Path:
        return HERE / "seed"

    # ------------------------------------------------------------------------------------------
    def run_stage(self, stage: Stage, run: CandidateRun) -> StageOutcome:
        runs = build_runs(stage.name, suite.PLANS[stage.name], run.seed)
        config = {"threads": 1, "runs": [{k: r[k] for k in ("id", "env", "seeds", "env_seed", "budget", "hp")} for r in runs]}
        HARNESS.run(run, stage, self.options, lambda workdir: config, static_guard=self.options.static_guard)
        reference = json.loads(REFERENCE_FILE.read_text())
        per_run = [score_run(r, load_checkpoint(run.workdir / f"ckpt_{r['id']}.npz", r), reference, stage.name, run.seed)
                   for r in runs]
        return summarise(per_run)


def build_runs(stage: str, plan: suite.Plan, seed: int) -> list[dict]:
    """The training runs of a stage: public envs first, then held-out draws (evaluator-side fields too)."""
    rng = random.Random(f"rl_objective/train/{seed}/{stage}")
    entries = [(name, suite.PUBLIC_ENVS[name], budget, plan.seeds) for name, budget in plan.budgets.items()]
    if plan.heldout_per_kind:
        for spec, budget in suite.draw_heldout(seed, plan.heldout_per_kind, plan.heldout_kinds):
            entries.append((None, spec, budget, plan.heldout_seeds))
    runs = []
    for i, (name, spec, budget, n_seeds) in enumerate(entries):
        kind = spec["kind"]
        runs.append({
            "id": f"r{i}", "env": spec, "budget": int(budget), "public": name,
            "seeds": [rng.getrandbits(31) for _ in range(n_seeds)], "env_seed": rng.getrandbits(31),
            "hp": {**suite.TRAINER, **suite.ROLLOUT[kind]},
        })
    return runs


def reference_key(name: str, budget: int) -> str:
    """Key of a public environment's PPO-clip reference in reference_returns.json."""
    return f"{name}@{budget}"


def load_checkpoint(path: Path, run: dict) -> dict:
    """Read a saved policy without following links or unpickling; check names, shapes, finiteness."""
    from evaluators.rl_objective.core import make_env, param_shapes  # torch imported lazily

    arrays = load_npz_artifact(path.parent, path.name, MAX_CKPT_BYTES)
    import torch

    env = make_env(run["env"], 1, 1, torch.Generator(), "cpu")
    S = len(run["seeds"])
    want = {k: (S, *s) for k, s in param_shapes(env.obs_dim, env.n_actions).items()}
    return checked_tensors(arrays, want, name=f"checkpoint {path.name}", what="policy weights")


def score_run(run: dict, params: dict, reference: dict, stage: str, seed: int) -> dict:
    """Roll the saved policies out on the evaluator's own environment copies; normalise per seed."""
    from evaluators.rl_objective.core import episode_returns

    kind = run["env"]["kind"]
    eval_seed = random.Random(f"rl_objective/eval/{seed}/{stage}/{run['id']}").getrandbits(31)
    with one_thread():
        returns = episode_returns(run["env"], params, suite.EVAL_EPISODES[kind], eval_seed).mean(1).tolist()
        one = {k: v[:1] for k, v in params.items()}
        rand = episode_returns(run["env"], one, suite.RANDOM_EPISODES, eval_seed + 1, policy="random").mean().item()
    name = run["public"]
    if name is not None:
        ref = reference[reference_key(name, run["budget"])]["ppo"]
    else:
        ref = optimal_return(run["env"])
    return {"name": name, "kind": kind, "returns": returns, "random": rand, "reference": ref,
            "norm": [normalise(r, rand, ref) for r in returns]}


def summarise(per_run: list[dict]) -> StageOutcome:
    """Public score and metrics, private held-out metrics, public feedback words (pure)."""
    public = [r for r in per_run if r["name"] is not None]
    heldout = [r for r in per_run if r["name"] is None]
    metrics = {"valid": 1.0}
    n_seeds = len(public[0]["norm"])
    per_seed = [sum(r["norm"][s] for r in public) / len(public) for s in range(n_seeds)]
    score, spread = mean_std(per_seed)
    metrics["norm_return"], metrics["norm_return_std"] = score, spread
    words = []
    for r in public:
        norm, raw = mean_std(r["norm"])[0], mean_std(r["returns"])
        metrics[f"{r['name']}_norm"], metrics[f"{r['name']}_return"] = norm, raw[0]
        words.append(f"{r['name']}: return {raw[0]:.3g} ± {raw[1]:.2g} over {len(r['returns'])} seed(s) "
                     f"(random {r['random']:.3g}, PPO-clip reference {r['reference']:.3g}) → {norm:.3f}")
    if heldout:
        fracs = [f for r in heldout for f in r["norm"]]
        metrics["heldout_frac_optimal"] = sum(mean_std(r["norm"])[0] for r in heldout) / len(heldout)
        metrics["heldout_frac_std"] = mean_std(fracs)[1]
        for kind in ("cartpole", "bandit", "grid"):
            mine = [mean_std(r["norm"])[0] for r in heldout if r["kind"] == kind]
            if mine:
                metrics[f"heldout_{kind}"] = sum(mine) / len(mine)
    feedback = f"normalised return {score:.3f} ± {spread:.3f} (random 0, PPO-clip 1); " + "; ".join(words)
    return StageOutcome(score=score, metrics=metrics, feedback=feedback)
