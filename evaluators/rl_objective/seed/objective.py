"""Policy objective for a fixed PPO-style trainer (learned policy optimisation, LPO).

The trainer calls ``objective`` on every minibatch and minimises ``objective(...).mean()`` (plus a
fixed value loss). All five arguments are float tensors of the same shape ``(seeds, minibatch)``;
seeds are independent training runs, so reduce over the last axis only, if at all:

* ``ratio``             pi_new(a|s) / pi_old(a|s) for the sampled action (1 at the first epoch)
* ``advantage``         GAE(gamma 0.99, lambda 0.95), normalised to mean 0, std 1 per minibatch
* ``log_ratio``         log(ratio), exact (use it instead of ratio.log())
* ``entropy``           entropy of pi_new(.|s)
* ``lifetime_fraction`` fraction of the training budget already spent, in [0, 1)

Return a tensor of the same shape: one loss per sample (lower is better for the trainer).
This seed is PPO's clipped surrogate (clip 0.2) with an entropy bonus of 0.01.
"""
import torch

CLIP = 0.2
ENTROPY_COEF = 0.01


def objective(ratio, advantage, log_ratio, entropy, lifetime_fraction):
    unclipped = ratio * advantage
    clipped = torch.clamp(ratio, 1.0 - CLIP, 1.0 + CLIP) * advantage
    return -torch.minimum(unclipped, clipped) - ENTROPY_COEF * entropy
