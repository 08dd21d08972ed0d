"""What a proposal sees: exemplars, failures, and inspirations from other lineages only."""

from __future__ import annotations

import random

from archive import Node, NodeStatus
from orchestrator.config import MutationSection
from orchestrator.context import ContextBuilder
from orchestrator.ledger import Ledger
from orchestrator.mutation.prompts import build_messages


def node(i, parent, score, status=NodeStatus.ADMITTED, **kw):
    return Node(id=i, campaign="t", parent_id=parent, status=status, commit="c", score=score, **kw)


CODE = {0: "x = 0\n", 1: "x = 1\n", 2: "x = 2\n", 3: "x = 3\n", 4: "x = 4 # " + "long " * 100 + "\n"}


def builder(ideas=(), **mutation) -> ContextBuilder:
    ledger = Ledger([node(0, None, 0.5), node(1, 0, 0.9), node(2, 0, 0.8), node(3, 1, 0.7), node(4, 0, 0.95),
                     node(5, 3, None, NodeStatus.INVALID, error="boom", response="Make it faster.", operator="diff", fm_model="m"),
                     node(6, 3, None, NodeStatus.INVALID, error="boom", response="Again.", operator="rewrite", fm_model="m")])
    return ContextBuilder("T", list(ideas), MutationSection(**mutation), ledger, lambda i: {"a.py": CODE[i]},
                          lambda i: {"a.py": CODE[i].encode()})


def test_inspirations_come_from_other_lineages_within_the_size_budget():
    b = builder(inspirations=1, inspiration_chars=100)
    ctx = b.build(b.ledger.nodes[3], random.Random(0))
    # node 4 is the best but too long, node 1 is an ancestor of 3: node 2 is shown
    assert [(i.node_id, i.code) for i in ctx.inspirations] == [(2, "x = 2\n")]
    assert "## A strong program from another lineage: node 2 (score 0.8000), its a.py\n```python\nx = 2\n```" in \
        build_messages(ctx, "go")[1]["content"]
    assert b.build(b.ledger.nodes[0], random.Random(0)).inspirations == []  # every other node descends from it
    assert builder(inspirations=0).build(b.ledger.nodes[3], random.Random(0)).inspirations == []


def test_failures_of_the_parent_are_shown_once_each():
    b = builder()
    assert b.failures(3) == ["rewrite change (Again.): boom"]  # the newest; the same error is not repeated
    assert b.failures(1) == []


def test_an_idea_that_names_a_library_function_brings_its_documentation():
    idea = "Solve for the radii with scipy.optimize.linprog (A_ub, b_ub)."
    b = builder(ideas=[idea], idea_share=1.0)
    ctx = b.build(b.ledger.nodes[3], random.Random(0))
    assert ctx.idea == idea and ctx.reference.startswith("`scipy.optimize.linprog(c, A_ub=None")
    prompt = build_messages(ctx, "go")[1]["content"]
    assert prompt.index("## An idea you may try") < prompt.index("## From the installed library's documentation\n`scipy")
    off = builder(ideas=[idea], idea_share=1.0, library_docs=False).build(b.ledger.nodes[3], random.Random(0))
    assert off.idea == idea and off.reference == ""
    plain = builder(ideas=["Rotate the inner ring."], idea_share=1.0).build(b.ledger.nodes[3], random.Random(0))
    assert plain.reference == "" and "documentation" not in build_messages(plain, "go")[1]["content"]


def test_ideas_are_chosen_by_their_childrens_yield_when_asked():
    pays, fails, untried = "Grow each circle.", "Rotate the ring.", "Use a grid."
    children = [node(10 + i, 0, 0.9, idea=pays, operator="diff", fm_model="m") for i in range(4)]  # all beat 0.5
    children += [node(20 + i, 0, 0.1, idea=fails, operator="diff", fm_model="m") for i in range(8)]  # none do
    ideas = [pays, fails, untried]

    def shares(choice: str) -> dict[str, float]:
        b = builder(ideas=ideas, idea_share=1.0, idea_choice=choice)
        for n in children:
            b.ledger.record(n)
        assert b.ledger.ideas[pays].better_than_parent == 4 and b.ledger.ideas[fails].attempts == 8
        rng = random.Random(1)
        drawn = [b._idea(rng) for _ in range(600)]
        return {idea: drawn.count(idea) / len(drawn) for idea in ideas}

    by_yield, uniform = shares("yield"), shares("uniform")
    assert by_yield[pays] > 0.6 and by_yield[fails] < 0.05 and by_yield[untried] > 0.1  # untried still explored
    assert all(0.25 < uniform[idea] < 0.42 for idea in ideas)
