"""Continual learning on sklearn digits: evolve a Mammoth-style ``Strategy`` (strategy.py).

Recipe per stage: build the streams (class-, task- and domain-incremental, 5 tasks) → write their
training data and label-free test inputs to the work directory → run the harness in the sandbox
(a fixed MLP trained by the candidate's strategy, predictions every few iterations) → score the
predictions here against the labels kept outside → accuracy matrix, ACC, BWT, forgetting, min-ACC,
WC-ACC per scenario, mean and spread over seeds.

Public runs use fixed seeds (the class orders and permutations the FM's feedback talks about).
Hidden runs (stages small and full) use class orders and permutations drawn from the evaluation
seed at the stage itself; their results are private metrics.

Score = mean over the evaluated scenarios of (ACC + WC-ACC) / 2 on the public runs: final accuracy
and the worst accuracy along the way (De Lange et al.'s stability gap) count equally.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from pydantic import Field, field_validator

from evaluators.api import CandidateInvalid, CandidateRun, Evaluator, MetricSpec, Stage, StageOutcome, load_npz_artifact
from evaluators.continual.metrics import accuracy_curve, continual_metrics
from evaluators.continual.scenarios import INPUT_DIM, NUM_CLASSES, NUM_TASKS, SCENARIOS, Stream, make_stream
from evaluators.harness_run import Harness, HarnessOptions
from sandboxes.base import Limits

HERE = Path(__file__).parent
HARNESS = Harness(HERE / "harness.py")
WIDTH = 100
PREDICTIONS = "preds.npz"
MAX_PREDICTIONS_BYTES = 256 << 20  # the full stage's file limit

#: Budgets passed to the strategy (see seed/strategy.py for their meaning).
DEFAULT_BUDGET = {
    "buffer_size": 200,
    "batch_size": 10,
    "iterations": 100,
    "eval_every": 5,
    "passes": 5,
    "param_copies": 6,
    "lr": 0.05,
}

#: Public seeds and hidden runs per scenario, per stage.
PLAN = {
    "smoke": {"public": 1, "hidden": 0},
    "small": {"public": 3, "hidden": 2},
    "full": {"public": 10, "hidden": 5},
}

TASK = """Continual learning on handwritten digits (sklearn, 8x8 pixels in [0,1], 10 classes) with a
fixed MLP (64-100-100-10). Implement the class `Strategy` in strategy.py (Mammoth-style):
`__init__(model, num_classes, budget)`, `before_task(task_id)`, `observe(x, y, task_id)` (one
mini-batch: you own the whole training step, optimiser included), `after_task(task_id)` and
`predict(x, task_id) -> logits (n, 10)`. Three streams of 5 tasks each: class-incremental (2 new
classes per task, no task id at test time: task_id is None), task-incremental (task id given at test
time, logits masked to the task's classes) and domain-incremental (all 10 classes, each task a new
pixel permutation, task_id None at test time); `budget.scenario` says which. Each task gets exactly
`budget.iterations` calls to observe. Accuracy on all seen tasks is measured every few iterations.
Budgets, measured after each task: data you keep <= `budget.buffer_size` examples (bytes of float32
inputs + int64 label + float32 logits); parameter-shaped copies <= `budget.param_copies` models;
rows the model processes per task <= `budget.passes` x iterations x batch_size. Exceeding one,
non-finite logits or a crash make the candidate invalid. Score: mean over streams of
(final average accuracy ACC + worst-case accuracy WC-ACC) / 2 (WC-ACC punishes the accuracy drop
on old tasks right after a new task starts). Ideas: replay buffers (reservoir, class-balanced),
logit distillation (DER), regularisation (EWC, LwF), output-layer bias correction, replay
scheduling, learning-rate choices."""


def _metric_specs() -> tuple[MetricSpec, ...]:
    specs = [MetricSpec("valid", 0.0, 1.0, description="1 when every run produced finite predictions within budget")]
    for s in SCENARIOS:
        specs += [
            MetricSpec(f"{s}_acc", 0.0, 1.0, description=f"{s}: final average accuracy over tasks (mean over seeds)"),
            MetricSpec(f"{s}_acc_std", 0.0, 1.0, higher_is_better=False, description=f"{s}: seed-to-seed SD of ACC"),
            MetricSpec(f"{s}_bwt", -1.0, 1.0, description=f"{s}: backward transfer"),
            MetricSpec(f"{s}_forgetting", -1.0, 1.0, higher_is_better=False, description=f"{s}: average forgetting"),
            MetricSpec(f"{s}_min_acc", 0.0, 1.0, description=f"{s}: min-ACC (De Lange et al.)"),
            MetricSpec(f"{s}_wc_acc", 0.0, 1.0, description=f"{s}: worst-case accuracy WC-ACC"),
            MetricSpec(f"{s}_wc_acc_std", 0.0, 1.0, higher_is_better=False, description=f"{s}: seed-to-seed SD of WC-ACC"),
            MetricSpec(f"hidden_{s}_acc", 0.0, 1.0, public=False, description=f"{s}: ACC on unseen class orders / permutations"),
            MetricSpec(f"hidden_{s}_wc_acc", 0.0, 1.0, public=False, description=f"{s}: WC-ACC on unseen variants"),
        ]
    specs.append(MetricSpec("hidden_score", 0.0, 1.0, public=False, description="the score's formula on the hidden runs"))
    return tuple(specs)


class ContinualOptions(HarnessOptions):
    scenarios: list[str] = Field(default_factory=lambda: list(SCENARIOS))  # a single name is accepted too
    seeds: int | None = Field(None, ge=2)  # public seeds of the full stage (it reports a spread)
    hidden_seeds: int | None = Field(None, ge=0)  # hidden runs per stream of the full stage
    buffer_size: int | None = Field(None, ge=0)
    iterations: int | None = Field(None, ge=1)  # calls to observe per task
    threads: int = Field(1, ge=1)  # torch intra-op threads in the harness

    @field_validator("scenarios", mode="before")
    @classmethod
    def _scenarios(cls, v: Any) -> Any:
        v = [v] if isinstance(v, str) else list(v) if isinstance(v, (list, tuple)) else v
        if not v or not isinstance(v, list) or any(s not in SCENARIOS for s in v):
            raise ValueError(f"choose from {list(SCENARIOS)}")
        return v

    @field_validator("iterations")
    @classmethod
    def _whole_evaluations(cls, v: int | None) -> int | None:
        if v is not None and v % DEFAULT_BUDGET["eval_every"]:
            raise ValueError(f"must be a multiple of {DEFAULT_BUDGET['eval_every']} (accuracy is measured every "
                             f"{DEFAULT_BUDGET['eval_every']} iterations)")
        return v


@dataclass
class _Run:
    key: str
    scenario: str
    seed: int
    hidden: bool
    stream: Stream


def stage_runs(stage: str, scenarios: Sequence[str], eval_seed: int, public: int, hidden: int) -> list[_Run]:
    """Public runs: seeds 0..public-1 (fixed). Hidden runs: variants spawned from ``eval_seed``."""
    runs: list[_Run] = []
    for s_idx, scenario in enumerate(scenarios):
        for k in range(public):
            runs.append(_Run(f"r{len(runs)}", scenario, k, False, make_stream(scenario, k)))
        stage_idx = list(PLAN).index(stage) if stage in PLAN else 99
        for k in range(hidden):
            ss = np.random.SeedSequence(int(eval_seed), spawn_key=(stage_idx, SCENARIOS.index(scenario), k))
            model_seed = int(ss.generate_state(1)[0] % 2**31)
            runs.append(_Run(f"r{len(runs)}", scenario, model_seed, True, make_stream(scenario, ss)))
    return runs


def summarise(per_run: list[tuple[_Run, Any]], scenarios: Sequence[str]) -> tuple[float, dict[str, float], float | None]:
    """Mean/SD over seeds per scenario; (score, metrics, hidden score)."""
    metrics: dict[str, float] = {}
    parts, hidden_parts = [], []
    for s in scenarios:
        pub = [m for r, m in per_run if r.scenario == s and not r.hidden]
        hid = [m for r, m in per_run if r.scenario == s and r.hidden]
        for field in ("acc", "wc_acc"):
            values = np.array([getattr(m, field) for m in pub])
            metrics[f"{s}_{field}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        metrics[f"{s}_acc"] = float(np.mean([m.acc for m in pub]))
        for field in ("bwt", "forgetting", "min_acc", "wc_acc"):
            metrics[f"{s}_{field}"] = float(np.mean([getattr(m, field) for m in pub]))
        parts.append((metrics[f"{s}_acc"] + metrics[f"{s}_wc_acc"]) / 2)
        if hid:
            metrics[f"hidden_{s}_acc"] = float(np.mean([m.acc for m in hid]))
            metrics[f"hidden_{s}_wc_acc"] = float(np.mean([m.wc_acc for m in hid]))
            hidden_parts.append((metrics[f"hidden_{s}_acc"] + metrics[f"hidden_{s}_wc_acc"]) / 2)
    hidden_score = float(np.mean(hidden_parts)) if hidden_parts else None
    return float(np.mean(parts)), metrics, hidden_score


class ContinualEvaluator(Evaluator):
    name = "continual"
    task = TASK
    stages = (
        Stage("smoke", limits=Limits(wall_s=60, cpu_s=120, memory_mb=2048, pids=64, file_mb=64),
              gate={"valid": 1.0}, description="one seed per stream: runs, finite, within budget"),
        Stage("small", limits=Limits(wall_s=300, cpu_s=600, memory_mb=2048, pids=64, file_mb=64),
              gate={"score": 0.5}, description="3 public seeds per stream + 2 hidden variants"),
        Stage("full", limits=Limits(wall_s=1200, cpu_s=2400, memory_mb=4096, pids=64, file_mb=256),
              description="10 public seeds per stream + 5 hidden variants"),
    )
    metrics = _metric_specs()
    Options = ContinualOptions

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        o = self.options
        self.scenarios = [s for s in SCENARIOS if s in o.scenarios]
        self.budget = dict(DEFAULT_BUDGET)
        for key in ("buffer_size", "iterations"):
            if getattr(o, key) is not None:
                self.budget[key] = getattr(o, key)
        self.plan = {k: dict(v) for k, v in PLAN.items()}
        if o.seeds is not None:
            self.plan["full"]["public"] = o.seeds
        if o.hidden_seeds is not None:
            self.plan["full"]["hidden"] = o.hidden_seeds
            self.plan["small"]["hidden"] = min(o.hidden_seeds, self.plan["small"]["hidden"])

    def seed_agent(self) -> Path:
        return HERE / "seed"

    @staticmethod
    def reference_agents() -> dict[str, Path]:
        return {"replay": HERE / "seed", "naive": HERE / "reference" / "naive", "ewc": HERE / "reference" / "ewc"}

    def run_stage(self, stage: Stage, run: CandidateRun) -> StageOutcome:
        plan = self.plan.get(stage.name, {"public": 1, "hidden": 0})
        runs = stage_runs(stage.name, self.scenarios, run.seed, plan["public"], plan["hidden"])
        report = HARNESS.run(run, stage, self.options, lambda workdir: self._write_inputs(workdir, runs))
        preds = load_npz_artifact(run.workdir, PREDICTIONS, MAX_PREDICTIONS_BYTES)
        per_run = [(r, continual_metrics(*self._curve(preds, r))) for r in runs]
        score, metrics, hidden_score = summarise(per_run, self.scenarios)
        metrics["valid"] = 1.0
        if hidden_score is not None:
            metrics["hidden_score"] = hidden_score
        return StageOutcome(score=score, metrics=metrics, feedback=self._feedback(metrics, report, plan))

    # -- steps ----------------------------------------------------------------------------------
    def _write_inputs(self, workdir: Path, runs: list[_Run]) -> dict:
        """Training data and label-free test inputs (the labels stay here); returns the config."""
        arrays: dict[str, np.ndarray] = {}
        cfg_runs = []
        for r in runs:
            for t in range(NUM_TASKS):
                arrays[f"{r.key}_x{t}"] = r.stream.train_x[t]
                arrays[f"{r.key}_y{t}"] = r.stream.train_y[t]
            arrays[f"{r.key}_eval_x"] = r.stream.eval_x
            if r.stream.task_id_at_test:
                arrays[f"{r.key}_eval_task"] = r.stream.row_task
            cfg_runs.append({"id": r.key, "scenario": r.scenario, "seed": r.seed, "task_classes": r.stream.task_classes})
        np.savez(workdir / "_dgm_data.npz", **arrays)
        return {
            "data": "_dgm_data.npz", "out": PREDICTIONS, "threads": self.options.threads,
            "num_tasks": NUM_TASKS, "num_classes": NUM_CLASSES, "input_dim": INPUT_DIM, "width": WIDTH,
            "budget": self.budget, "runs": cfg_runs,
        }

    def _curve(self, predictions: dict[str, np.ndarray], r: _Run) -> tuple[np.ndarray, list[int]]:
        per_task = self.budget["iterations"] // self.budget["eval_every"]
        n_points, n_rows = NUM_TASKS * per_task, len(r.stream.eval_y)
        if r.key not in predictions:
            raise CandidateInvalid(f"no usable predictions from the harness for run {r.key}")
        preds = predictions[r.key]
        if preds.shape != (n_points, n_rows):
            raise CandidateInvalid(f"predictions for run {r.key} have shape {preds.shape}, expected {(n_points, n_rows)}")
        if preds.min() < -1 or preds.max() >= NUM_CLASSES:
            raise CandidateInvalid(f"predictions for run {r.key} contain classes outside 0..{NUM_CLASSES - 1}")
        curve = accuracy_curve(preds, r.stream.eval_y, r.stream.row_task, NUM_TASKS)
        ends = [(t + 1) * per_task - 1 for t in range(NUM_TASKS)]
        return curve, ends

    def _feedback(self, metrics: dict[str, float], report: dict, plan: dict) -> str:
        lines = [f"{plan['public']} public seed(s) per stream:"]
        for s in self.scenarios:
            lines.append(
                f"{s}: ACC {metrics[f'{s}_acc']:.3f} ± {metrics[f'{s}_acc_std']:.3f}, WC-ACC {metrics[f'{s}_wc_acc']:.3f} ± {metrics[f'{s}_wc_acc_std']:.3f}, "
                f"min-ACC {metrics[f'{s}_min_acc']:.3f}, BWT {metrics[f'{s}_bwt']:+.3f}, forgetting {metrics[f'{s}_forgetting']:.3f}"
            )
        usage = _budget_use(report)
        if usage:
            data_b, param_b, rows = usage
            b = self.budget
            lines.append(
                f"budget use (worst run): data {data_b} of {b['buffer_size'] * (INPUT_DIM * 4 + 8 + NUM_CLASSES * 4)} bytes, "
                f"parameter-shaped {param_b} bytes ({b['param_copies']} model copies allowed), "
                f"{rows} of {b['passes'] * b['iterations'] * b['batch_size']} rows per task"
            )
        return "\n".join(lines)


def _budget_use(report: dict) -> tuple[int, int, int] | None:
    """Worst run's (data bytes, parameter-shaped bytes, rows per task) from the harness's report.

    report.json lies in the candidate's work directory, which it could rewrite after the harness
    (atexit): these numbers only become words for the FM, and a malformed report drops them
    instead of failing the evaluator.
    """
    try:
        usage = [u for u in (report.get("runs") or {}).values() if isinstance(u, dict)]
        if not usage:
            return None
        return (max(int(u.get("data_bytes", 0)) for u in usage), max(int(u.get("param_bytes", 0)) for u in usage),
                max(int(max(u.get("rows") or [0])) for u in usage))
    except (AttributeError, TypeError, ValueError):
        return None
