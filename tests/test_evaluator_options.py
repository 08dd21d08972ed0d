"""Evaluator options are pydantic models: a bad value names the evaluator, the option and the value;
an unknown option names the known ones; ``Evaluator(**options)``, ``registry.create`` and
``option_names()`` keep working, for plugins that only declare ``option_names()`` too."""

from __future__ import annotations

import pytest

from evaluators import registry
from evaluators.api import EvaluatorOptions, EvaluatorOptionsError
from evaluators.circle_packing import CirclePackingEvaluator
from evaluators.continual import ContinualEvaluator
from evaluators.optimizer import OptimizerEvaluator
from sandboxes.base import Limits


@pytest.mark.parametrize("cls, options, message", [
    (OptimizerEvaluator, {"timeout_s": -3}, "evaluator 'optimizer': option 'timeout_s' = -3: must be > 0"),
    (OptimizerEvaluator, {"static_guard": "perhaps"}, "evaluator 'optimizer': option 'static_guard' = 'perhaps': "),
    (ContinualEvaluator, {"seeds": 1}, "evaluator 'continual': option 'seeds' = 1: must be >= 2"),
    (ContinualEvaluator, {"iterations": 7}, "evaluator 'continual': option 'iterations' = 7: must be a multiple of 5"),
    (ContinualEvaluator, {"scenarios": ["class_il", "nope"]},
     "evaluator 'continual': option 'scenarios' = ['class_il', 'nope']: choose from ['class_il', 'task_il', 'domain_il']"),
    (CirclePackingEvaluator, {"timeot_s": 4}, "evaluator 'circle_packing': unknown option 'timeot_s' = 4; known: timeout_s"),
])
def test_a_bad_option_names_the_evaluator_the_option_and_the_value(cls, options, message):
    with pytest.raises(EvaluatorOptionsError) as e:
        cls(**options)
    assert str(e.value).startswith(message), str(e.value)
    with pytest.raises(registry.EvaluatorLoadError) as e:
        registry.create(cls.name, options)
    assert str(e.value).startswith(message)  # named once, not wrapped in a second "bad options" prefix


def test_options_are_typed_and_names_are_listed():
    ev = ContinualEvaluator(scenarios="task_il", iterations=10, threads=2)
    assert ev.options.scenarios == ["task_il"] and ev.options.threads == 2 and ev.budget["iterations"] == 10
    assert set(ContinualEvaluator.option_names()) == {"scenarios", "seeds", "hidden_seeds", "buffer_size", "iterations",
                                                     "timeout_s", "threads"}
    assert set(OptimizerEvaluator.option_names()) == {"static_guard", "timeout_s"}
    assert OptimizerEvaluator().options.static_guard is True


def test_timeout_s_overrides_every_stages_wall_clock_limit():
    stage = CirclePackingEvaluator.stages[0]
    assert CirclePackingEvaluator(timeout_s=4).options.limits(stage) == Limits(**{**vars(stage.limits), "wall_s": 4.0})
    assert CirclePackingEvaluator().options.limits(stage) is stage.limits


def test_a_plugin_that_only_names_its_options_keeps_working():
    class Legacy(CirclePackingEvaluator):
        name = "legacy"
        Options = EvaluatorOptions  # no model of its own

        @classmethod
        def option_names(cls):
            return ("n_points",)

    ev = Legacy(n_points=512)
    assert ev.options.get("n_points", 64) == 512 and "n_points" in ev.options and ev.options["n_points"] == 512
    assert Legacy().options.get("n_points", 64) == 64 and "n_points" not in Legacy().options
    with pytest.raises(EvaluatorOptionsError, match="unknown option 'timeout_s' = 1; known: n_points"):
        Legacy(timeout_s=1)
