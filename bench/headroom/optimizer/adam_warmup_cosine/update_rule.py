"""Headroom variant: Adam, lr 0.01, linear warm-up over the first 5 % of steps, then a cosine decay."""
import math

import torch

LR = 1e-2
WARMUP = 0.05
BETA1, BETA2, EPS = 0.9, 0.999, 1e-8


def init_state(param):
    return {"m": torch.zeros_like(param), "v": torch.zeros_like(param)}


def update(param, grad, state, step, total_steps):
    m = BETA1 * state["m"] + (1 - BETA1) * grad
    v = BETA2 * state["v"] + (1 - BETA2) * grad * grad
    m_hat = m / (1 - BETA1**step)
    v_hat = v / (1 - BETA2**step)
    warm = max(1, int(WARMUP * total_steps))
    if step <= warm:
        lr = LR * step / warm
    else:
        lr = LR * 0.5 * (1 + math.cos(math.pi * min(step - warm, total_steps - warm) / max(1, total_steps - warm)))
    return param - lr * m_hat / (v_hat.sqrt() + EPS), {"m": m, "v": v}
