"""MAML's inner loop (Finn et al. 2017): a few steps of plain gradient descent on the support set.
The harness's contract (adapt, init_params, what they receive and return) is in the task."""
from torch.func import grad

INNER_LR = 0.01


def adapt(params, support_x, support_y, loss_fn, steps):
    for _ in range(steps):
        g = grad(loss_fn)(params, support_x, support_y)
        params = {k: p - INNER_LR * g[k] for k, p in params.items()}
    return params
