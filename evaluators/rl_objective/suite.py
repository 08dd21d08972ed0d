"""What the rl_objective suite trains: environments, budgets, trainer settings, held-out draws.

Public environments are fixed (their PPO-clip reference returns are calibrated once and shipped
in ``reference_returns.json``). Held-out environments and budgets are drawn from the evaluation
seed when a stage builds its plan; they are never shown to the foundation model.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from evaluators.rl_objective.core import grid_shortest_path

# Fixed trainer settings (the candidate only changes the policy objective).
TRAINER = dict(lr=2.5e-3, anneal_lr=True, gamma=0.99, lam=0.95, epochs=4, minibatches=4, vf_coef=0.5, max_grad_norm=0.5)
# Environments per seed x rollout length per update, by environment kind.
ROLLOUT = {"cartpole": dict(num_envs=32, num_steps=64), "bandit": dict(num_envs=16, num_steps=8),
           "grid": dict(num_envs=32, num_steps=32)}
# Episodes the evaluator rolls out per trained seed (bandit returns are exact expectations).
EVAL_EPISODES = {"cartpole": 32, "bandit": 1, "grid": 64}
RANDOM_EPISODES = 512

GRID_WALLS = [[1, 1], [1, 2], [1, 3], [1, 4], [3, 1], [3, 2], [3, 3], [3, 4], [3, 5]]
PUBLIC_ENVS = {
    "cartpole": {"kind": "cartpole"},
    "bandit": {"kind": "bandit", "means": [round(0.3 + 0.4 * ((i * 7) % 20) / 19, 4) for i in range(20)]},
    "grid": {"kind": "grid", "n": 6, "walls": GRID_WALLS},
}


@dataclass(frozen=True)
class Plan:
    """One stage: public environments with their step budgets, seeds, held-out draws."""

    budgets: dict[str, int]  # public environment name -> environment steps per seed
    seeds: int  # training seeds per public environment
    heldout_per_kind: int = 0  # held-out environments drawn per kind
    heldout_seeds: int = 0
    heldout_kinds: tuple[str, ...] = field(default=("cartpole", "bandit", "grid"))


PLANS = {
    "smoke": Plan(budgets={"cartpole": 16384, "bandit": 1024}, seeds=1),
    "small": Plan(budgets={"cartpole": 65536, "bandit": 2048, "grid": 12288}, seeds=6, heldout_per_kind=1, heldout_seeds=2),
    "full": Plan(budgets={"cartpole": 65536, "bandit": 2048, "grid": 12288}, seeds=16, heldout_per_kind=3, heldout_seeds=4),
}


def _round_budget(steps: float, kind: str) -> int:
    per_update = ROLLOUT[kind]["num_envs"] * ROLLOUT[kind]["num_steps"]
    return max(per_update, int(round(steps / per_update)) * per_update)


def draw_heldout(seed: int, per_kind: int, kinds=("cartpole", "bandit", "grid"), base=PLANS["small"].budgets) -> list[tuple[dict, int]]:
    """Held-out (environment spec, budget) pairs drawn from ``seed``: unseen dynamics, sizes, horizons."""
    rng = random.Random(f"rl_objective/heldout/{seed}")
    drawn = []
    for kind in kinds:
        for _ in range(per_kind):
            budget = _round_budget(base[kind] * rng.uniform(0.5, 1.5), kind)
            if kind == "cartpole":
                spec = {"kind": "cartpole", "gravity": round(rng.uniform(8.0, 12.0), 3),
                        "masspole": round(rng.uniform(0.05, 0.3), 3), "length": round(rng.uniform(0.3, 0.9), 3),
                        "force_mag": round(rng.uniform(7.0, 13.0), 3), "max_steps": 500}
            elif kind == "bandit":
                k = rng.randint(5, 30)
                spec = {"kind": "bandit", "means": [round(rng.uniform(0.2, 0.8), 4) for _ in range(k)]}
            else:
                spec = _draw_grid(rng)
            drawn.append((spec, budget))
    return drawn


def _draw_grid(rng: random.Random) -> dict:
    n = rng.randint(5, 7)
    while True:
        goal = [n - 1, rng.randint(0, n - 1)] if rng.random() < 0.5 else [rng.randint(0, n - 1), n - 1]
        density = rng.uniform(0.15, 0.3)
        walls = [[r, c] for r in range(n) for c in range(n)
                 if [r, c] not in ([0, 0], goal) and rng.random() < density]
        steps = grid_shortest_path(n, walls, goal)
        if steps is not None and steps >= n:
            return {"kind": "grid", "n": n, "walls": walls, "goal": goal}
