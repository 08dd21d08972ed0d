"""The refine operator: a line search along the FM's numeric change, with no FM call."""

from __future__ import annotations

import pytest

from orchestrator.mutation.operators import Sampling
from orchestrator.mutation.prompts import ProposalContext
from orchestrator.mutation.refine import RefineOperator, apply_step, numeric_step, text_key

ORIGIN = "def f():\n    n = range(8)\n    r = 0.3 * x - 0.5\n    return g(r, -2.0)\n"
CHANGED = ORIGIN.replace("0.3 *", "0.25 *")


def test_numeric_step_sees_only_changes_of_numbers():
    step = numeric_step({"a.py": ORIGIN}, {"a.py": CHANGED})
    assert step == {"a.py": [(2, ["0.3", "0.5"], ["0.25", "0.5"])]}
    assert numeric_step({"a.py": ORIGIN}, {"a.py": ORIGIN}) is None  # nothing changed
    assert numeric_step({"a.py": ORIGIN}, {"a.py": CHANGED.replace("x -", "y -")}) is None  # a name changed
    assert numeric_step({"a.py": ORIGIN}, {"a.py": CHANGED + "\n"}) is None  # a line added
    assert numeric_step({"a.py": ORIGIN}, {"b.py": CHANGED}) is None


@pytest.mark.parametrize(
    "old, new, t, want",
    [
        ("0.3 * x", "0.25 * x", 0.5, "0.275 * x"),
        ("0.3 * x", "0.25 * x", -0.5, "0.325 * x"),
        ("range(8)", "range(10)", 0.5, "range(9)"),  # integers stay integers
        ("0.5 + 1.5", "0.5 + 2.5", -0.5, "0.5 + 1.0"),  # floats stay floats
        ("g(r, -2.0)", "g(r, -1.0)", 3.0, "g(r, +1.0)"),  # a signed literal keeps a sign
    ],
)
def test_apply_step_moves_each_changed_number_a_fraction_of_the_way(old, new, t, want):
    step = numeric_step({"a.py": old}, {"a.py": new})
    assert apply_step({"a.py": old}, step, t) == {"a.py": want}


def ctx(score: float, origin_score: float, tried=frozenset()) -> ProposalContext:
    return ProposalContext(
        task="T", parent_id=7, files={"a.py": CHANGED}, editable=["a.py"], target="a.py",
        score=score, origin={"a.py": ORIGIN}, origin_score=origin_score, tried=tried,
    )


def test_a_step_that_hurt_is_shortened_or_reversed_and_one_that_helped_is_continued():
    op = RefineOperator()
    worse = {op.propose(ctx(0.5, 0.6), None, Sampling(1.0, s, 0)).files["a.py"].split("\n")[2] for s in range(40)}
    assert {"    r = 0.275 * x - 0.5", "    r = 0.325 * x - 0.5", "    r = 0.3125 * x - 0.5", "    r = 0.295 * x - 0.5"} <= worse
    better = {op.propose(ctx(0.7, 0.6), None, Sampling(1.0, s, 0)).files["a.py"].split("\n")[2] for s in range(40)}
    assert better == {"    r = 0.2 * x - 0.5", "    r = 0.225 * x - 0.5", "    r = 0.15 * x - 0.5"}


def test_refine_skips_programs_already_tried_and_says_when_none_is_left():
    op = RefineOperator()
    tried = set()
    for s in range(3):
        p = op.propose(ctx(0.7, 0.6, frozenset(tried)), None, Sampling(1.0, s, 0))
        assert p.valid and "step t=" in p.summary and p.completion is None
        tried.add(text_key(p.files))
    last = op.propose(ctx(0.7, 0.6, frozenset(tried)), None, Sampling(1.0, 9, 0))
    assert not last.valid and "every step along this change has been tried" in last.error


def test_refine_accepts_only_numeric_changes():
    op = RefineOperator()
    assert op.needs_origin and op.accepts({"a.py": CHANGED}, {"a.py": ORIGIN})
    assert not op.accepts({"a.py": CHANGED + "print()\n"}, {"a.py": ORIGIN})
