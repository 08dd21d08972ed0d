"""``refine``: a line search along a numeric change the FM made, without calling the FM.

Small models are fair at choosing *what* to change (a ring's radius, a learning rate, a clip range)
and poor at *how much*: their steps are large and overshoot, so on a tight landscape almost every
valid numeric change scores lower than its parent. For a node whose code differs from its parent's
only in numbers, ``refine`` writes the parent's code with each changed number moved a fraction ``t``
of the way: ``a + t * (b - a)``. A step that helped is continued (``t > 1``); one that hurt is
shortened or reversed (``|t| < 1``, either sign). The FM's choice of direction is kept; the operator
only searches its length, and every step is an ordinary node, evaluated and admitted like any other.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

from orchestrator.mutation.operators import Operator, Proposal, Sampling
from orchestrator.mutation.parsing import NUMBER_RE, ProposalInvalid, line_shape, check_python
from orchestrator.mutation.prompts import ProposalContext

# steps along (parent → node), tried in a seeded order; the first that gives a new program wins
CONTINUE = (2.0, 1.5, 3.0)
SHORTEN = (0.5, -0.5, 0.25, -0.25, 0.1, -0.1)

# {path: [(line index, old numbers, new numbers)]}
Step = dict[str, list[tuple[int, list[str], list[str]]]]


def numeric_step(origin: dict[str, str], files: dict[str, str]) -> Step | None:
    """The changes from ``origin`` to ``files`` when they are only changes of numbers, else None."""
    if set(origin) != set(files):
        return None
    step: Step = {}
    for path, old in origin.items():
        old_lines, new_lines = old.split("\n"), files[path].split("\n")
        if len(old_lines) != len(new_lines):
            return None
        for i, (a, b) in enumerate(zip(old_lines, new_lines)):
            if a == b:
                continue
            if line_shape(a) != line_shape(b):
                return None
            step.setdefault(path, []).append((i, NUMBER_RE.findall(a), NUMBER_RE.findall(b)))
    return step or None


def text_key(files: dict[str, str]) -> str:
    """A short digest of a program's editable files, to recognise a program tried before."""
    h = hashlib.sha256()
    for path in sorted(files):
        h.update(path.encode() + b"\0" + files[path].encode() + b"\0")
    return h.hexdigest()[:16]


def _is_int(token: str) -> bool:
    return not any(ch in token for ch in ".eE")


def _moved(a: str, b: str, t: float) -> str:
    """Number ``a`` moved a fraction ``t`` towards ``b``, written in ``a``'s style."""
    if a == b:
        return a
    x, y = float(a), float(b)
    value = x + t * (y - x)
    if _is_int(a) and _is_int(b):
        text = str(int(round(value)))
    else:
        text = format(value, ".6g")
        if not any(ch in text for ch in ".eEn"):  # keep a float a float ("1" → "1.0")
            text += ".0"
    if a[0] in "+-" and not text.startswith("-"):  # "x -0.3" must not become "x 0.1"
        text = "+" + text
    return text


def apply_step(origin: dict[str, str], step: Step, t: float) -> dict[str, str]:
    """``origin`` with each changed number moved a fraction ``t`` along ``step``."""
    out = dict(origin)
    for path, changes in step.items():
        lines = origin[path].split("\n")
        for i, olds, news in changes:
            it = iter(_moved(a, b, t) for a, b in zip(olds, news))
            lines[i] = NUMBER_RE.sub(lambda m: next(it, m.group(0)), lines[i])
        out[path] = "\n".join(lines)
    return out


class RefineOperator(Operator):
    name = "refine"
    needs_origin = True

    def accepts(self, files: dict[str, str], origin: dict[str, str]) -> bool:
        return numeric_step(origin, files) is not None

    def propose(self, ctx: ProposalContext, fm: Any, sampling: Sampling) -> Proposal:
        proposal = Proposal(self.name, ctx.target, None)
        origin = ctx.origin or {}
        files = {p: ctx.files[p] for p in origin if p in ctx.files}
        step = numeric_step(origin, files)
        if step is None:
            proposal.error = "refine needs a node that changed only numbers of its parent"
            return proposal
        improved = ctx.score is not None and ctx.origin_score is not None and ctx.score > ctx.origin_score
        ts = list(CONTINUE if improved else SHORTEN)
        random.Random(sampling.seed).shuffle(ts)
        seen = {text_key(origin), text_key(files), *ctx.tried}
        for t in ts:
            child = apply_step(origin, step, t)
            if text_key(child) in seen:
                continue
            changed = {p: child[p] for p in child if child[p] != files[p]}
            try:
                for path, text in changed.items():
                    check_python(path, text)
            except ProposalInvalid:
                continue
            numbers = [f"{a}→{_moved(a, b, t)}" for ch in step.values() for _, olds, news in ch for a, b in zip(olds, news) if a != b]
            proposal.files = changed
            proposal.summary = f"refine node {ctx.parent_id}'s numeric change, step t={t:g}: " + ", ".join(numbers[:6])
            return proposal
        proposal.error = "refine: every step along this change has been tried"
        return proposal
