"""Few-shot sinusoid regression: evolve the inner loop of a MAML-style meta-learner (inner_loop.py).

Recipe per stage: draw evaluation tasks (support sets with targets, query inputs without) → write
them to the work directory → run the harness in the sandbox (fixed network 1-40-40-1, fixed outer
loop and meta-iteration budget, the candidate's ``adapt`` inside, all seeds batched with
``torch.func.vmap``, or task by task when ``adapt`` cannot run under vmap) → score the query
predictions here against targets kept outside.

Public metrics: query MSE after 0, 1, 5 and 10 inner steps on tasks from the training distribution
(Finn et al.: amplitude 0.1-5, phase 0-pi, x in [-5, 5], K = 10), mean and spread over seeds. The
public evaluation tasks are fixed; the meta-learners' seeds (initialisation, meta-training task
stream) follow the evaluation seed (``public_seeds``), so a program evaluated again is measured again.
Private metrics: the same on a shifted distribution (amplitude 5-7) drawn from the evaluation seed
at the stage itself.

Score = 1 - mean(MSE after 1, 5, 10 steps) / MSE of always predicting 0, clipped to [0, 1].
"""

from __future__ import annotations

import re

from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from evaluators.api import CandidateInvalid, CandidateRun, Evaluator, MetricSpec, Stage, StageOutcome, load_npz_artifact
from evaluators.fewshot.tasks import SHIFTED, TRAIN, EvalSet, query_mse, sample_eval_set
from evaluators.harness_run import Harness, HarnessOptions
from sandboxes.base import Limits, RunResult

HERE = Path(__file__).parent
PREDICTIONS = "preds.npz"
PUBLIC_SEED = 20170309  # the public evaluation tasks (fixed; the meta-learners follow the evaluation seed)
EVAL_STEPS = (0, 1, 5, 10)
SCORED_STEPS = (1, 5, 10)
MSE_MAX = 1e6

#: Fixed protocol (Finn et al. 2017, sinusoid): K support and Q query points, meta-batch of tasks,
#: inner steps during meta-training, Adam's learning rate, meta-parameter budget (x network size).
PROTOCOL = {"K": 10, "Q": 50, "meta_batch": 25, "train_steps": 1, "outer_lr": 1e-3, "param_factor": 4}

#: Per stage: seeds (vmapped together), meta-iterations, public and hidden evaluation tasks.
PLAN = {
    "smoke": {"seeds": 1, "meta_iterations": 50, "tasks": 50, "hidden_tasks": 0},
    "small": {"seeds": 3, "meta_iterations": 2000, "tasks": 300, "hidden_tasks": 300},
    "full": {"seeds": 10, "meta_iterations": 10000, "tasks": 1000, "hidden_tasks": 1000},
}

TASK = """Few-shot regression (MAML's sinusoid benchmark): each task is y = A sin(x - phase) with
A in [0.1, 5], phase in [0, pi], x in [-5, 5]; from K = 10 support points, adapt a fixed network
(1-40-40-1, ReLU) and predict new query points. The outer loop is fixed (Adam on the
meta-parameters through your inner loop, 25 tasks per meta-iteration, 1 inner step during
meta-training, a fixed number of meta-iterations). Implement in inner_loop.py
`adapt(params, support_x, support_y, loss_fn, steps) -> params`: params is a dict of tensors
("w1" (40,1), "b1" (40,), "w2" (40,40), "b2" (40,), "w3" (1,40), "b3" (1,) plus any extra
meta-parameters), support tensors are (10, 1), loss_fn(params, x, y) is the support MSE and each
call counts as one step (at most `steps` calls). It is differentiated through: a pure function
of its arguments, no torch.optim optimisers or schedulers (they keep state and update in place).
Written with torch.func.grad, without .item(), in-place updates or branching on tensor values,
it is vmapped over tasks and seeds; otherwise it runs task by task (plain autograd), slower.
Optional `init_params(params) -> dict` returns the meta-parameters to learn from the default init
(e.g. add learned per-parameter step sizes; at most 4x the network's size).
Metrics: query MSE after 1, 5 and 10 inner steps (evaluated with steps = 1, 5, 10).
Score = 1 - mean(MSE_1, MSE_5, MSE_10) / MSE of predicting 0. Ideas: learned per-parameter
step sizes (Meta-SGD), step-size schedules, preconditioning, adapting only some layers (ANIL),
closed-form last layer, gradient normalisation."""


