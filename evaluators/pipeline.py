"""Staged evaluation of one agent: fresh work directory per stage, gates, metric validation.

This is the only place that turns an evaluator's raw numbers into a verdict. It is deliberately
evaluator-agnostic: built-in suites and plugins all pass through the same checks, so a plugin
cannot forget to reject NaN or an out-of-range metric.
"""

from __future__ import annotations

import hashlib
import logging
import inspect
import math
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from evaluators.agent import copy_agent
from evaluators.api import CandidateInvalid, CandidateRun, Evaluator, Stage, StageOutcome
from sandboxes.artifacts import ArtifactError
from sandboxes.base import Sandbox, SandboxError
from sandboxes import scratch
from sandboxes.fs import remove_tree

_RUNTIME = Path(__file__).with_name("harness_runtime.py")


log = logging.getLogger(__name__)


@dataclass
class StageResult:
    stage: str
    valid: bool  # the candidate produced usable output in this stage
    passed_gate: bool
    score: float | None
    public: dict[str, float] = field(default_factory=dict)
    private: dict[str, float] = field(default_factory=dict)
    feedback: str = ""  # public: safe to show the FM
    error: str = ""  # why invalid, in words (public as well)
    wall_s: float = 0.0
    sandbox_s: float = 0.0  # time spent inside sandbox runs
    start_overhead_s: float = 0.0
    limit_hit: str | None = None

    def to_record(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EvaluationResult:
    stages: list[StageResult] = field(default_factory=list)
    evaluator_error: str = ""  # a fault of the evaluator or the sandbox, not of the candidate
    selected: int = 0  # how many stages were selected to run (0: unknown, treat what ran as all)
    fm_usage: dict[str, Any] = field(default_factory=dict)  # the candidate's own model calls (fm_access)
    gpu_s: float = 0.0  # GPU-seconds it held: wall time × the GPUs leased (a shared GPU counts its share)

    @property
    def _ran_all(self) -> bool:
        return not self.selected or len(self.stages) == self.selected

    # How a node is ranked (one comparable scale): stages are increasing fidelities of one task, and
    # a node is scored only when it ran every selected stage, valid and through every gate, by the
    # LAST stage's score. A node that stopped at a gate is not ranked at all (the campaign rejects
    # it with the gate's reason), and a node found invalid in ANY stage is invalid with that stage's
    # reason, so a smoke score never stands for a candidate that a later stage refused.

    @property
    def valid(self) -> bool:
        """No stage found the candidate invalid, and the evaluator did not break."""
        return bool(self.stages) and not self.evaluator_error and all(s.valid for s in self.stages)

    @property
    def complete(self) -> bool:
        """Valid, and every selected stage ran and passed its gate: the node can be ranked."""
        return self.valid and self._ran_all and all(s.passed_gate for s in self.stages)

    @property
    def gated(self) -> StageResult | None:
        """The stage whose gate stopped a valid candidate, if any."""
        return next((s for s in self.stages if s.valid and not s.passed_gate), None) if self.valid else None

    @property
    def last_valid(self) -> StageResult | None:
        valid = [s for s in self.stages if s.valid]
        return valid[-1] if valid else None

    @property
    def score(self) -> float | None:
        """The comparable score: the last stage's, only when the evaluation is complete."""
        return self.stages[-1].score if self.complete else None

    @property
    def public_metrics(self) -> dict[str, float]:
        last = self.last_valid
        return dict(last.public) if last else {}

    @property
    def private_metrics(self) -> dict[str, float]:
        last = self.last_valid
        return dict(last.private) if last else {}

    @property
    def error(self) -> str:
        if self.evaluator_error:
            return self.evaluator_error
        bad = next((s for s in self.stages if not s.valid), None)
        if bad:
            return f"stage {bad.stage}: {bad.error}"
        gated = next((s for s in self.stages if not s.passed_gate), None)
        if gated:
            return f"stage {gated.stage}: did not pass the gate ({gated.error or 'below threshold'})"
        return ""

    @property
    def feedback(self) -> str:
        """Public feedback for the next prompt of this lineage: every stage's words, in order."""
        lines = []
        for s in self.stages:
            text = s.error if not s.valid else s.feedback
            if text:
                lines.append(f"[{s.stage}] {text}")
        return "\n".join(lines)

    def timings(self) -> dict[str, float]:
        return {
            "eval_s": sum(s.wall_s for s in self.stages),
            "sandbox_s": sum(s.sandbox_s for s in self.stages),
            "sandbox_start_s": sum(s.start_overhead_s for s in self.stages),
            "gpu_s": self.gpu_s,
        }


def validate_metrics(evaluator: type[Evaluator] | Evaluator, outcome: StageOutcome) -> tuple[dict, dict]:
    """Split an outcome's metrics into (public, private); raise CandidateInvalid on bad values.

    Unknown metric names are the evaluator's fault (ValueError); non-numbers, non-finite values and
    values outside the declared range are the candidate's (CandidateInvalid), except for a private
    metric's value, which is held at its range's worst end: the reason would otherwise reach the FM
    and admission with a held-out number in it (fewshot: a best whose hidden MSE reached 7.5e8 on one
    draw of the shifted tasks was made invalid by "metric hidden_mse_10 = 7.54872e+08 is outside").
    """
    public: dict[str, float] = {}
    private: dict[str, float] = {}
    for name, value in outcome.metrics.items():
        spec = evaluator.metric_spec(name)
        if spec is None:
            raise ValueError(f"evaluator {evaluator.name!r} reported undeclared metric {name!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CandidateInvalid(f"metric {name} is {type(value).__name__}, not a number")
        value = float(value)
        if not spec.public:
            worst = spec.low if spec.higher_is_better else spec.high
            value = worst if math.isnan(value) else min(max(value, spec.low), spec.high)
            if not math.isfinite(value):  # an unbounded range's end: nothing finite to hold it at
                raise CandidateInvalid(f"private metric {name} is not finite")
        if not math.isfinite(value):
            raise CandidateInvalid(f"metric {name} is not finite ({value})")
        if not spec.low <= value <= spec.high:
            raise CandidateInvalid(f"metric {name} = {value:.6g} is outside its range [{spec.low}, {spec.high}]")
        (public if spec.public else private)[name] = value
    score = outcome.score
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(float(score)):
        raise CandidateInvalid(f"score is not a finite number ({score!r})")
    return public, private


def gate_passes(gate: Mapping[str, float], score: float, metrics: Mapping[str, float]) -> tuple[bool, str]:
    """A gate maps metric names (or ``score``) to minimum values; all must hold."""
    for name, minimum in gate.items():
        value = score if name == "score" else metrics.get(name)
        if value is None:
            return False, f"gate metric {name} missing"
        if value < minimum:
            return False, f"{name} = {value:.4g} < {minimum:.4g}"
    return True, ""


def evaluator_fingerprint(evaluator: Evaluator) -> dict[str, str]:
    """sha256 of every file of the evaluator's package, and of the harness runtime that built-in
    suites copy next to the candidate: checked before and after each evaluation."""
    root = Path(inspect.getfile(type(evaluator))).parent
    files = {str(p.relative_to(root)): p for p in sorted(root.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}
    files["evaluators/harness_runtime.py"] = _RUNTIME
    return {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in files.items()}


def evaluate(
    evaluator: Evaluator,
    agent_dir: Path,
    sandbox: Sandbox,
    *,
    seed: int = 0,
    device: str = "cpu",
    env: Mapping[str, str] | None = None,
    stages: Sequence[str] | None = None,
    workroot: Path | None = None,
    python: str | None = None,
    gpu: Any = None,
    fm_socket: Path | None = None,
    first_only: bool = False,
) -> EvaluationResult:
    """Run ``evaluator``'s stages on the agent in ``agent_dir``, in order, stopping at the first stage
    that finds the candidate invalid or whose gate it does not pass.

    ``first_only`` runs only the first selected stage: the quick check of whether a program runs at
    all, whose error a proposal sends back to the model (``[mutation] run_repairs``).

    ``gpu`` is a :class:`sandboxes.gpu.GpuLease`; the candidate then sees only that device.
    ``fm_socket`` is an FM proxy's socket, handed to the candidate only if ``evaluator.fm_access``.
    """
    selected = _select_stages(evaluator, stages)[: 1 if first_only else None]
    result = EvaluationResult(selected=len(selected))
    before = evaluator_fingerprint(evaluator)
    workroot = Path(workroot) if workroot else scratch.root()  # a dead process's is swept by the next
    workroot.mkdir(parents=True, exist_ok=True)
    for stage in selected:
        try:
            stage_result = _run_stage(evaluator, stage, agent_dir, sandbox, seed, device, env, workroot, python, gpu,
                                      fm_socket if evaluator.fm_access else None)
        except _EvaluatorFault as fault:
            result.evaluator_error = str(fault)
            break
        result.stages.append(stage_result)
        if not (stage_result.valid and stage_result.passed_gate):
            break
    after = evaluator_fingerprint(evaluator)
    if before != after:
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        result.evaluator_error = f"evaluator files changed during evaluation: {changed}; result discarded"
        result.stages = [StageResult(s.stage, False, False, None, error="evaluator tampered") for s in result.stages]
    return result


def _select_stages(evaluator: Evaluator, names: Sequence[str] | None) -> list[Stage]:
    if not names:
        return list(evaluator.stages)
    known = {s.name: s for s in evaluator.stages}
    missing = [n for n in names if n not in known]
    if missing:
        raise ValueError(f"evaluator {evaluator.name!r} has no stage {missing[0]!r}; stages: {list(known)}")
    return [s for s in evaluator.stages if s.name in names]


class _EvaluatorFault(Exception):
    """The evaluator or the sandbox broke: the node is ``failed``, not ``invalid``."""


def _run_stage(evaluator, stage, agent_dir, sandbox, seed, device, env, workroot, python, gpu, fm_socket) -> StageResult:
    workdir = Path(tempfile.mkdtemp(prefix=f"{stage.name}-", dir=workroot))
    t0 = time.perf_counter()
    try:
        copy_agent(Path(agent_dir), workdir)
        run = CandidateRun(
            workdir=workdir, sandbox=sandbox, python=python or sys.executable, seed=seed, device=device,
            env=dict(env or {}), gpu=gpu, fm_socket=fm_socket,
        )
        try:
            outcome = evaluator.run_stage(stage, run)
            public, private = validate_metrics(evaluator, outcome)
        except (CandidateInvalid, ArtifactError) as e:  # an unsafe artifact is the candidate's doing
            last = run.runs[-1] if run.runs else None
            return StageResult(
                stage.name, False, False, None, error=str(e), wall_s=time.perf_counter() - t0,
                sandbox_s=sum(r.wall_s for r in run.runs), start_overhead_s=sum(r.start_overhead_s for r in run.runs),
                limit_hit=last.limit_hit if last else None,
            )
        except SandboxError as e:
            raise _EvaluatorFault(f"sandbox error in stage {stage.name}: {e}") from e
        except Exception as e:  # the evaluator's own bug: not the candidate's fault
            raise _EvaluatorFault(
                f"evaluator {evaluator.name!r} failed in stage {stage.name}:\n{traceback.format_exc(limit=-4)}"
            ) from e
        passed, why = gate_passes(stage.gate, float(outcome.score), {**public, **private})
        return StageResult(
            stage.name, True, passed, float(outcome.score), public, private, feedback=outcome.feedback,
            error="" if passed else why, wall_s=time.perf_counter() - t0,
            sandbox_s=sum(r.wall_s for r in run.runs), start_overhead_s=sum(r.start_overhead_s for r in run.runs),
        )
    finally:
        try:  # without recursion (a candidate may leave a tree of any depth); releases a quota mount
            remove_tree(workdir)
        except OSError:
            log.warning("could not remove %s", workdir, exc_info=True)
