"""Headroom variant: Adam (beta1 0.9, beta2 0.999, eps 1e-8), lr 0.01 decayed to 0 by a cosine."""
import math

import torch

LR = 1e-2
BETA1, BETA2, EPS = 0.9, 0.999, 1e-8


def init_state(param):
    return {"m": torch.zeros_like(param), "v": torch.zeros_like(param)}


def update(param, grad, state, step, total_steps):
    m = BETA1 * state["m"] + (1 - BETA1) * grad
    v = BETA2 * state["v"] + (1 - BETA2) * grad * grad
    m_hat = m / (1 - BETA1**step)
    v_hat = v / (1 - BETA2**step)
    lr = LR * 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
    return param - lr * m_hat / (v_hat.sqrt() + EPS), {"m": m, "v": v}
