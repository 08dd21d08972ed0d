"""PPO's clipped surrogate (Schulman et al. 2017) with an entropy bonus, as a per-sample loss.
The trainer's contract (the arguments, their shapes, what it minimises) is in the task."""
import torch

CLIP = 0.2
ENTROPY_COEF = 0.01


def objective(ratio, advantage, log_ratio, entropy, lifetime_fraction):
    unclipped = ratio * advantage
    clipped = torch.clamp(ratio, 1.0 - CLIP, 1.0 + CLIP) * advantage
    return -torch.minimum(unclipped, clipped) - ENTROPY_COEF * entropy
