"""Stage semantics through the real pipeline: a candidate that any stage finds invalid is invalid
with that stage's reason; a candidate stopped by a gate is valid but has no score; only a complete
evaluation is scored, by its last stage."""

from __future__ import annotations

import pytest

from evaluators.pipeline import evaluate
from sandboxes.base import Sandbox
from tests.stage_plugin import LATER_STAGE_INVALID, agent, evaluator_class, install


class NoSandbox(Sandbox):
    """The scripted evaluator runs nothing; any use of the sandbox is a bug of the test."""

    name = "none"

    def run(self, *a, **kw):
        raise AssertionError("the scripted evaluator must not run anything")


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    install(site)
    return evaluator_class(site)()


def run(plugin, tmp_path, plan, **kw):
    return evaluate(plugin, agent(tmp_path / "agent", plan), NoSandbox(), workroot=tmp_path / "work", **kw)


def test_a_candidate_only_a_later_stage_rejects_is_invalid_with_that_stages_reason(plugin, tmp_path):
    res = run(plugin, tmp_path, LATER_STAGE_INVALID)
    assert [(s.stage, s.valid) for s in res.stages] == [("smoke", True), ("small", True), ("full", False)]
    assert not res.valid and not res.complete and res.gated is None
    assert res.score is None  # not the smoke score (0.9419) the defect admitted it with
    assert res.error == "stage full: choose_bin returned 5, but 0 bins are open"
    assert not res.evaluator_error  # the candidate's fault: invalid, not failed
    # every stage's words reach the feedback, the later stage's verdict included
    assert res.feedback.splitlines() == ["[smoke] 0.9419 of the lower bound on bins", "[small] 0.9000 of the lower bound on bins",
                                         "[full] choose_bin returned 5, but 0 bins are open"]


def test_a_gated_candidate_is_valid_but_not_complete_and_has_no_score(plugin, tmp_path):
    res = run(plugin, tmp_path, {"smoke": {"score": 0.9419}, "small": {"score": 0.3}})
    assert [s.stage for s in res.stages] == ["smoke", "small"]  # full never ran
    assert res.valid and not res.complete and res.score is None
    assert res.gated is res.stages[1] and res.gated.stage == "small"
    assert res.error == "stage small: did not pass the gate (score = 0.3 < 0.5)"


def test_only_a_complete_evaluation_is_ranked_by_its_last_stage(plugin, tmp_path):
    # a node stopped at a gate has no score at all, however high its earlier stages scored; a node
    # that ran every stage is ranked by the last stage's score alone (one comparable scale)
    gated = run(plugin, tmp_path / "a", {"smoke": {"score": 0.99}, "small": {"score": 0.3}})
    complete = run(plugin, tmp_path / "b", {"smoke": {"score": 0.5}, "small": {"score": 0.6}, "full": {"score": 0.7}})
    assert gated.score is None and gated.gated.stage == "small"
    assert complete.complete and complete.gated is None and complete.score == 0.7


def test_a_selected_subset_is_complete_when_every_selected_stage_passed(plugin, tmp_path):
    res = run(plugin, tmp_path, LATER_STAGE_INVALID, stages=["smoke"])
    assert res.valid and res.complete and res.score == pytest.approx(0.9419)


def test_an_evaluator_fault_in_a_later_stage_is_not_valid(plugin, tmp_path):
    res = run(plugin, tmp_path, {"smoke": {"score": 0.9}, "small": {"crash": "bug in the evaluator"}})
    assert res.evaluator_error and "bug in the evaluator" in res.evaluator_error
    assert not res.valid and not res.complete and res.score is None and res.gated is None


def test_a_private_metric_out_of_range_is_held_at_its_worst_end_and_never_named_in_an_error():
    """An error is public (the FM's feedback, admission): a private value out of range used to make
    the candidate invalid with that value in the reason (fewshot: "metric hidden_mse_10 =
    7.54872e+08 is outside its range"). A public one still does."""
    import math

    from evaluators.api import CandidateInvalid, MetricSpec, StageOutcome
    from evaluators.pipeline import validate_metrics

    class Spec:
        name = "spec"
        metrics = (MetricSpec("mse", 0.0, 10.0, higher_is_better=False),
                   MetricSpec("hidden_mse", 0.0, 10.0, public=False, higher_is_better=False),
                   MetricSpec("hidden_acc", 0.0, 1.0, public=False),
                   MetricSpec("hidden_free", public=False))

        @classmethod
        def metric_spec(cls, name):
            return next((m for m in cls.metrics if m.name == name), None)

    public, private = validate_metrics(Spec, StageOutcome(0.5, {"mse": 1.0, "hidden_mse": 7.5e8, "hidden_acc": math.nan}))
    assert public == {"mse": 1.0} and private == {"hidden_mse": 10.0, "hidden_acc": 0.0}
    with pytest.raises(CandidateInvalid, match="metric mse = 12 is outside its range"):
        validate_metrics(Spec, StageOutcome(0.5, {"mse": 12.0}))
    with pytest.raises(CandidateInvalid) as e:  # no finite end to hold it at: invalid, without the value
        validate_metrics(Spec, StageOutcome(0.5, {"hidden_free": math.inf}))
    assert "inf" not in str(e.value).replace("hidden_free", "")
