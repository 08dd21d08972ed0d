"""Continual-learning metrics, as pure functions of an accuracy curve.

``curve[p, j]`` is the accuracy on task ``j`` at evaluation point ``p``; ``ends[i]`` is the index of
the point taken at the end of task ``i`` (points are in time order, several per task). From it:

- ``R[i, j] = curve[ends[i], j]``: accuracy on task j after training task i (Lopez-Paz & Ranzato).
- ACC = mean_j R[T-1, j].
- BWT = mean_{j<T-1} (R[T-1, j] - R[j, j]).
- forgetting f_j = max_{j<=l<T-1} R[l, j] - R[T-1, j], averaged over j < T-1 (Chaudhry et al.;
  only accuracies reached after task j was learned count).
- min-ACC = mean over finished tasks j < T-1 of the lowest accuracy on j at any point *after* the
  end of task j (De Lange et al., ICLR 2023: the stability gap that ACC hides).
- WC-ACC = (1/T) R[T-1, T-1] + (1 - 1/T) min-ACC (worst-case accuracy at the end of the stream).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class ContinualMetrics:
    acc: float
    bwt: float
    forgetting: float
    min_acc: float
    wc_acc: float


def accuracy_matrix(curve: np.ndarray, ends: Sequence[int]) -> np.ndarray:
    """``R[i, j]``: the curve's rows at the end of each task."""
    curve = np.asarray(curve, dtype=float)
    return curve[list(ends)]


def acc(R: np.ndarray) -> float:
    return float(np.mean(R[-1]))


def bwt(R: np.ndarray) -> float:
    T = R.shape[0]
    if T < 2:
        return 0.0
    return float(np.mean([R[-1, j] - R[j, j] for j in range(T - 1)]))


def forgetting(R: np.ndarray) -> float:
    T = R.shape[0]
    if T < 2:
        return 0.0
    return float(np.mean([R[j:T - 1, j].max() - R[-1, j] for j in range(T - 1)]))


def min_acc(curve: np.ndarray, ends: Sequence[int]) -> float:
    """Mean over tasks j < T-1 of min_{p > ends[j]} curve[p, j]."""
    curve = np.asarray(curve, dtype=float)
    T = len(ends)
    if T < 2:
        return float(curve[ends[-1], 0])
    return float(np.mean([curve[ends[j] + 1 : ends[-1] + 1, j].min() for j in range(T - 1)]))


def wc_acc(curve: np.ndarray, ends: Sequence[int]) -> float:
    T = len(ends)
    R = accuracy_matrix(curve, ends)
    if T < 2:
        return float(R[-1, -1])
    return float(R[-1, -1] / T + (1 - 1 / T) * min_acc(curve, ends))


def continual_metrics(curve: np.ndarray, ends: Sequence[int]) -> ContinualMetrics:
    R = accuracy_matrix(curve, ends)
    return ContinualMetrics(acc(R), bwt(R), forgetting(R), min_acc(curve, ends), wc_acc(curve, ends))


def accuracy_curve(preds: np.ndarray, labels: np.ndarray, row_task: np.ndarray, num_tasks: int) -> np.ndarray:
    """``curve[p, j]`` = fraction of rows of task j predicted right at point p (``preds[p, row]``)."""
    preds = np.asarray(preds)
    hit = preds == np.asarray(labels)[None, :]
    return np.stack([hit[:, row_task == j].mean(axis=1) for j in range(num_tasks)], axis=1)
