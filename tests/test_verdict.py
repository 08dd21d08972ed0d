"""The verdict on an evaluated node, under the stage semantics: invalid in any stage is invalid
(with that stage's reason), stopped at a gate is rejected and never ranked, and only a complete
evaluation is ranked, by its last stage's score."""

from __future__ import annotations

from archive import Node, NodeStatus
from evaluators.pipeline import EvaluationResult, StageResult
from orchestrator.admission import AdmissionRule, keep_all_valid, keep_better
from orchestrator.verdict import judge


def node(i: int, parent: int | None, score: float | None = None) -> Node:
    return Node(id=i, campaign="t", parent_id=parent, status=NodeStatus.ADMITTED, commit="c", score=score)


SEED, PARENT = node(0, None, 0.5), node(1, 0, 0.6)


def ok(stage: str, score: float, gate: bool = True) -> StageResult:
    return StageResult(stage, True, gate, score, feedback=f"{stage} fine", error="" if gate else "score = 0.1 < 0.5")


def bad(stage: str, why: str) -> StageResult:
    return StageResult(stage, False, False, None, error=why)


def verdict(result: EvaluationResult, policy=keep_all_valid, child: Node | None = None):
    return judge(child or node(2, 1), result, parent=PARENT, seed=SEED, changed=True, policy=policy, rule=AdmissionRule())


def test_a_candidate_only_a_later_stage_refuses_is_invalid_with_that_stages_reason():
    result = EvaluationResult([ok("smoke", 0.94), bad("full", "choose_bin returned 5, but 0 bins are open")], selected=2)
    assert not result.valid and result.score is None
    v = verdict(result)
    assert v.status == NodeStatus.INVALID and v.reason == "stage full: choose_bin returned 5, but 0 bins are open"


def test_a_candidate_stopped_at_a_gate_is_rejected_and_not_ranked():
    result = EvaluationResult([ok("smoke", 0.9), ok("small", 0.1, gate=False)], selected=3)
    assert result.valid and not result.complete and result.gated.stage == "small" and result.score is None
    v = verdict(result, policy=keep_all_valid)  # even the most lenient policy does not see it
    assert v.status == NodeStatus.REJECTED and "stage small: did not pass the gate" in v.reason


def test_a_complete_evaluation_is_ranked_by_its_last_stages_score():
    result = EvaluationResult([ok("smoke", 0.99), ok("small", 0.55)], selected=2)
    assert result.complete and result.score == 0.55  # not the smoke score: one scale for every node
    assert verdict(result, policy=keep_better).status == NodeStatus.ADMITTED  # 0.55 ≥ seed 0.5 − 0.1
    low = EvaluationResult([ok("smoke", 0.99), ok("small", 0.3)], selected=2)
    v = verdict(low, policy=keep_better)
    assert v.status == NodeStatus.REJECTED and "0.3000 < seed 0.5000" in v.reason


def test_stages_that_did_not_run_leave_the_evaluation_incomplete():
    assert not EvaluationResult([ok("smoke", 0.9)], selected=2).complete


def test_an_evaluator_fault_fails_the_node_and_the_seed_needs_every_stage():
    assert verdict(EvaluationResult([ok("smoke", 0.9)], evaluator_error="sandbox broke")).status == NodeStatus.FAILED
    seed = node(0, None)
    gated = EvaluationResult([ok("smoke", 0.9, gate=False)], selected=1)
    assert verdict(gated, child=seed).status == NodeStatus.REJECTED
    assert verdict(EvaluationResult([ok("smoke", 0.9)], selected=1), child=seed).status == NodeStatus.ADMITTED
