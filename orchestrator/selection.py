"""Parent selection: pure functions from (scores, children counts) to probabilities.

Every policy takes the scores of the eligible parents (admitted nodes only: invalid and failed nodes
are never parents) and how many admitted children each already has, and returns a probability per
parent. ``sample`` draws from them. A policy with ``uses_clades = True`` (``cmp``) also gets each
parent's clade counts and the campaign's rng. The loop fetches the numbers; nothing here does I/O.
"""

from __future__ import annotations

import math
import random
from typing import Callable, Sequence

import numpy as np

from orchestrator import plugins

#: (scores, admitted children) → a probability per parent; arrays or lists in, a numpy array out
Policy = Callable[[Sequence[float], Sequence[int]], Sequence[float]]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # = 1 / (1 + e^-x), without overflow


def _normalise(weights: np.ndarray) -> np.ndarray:
    total = float(weights.sum())
    if total <= 0 or not math.isfinite(total):
        return np.full(len(weights), 1.0 / len(weights))
    return weights / total


def _check(scores: Sequence[float], children: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    if len(scores) == 0:
        raise ValueError("no eligible parents (the archive has no admitted node)")
    if len(scores) != len(children):
        raise ValueError(f"{len(scores)} scores but {len(children)} children counts")
    return np.asarray(scores, dtype=float), np.asarray(children, dtype=float)


def score_child_prop(scores: Sequence[float], children: Sequence[int]) -> np.ndarray:
    """DGM: p_i ∝ sigmoid(10·(s_i − 0.5)) / (1 + children_i)."""
    s, c = _check(scores, children)
    return _normalise(_sigmoid(10.0 * (s - 0.5)) / (1 + c))


def score_prop(scores: Sequence[float], children: Sequence[int]) -> np.ndarray:
    """DGM: p_i ∝ sigmoid(10·(s_i − 0.5)), ignoring children."""
    s, _ = _check(scores, children)
    return _normalise(_sigmoid(10.0 * (s - 0.5)))


def robust(scores: Sequence[float], children: Sequence[int]) -> np.ndarray:
    """ShinkaEvolve: α0 = median, scale = max(MAD, 1e-6), p_i ∝ sigmoid(10·(s_i − α0)/scale)/(1 + c_i)."""
    s, c = _check(scores, children)
    median = float(np.median(s))
    scale = max(float(np.median(np.abs(s - median))), 1e-6)
    return _normalise(_sigmoid(10.0 * (s - median) / scale) / (1 + c))


def best(scores: Sequence[float], children: Sequence[int]) -> np.ndarray:
    """Always the highest score (ties: the first, i.e. the oldest node)."""
    s, _ = _check(scores, children)
    out = np.zeros(len(s))
    out[int(np.argmax(s))] = 1.0  # argmax returns the first of equal maxima
    return out


def uniform(scores: Sequence[float], children: Sequence[int]) -> np.ndarray:
    s, _ = _check(scores, children)
    return np.full(len(s), 1.0 / len(s))


def cmp(
    scores: Sequence[float], children: Sequence[int], *, clades: Sequence[tuple[float, float]], rng: random.Random
) -> np.ndarray:
    """HGM: clade metaproductivity with Thompson sampling.

    A node is worth expanding when its *clade* (itself and every descendant evaluated so far) does
    well, not only the node itself. ``clades[i]`` is the (successes, failures) mass of node i's clade:
    each evaluated node adds its score clipped to [0, 1] as success and the rest as failure, an
    invalid child adds one failure. One θ_i ~ Beta(1 + successes_i, 1 + failures_i) is drawn per
    node (numpy, seeded from ``rng``) and the largest is chosen (probability 1); ties go to the
    oldest node.
    """
    s, _ = _check(scores, children)
    if len(clades) != len(s):
        raise ValueError(f"{len(s)} scores but {len(clades)} clade counts")
    mass = np.asarray(clades, dtype=float).reshape(len(s), 2)
    draws = np.random.default_rng(rng.getrandbits(64)).beta(1.0 + mass[:, 0], 1.0 + mass[:, 1])
    out = np.zeros(len(s))
    out[int(np.argmax(draws))] = 1.0
    return out


cmp.uses_clades = True  # the loop passes clades= and rng= to policies that say so


POLICIES: dict[str, Policy] = {
    "score_child_prop": score_child_prop,
    "score_prop": score_prop,
    "robust": robust,
    "best": best,
    "uniform": uniform,
    "cmp": cmp,
}


#: policies whose p_i depends on node i's own numbers only: drawing from them and redrawing when a
#: node does not qualify samples exactly the policy over the qualifying nodes
PER_NODE = frozenset({score_child_prop, score_prop, uniform})


def resolve(name: str) -> Policy:
    return plugins.resolve("selection method", name, POLICIES)


def sample(probabilities: Sequence[float], rng: random.Random, k: int = 1) -> list[int]:
    """Draw ``k`` indices with replacement (one cumulative sum, then a binary search per draw)."""
    cum = np.cumsum(np.asarray(probabilities, dtype=float))
    total = float(cum[-1])
    return [min(int(np.searchsorted(cum, rng.random() * total, side="right")), len(cum) - 1) for _ in range(k)]
