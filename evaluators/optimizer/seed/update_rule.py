"""Adam (Kingma & Ba 2015; beta1 0.9, beta2 0.999, eps 1e-8) with a fixed learning rate of 0.01.
The harness's contract (init_state, update, what they receive and return) is in the task."""
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
