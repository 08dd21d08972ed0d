"""Learned optimisers: evolve an update rule; score it by held-out loss relative to tuned Adam.

Recipe per stage: draw the task list (public tasks; hidden tasks of unseen sizes and budgets from
the evaluation seed) → build each task's data here and write only the TRAINING arrays into the
work directory → run the harness with the candidate's ``update()`` in the sandbox; it saves the
final parameters → load them here and compute the held-out losses (test split kept here, or the
noise-free objective) → run Adam over a learning-rate grid on exactly the same seeds, minibatches
and gradient noise (outside the sandbox, cached per task) and keep the best rate per task →
score = exp(-mean clipped ln(candidate loss / tuned-Adam loss)): 1 is parity with tuned Adam.
"""
from __future__ import annotations

import json
import math
import random
from collections import OrderedDict
from pathlib import Path

import numpy as np

from evaluators.api import CandidateInvalid, CandidateRun, Evaluator, MetricSpec, Stage, StageOutcome, load_npz_artifact
from evaluators.harness_run import GuardedHarnessOptions, Harness
from evaluators.optimizer import suite
from evaluators.optimizer.metrics import CLIP, FLOORS, aggregate, choose_lr, log_ratio, mean_std
from evaluators.tensors import checked_tensors, one_thread
from sandboxes.base import Limits

HERE = Path(__file__).parent
HARNESS = Harness(HERE / "harness.py", support={"_dgm_tasks.py": HERE / "tasks.py"})
MAX_PARAMS_BYTES = 64 << 20
_BASELINE_CACHE: OrderedDict = OrderedDict()  # (task key) -> (lr, per-seed losses); bounded
_DATA_CACHE: OrderedDict = OrderedDict()

TASK = """Improve an UPDATE RULE (optimiser). update_rule.py defines
    init_state(param) -> dict of tensors
    update(param, grad, state, step, total_steps) -> (new_param, new_state)
param and grad are float32 torch tensors of one parameter tensor of one training run; state is
what init_state or the previous update returned for it; step counts from 1 to total_steps (the
task's step budget). Be functional (return new tensors), keep state values tensors, use torch and
math only; calls are mapped over independent runs with torch.func.vmap. The rule trains small MLP
classifiers on sklearn digits, wine and breast_cancer (minibatch cross-entropy), a 2-D Rosenbrock
valley (3000 steps) and a 32-D ill-conditioned quadratic (condition 1000) with noisy gradients,
plus unseen tasks of other sizes and budgets. Score = held-out loss relative to Adam whose
learning rate was tuned per task on a grid (1e-4..0.3), averaged in log space: 1 = as good as
tuned Adam, above 1 = better. Non-finite losses or parameters are invalid ("diverged").
The seed is Adam with a fixed learning rate of 0.01. Ideas: adapt the step size to the task
(e.g. from gradient statistics), schedules using step/total_steps, warm-up, decay, momentum
variants, sign-based or normalised updates, clipping."""