def _metric_specs() -> tuple[MetricSpec, ...]:
    specs = [MetricSpec("valid", 0.0, 1.0, description="1 when every prediction was finite and within budget")]
    for n in EVAL_STEPS:
        specs.append(MetricSpec(f"mse_{n}", 0.0, MSE_MAX, higher_is_better=False, description=f"query MSE after {n} inner steps (mean over seeds)"))
        specs.append(MetricSpec(f"mse_{n}_std", 0.0, MSE_MAX, higher_is_better=False, description=f"seed-to-seed SD of mse_{n}"))
    for n in SCORED_STEPS:
        specs.append(MetricSpec(f"hidden_mse_{n}", 0.0, MSE_MAX, public=False, higher_is_better=False,
                                description=f"query MSE after {n} steps on the shifted task distribution"))
    specs.append(MetricSpec("zero_mse", 0.0, MSE_MAX, higher_is_better=False, description="MSE of predicting 0 (the score's scale)"))
    specs.append(MetricSpec("hidden_score", 0.0, 1.0, public=False, description="the score's formula on the shifted tasks"))
    # only with the option unseen_tasks: tasks of the training distribution the public set does not hold
    for n in SCORED_STEPS:
        specs.append(MetricSpec(f"unseen_mse_{n}", 0.0, MSE_MAX, public=False, higher_is_better=False,
                                description=f"query MSE after {n} steps on unseen tasks of the training distribution"))
    specs.append(MetricSpec("unseen_score", 0.0, 1.0, public=False,
                            description="the score's formula on unseen tasks of the training distribution (option unseen_tasks)"))
    return tuple(specs)


def public_seeds(eval_seed: int, stage_idx: int, n: int) -> tuple[list[int], int]:
    """The meta-learners' initialisation seeds and meta-training task-stream seed of one evaluation.

    They follow the evaluation seed, as the optimizer and rl_objective suites' public runs do
    (continual's stay fixed): with fixed seeds every draw of a program gave the same public score,
    so racing and the lower bound saw no noise, and a fit climbed the fixed seeds' noise instead
    (fewshot seed 5: trials of the one constant INNER_LR between 0.0104 and 0.0105 scored
    0.8548-0.8589, against a best's gain of +0.0032).
    """
    state = np.random.SeedSequence(int(eval_seed), spawn_key=(stage_idx, 2)).generate_state(n + 1)
    return [int(v % 2**31) for v in state[:n]], int(state[n] % 2**31)


def score_from(mse: dict[int, float], zero_mse: float) -> float:
    """1 - mean(MSE after 1, 5, 10 steps) / MSE of the zero predictor, clipped to [0, 1]."""
    mean = float(np.mean([mse[n] for n in SCORED_STEPS]))
    return float(np.clip(1.0 - mean / zero_mse, 0.0, 1.0))


#: a torch.optim optimiser inside adapt: the commonest crash of the embedded model on this suite
#: (4 of 10 run-time crashes in one campaign), kept even when the task text rules it out
OPTIM_HINT = (" (torch.optim optimisers cannot run inside adapt: params is a dict of tensors that adapt "
              "returns as new tensors; write the update rule with tensor arithmetic, keeping any state, "
              "such as a momentum, in local variables)")


#: a dict of tensors used as one tensor (``g / torch.norm(g)`` on the gradient dict): 2 of the 4
#: answers that crashed in fewshot seed 3's run check, neither fixed when sent back with the bare
#: error (nor, asked again 3 times each, with this hint: 0 of 6)
DICT_HINT = (" (params, and grad(loss_fn)(params, x, y), are dicts of tensors with the same keys: apply "
             "tensor operations to each value, as the seed's {k: p - INNER_LR * g[k] for k, p in params.items()} does)")
