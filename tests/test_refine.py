"""The refine operator: nudges the numbers FM edits have changed (the archive's knobs), no FM call."""

from __future__ import annotations

import pytest

from orchestrator.mutation.operators import Sampling
from orchestrator.mutation.prompts import ProposalContext
from orchestrator.mutation.refine import (
    FLOAT_STEPS,
    RETIRE_AFTER,
    KnobBook,
    RefineOperator,
    knobs_changed,
    nudged,
    nudges,
    numeric_only,
    Knob,
    places,
)
from orchestrator.memory import program_digest as text_key

PARENT = "def f():\n    n = range(8)\n    # ring at 0.3\n    r = [0.5 + 0.3 * x, 0.5 + 0.3 * y]\n    return g(r, -2.0)\n"
RING = "r=[0.5+#*x,0.5+#*y]"  # the ring line with its radii masked
KNOB = Knob("a.py", RING, 0, (1, 3))  # both radii of the first (only) such line
BOTH_WAYS = frozenset({(KNOB, 1), (KNOB, -1)})


def test_knobs_are_the_numbers_an_edit_changed_on_lines_that_kept_their_shape():
    child = PARENT.replace("0.3 *", "0.25 *").replace("range(8)", "range(9)")
    assert knobs_changed({"a.py": PARENT}, {"a.py": child}) == {KNOB, Knob("a.py", "n=range(#)", 0, (0,))}
    # lines added around the change, a renamed call elsewhere and a changed comment do not hide it
    mixed = child.replace("    return g(r, -2.0)", "    s = 1\n    return h(r, -2.0)").replace("at 0.3", "at 0.25")
    assert KNOB in knobs_changed({"a.py": PARENT}, {"a.py": mixed})
    assert not any(t.startswith("#") for _, t, _, _ in knobs_changed({"a.py": PARENT}, {"a.py": mixed}))
    assert knobs_changed({"a.py": PARENT}, {"a.py": PARENT}) == set()
    assert knobs_changed({"a.py": PARENT}, {"b.py": child}) == set()  # a new file has no origin


TWO_LOOPS = "for i in range(8):\n    a(i)\nfor i in range(17):\n    b(i)\n"


def test_a_knob_names_its_line_among_lines_that_read_alike():
    knobs = knobs_changed({"a.py": TWO_LOOPS}, {"a.py": TWO_LOOPS.replace("17", "16")})
    assert knobs == {Knob("a.py", "foriinrange(#):", 1, (0,))}  # the second loop, not the first
    assert places({"a.py": TWO_LOOPS}, knobs) == [("a.py", 2, (0,), next(iter(knobs)))]
    assert places({"a.py": TWO_LOOPS.replace("for i in range(8):\n    a(i)\n", "")}, knobs) == []  # gone


def test_places_group_equal_numbers_of_one_line():
    assert places({"a.py": PARENT}, {KNOB}) == [("a.py", 3, (1, 3), KNOB)]  # x and y radius move together
    assert places({"a.py": PARENT.replace("0.3 * y", "0.4 * y")}, {KNOB}) == [("a.py", 3, (1,), KNOB), ("a.py", 3, (3,), KNOB)]
    assert places({"a.py": PARENT}, {Knob("a.py", RING, 0, (1, 9))}) == []  # no 10th number on that line
    assert places({"a.py": PARENT.replace("0.5 +", "0.6 +")}, {KNOB}) == []  # the line now reads otherwise


@pytest.mark.parametrize(
    "token, step, want",
    [
        ("0.3", 0.01, "0.303"),
        ("0.45", -0.1, "0.405"),
        ("8", 1, "9"),  # integers move by one and stay integers
        ("2.", 0.5, "3.0"),  # floats stay floats
        ("+0.3", -0.1, "+0.27"),  # an explicit sign is kept
        ("-2.0", 0.1, "-2.2"),
        ("0.0", -0.05, "-0.05"),  # zero moves by the step itself
        ("1e-3", 0.1, "0.0011"),
    ],
)
def test_nudged_moves_a_number_by_a_small_relative_step(token, step, want):
    assert nudged(token, step) == want


def ctx(files=PARENT) -> ProposalContext:
    return ProposalContext(task="T", parent_id=7, files={"a.py": files}, editable=["a.py"], target="a.py")


def refine(knobs=BOTH_WAYS, known=()) -> RefineOperator:
    """A refine operator in the state that observing an archive would leave it in."""
    op = RefineOperator()
    op.book.active, op.known = frozenset(knobs), set(known)
    return op


def test_refine_nudges_one_knob_by_each_step_in_a_seeded_order_without_calling_the_fm():
    op = refine()
    seen = {}
    for s in range(60):
        p = op.propose(ctx(), None, Sampling(1.0, s, 0))  # fm=None: it must not be touched
        assert p.valid and p.completion is None and p.prompt == ""
        line = p.files["a.py"].split("\n")[3]
        assert p.files["a.py"].replace(line, "    r = [0.5 + 0.3 * x, 0.5 + 0.3 * y]") == PARENT  # one line changed
        value = line.split("+ ")[1].split(" *")[0]
        assert line == f"    r = [0.5 + {value} * x, 0.5 + {value} * y]"  # both radii, the same value
        seen[value] = p.summary
    assert set(seen) == {nudged("0.3", s) for s in FLOAT_STEPS}
    assert seen["0.303"] == "refine: a.py line 4, 0.3 → 0.303 (+1%)"
    again = op.propose(ctx(), None, Sampling(1.0, 5, 0)).files
    assert again == op.propose(ctx(), None, Sampling(1.0, 5, 0)).files  # same seed, same child