class OptimizerEvaluator(Evaluator):
    name = "optimizer"
    task = TASK
    stages = (
        Stage("smoke", limits=Limits(wall_s=60, cpu_s=60, memory_mb=2048, pids=64, file_mb=64),
              gate={"valid": 1.0}, description="public tasks at 1/5 of their budgets, 1 seed"),
        Stage("small", limits=Limits(wall_s=300, cpu_s=300, memory_mb=3072, pids=64, file_mb=64),
              gate={"score": 0.5}, description="public tasks, 3 seeds; 2 hidden tasks x 2 seeds"),
        Stage("full", limits=Limits(wall_s=1800, cpu_s=1800, memory_mb=4096, pids=64, file_mb=64),
              description="public tasks, 8 seeds; 6 hidden tasks x 4 seeds"),
    )
    metrics = (
        MetricSpec("valid", 0.0, 1.0, description="1 when every task finished with finite parameters"),
        MetricSpec("rel_adam", math.exp(-CLIP), math.exp(CLIP), description="exp(-log_ratio): 1 = tuned Adam"),
        MetricSpec("log_ratio", -CLIP, CLIP, higher_is_better=False,
                   description="mean over public tasks and seeds of clipped ln(loss / tuned-Adam loss)"),
        MetricSpec("log_ratio_std", 0.0, 2 * CLIP, higher_is_better=False, description="spread across seeds"),
        *[MetricSpec(f"{name}_ratio", math.exp(-CLIP), math.exp(CLIP), higher_is_better=False,
                     description=f"{name}: geometric-mean loss ratio to tuned Adam") for name in suite.PUBLIC_TASKS],
        *[MetricSpec(f"{name}_loss", 0.0, math.inf, higher_is_better=False,
                     description=f"{name}: mean held-out loss") for name in suite.PUBLIC_TASKS],
        MetricSpec("hidden_rel_adam", math.exp(-CLIP), math.exp(CLIP), public=False),
        MetricSpec("hidden_log_ratio", -CLIP, CLIP, public=False, higher_is_better=False),
        MetricSpec("hidden_log_ratio_std", 0.0, 2 * CLIP, public=False, higher_is_better=False),
    )

    Options = GuardedHarnessOptions

    def seed_agent(self) -> Path:
        return HERE / "seed"

    def run_stage(self, stage: Stage, run: CandidateRun) -> StageOutcome:
        tasks = build_tasks(stage.name, suite.PLANS[stage.name], run.seed)

        def inputs(workdir: Path) -> dict:  # the training arrays only; held-out data stays here
            for t in tasks:
                np.savez(workdir / f"_dgm_task_{t['id']}.npz", **task_data(t)[0])
            return {"threads": 1, "tasks": [{k: t[k] for k in ("id", "spec", "seeds", "data_seed")} for t in tasks]}

        HARNESS.run(run, stage, self.options, inputs, static_guard=self.options.static_guard)
        scored = [score_task(t, load_params(run.workdir / f"params_{t['id']}.npz", t)) for t in tasks]
        return summarise(scored)


def build_tasks(stage: str, plan: suite.Plan, seed: int) -> list[dict]:
    """Public tasks first, then hidden draws; secrets (split, rotation), seeds and data seeds per task."""
    rng = random.Random(f"optimizer/tasks/{seed}/{stage}")
    entries = [(name, spec, plan.seeds) for name, spec in suite.public_tasks(plan.step_scale).items()]
    entries += [(None, spec, plan.hidden_seeds) for spec in suite.draw_hidden(seed, plan.hidden)]
    return [{"id": f"t{i}", "name": name, "spec": spec, "secret": rng.getrandbits(62),
             "seeds": [rng.getrandbits(31) for _ in range(n)], "data_seed": rng.getrandbits(31)}
            for i, (name, spec, n) in enumerate(entries)]


def _key(*parts) -> str:
    return json.dumps(parts, sort_keys=True)


def _cached(cache: OrderedDict, key: str, make, limit: int = 256):
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    value = cache[key] = make()
    if len(cache) > limit:
        cache.popitem(last=False)
    return value


def task_data(task: dict) -> tuple[dict, dict]:
    from evaluators.optimizer import tasks as T

    return _cached(_DATA_CACHE, _key(task["spec"], task["secret"]), lambda: T.make_task_data(task["spec"], task["secret"]), 32)


def load_params(path: Path, task: dict) -> dict:
    """Read the saved parameters without following links or unpickling; check names, shapes, finiteness."""
    from evaluators.optimizer.tasks import param_shapes

    arrays = load_npz_artifact(path.parent, path.name, MAX_PARAMS_BYTES)
    S = len(task["seeds"])
    want = {k: (S, *s) for k, s in param_shapes(task["spec"]).items()}
    return checked_tensors(arrays, want, name=path.name, what="final parameters")


