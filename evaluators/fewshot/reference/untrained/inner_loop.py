"""No adaptation: the support set is ignored, so the outer loop can only learn one function for all
tasks (the mean sinusoid, about 0). The lower reference for the ordering tests.

Same signature as the seed (see evaluators/fewshot/seed/inner_loop.py).
"""


def adapt(params, support_x, support_y, loss_fn, steps):
    return params
