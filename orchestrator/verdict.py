"""The verdict on an evaluated node: failed, invalid, rejected or admitted, with the reason.

Stage semantics (see ``evaluators.pipeline``): an evaluator fault is ``failed``; a candidate that
any stage found invalid is ``invalid`` with that stage's reason; one stopped by a gate is
``rejected`` with the gate's reason (it is never ranked against nodes that ran every stage); only a
complete evaluation goes to the admission policy, on its comparable score.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from archive import Node, NodeStatus
from evaluators.pipeline import EvaluationResult
from orchestrator import admission


@dataclass(frozen=True)
class Verdict:
    status: NodeStatus
    reason: str = ""


def judge(
    node: Node,
    result: EvaluationResult,
    *,
    parent: Node | None,
    seed: Node | None,
    changed: bool,
    policy: admission.Policy,
    rule: admission.AdmissionRule,
    bound: Callable[[Node], float] = lambda n: n.score,
    score: float | None = None,
) -> Verdict:
    """``score`` is what admission compares (default the result's score); ``bound`` turns the
    parent's and the seed's recorded scores into the same kind of number (a lower confidence bound
    when the campaign measures noise)."""
    if result.evaluator_error:
        return Verdict(NodeStatus.FAILED, result.evaluator_error)
    if not result.valid:
        return Verdict(NodeStatus.INVALID, result.error or "no stage ran")
    if not result.complete:
        return Verdict(NodeStatus.REJECTED, result.error)
    if node.parent_id is None:  # the seed: admitted once it completes every stage
        return Verdict(NodeStatus.ADMITTED)
    ranked = lambda n: bound(n) if n is not None and n.score is not None else None  # noqa: E731
    decision = policy(
        admission.Candidate(
            True, changed, result.score if score is None else score, ranked(parent), ranked(seed)
        ),
        rule,
    )
    return Verdict(NodeStatus.ADMITTED if decision.admit else NodeStatus.REJECTED, "" if decision.admit else decision.reason)
