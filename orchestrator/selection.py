"""Parent selection: pure functions from (scores, children counts) to probabilities.

Every policy takes the scores of the eligible parents (admitted nodes only: invalid and failed nodes
are never parents) and how many admitted children each already has, and returns a probability per
parent. ``sample`` draws from them. A policy with ``uses_clades = True`` (``cmp``) also gets each
parent's clade counts and the campaign's rng. The loop fetches the numbers; nothing here does I/O.
"""

from __future__ import annotations

import math
import random
import statistics
from typing import Callable, Sequence

from orchestrator import plugins

Policy = Callable[[Sequence[float], Sequence[int]], list[float]]


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def _normalise(weights: Sequence[float]) -> list[float]:
    total = sum(weights)
    if total <= 0 or not math.isfinite(total):
        return [1.0 / len(weights)] * len(weights)
    return [w / total for w in weights]


def _check(scores: Sequence[float], children: Sequence[int]) -> None:
    if not scores:
        raise ValueError("no eligible parents (the archive has no admitted node)")
    if len(scores) != len(children):
        raise ValueError(f"{len(scores)} scores but {len(children)} children counts")


def score_child_prop(scores: Sequence[float], children: Sequence[int]) -> list[float]:
    """DGM: p_i ∝ sigmoid(10·(s_i − 0.5)) / (1 + children_i)."""
    _check(scores, children)
    return _normalise([_sigmoid(10.0 * (s - 0.5)) / (1 + c) for s, c in zip(scores, children)])


def score_prop(scores: Sequence[float], children: Sequence[int]) -> list[float]:
    """DGM: p_i ∝ sigmoid(10·(s_i − 0.5)), ignoring children."""
    _check(scores, children)
    return _normalise([_sigmoid(10.0 * (s - 0.5)) for s in scores])


def robust(scores: Sequence[float], children: Sequence[int]) -> list[float]:
    """ShinkaEvolve: α0 = median, scale = max(MAD, 1e-6), p_i ∝ sigmoid(10·(s_i − α0)/scale)/(1 + c_i)."""
    _check(scores, children)
    median = statistics.median(scores)
    mad = statistics.median([abs(s - median) for s in scores])
    scale = max(mad, 1e-6)
    return _normalise([_sigmoid(10.0 * (s - median) / scale) / (1 + c) for s, c in zip(scores, children)])


def best(scores: Sequence[float], children: Sequence[int]) -> list[float]:
    """Always the highest score (ties: the first, i.e. the oldest node)."""
    _check(scores, children)
    top = max(range(len(scores)), key=lambda i: (scores[i], -i))
    return [1.0 if i == top else 0.0 for i in range(len(scores))]


def uniform(scores: Sequence[float], children: Sequence[int]) -> list[float]:
    _check(scores, children)
    return [1.0 / len(scores)] * len(scores)


def cmp(
    scores: Sequence[float], children: Sequence[int], *, clades: Sequence[tuple[float, float]], rng: random.Random
) -> list[float]:
    """HGM: clade metaproductivity with Thompson sampling.

    A node is worth expanding when its *clade* (itself and every descendant evaluated so far) does
    well, not only the node itself. ``clades[i]`` is the (successes, failures) mass of node i's clade:
    each evaluated node adds its score clipped to [0, 1] as success and the rest as failure, an
    invalid child adds one failure. One θ_i ~ Beta(1 + successes_i, 1 + failures_i) is drawn per
    node and the largest is chosen (probability 1); ties go to the oldest node.
    """
    _check(scores, children)
    if len(clades) != len(scores):
        raise ValueError(f"{len(scores)} scores but {len(clades)} clade counts")
    draws = [rng.betavariate(1.0 + s, 1.0 + f) for s, f in clades]
    top = max(range(len(draws)), key=lambda i: (draws[i], -i))
    return [1.0 if i == top else 0.0 for i in range(len(draws))]


cmp.uses_clades = True  # the loop passes clades= and rng= to policies that say so


POLICIES: dict[str, Policy] = {
    "score_child_prop": score_child_prop,
    "score_prop": score_prop,
    "robust": robust,
    "best": best,
    "uniform": uniform,
    "cmp": cmp,
}


def resolve(name: str) -> Policy:
    return plugins.resolve("selection method", name, POLICIES)


def sample(probabilities: Sequence[float], rng: random.Random, k: int = 1) -> list[int]:
    """Draw ``k`` indices with replacement."""
    return rng.choices(range(len(probabilities)), weights=probabilities, k=k)
