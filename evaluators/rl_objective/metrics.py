"""Pure numeric helpers of the rl_objective suite (unit-tested with exact numbers)."""
from __future__ import annotations

import math

from evaluators.stats import mean_std  # noqa: F401  (one of this suite's metric helpers)


def normalise(value: float, low: float, high: float) -> float:
    """Map ``value`` so that ``low`` -> 0 and ``high`` -> 1 (linear, not clipped).

    ``low`` is a random policy's return; ``high`` is the PPO-clip reference (public environments)
    or the best achievable return (held-out environments).
    """
    if not (math.isfinite(value) and math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"normalise({value}, {low}, {high}): non-finite input")
    if high - low <= 1e-9:
        raise ValueError(f"normalise: reference {high} is not above the random return {low}")
    return (value - low) / (high - low)




def optimal_return(spec: dict) -> float:
    """Best achievable expected return of an environment spec (for held-out normalisation)."""
    kind = spec["kind"]
    if kind == "cartpole":
        return float(spec.get("max_steps", 500))
    if kind == "bandit":
        return float(max(spec["means"]))
    if kind == "grid":
        from evaluators.rl_objective.core import grid_shortest_path

        steps = grid_shortest_path(spec["n"], spec.get("walls", ()), spec.get("goal"))
        if steps is None:
            raise ValueError("grid spec has no path from start to goal")
        return 1.0 - 0.01 * steps
    raise ValueError(f"unknown environment kind {kind!r}")
