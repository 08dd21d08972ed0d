"""Headroom variant: MAML's inner loop with heavy-ball momentum 0.9 (lr 0.01)."""
from torch.func import grad

INNER_LR = 0.01
MOMENTUM = 0.9


def adapt(params, support_x, support_y, loss_fn, steps):
    velocity = {k: 0.0 * p for k, p in params.items()}
    for _ in range(steps):
        g = grad(loss_fn)(params, support_x, support_y)
        velocity = {k: MOMENTUM * velocity[k] + g[k] for k in params}
        params = {k: p - INNER_LR * velocity[k] for k, p in params.items()}
    return params
