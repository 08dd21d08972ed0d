"""Vanilla policy gradient through the importance ratio: ratio * advantage, no clipping, no entropy."""


def objective(ratio, advantage, log_ratio, entropy, lifetime_fraction):
    return -ratio * advantage
