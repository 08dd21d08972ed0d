"""Pure numeric helpers of the optimizer suite (unit-tested with exact numbers)."""
from __future__ import annotations

import math
from typing import Sequence

from evaluators.stats import mean_std  # noqa: F401  (one of this suite's metric helpers)

CLIP = 3.0  # |log loss ratio| per (task, seed) is capped: one task cannot swamp the mean (factor e^3 ~ 20)
FLOOR = 1e-4  # losses below FLOOR x initial loss count as solved: ratios of two solved runs go to 1
# Per task kind: held-out cross-entropy below 1 % of its initial value is "solved" (tiny test sets
# make ratios of near-zero losses noise); the synthetic objectives keep 1e-4.
FLOORS = {"mlp": 1e-2, "quadratic": FLOOR, "rosenbrock": FLOOR}


def log_ratio(loss: float, baseline: float, initial: float, clip: float = CLIP, floor: float = FLOOR) -> float:
    """ln((loss + eps) / (baseline + eps)) with eps = floor * initial, clipped to [-clip, clip].

    Negative means the candidate reached a lower held-out loss than tuned Adam on the same seed.
    """
    for name, v in (("loss", loss), ("baseline", baseline), ("initial", initial)):
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"log_ratio: {name} = {v} must be finite and >= 0")
    eps = max(floor * initial, 1e-30)
    return max(-clip, min(clip, math.log((loss + eps) / (baseline + eps))))


def choose_lr(log_losses_by_lr: Sequence[Sequence[float]]) -> int:
    """Index of the learning rate with the lowest mean log loss over seeds (first on ties; NaN loses).

    The evaluator passes ln(loss + floor x initial loss), the quantity :func:`log_ratio` compares.
    """
    best, best_value = None, math.inf
    for i, row in enumerate(log_losses_by_lr):
        value = sum(row) / len(row)
        if math.isfinite(value) and value < best_value:
            best, best_value = i, value
    if best is None:
        raise ValueError("choose_lr: every learning rate diverged")
    return best




def aggregate(per_task: Sequence[Sequence[float]]) -> tuple[float, float]:
    """(mean log ratio over tasks and seeds, std over seeds of the per-seed mean over tasks).

    ``per_task[t][s]`` is the log ratio of task t, seed s; every task has the same seeds.
    """
    n_seeds = len(per_task[0])
    per_seed = [sum(task[s] for task in per_task) / len(per_task) for s in range(n_seeds)]
    return mean_std(per_seed)
