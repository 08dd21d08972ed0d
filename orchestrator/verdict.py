"""The verdict on an evaluated node: failed, invalid, rejected or admitted, with the reason.

Stage semantics (see ``evaluators.pipeline``): an evaluator fault is ``failed``; a candidate that
any stage found invalid is ``invalid`` with that stage's reason; one stopped by a gate is
``rejected`` with the gate's reason (it is never ranked against nodes that ran every stage); only a
complete evaluation goes to the admission policy, on its comparable score.
"""

from __future__ import annotations

from dataclasses import dataclass

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
) -> Verdict:
    if result.evaluator_error:
        return Verdict(NodeStatus.FAILED, result.evaluator_error)
    if not result.valid:
        return Verdict(NodeStatus.INVALID, result.error or "no stage ran")
    if not result.complete:
        return Verdict(NodeStatus.REJECTED, result.error)
    if node.parent_id is None:  # the seed: admitted once it completes every stage
        return Verdict(NodeStatus.ADMITTED)
    decision = policy(
        admission.Candidate(
            True, changed, result.score, parent.score if parent else None, seed.score if seed else None
        ),
        rule,
    )
    return Verdict(NodeStatus.ADMITTED if decision.admit else NodeStatus.REJECTED, "" if decision.admit else decision.reason)
