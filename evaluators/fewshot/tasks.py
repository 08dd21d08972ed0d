"""Sinusoid regression tasks (Finn et al. 2017): y = A sin(x - phase), K support points per task.

Distributions are plain data; sampling is a pure function of a seed, so the evaluator can draw the
hidden (shifted) tasks from the evaluation seed at the stage that uses them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class TaskDistribution:
    amplitude: tuple[float, float]
    phase: tuple[float, float]
    x: tuple[float, float]

    def as_dict(self) -> dict:
        return {k: list(v) for k, v in asdict(self).items()}


#: Meta-training and public evaluation (Finn et al.).
TRAIN = TaskDistribution(amplitude=(0.1, 5.0), phase=(0.0, math.pi), x=(-5.0, 5.0))
#: Hidden evaluation: amplitudes beyond the training range (private metrics only).
SHIFTED = TaskDistribution(amplitude=(5.0, 7.0), phase=(0.0, math.pi), x=(-5.0, 5.0))


@dataclass(frozen=True)
class EvalSet:
    """Support sets go to the harness; ``query_y`` stays with the evaluator."""

    support_x: np.ndarray  # (n, K, 1)
    support_y: np.ndarray  # (n, K, 1)
    query_x: np.ndarray  # (n, Q, 1)
    query_y: np.ndarray  # (n, Q)


def sample_eval_set(dist: TaskDistribution, n_tasks: int, k: int, q: int, seed) -> EvalSet:
    rng = np.random.default_rng(seed)
    amp = rng.uniform(*dist.amplitude, size=(n_tasks, 1, 1))
    phase = rng.uniform(*dist.phase, size=(n_tasks, 1, 1))
    sx = rng.uniform(*dist.x, size=(n_tasks, k, 1))
    qx = rng.uniform(*dist.x, size=(n_tasks, q, 1))
    f = lambda x: amp * np.sin(x - phase)  # noqa: E731
    return EvalSet(sx.astype(np.float32), f(sx).astype(np.float32), qx.astype(np.float32), f(qx)[..., 0].astype(np.float64))


def query_mse(preds: np.ndarray, query_y: np.ndarray) -> np.ndarray:
    """Per-seed query MSE: ``preds`` (seeds, n, Q) against ``query_y`` (n, Q)."""
    return ((np.asarray(preds, dtype=np.float64) - query_y[None]) ** 2).mean(axis=(1, 2))
