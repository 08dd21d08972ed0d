"""Update rule (optimiser) applied to every parameter tensor of every training task.

    init_state(param) -> dict of tensors
    update(param, grad, state, step, total_steps) -> (new_param, new_state)

``param`` and ``grad`` are float32 torch tensors of the same shape (one parameter tensor of one
training run: a weight matrix, a bias row, or the point being optimised); ``state`` is what
``init_state`` / the previous ``update`` returned for that tensor; ``step`` counts updates from 1
to ``total_steps`` (the task's step budget). Be functional: return new tensors, don't modify the
arguments in place, keep state values tensors, use torch and math only. Each call must work on
one tensor alone (the harness maps it over independent seeds with torch.func.vmap).

This seed is Adam (beta1 0.9, beta2 0.999, eps 1e-8) with a fixed learning rate of 0.01.
"""
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
    return param - LR * m_hat / (v_hat.sqrt() + EPS), {"m": m, "v": v}
