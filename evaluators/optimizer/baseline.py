"""The bar: Adam with its learning rate tuned per task on a small grid, run by the evaluator itself.

It trains with the harness's own ``train`` (same seeds, minibatches, gradient noise as the
candidate), all grid points at once: every learning rate is a block of replicate seeds.
"""
from __future__ import annotations

import torch

LR_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)
BETA1, BETA2, EPS = 0.9, 0.999, 1e-8


class AdamGrid:
    """Adam on (len(lrs) * S, ...) tensors; replicate block i uses ``lrs[i]``. Trusted, elementwise."""

    BATCHED = True

    def __init__(self, lrs, seeds_per_lr: int):
        self.lr = torch.tensor(lrs, dtype=torch.float32).repeat_interleave(seeds_per_lr)

    def init_state(self, param):
        return {"m": torch.zeros_like(param), "v": torch.zeros_like(param)}

    def update(self, param, grad, state, step, total_steps):
        m = BETA1 * state["m"] + (1 - BETA1) * grad
        v = BETA2 * state["v"] + (1 - BETA2) * grad * grad
        m_hat = m / (1 - BETA1**step)
        v_hat = v / (1 - BETA2**step)
        lr = self.lr.to(param.device).view(-1, *([1] * (param.dim() - 1)))
        return param - lr * m_hat / (v_hat.sqrt() + EPS), {"m": m, "v": v}
