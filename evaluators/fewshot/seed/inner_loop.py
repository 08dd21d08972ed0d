"""MAML's inner loop (Finn et al. 2017): a few steps of plain gradient descent on the support set.

``adapt(params, support_x, support_y, loss_fn, steps) -> params``
- ``params``: dict of tensors, the meta-parameters. The network (fixed, 1-40-40-1 ReLU) reads
  "w1" (40, 1), "b1" (40,), "w2" (40, 40), "b2" (40,), "w3" (1, 40), "b3" (1,); any extra entries
  you create in ``init_params`` (e.g. per-parameter learning rates) are meta-learned too.
- ``support_x``, ``support_y``: (K, 1) tensors of one task (K = 10 points of y = A sin(x - phase)).
- ``loss_fn(params, x, y)``: support MSE of the network under ``params`` (a scalar). Each call
  counts as one inner step: at most ``steps`` calls per ``adapt`` call.
- returns the adapted parameters (a dict with at least the network's keys).

``adapt`` is vmapped over tasks and seeds (``torch.func.vmap``) and differentiated through by the
outer loop: use ``torch.func.grad`` for gradients, no ``.item()``, no in-place updates of
``params``, no Python branching on tensor values.

Optional ``init_params(params) -> dict``: receives the network's default initialisation (one seed)
and returns the meta-parameters to learn (at most 4x the network's parameter count in total).
"""
from torch.func import grad

INNER_LR = 0.01


def adapt(params, support_x, support_y, loss_fn, steps):
    for _ in range(steps):
        g = grad(loss_fn)(params, support_x, support_y)
        params = {k: p - INNER_LR * g[k] for k, p in params.items()}
    return params
