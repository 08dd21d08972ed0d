"""Headroom variant: PPO's clipped surrogate (clip 0.2); the entropy bonus 0.01 falls linearly to 0
over the agent's lifetime (explore early, exploit late)."""
import torch

CLIP = 0.2
ENTROPY_COEF = 0.01


def objective(ratio, advantage, log_ratio, entropy, lifetime_fraction):
    unclipped = ratio * advantage
    clipped = torch.clamp(ratio, 1.0 - CLIP, 1.0 + CLIP) * advantage
    return -torch.minimum(unclipped, clipped) - ENTROPY_COEF * (1.0 - lifetime_fraction) * entropy
