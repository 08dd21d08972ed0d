"""What a campaign config names, resolved to objects before anything starts: the evaluator, the
selection and admission policies and the operators. A bad name fails here, with its config field,
before the model server is started."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from evaluators import registry
from evaluators.api import Evaluator
from orchestrator import admission, selection
from orchestrator.config import CampaignConfig
from orchestrator.errors import CampaignError
from orchestrator.mutation import BUILTIN as BUILTIN_OPERATORS, RETIRED
from orchestrator.mutation.operators import Operator
from orchestrator.plugins import resolve as resolve_plugin


def _named(field: str, name: str, resolve: Callable[[str], Any]) -> Any:
    """``resolve(name)``, with a bad name reported against its config field."""
    try:
        return resolve(name)
    except ValueError as e:
        raise CampaignError(f"{field} = {name!r}: {e}") from None


def _operator(name: str, cfg: CampaignConfig) -> Operator:
    if name in RETIRED:
        raise ValueError(f"this operator was replaced by {RETIRED[name]}; rename it")
    return resolve_plugin("mutation operator", name, BUILTIN_OPERATORS).from_config(cfg)


@dataclass
class CampaignPlan:
    evaluator: Evaluator
    select: selection.Policy  # [selection].method
    select_for: dict[str, selection.Policy]  # [selection].per_operator
    admit: admission.Policy
    admit_rule: admission.AdmissionRule
    operators: dict[str, Operator]  # name → a fresh instance (operators may keep state)
    weights: dict[str, float]

    @classmethod
    def from_config(cls, cfg: CampaignConfig) -> "CampaignPlan":
        operators = {
            n: _named(f"[mutation].operators.{n}", n, lambda name: _operator(name, cfg)) for n in cfg.mutation.operators
        }
        for name in cfg.selection.per_operator:
            if name in RETIRED:
                raise CampaignError(f"[selection].per_operator.{name}: this operator was replaced by {RETIRED[name]}; rename it")
        return cls(
            evaluator=registry.create(cfg.evaluator.name, cfg.evaluator.options),
            select=_named("[selection].method", cfg.selection.method, selection.resolve),
            select_for={
                op: _named(f"[selection].per_operator.{op}", m, selection.resolve)
                for op, m in cfg.selection.per_operator.items()
            },
            admit=_named("[admission].policy", cfg.admission.policy, admission.resolve),
            admit_rule=admission.AdmissionRule(cfg.admission.leeway, cfg.admission.reference),
            operators=operators,
            weights=dict(cfg.mutation.operators),
        )
