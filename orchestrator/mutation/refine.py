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
import random
import re
from typing import Any, NamedTuple

from orchestrator.events import NodeEvent
from orchestrator.memory import program_digest
from orchestrator.mutation.operators import Operator, Proposal, Sampling
from orchestrator.mutation.parsing import NUMBER_RE, ProposalInvalid, check_python, is_code_line, line_shape
from orchestrator.mutation.prompts import ProposalContext

class Knob(NamedTuple):
    """A number (or numbers) of one line that FM edits turn: "the 2nd and 4th number of the first
    line that reads `centers[1 + i] = [0.5 + # ...`"."""

    path: str
    template: str  # the line with the changed numbers masked and spaces removed
    occurrence: int  # which line of the file with that template
    numbers: tuple[int, ...]  # the changed numbers' indices on the line
#: relative steps for a float; an integer moves by one
FLOAT_STEPS = (0.01, -0.01, 0.02, -0.02, 0.05, -0.05, 0.1, -0.1)
INT_STEPS = (1, -1)


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
    return [i for i, line in enumerate(lines) if is_code_line(line) and _template(line, ks) == template]


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
                if not is_code_line(x) or line_shape(x) != line_shape(y):
                    continue
                pairs = zip(NUMBER_RE.findall(x), NUMBER_RE.findall(y))
                ks = tuple(k for k, (p, q) in enumerate(pairs) if float(p) != float(q))
                if ks:
                    template = _template(x, ks)
                    knobs.add(Knob(path, template, _occurrences(a, template, ks).index(i), ks))
    return knobs


def places(files: dict[str, str], knobs) -> list[tuple[str, int, tuple[int, ...], Knob]]:
    """Where the knobs are in a program: (path, line index, number indices, knob), in file order.
    Numbers of one knob that are equal move together (the x and y radius of one ring)."""
    out = set()
    for knob in knobs:
        path, template, occurrence, ks = knob.path, knob.template, knob.occurrence, knob.numbers
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
        out.update((path, i, tuple(g), knob) for g in groups.values())
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


#: a knob's direction (up or down) is retired once this many children that moved it alone that way
#: were invalid or changed nothing (the same score as their parent), and none did better than that
RETIRE_AFTER = 2
#: a knob and a direction refine may move it in (+1 up, -1 down)
Direction = tuple[Knob, int]


class KnobBook:
    """What the archive teaches about numbers: the knobs that FM edits with a valid result turned,
    and how children that moved one knob alone fared, per direction. A direction whose nudges only
    ever break the program (a count the evaluator fixes) or change nothing it measures (a loop
    bound whose extra passes are overwritten) is retired; ``active`` holds the live ones."""

    def __init__(self) -> None:
        self._turned: set[Knob] = set()
        self._outcomes: dict[Direction, list[int]] = {}  # → [changed the score, broke it or changed nothing]
        self.active: frozenset[Direction] = frozenset()

    def observe(self, origin: dict[str, str], files: dict[str, str], *, by_fm: bool, valid: bool,
                same_score: bool = False) -> None:
        """Learn from one evaluated child (``files``) of ``origin``; ``same_score``: it scored
        exactly what its parent did."""
        turned = knobs_changed(origin, files)
        if by_fm and valid:
            self._turned |= turned
        if len(turned) == 1 and numeric_only(origin, files):
            knob = next(iter(turned))
            path, ks = knob.path, knob.numbers
            i = places(origin, {knob})[0][1]
            old, new = (float(NUMBER_RE.findall(t[path].split("\n")[i])[ks[0]]) for t in (origin, files))
            useless = not valid or same_score
            self._outcomes.setdefault((knob, 1 if new > old else -1), [0, 0])[1 if useless else 0] += 1
        self.active = frozenset((k, d) for k in self._turned for d in (1, -1) if not self.retired(k, d))

    def retired(self, knob: Knob, direction: int) -> bool:
        useful, useless = self._outcomes.get((knob, direction), (0, 0))
        return useful == 0 and useless >= RETIRE_AFTER


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


def nudges(files: dict[str, str], directions: frozenset[Direction], rng: random.Random | None = None):
    """Every nudge of ``files`` along the knobs' live ``directions``: (changed path, its new text,
    what was done), in file order, or shuffled (places, then steps) by ``rng``."""
    ways: dict[Knob, set[int]] = {}
    for knob, direction in directions:
        ways.setdefault(knob, set()).add(direction)
    where = places(files, ways)
    if rng is not None:
        rng.shuffle(where)
    for path, i, ks, knob in where:
        lines = files[path].split("\n")
        token = NUMBER_RE.findall(lines[i])[ks[0]]
        steps = [s for s in (INT_STEPS if _is_int(token) else FLOAT_STEPS) if (1 if s > 0 else -1) in ways[knob]]
        if rng is not None:
            rng.shuffle(steps)
        for step in steps:
            new = nudged(token, step)
            child = lines[:i] + [_sub_at(lines[i], ks, new)[0]] + lines[i + 1 :]
            how = f"{step:+g}" if _is_int(token) else f"{step:+.0%}"
            yield path, "\n".join(child), f"{path} line {i + 1}, {token} → {new} ({how})"


class RefineOperator(Operator):
    """Nudge one of the FM's knobs in the parent's code; calls no FM.

    Its state is its own, learnt in ``observe``: the knobs (a :class:`KnobBook`) and the digests of
    every program sent for evaluation, so that it never proposes one the archive holds.
    """

    name = "refine"
    calls_fm = False
    inline = True  # a nudge is instant
    selective = True  # only parents holding a knob with a nudge not yet tried
    needs = "tunes numbers that FM edits changed"  # alone, it has nothing to tune

    def __init__(self) -> None:
        self.book = KnobBook()
        self.known: set[str] = set()  # digests of the programs sent for evaluation
        self._keys: dict[tuple[str, frozenset], frozenset[str]] = {}  # (program, knobs) → its nudges' digests

    def observe(self, event: NodeEvent) -> None:
        node, parent = event.node, event.parent
        if event.sent_for_evaluation and event.texts is not None:
            self.known.add(program_digest(event.texts))
        if event.evaluated and event.texts is not None and event.parent_texts is not None:
            valid = node.status.value != "invalid"
            self.book.observe(
                event.parent_texts, event.texts, by_fm=bool(node.fm_model), valid=valid,
                same_score=valid and node.score is not None and node.score == parent.score,
            )

    def can_work_from(self, texts: dict[str, str]) -> bool:
        """Whether some nudge of this program along a live knob is not in the archive yet."""
        knobs = self.book.active
        key = (program_digest(texts), knobs)
        if key not in self._keys:
            if len(self._keys) > 4096:
                self._keys.clear()
            self._keys[key] = frozenset(program_digest({**texts, path: text}) for path, text, _ in nudges(texts, knobs))
        return not self._keys[key] <= self.known

    def propose(self, ctx: ProposalContext, fm: Any, sampling: Sampling) -> Proposal:
        proposal = Proposal(self.name, ctx.target, None)
        for path, text, what in nudges(ctx.files, self.book.active, random.Random(sampling.seed)):
            if program_digest({**ctx.files, path: text}) in self.known:
                continue
            try:
                check_python(path, text)
            except ProposalInvalid:
                continue
            proposal.files, proposal.target, proposal.summary = {path: text}, path, f"refine: {what}"
            return proposal
        proposal.error = "refine: every nudge of the FM's numbers in this program is already in the archive"
        return proposal
