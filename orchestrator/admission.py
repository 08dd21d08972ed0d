"""Admission: decide whether an evaluated child joins the tree as a possible parent.

Policies are pure functions of a :class:`Candidate` summary; the loop records the decision and its
reason on the node, whatever it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from orchestrator import plugins


@dataclass(frozen=True)
class Candidate:
    complete: bool  # valid in every stage, through every gate (see orchestrator.verdict)
    changed: bool  # the child's code differs from its parent's
    score: float | None
    parent_score: float | None
    seed_score: float | None


@dataclass(frozen=True)
class Decision:
    admit: bool
    reason: str


@dataclass(frozen=True)
class AdmissionRule:
    leeway: float = 0.1
    reference: str = "seed"  # keep_better compares with "seed" or "parent"


Policy = Callable[[Candidate, AdmissionRule], Decision]


def _basic(c: Candidate) -> Decision | None:
    if not c.changed:
        return Decision(False, "no change from the parent")
    if not c.complete or c.score is None:
        return Decision(False, "did not complete every stage")
    return None


def keep_all_valid(c: Candidate, rule: AdmissionRule) -> Decision:
    """DGM ``keep_all``: ran, made a non-empty change, completed every stage."""
    return _basic(c) or Decision(True, "valid and changed")


def keep_better(c: Candidate, rule: AdmissionRule) -> Decision:
    """DGM ``keep_better``: also needs score ≥ reference score − leeway (reference: seed or parent)."""
    basic = _basic(c)
    if basic:
        return basic
    ref = c.seed_score if rule.reference == "seed" else c.parent_score
    if ref is None:
        return Decision(True, f"valid; no {rule.reference} score to compare with")
    threshold = ref - rule.leeway
    if c.score >= threshold - 1e-12:  # the boundary admits, whatever the float rounding
        return Decision(True, f"score {c.score:.4f} ≥ {rule.reference} {ref:.4f} − {rule.leeway}")
    return Decision(False, f"score {c.score:.4f} < {rule.reference} {ref:.4f} − {rule.leeway}")


POLICIES: dict[str, Policy] = {"keep_all_valid": keep_all_valid, "keep_better": keep_better}


def resolve(name: str) -> Policy:
    return plugins.resolve("admission policy", name, POLICIES)