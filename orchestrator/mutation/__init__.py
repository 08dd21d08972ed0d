"""Mutation: prompts, FM answer parsing, and the operators that turn a parent into a child."""

from orchestrator.mutation.fit import FitOperator
from orchestrator.mutation.operators import FM_OPERATORS, Operator
from orchestrator.mutation.self_improve import SelfImproveOperator

#: operators known by name in ``[mutation] operators``; any other name is a ``module:Class`` plugin
BUILTIN: dict[str, type[Operator]] = {**FM_OPERATORS, "self": SelfImproveOperator, "fit": FitOperator}

#: names of operators that were replaced, and by what (a config naming one gets the new name back)
RETIRED: dict[str, str] = {"refine": "fit (CMA-ES over the program's float constants, replacing refine's text nudges)"}
