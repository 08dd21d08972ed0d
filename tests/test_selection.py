import math
import random

import pytest

from orchestrator import selection


def sig(x):
    return 1 / (1 + math.exp(-x))


def test_score_child_prop_exact():
    scores, children = [0.5, 0.7, 0.2], [0, 1, 3]
    w = [sig(0) / 1, sig(2.0) / 2, sig(-3.0) / 4]
    assert selection.score_child_prop(scores, children) == pytest.approx([x / sum(w) for x in w], abs=1e-12)


def test_score_child_prop_penalises_children():
    p = selection.score_child_prop([0.6, 0.6], [0, 4])
    assert p == pytest.approx([5 / 6, 1 / 6])


def test_score_prop_ignores_children():
    assert selection.score_prop([0.6, 0.6], [0, 4]) == pytest.approx([0.5, 0.5])
    w = [sig(-5.0), sig(5.0)]
    assert selection.score_prop([0.0, 1.0], [9, 0]) == pytest.approx([w[0] / sum(w), w[1] / sum(w)])


def test_robust_uses_median_and_mad():
    scores, children = [1.0, 2.0, 4.0], [0, 0, 1]
    # median 2, MAD = median(|1-2|, 0, |4-2|) = 1
    w = [sig(10 * (1 - 2) / 1), sig(0), sig(10 * 2) / 2]
    assert selection.robust(scores, children) == pytest.approx([x / sum(w) for x in w])


def test_robust_constant_scores_do_not_divide_by_zero():
    assert selection.robust([3.0, 3.0, 3.0], [0, 0, 0]) == pytest.approx([1 / 3] * 3)


def test_best_picks_the_highest_not_the_lowest():
    # DGM's reference code sorted ascending and picked the worst
    assert list(selection.best([0.2, 0.9, 0.5], [0, 0, 0])) == [0.0, 1.0, 0.0]
    assert list(selection.best([0.9, 0.9], [5, 0])) == [1.0, 0.0]  # tie: the oldest


def test_uniform():
    assert list(selection.uniform([0.1, 5.0, -2.0, 0.0], [0, 1, 2, 3])) == [0.25] * 4


def test_empty_and_mismatch_are_clear_errors():
    with pytest.raises(ValueError, match="no eligible parents"):
        selection.score_child_prop([], [])
    with pytest.raises(ValueError, match="2 scores but 1"):
        selection.uniform([1, 2], [0])


def test_sample_follows_probabilities():
    rng = random.Random(0)
    draws = selection.sample([0.0, 1.0, 0.0], rng, k=50)
    assert set(draws) == {1}
    draws = selection.sample([0.25, 0.75], random.Random(1), k=4000)
    assert 0.70 < draws.count(1) / 4000 < 0.80


def test_resolve_builtin_custom_and_unknown():
    assert selection.resolve("best") is selection.best
    assert selection.resolve("orchestrator.selection:uniform") is selection.uniform
    with pytest.raises(ValueError, match="unknown selection method 'nope'"):
        selection.resolve("nope")
    with pytest.raises(ValueError, match="cannot be loaded"):
        selection.resolve("no_such_module_xyz:f")


def test_cmp_draws_one_beta_per_clade_and_picks_the_largest_exactly():
    clades = [(0.0, 0.0), (3.2, 0.8), (0.5, 4.5)]
    import numpy as np

    gen = np.random.default_rng(random.Random(11).getrandbits(64))
    draws = [gen.beta(1 + s, 1 + f) for s, f in clades]  # the same stream, one draw at a time
    want = max(range(3), key=lambda i: draws[i])
    probs = selection.cmp([0.1, 0.2, 0.3], [0, 0, 0], clades=clades, rng=random.Random(11))
    assert list(probs) == [1.0 if i == want else 0.0 for i in range(3)]
    assert selection.resolve("cmp") is selection.cmp and selection.cmp.uses_clades


def test_cmp_prefers_productive_clades_over_a_high_own_score():
    # node 0 scores best itself, but its clade is mostly failures; node 1's descendants did well
    rng, wins = random.Random(0), [0, 0]
    for _ in range(2000):
        probs = selection.cmp([0.9, 0.5], [5, 5], clades=[(0.9, 6.1), (6.0, 1.0)], rng=rng)
        wins[list(probs).index(1.0)] += 1
    # P(Beta(7, 2) > Beta(1.9, 7.1)) is above 0.99
    assert wins[1] > 0.98 * 2000


def test_cmp_checks_its_inputs():
    with pytest.raises(ValueError, match="clade counts"):
        selection.cmp([0.5], [0], clades=[], rng=random.Random(0))
