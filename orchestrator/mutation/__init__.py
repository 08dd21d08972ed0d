"""Mutation: prompts, FM answer parsing, and the operators that turn a parent into a child."""

from orchestrator.mutation.fit import FitOperator
from orchestrator.mutation.operators import FM_OPERATORS, Operator
from orchestrator.mutation.refine import RefineOperator
from orchestrator.mutation.self_improve import SelfImproveOperator

#: operators known by name in ``[mutation] operators``; any other name is a ``module:Class`` plugin
BUILTIN: dict[str, type[Operator]] = {**FM_OPERATORS, "refine": RefineOperator, "self": SelfImproveOperator, "fit": FitOperator}

#: the default operator mix of ``[mutation] operators`` (the config and ``dgm init`` read it here)
DEFAULT_WEIGHTS: dict[str, float] = {"diff": 0.35, "tweak": 0.2, "function": 0.1, "rewrite": 0.1, "refine": 0.25}
