"""What the optimizer suite trains: public tasks, stage plans, hidden-task draws."""
from __future__ import annotations

import random
from dataclasses import dataclass

_MLP_SHAPES = {"digits": (64, 10), "wine": (13, 3), "breast_cancer": (30, 2)}


def mlp(dataset: str, hidden, steps: int, batch: int) -> dict:
    features, classes = _MLP_SHAPES[dataset]
    return {"kind": "mlp", "dataset": dataset, "features": features, "classes": classes,
            "hidden": list(hidden), "steps": steps, "batch": batch}


PUBLIC_TASKS = {
    "digits": mlp("digits", [32], 300, 64),
    "wine": mlp("wine", [16], 200, 32),
    "breast_cancer": mlp("breast_cancer", [16], 200, 32),
    "rosenbrock": {"kind": "rosenbrock", "dim": 2, "steps": 3000},
    "quadratic": {"kind": "quadratic", "dim": 32, "cond": 1000.0, "noise": 0.05, "rotate": False, "steps": 500},
}


@dataclass(frozen=True)
class Plan:
    seeds: int  # training seeds per public task
    step_scale: float = 1.0  # public step budgets are multiplied by this
    hidden: int = 0  # hidden tasks drawn from the evaluation seed
    hidden_seeds: int = 0


PLANS = {
    "smoke": Plan(seeds=1, step_scale=0.2),
    "small": Plan(seeds=3, hidden=2, hidden_seeds=2),
    "full": Plan(seeds=8, hidden=6, hidden_seeds=4),
}


def public_tasks(step_scale: float = 1.0) -> dict[str, dict]:
    return {name: {**spec, "steps": max(10, int(spec["steps"] * step_scale))} for name, spec in PUBLIC_TASKS.items()}


def draw_hidden(seed: int, count: int) -> list[dict]:
    """Hidden tasks of unseen sizes and step budgets, cycling mlp -> quadratic -> rosenbrock."""
    rng = random.Random(f"optimizer/hidden/{seed}")
    drawn = []
    for i in range(count):
        kind = ("mlp", "quadratic", "rosenbrock")[i % 3]
        if kind == "mlp":
            hidden = [rng.choice([8, 24, 48, 64]) for _ in range(rng.randint(1, 2))]
            drawn.append(mlp(rng.choice(sorted(_MLP_SHAPES)), hidden, rng.randint(100, 500), rng.choice([16, 32, 64])))
        elif kind == "quadratic":
            drawn.append({"kind": "quadratic", "dim": rng.randint(8, 128), "cond": round(10 ** rng.uniform(1, 4), 1),
                          "noise": round(rng.uniform(0.0, 0.1), 4), "rotate": rng.random() < 0.5,
                          "steps": rng.randint(200, 800)})
        else:
            drawn.append({"kind": "rosenbrock", "dim": rng.randint(2, 6), "steps": rng.randint(1500, 4000)})
    return drawn