DICT_ERROR = re.compile(r"^(TypeError|AttributeError|RuntimeError|ValueError)\b.*\bdict\b")


def _hint(result: RunResult, tail: str) -> str:
    # (no hint for vmap's own errors: an adapt that vmap cannot run is run task by task instead)
    if result.limit_hit is not None:
        return ""
    if "torch/optim/" in tail:
        return OPTIM_HINT
    last = tail.strip().splitlines()[-1] if tail.strip() else ""
    return DICT_HINT if DICT_ERROR.match(last) else ""


HARNESS = Harness(HERE / "harness.py", hint=_hint)


class FewShotOptions(HarnessOptions):
    seeds: int | None = Field(None, ge=2)  # seeds of the full stage (it reports a spread)
    meta_iterations: int | None = Field(None, ge=1)  # of the full stage
    threads: int = Field(1, ge=1)  # torch intra-op threads in the harness
    # also score this many tasks drawn from the training distribution by the evaluation seed (so
    # not the fixed public tasks), as private metrics: does a public gain carry to tasks of the
    # same kind it never saw? Off by default: it lengthens every evaluation.
    unseen_tasks: int = Field(0, ge=0, le=2000)


class FewShotEvaluator(Evaluator):
    name = "fewshot"
    task = TASK
    stages = (
        Stage("smoke", limits=Limits(wall_s=60, cpu_s=120, memory_mb=2048, pids=64, file_mb=64),
              gate={"valid": 1.0}, description="1 seed, 50 meta-iterations: runs within budget, finite"),
        # 600 s: a vmappable adapt needs ~25 s here, one run task by task ~300 s beside another evaluation
        Stage("small", limits=Limits(wall_s=600, cpu_s=1200, memory_mb=2048, pids=64, file_mb=64),
              gate={"score": 0.4}, description="3 seeds x 2,000 meta-iterations, 300 public + 300 hidden tasks"),
        Stage("full", limits=Limits(wall_s=3600, cpu_s=7200, memory_mb=8192, pids=64, file_mb=256),
              description="10 seeds x 10,000 meta-iterations (sized for a GPU), 1,000 + 1,000 tasks"),
    )
    metrics = _metric_specs()
    Options = FewShotOptions

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.plan = {k: dict(v) for k, v in PLAN.items()}
        for key in ("seeds", "meta_iterations"):
            if getattr(self.options, key) is not None:
                self.plan["full"][key] = getattr(self.options, key)

    def seed_agent(self) -> Path:
        return HERE / "seed"

    @staticmethod
    def reference_agents() -> dict[str, Path]:
        return {"maml": HERE / "seed", "untrained": HERE / "reference" / "untrained"}

    def run_stage(self, stage: Stage, run: CandidateRun) -> StageOutcome:
        plan = self.plan.get(stage.name, PLAN["smoke"])
        stage_idx = list(PLAN).index(stage.name) if stage.name in PLAN else 99
        sets = {"a": sample_eval_set(TRAIN, plan["tasks"], PROTOCOL["K"], PROTOCOL["Q"],
                                     np.random.SeedSequence(PUBLIC_SEED, spawn_key=(stage_idx,)))}
        if plan["hidden_tasks"]:
            sets["b"] = sample_eval_set(SHIFTED, plan["hidden_tasks"], PROTOCOL["K"], PROTOCOL["Q"],
                                        np.random.SeedSequence(int(run.seed), spawn_key=(stage_idx, 1)))
        if self.options.unseen_tasks:
            sets["c"] = sample_eval_set(TRAIN, self.options.unseen_tasks, PROTOCOL["K"], PROTOCOL["Q"],
                                        np.random.SeedSequence(int(run.seed), spawn_key=(stage_idx, 3)))
        report = HARNESS.run(run, stage, self.options,
                             lambda workdir: self._write_inputs(workdir, sets, plan, stage_idx, run.seed))
        preds = load_npz_artifact(run.workdir, PREDICTIONS)
        mse = {name: self._mse(preds, name, s, plan["seeds"]) for name, s in sets.items()}
        metrics: dict[str, float] = {"valid": 1.0}
        for n in EVAL_STEPS:
            metrics[f"mse_{n}"] = float(mse["a"][n].mean())
            metrics[f"mse_{n}_std"] = float(mse["a"][n].std(ddof=1)) if plan["seeds"] > 1 else 0.0
        zero = float((sets["a"].query_y ** 2).mean())
        metrics["zero_mse"] = zero
        score = score_from({n: metrics[f"mse_{n}"] for n in SCORED_STEPS}, zero)
        if "b" in sets:
            hidden = {n: float(mse["b"][n].mean()) for n in SCORED_STEPS}
            metrics.update({f"hidden_mse_{n}": v for n, v in hidden.items()})
            metrics["hidden_score"] = score_from(hidden, float((sets["b"].query_y ** 2).mean()))
        if "c" in sets:
            unseen = {n: float(mse["c"][n].mean()) for n in SCORED_STEPS}
            metrics.update({f"unseen_mse_{n}": v for n, v in unseen.items()})
            metrics["unseen_score"] = score_from(unseen, float((sets["c"].query_y ** 2).mean()))
        feedback = (
            f"{plan['seeds']} seed(s) x {plan['meta_iterations']} meta-iterations; query MSE (mean ± SD over seeds) "
            + ", ".join(f"after {n} steps {metrics[f'mse_{n}']:.3f} ± {metrics[f'mse_{n}_std']:.3f}" for n in EVAL_STEPS)
            + f"; predicting 0 gives {zero:.3f}"
        )
        if report.get("mode") == "loop":  # the program ran, but the model should know it was the slow way
            feedback += f"; adapt ran task by task, not under vmap ({str(report.get('vmap_error', ''))[:200]})"
        return StageOutcome(score=score, metrics=metrics, feedback=feedback)

    # -- steps ----------------------------------------------------------------------------------
    def _write_inputs(self, workdir: Path, sets: dict[str, EvalSet], plan: dict, stage_idx: int, eval_seed: int) -> dict:
        """Support sets with targets, query inputs without (the query targets stay here); returns the config."""
        arrays = {}
        for name, s in sets.items():
            arrays[f"{name}_support_x"] = s.support_x
            arrays[f"{name}_support_y"] = s.support_y
            arrays[f"{name}_query_x"] = s.query_x
        np.savez(workdir / "_dgm_data.npz", **arrays)
        seeds, task_seed = public_seeds(eval_seed, stage_idx, plan["seeds"])
        return {
            **PROTOCOL, "data": "_dgm_data.npz", "out": PREDICTIONS,
            "threads": self.options.threads, "seeds": seeds,
            "meta_iterations": plan["meta_iterations"], "task_seed": task_seed,
            "train_tasks": TRAIN.as_dict(), "eval_sets": list(sets), "eval_steps": list(EVAL_STEPS),
        }

    def _mse(self, predictions: dict[str, np.ndarray], name: str, s: EvalSet, seeds: int) -> dict[int, np.ndarray]:
        out = {}
        for n in EVAL_STEPS:
            key = f"{name}_{n}"
            if key not in predictions:
                raise CandidateInvalid(f"no usable predictions from the harness: {key!r} is missing")
            try:
                preds = np.asarray(predictions[key], dtype=np.float64)
            except (TypeError, ValueError) as e:
                raise CandidateInvalid(f"no usable predictions from the harness: {e}") from None
            if preds.shape != (seeds, *s.query_y.shape):
                raise CandidateInvalid(f"predictions after {n} steps have shape {preds.shape}, expected {(seeds, *s.query_y.shape)}")
            if not np.isfinite(preds).all():
                raise CandidateInvalid(f"predictions after {n} steps are not finite")
            out[n] = query_mse(preds, s.query_y)
        return out