def test_refine_skips_programs_the_archive_holds_and_says_when_none_is_left():
    op = refine()
    known = op.known
    for s in range(len(FLOAT_STEPS)):
        p = op.propose(ctx(), None, Sampling(1.0, s, 0))
        assert p.valid and text_key({"a.py": p.files["a.py"]}) not in known
        known.add(text_key({"a.py": p.files["a.py"]}))
    last = op.propose(ctx(), None, Sampling(1.0, 99, 0))
    assert not last.valid and "already in the archive" in last.error


def test_refine_accepts_parents_with_a_knob_and_a_nudge_the_archive_lacks():
    op = RefineOperator()
    assert op.selective and op.needs and not op.calls_fm
    files = {"a.py": PARENT}
    assert refine().can_work_from(files)
    assert not refine({(Knob("b.py", KNOB.template, KNOB.occurrence, KNOB.numbers), 1)}).can_work_from(files)
    assert not refine(frozenset()).can_work_from(files)
    every = frozenset(text_key({"a.py": nudge}) for _, nudge, _ in nudges(files, BOTH_WAYS))
    assert len(every) == len(FLOAT_STEPS)
    assert not refine(known=every).can_work_from(files)  # all tried: pick another parent
    assert refine(known=every - {min(every)}).can_work_from(files)
    up = [text for _, text, _ in nudges(files, frozenset({(KNOB, 1)}))]  # a retired direction is not tried
    assert len(up) == len(FLOAT_STEPS) // 2 and all("0.3 *" not in t and "0.2" not in t for t in up)


def both(*knobs):
    return {(k, d) for k in knobs for d in (1, -1)}


def test_knob_book_learns_from_valid_fm_edits_and_retires_directions_that_break_programs():
    book = KnobBook()
    count = "N = 26\n" + PARENT
    wider = count.replace("0.3 *", "0.25 *")
    ring = Knob("a.py", RING, 0, (1, 3))
    book.observe({"a.py": count}, {"a.py": count.replace("N = 26", "N = 30")}, by_fm=True, valid=False)
    assert book.active == frozenset()  # an FM edit that broke the program teaches no knob
    book.observe({"a.py": count}, {"a.py": wider}, by_fm=True, valid=True)
    book.observe({"a.py": count}, {"a.py": count.replace("N = 26", "N = 27").replace("0.3 *", "0.2 *")}, by_fm=True, valid=True)
    n_knob = ("a.py", "N=#", 0, (0,))
    assert book.active == both(ring, n_knob)
    book.observe({"a.py": wider}, {"a.py": wider.replace("0.25 *", "0.26 *")}, by_fm=False, valid=True)
    assert book.active == both(ring, n_knob)  # a refine child never adds a knob
    for _ in range(RETIRE_AFTER):  # lowering the count alone keeps breaking the program
        book.observe({"a.py": count}, {"a.py": count.replace("N = 26", "N = 25")}, by_fm=False, valid=False)
    assert book.retired(n_knob, -1) and not book.retired(n_knob, 1)
    assert book.active == both(ring) | {(n_knob, 1)}


def test_knob_book_retires_a_direction_whose_nudges_change_nothing_measured():
    book = KnobBook()
    loops = "for i in range(8):\n    a(i)\n"
    knob = ("a.py", "foriinrange(#):", 0, (0,))
    book.observe({"a.py": loops}, {"a.py": loops.replace("8", "7")}, by_fm=True, valid=True)  # fewer passes: it matters
    assert book.active == both(knob)
    book.observe({"a.py": loops}, {"a.py": loops.replace("8", "9")}, by_fm=False, valid=True, same_score=True)
    assert not book.retired(knob, 1)  # once may be chance
    book.observe({"a.py": loops}, {"a.py": loops.replace("8", "10")}, by_fm=False, valid=True, same_score=True)
    assert book.retired(knob, 1) and book.active == {(knob, -1)}  # more passes change nothing: only down
    book.observe({"a.py": loops}, {"a.py": loops.replace("8", "6")}, by_fm=False, valid=True)
    for n in ("5", "4"):  # a direction that once moved the score stays live
        book.observe({"a.py": loops}, {"a.py": loops.replace("8", n)}, by_fm=False, valid=True, same_score=True)
    assert book.active == {(knob, -1)}


def test_numeric_only_means_the_same_lines_up_to_their_numbers():
    assert numeric_only({"a.py": PARENT}, {"a.py": PARENT.replace("0.3", "0.4")})
    assert not numeric_only({"a.py": PARENT}, {"a.py": PARENT.replace("x,", "z,")})
    assert not numeric_only({"a.py": PARENT}, {"a.py": PARENT + "x = 1\n"})
    assert not numeric_only({"a.py": PARENT}, {"a.py": PARENT, "b.py": ""})
