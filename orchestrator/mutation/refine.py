"""``refine``: tune the numbers the FM has been changing, without calling the FM.

Small models are fair at choosing *what* to change (a ring's radius, a learning rate, a clip range)
and poor at *how much*: their steps are large and overshoot, so on a tight landscape almost every
numeric change they make scores lower than its parent. dgm therefore learns from the archive which
numbers the FM's edits touch, its *knobs* (which numbers of which line, the line recognised by its
text with those numbers masked), and ``refine`` nudges one knob of a parent by a small relative
step (±1, 2, 5 or 10 %; an integer by ±1), never writing a program the archive already holds. The
model proposes the form and the search fits its constants, as in LLM-SR; each nudge is an ordinary
node, evaluated and admitted like any other, and the evaluator stays the only judge.
"""

from __future__ import annotations

import difflib
import hashlib
import random
import re
from typing import Any

from orchestrator.mutation.operators import Operator, Proposal, Sampling
from orchestrator.mutation.parsing import NUMBER_RE, ProposalInvalid, check_python, line_shape
from orchestrator.mutation.prompts import ProposalContext

#: (path, the line with the changed numbers masked, which such line of the file, the changed numbers'
#: indices): "the 2nd and 4th number of the first line that reads `centers[1 + i] = [0.5 + # ...`"
Knob = tuple[str, str, int, tuple[int, ...]]
#: relative steps for a float; an integer moves by one
FLOAT_STEPS = (0.01, -0.01, 0.02, -0.02, 0.05, -0.05, 0.1, -0.1)
INT_STEPS = (1, -1)


def text_key(files: dict[str, str]) -> str:
    """A short digest of a program's editable files, to recognise a program the archive holds."""
    h = hashlib.sha256()
    for path in sorted(files):
        h.update(path.encode() + b"\0" + files[path].encode() + b"\0")
    return h.hexdigest()[:16]


def _tunable(line: str) -> bool:
    return bool(line.strip()) and not line.lstrip().startswith("#")


def _sub_at(line: str, ks: tuple[int, ...], token: str) -> tuple[str, int]:
    """``line`` with its numbers at indices ``ks`` replaced by ``token``, and how many numbers it has."""
    seen = [-1]

    def sub(m: re.Match) -> str:
        seen[0] += 1
        return token if seen[0] in ks else m.group(0)

    return NUMBER_RE.sub(sub, line), seen[0] + 1


def _template(line: str, ks: tuple[int, ...]) -> str | None:
    """``line`` with its numbers at ``ks`` masked and spaces removed; None if it has fewer numbers."""
    text, count = _sub_at(line, ks, "#")
    return re.sub(r"\s+", "", text) if count > max(ks) else None


def _occurrences(lines: list[str], template: str, ks: tuple[int, ...]) -> list[int]:
    return [i for i, line in enumerate(lines) if _tunable(line) and _template(line, ks) == template]


def knobs_changed(origin: dict[str, str], files: dict[str, str]) -> set[Knob]:
    """The knobs an edit from ``origin`` to ``files`` turned: numbers that changed on lines that kept
    their shape. Lines added, removed or rewritten around them do not hide them."""
    knobs: set[Knob] = set()
    for path, new in files.items():
        old = origin.get(path)
        if old is None or old == new:
            continue
        a, b = old.split("\n"), new.split("\n")
        for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
            if tag != "replace":
                continue
            for i, y in zip(range(i1, i2), b[j1:j2]):
                x = a[i]
                if not _tunable(x) or line_shape(x) != line_shape(y):
                    continue
                pairs = zip(NUMBER_RE.findall(x), NUMBER_RE.findall(y))
                ks = tuple(k for k, (p, q) in enumerate(pairs) if float(p) != float(q))
                if ks:
                    template = _template(x, ks)
                    knobs.add((path, template, _occurrences(a, template, ks).index(i), ks))
    return knobs


def places(files: dict[str, str], knobs: frozenset[Knob] | set[Knob]) -> list[tuple[str, int, tuple[int, ...]]]:
    """Where the knobs are in a program: (path, line index, number indices), in file order. Knobs of
    one line that hold the same number move together (the x and y radius of one ring)."""
    out = set()
    for path, template, occurrence, ks in knobs:
        if path not in files:
            continue
        lines = files[path].split("\n")
        hits = _occurrences(lines, template, ks)
        if occurrence >= len(hits):
            continue
        i = hits[occurrence]
        tokens = NUMBER_RE.findall(lines[i])
        groups: dict[float, list[int]] = {}
        for k in ks:
            groups.setdefault(float(tokens[k]), []).append(k)
        out.update((path, i, tuple(g)) for g in groups.values())
    return sorted(out)


