"""Reference: plain SGD, learning rate 0.001 (small enough not to diverge on Rosenbrock)."""
LR = 1e-3


def init_state(param):
    return {}


def update(param, grad, state, step, total_steps):
    return param - LR * grad, state
