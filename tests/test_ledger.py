"""The ledger keeps its totals node by node: after any sequence of writes and updates it must equal
a ledger built from scratch over the final nodes."""

from __future__ import annotations

import random

from archive import Node, NodeStatus
from orchestrator.ledger import Ledger


def make(i, parent, status, score=None, op="diff", fm=True, error="", response="", idea=""):
    return Node(
        id=i, campaign="t", parent_id=parent, status=status, commit="c", operator=op if parent is not None else "seed",
        score=score, fm_model="m" if fm and parent is not None else "", prompt_tokens=10 * i, completion_tokens=i,
        cost_usd=0.001 * i, error=error, response=response, idea=idea,
    )


def state(ledger: Ledger) -> dict:
    s = ledger.summary()
    s.pop("last_update")
    return {**s, "children": dict(ledger.children), "parents": [n.id for n in ledger.parents()],
            "failed": {p: [n.id for n in ledger.failed_children(p)] for p in ledger.nodes},
            "ideas": {idea: vars(y) for idea, y in ledger.ideas.items() if y.attempts}}


def test_incremental_totals_equal_a_ledger_built_from_the_final_nodes():
    rng = random.Random(3)
    ledger = Ledger([make(0, None, NodeStatus.ADMITTED, 0.5)])
    for i in range(1, 300):
        parent = rng.choice([n.id for n in ledger.parents()])
        idea = rng.choice(["", "grow", "rotate"])
        ledger.record(make(i, parent, NodeStatus.EVALUATING, op=rng.choice(["diff", "fit"]), idea=idea))
        status = rng.choice([NodeStatus.ADMITTED, NodeStatus.REJECTED, NodeStatus.INVALID, NodeStatus.FAILED])
        score = rng.random() if status in (NodeStatus.ADMITTED, NodeStatus.REJECTED) else None
        ledger.record(make(i, parent, status, score, op=ledger.nodes[i].operator, error="e" if score is None else "",
                           response="r", idea=idea))
    fresh = Ledger(ledger.nodes.values())
    assert state(ledger) == state(fresh)
    counts = ledger.summary()["counts"]
    assert counts["evaluating"] == 0 and sum(counts.values()) == 300
    ranked = [n for n in ledger.nodes.values() if n.status == NodeStatus.ADMITTED and n.score is not None]
    assert ledger.best.score == max(n.score for n in ranked)
    assert [n.id for n in ledger.top(3, excluding=ledger.best.id)] == [
        n.id for n in sorted(ranked, key=lambda n: (-n.score, n.id)) if n.id != ledger.best.id
    ][:3]
    assert ledger.usage.tokens == sum(11 * i for i in range(300))
    assert ledger.usage.fm_calls == 299
    ideas = state(ledger)["ideas"]
    assert set(ideas) == {"grow", "rotate"} and sum(y["attempts"] for y in ideas.values()) == sum(
        1 for n in ledger.nodes.values() if n.idea)


def test_yield_counts_valid_children_against_parent_and_seed():
    ledger = Ledger([make(0, None, NodeStatus.ADMITTED, 0.5), make(1, 0, NodeStatus.ADMITTED, 0.7),
                     make(2, 1, NodeStatus.REJECTED, 0.6), make(3, 1, NodeStatus.INVALID, error="x", response="r"),
                     make(4, 1, NodeStatus.REJECTED)])  # stopped at a gate: valid, not scored
    assert ledger.summary()["operators"]["diff"] == {"attempts": 4, "valid": 3, "better_than_parent": 1, "better_than_seed": 2}
    assert [n.id for n in ledger.failed_children(1)] == [3] and ledger.children == {0: 1}


def test_a_fit_that_found_nothing_is_no_failed_answer_for_the_prompt():
    """The prompt's "earlier changes that FAILED" lists answers a model gave; a fit's record (its
    trials as JSON) read there as 'fit change ("constants": [)' (fewshot seed 4, node 27's prompt)."""
    fit = make(3, 1, NodeStatus.INVALID, op="fit", fm=False, error="fit: no trial beat the parent's own constants",
               response='{"constants": ["inner_loop.py:5:11 = 0.01"]}')
    ledger = Ledger([make(0, None, NodeStatus.ADMITTED, 0.5), make(1, 0, NodeStatus.ADMITTED, 0.7), fit,
                     make(4, 1, NodeStatus.INVALID, error="x", response="r")])
    assert [n.id for n in ledger.failed_children(1)] == [4]
    assert ledger.summary()["operators"]["fit"]["attempts"] == 1  # still counted as an attempt


def test_clade_counts_sum_every_evaluated_descendant():
    ledger = Ledger([make(0, None, NodeStatus.ADMITTED, 0.5), make(1, 0, NodeStatus.ADMITTED, 0.75),
                     make(2, 1, NodeStatus.REJECTED, 1.5), make(3, 1, NodeStatus.INVALID, error="x"),
                     make(4, 0, NodeStatus.FAILED, error="fm"), make(5, 0, NodeStatus.EVALUATING)], clades=True)
    assert ledger.clade(2) == (1.0, 0.0)  # a score above 1 counts as one success
    assert ledger.clade(1) == (1.75, 1.25)  # itself 0.75/0.25, node 2 1/0, node 3 0/1
    assert ledger.clade(0) == (2.25, 1.75)  # failed and in-flight nodes add nothing
    ledger.record(make(5, 0, NodeStatus.ADMITTED, 0.25))  # an update moves every ancestor
    assert ledger.clade(0) == (2.5, 2.5) and ledger.clade(5) == (0.25, 0.75)
