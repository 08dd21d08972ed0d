"""Finds evaluators through the ``dgm.evaluators`` entry-point group (built-ins and plugins alike)."""

from __future__ import annotations

import inspect
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from evaluators.api import Evaluator, EvaluatorOptions, EvaluatorOptionsError, MetricSpec, Stage

GROUP = "dgm.evaluators"


class EvaluatorLoadError(RuntimeError):
    """A plugin could not be loaded or does not follow the evaluator API; the message names both."""


def entry_point_map() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def problems(cls: Any) -> list[str]:
    """What is wrong with a would-be evaluator class (empty when it follows the API)."""
    if not (inspect.isclass(cls) and issubclass(cls, Evaluator)):
        return [f"{cls!r} is not a subclass of evaluators.api.Evaluator"]
    found = []
    for attr, kind in (("name", str), ("task", str)):
        if not isinstance(getattr(cls, attr, None), kind) or not getattr(cls, attr):
            found.append(f"class attribute {attr!r} must be a non-empty {kind.__name__}")
    stages = getattr(cls, "stages", None)
    if not stages or not all(isinstance(s, Stage) for s in stages):
        found.append("class attribute 'stages' must be a non-empty sequence of evaluators.api.Stage")
    metrics = getattr(cls, "metrics", None)
    if not metrics or not all(isinstance(m, MetricSpec) for m in metrics):
        found.append("class attribute 'metrics' must be a non-empty sequence of evaluators.api.MetricSpec")
    else:
        declared = {m.name for m in metrics}
        for s in stages or ():
            for gate_metric in getattr(s, "gate", {}):
                if gate_metric != "score" and gate_metric not in declared:
                    found.append(f"stage {s.name!r} gates on undeclared metric {gate_metric!r}")
    options = getattr(cls, "Options", None)
    if not (inspect.isclass(options) and issubclass(options, EvaluatorOptions)):
        found.append("class attribute 'Options' must be a subclass of evaluators.api.EvaluatorOptions")
    if inspect.isabstract(cls):
        missing = sorted(getattr(cls, "__abstractmethods__", ()))
        found.append(f"does not implement {', '.join(missing)}")
    else:
        sig = inspect.signature(cls.run_stage)
        if len(sig.parameters) != 3:
            found.append(f"run_stage{sig} must take (self, stage, run)")
    return found


def load_class(name: str) -> type[Evaluator]:
    """The evaluator class registered as ``name``; errors name the plugin and the fault."""
    eps = entry_point_map()
    if name not in eps:
        known = ", ".join(sorted(eps)) or "none"
        raise EvaluatorLoadError(f"no evaluator named {name!r} (installed: {known}); is its package pip-installed?")
    ep = eps[name]
    try:
        cls = ep.load()
    except Exception as e:  # import errors, syntax errors, missing attributes in the plugin module
        raise EvaluatorLoadError(f"evaluator plugin {name!r} ({ep.value}) failed to import: {type(e).__name__}: {e}") from e
    found = problems(cls)
    if found:
        raise EvaluatorLoadError(f"evaluator plugin {name!r} ({ep.value}): " + "; ".join(found))
    return cls


def create(name: str, options: dict[str, Any] | None = None) -> Evaluator:
    """An instance of the evaluator registered as ``name``; a bad option names it and its value."""
    cls = load_class(name)
    try:
        return cls(**(options or {}))
    except EvaluatorOptionsError as e:  # already names the evaluator, the option and the value
        raise EvaluatorLoadError(str(e)) from e
    except Exception as e:
        raise EvaluatorLoadError(f"evaluator {name!r}: bad options {options!r}: {e}") from e