def adam_baseline(task: dict) -> tuple[float, list[float], list[float]]:
    """(tuned lr, per-seed held-out losses, per-seed initial losses) of Adam on the task; cached."""
    import torch

    from evaluators.optimizer import baseline, harness
    from evaluators.optimizer import tasks as T

    def compute():
        train, held = task_data(task)
        seeds, grid = task["seeds"], baseline.LR_GRID
        with one_thread():
            try:
                final = harness.train(task["spec"], train, baseline.AdamGrid(grid, len(seeds)), seeds * len(grid),
                                      task["data_seed"], T, torch)
                losses = T.heldout_loss(task["spec"], held, final, seeds * len(grid)).view(len(grid), len(seeds))
            except harness.HarnessFailure:  # some grid points blow up: evaluate them one by one
                rows = []
                for lr in grid:
                    try:
                        p = harness.train(task["spec"], train, baseline.AdamGrid([lr], len(seeds)), seeds,
                                          task["data_seed"], T, torch)
                        rows.append(T.heldout_loss(task["spec"], held, p, seeds))
                    except harness.HarnessFailure:
                        rows.append(torch.full((len(seeds),), math.nan))
                losses = torch.stack(rows)
            initial = T.heldout_loss(task["spec"], held, T.init_params(task["spec"], train, seeds), seeds)
        # pick the rate by the score's own measure: mean log of the floored held-out loss
        floors = [FLOORS[task["spec"]["kind"]] * i for i in initial.tolist()]
        logs = [[math.log(v + f) if math.isfinite(v) else math.nan for v, f in zip(row, floors)] for row in losses.tolist()]
        best = choose_lr(logs)
        return grid[best], losses[best].tolist(), initial.tolist()

    return _cached(_BASELINE_CACHE, _key(task["spec"], task["secret"], task["seeds"], task["data_seed"]), compute)


def score_task(task: dict, params: dict) -> dict:
    from evaluators.optimizer import tasks as T

    _, held = task_data(task)
    with one_thread():
        losses = T.heldout_loss(task["spec"], held, params, task["seeds"]).tolist()
    if not all(math.isfinite(v) for v in losses):
        raise CandidateInvalid(f"diverged: the held-out loss is not finite on a {task['spec']['kind']} task")
    lr, base, initial = adam_baseline(task)
    floor = FLOORS[task["spec"]["kind"]]
    ratios = [log_ratio(l, b, i, floor=floor) for l, b, i in zip(losses, base, initial)]
    return {"name": task["name"], "kind": task["spec"]["kind"], "losses": losses, "adam": base, "adam_lr": lr, "log_ratios": ratios}


def summarise(scored: list[dict]) -> StageOutcome:
    public = [s for s in scored if s["name"] is not None]
    hidden = [s for s in scored if s["name"] is None]
    mean, spread = aggregate([s["log_ratios"] for s in public])
    metrics = {"valid": 1.0, "log_ratio": mean, "rel_adam": math.exp(-mean), "log_ratio_std": spread}
    words = []
    for s in public:
        task_mean = sum(s["log_ratios"]) / len(s["log_ratios"])
        metrics[f"{s['name']}_ratio"] = math.exp(task_mean)
        metrics[f"{s['name']}_loss"] = mean_std(s["losses"])[0]
        words.append(f"{s['name']}: held-out loss {metrics[s['name'] + '_loss']:.4g} vs tuned Adam "
                     f"{mean_std(s['adam'])[0]:.4g} (lr {s['adam_lr']:g}) → ratio {math.exp(task_mean):.3f}")
    if hidden:
        h_mean = sum(sum(s["log_ratios"]) / len(s["log_ratios"]) for s in hidden) / len(hidden)
        metrics["hidden_log_ratio"], metrics["hidden_rel_adam"] = h_mean, math.exp(-h_mean)
        metrics["hidden_log_ratio_std"] = aggregate([s["log_ratios"] for s in hidden])[1]
    feedback = (f"score {math.exp(-mean):.3f} = exp(-mean log loss ratio {mean:+.3f} ± {spread:.3f}) "
                f"(1 = tuned Adam, higher is better); " + "; ".join(words))
    return StageOutcome(score=math.exp(-mean), metrics=metrics, feedback=feedback)