def numeric_only(origin: dict[str, str], files: dict[str, str]) -> bool:
    """Whether ``files`` differ from ``origin`` in numbers only (the same files and lines otherwise)."""
    if set(origin) != set(files):
        return False
    for path, new in files.items():
        a, b = origin[path].split("\n"), new.split("\n")
        if len(a) != len(b) or any(line_shape(x) != line_shape(y) for x, y in zip(a, b)):
            return False
    return True


#: a knob is retired once this many children that turned it alone were invalid, and none valid
RETIRE_AFTER = 2


class KnobBook:
    """What the archive teaches about numbers: the knobs that FM edits with a valid result turned,
    and how children that turned one knob alone fared. A knob whose nudges only ever break the
    program (a count the evaluator fixes, say) is retired."""

    def __init__(self) -> None:
        self._turned: set[Knob] = set()
        self._outcomes: dict[Knob, list[int]] = {}  # knob → [valid, invalid]
        self.active: frozenset[Knob] = frozenset()

    def observe(self, origin: dict[str, str], files: dict[str, str], *, by_fm: bool, valid: bool) -> None:
        """Learn from one evaluated child (``files``) of ``origin``."""
        turned = knobs_changed(origin, files)
        if by_fm and valid:
            self._turned |= turned
        if len(turned) == 1 and numeric_only(origin, files):
            self._outcomes.setdefault(next(iter(turned)), [0, 0])[0 if valid else 1] += 1
        self.active = frozenset(k for k in self._turned if not self.retired(k))

    def retired(self, knob: Knob) -> bool:
        valid, invalid = self._outcomes.get(knob, (0, 0))
        return valid == 0 and invalid >= RETIRE_AFTER


def _is_int(token: str) -> bool:
    return not any(ch in token for ch in ".eE")


def nudged(token: str, step: float) -> str:
    """``token`` moved by ``step``: relative for a float (written in its style), ±1 for an integer."""
    if _is_int(token):
        text = str(int(token) + int(step))
    else:
        value = float(token)
        text = format(value * (1 + step) if value else step, ".6g")
        if not any(ch in text for ch in ".eEn"):  # keep a float a float ("2" → "2.0")
            text += ".0"
    if token[0] == "+" and not text.startswith("-"):  # "x +0.3" stays "x +0.33", not "x 0.33"
        text = "+" + text
    return text


def nudges(files: dict[str, str], knobs: frozenset[Knob], rng: random.Random | None = None):
    """Every nudge of ``files`` along ``knobs``: (changed path, its new text, what was done), in
    file order, or shuffled (places, then steps) by ``rng``."""
    where = places(files, knobs)
    if rng is not None:
        rng.shuffle(where)
    for path, i, ks in where:
        lines = files[path].split("\n")
        token = NUMBER_RE.findall(lines[i])[ks[0]]
        steps = list(INT_STEPS if _is_int(token) else FLOAT_STEPS)
        if rng is not None:
            rng.shuffle(steps)
        for step in steps:
            new = nudged(token, step)
            child = lines[:i] + [_sub_at(lines[i], ks, new)[0]] + lines[i + 1 :]
            how = f"{step:+g}" if _is_int(token) else f"{step:+.0%}"
            yield path, "\n".join(child), f"{path} line {i + 1}, {token} → {new} ({how})"


class RefineOperator(Operator):
    """Nudge one of the FM's knobs in the parent's code; calls no FM."""

    name = "refine"
    calls_fm = False
    needs_knobs = True

    def __init__(self) -> None:
        self._keys: dict[tuple[str, frozenset], frozenset[str]] = {}  # (program, knobs) → its nudges' digests

    def accepts(self, files: dict[str, str], knobs: frozenset[Knob], known: frozenset[str]) -> bool:
        """Whether some nudge of this program is not in the archive yet."""
        key = (text_key(files), knobs)
        if key not in self._keys:
            if len(self._keys) > 4096:
                self._keys.clear()
            self._keys[key] = frozenset(text_key({**files, path: text}) for path, text, _ in nudges(files, knobs))
        return not self._keys[key] <= known

    def propose(self, ctx: ProposalContext, fm: Any, sampling: Sampling) -> Proposal:
        proposal = Proposal(self.name, ctx.target, None)
        for path, text, what in nudges(ctx.files, ctx.knobs, random.Random(sampling.seed)):
            if text_key({**ctx.files, path: text}) in ctx.known:
                continue
            try:
                check_python(path, text)
            except ProposalInvalid:
                continue
            proposal.files, proposal.target, proposal.summary = {path: text}, path, f"refine: {what}"
            return proposal
        proposal.error = "refine: every nudge of the FM's numbers in this program is already in the archive"
        return proposal
