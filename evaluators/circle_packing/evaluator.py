"""Circle packing: 26 circles in the unit square, maximise the sum of radii (best known ≈ 2.635).

Recipe (``harness_run``): run the harness next to the candidate in the sandbox → read the raw centres
and radii it wrote → recompute validity and the sum here, outside the sandbox. A reported sum is never
read; NaN, out-of-square and overlapping circles make the candidate invalid with the reason.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from evaluators.api import CandidateInvalid, CandidateRun, Evaluator, MetricSpec, Stage, StageOutcome
from evaluators.harness_run import Harness, HarnessOptions
from sandboxes.base import Limits

HERE = Path(__file__).parent
HARNESS = Harness(HERE / "harness.py")
RESULT = "result.json"
N_CIRCLES = 26
BEST_KNOWN = 2.635
TOLERANCE = 1e-9

TASK = f"""Pack {N_CIRCLES} circles into the unit square [0,1]x[0,1] so that the SUM OF THEIR RADII is as
large as possible. Circles must lie fully inside the square and must not overlap. The best known sum
is about {BEST_KNOWN}. `construct_packing()` in packing.py returns (centers, radii): a ({N_CIRCLES}, 2)
array of centres and a ({N_CIRCLES},) array of radii (numpy and scipy are available). The evaluator
recomputes validity and the sum from what you return; it may use up to about ten seconds of CPU, so a
numeric optimiser (scipy.optimize) can refine a construction.
Keep exactly {N_CIRCLES} circles and keep the helper functions the code uses. Small, targeted changes
to the current construction (positions, ring sizes, how many circles go where, how the radii are
grown) are more reliable than rewriting everything."""


def check_packing(centers, radii, n: int = N_CIRCLES) -> tuple[float, float]:
    """Validate a packing; return (sum of radii, worst violation). Raises CandidateInvalid."""
    try:
        c = np.asarray(centers, dtype=float)
        r = np.asarray(radii, dtype=float)
    except (TypeError, ValueError) as e:
        raise CandidateInvalid(f"centers/radii are not numeric arrays: {e}") from None
    if c.shape != (n, 2):
        raise CandidateInvalid(f"centers has shape {c.shape}, expected ({n}, 2)")
    if r.shape != (n,):
        raise CandidateInvalid(f"radii has shape {r.shape}, expected ({n},)")
    if not (np.isfinite(c).all() and np.isfinite(r).all()):
        raise CandidateInvalid("centers or radii contain NaN or infinity")
    if (r < 0).any():
        raise CandidateInvalid(f"circle {int(np.argmin(r))} has a negative radius {r.min():.4g}")
    # containment: every circle inside the square
    wall = np.stack([r - c[:, 0], r - c[:, 1], c[:, 0] + r - 1, c[:, 1] + r - 1], axis=1)
    worst_wall = float(wall.max())
    if worst_wall > TOLERANCE:
        i = int(np.argmax(wall.max(axis=1)))
        raise CandidateInvalid(f"circle {i} (centre {c[i].round(4).tolist()}, r={r[i]:.4f}) sticks out of the square by {worst_wall:.3g}")
    # overlaps: d_ij >= r_i + r_j for all pairs
    d = np.linalg.norm(c[:, None, :] - c[None, :, :], axis=-1)
    overlap = (r[:, None] + r[None, :]) - d
    np.fill_diagonal(overlap, -np.inf)
    worst_overlap = float(overlap.max())
    if worst_overlap > TOLERANCE:
        i, j = np.unravel_index(int(np.argmax(overlap)), overlap.shape)
        raise CandidateInvalid(f"circles {i} and {j} overlap by {worst_overlap:.3g}")
    return float(r.sum()), max(worst_wall, worst_overlap, 0.0)


def radius_slack(centers, radii) -> float:
    """How much the sum would gain by growing each circle in turn, centres fixed, until it touches
    a wall or a neighbour: a hint that the radii, not the positions, are what to improve."""
    c = np.asarray(centers, dtype=float)
    r = np.array(radii, dtype=float)
    d = np.linalg.norm(c[:, None, :] - c[None, :, :], axis=-1)
    np.fill_diagonal(d, np.inf)
    wall = np.minimum.reduce([c[:, 0], c[:, 1], 1 - c[:, 0], 1 - c[:, 1]])
    before = r.sum()
    for i in range(len(r)):
        r[i] = max(r[i], min(wall[i], float(np.min(d[i] - r))))
    return float(r.sum() - before)


class CirclePackingEvaluator(Evaluator):
    name = "circle_packing"
    task = TASK
    # general circle-packing knowledge, at the level of OpenEvolve's example prompt; no numbers
    ideas = (
        "Rotate one ring by a small angle offset so its circles sit between those of the other ring.",
        "Move a ring slightly inwards or outwards so its circles touch their neighbours without overlapping.",
        "Change how many circles go in each ring, keeping 26 circles in total.",
        "After the radii are computed, grow each circle in turn until it touches a neighbour or a wall.",
        "Circles in the corners and along the walls can be larger; dense regions often follow hexagonal patterns.",
        # constrained optimisation, the step that took evolved programs past rings (general knowledge)
        "Optimise all centres and radii together with scipy.optimize.minimize and its SLSQP solver: maximise the sum of "
        "radii subject to no overlap and staying inside the square (as constraints and bounds), starting from the current "
        "construction.",
        "For fixed centres the best radii solve a linear program (scipy.optimize.linprog, with A_ub, b_ub and bounds): "
        "maximise the sum of the radii subject to r_i + r_j <= distance(i, j) for every pair and each radius <= its distance to every wall.",
    )
    stages = (
        Stage(
            "full",
            limits=Limits(wall_s=20, cpu_s=40, memory_mb=2048, pids=64, file_mb=16),
            gate={"valid": 1.0},
            description="run construct_packing() once and check the geometry",
        ),
    )
    metrics = (
        MetricSpec("sum_radii", 0.0, N_CIRCLES * 0.5, description="sum of radii (recomputed)"),
        MetricSpec("valid", 0.0, 1.0, description="1 when the packing is feasible"),
        MetricSpec("max_violation", 0.0, 1.0, public=False, description="worst constraint slack used"),
    )

    Options = HarnessOptions

    def seed_agent(self) -> Path:
        return HERE / "seed"

    def run_stage(self, stage: Stage, run: CandidateRun) -> StageOutcome:
        HARNESS.run(run, stage, self.options, lambda workdir: {"out": RESULT})
        try:
            payload = json.loads(run.read_artifact(RESULT, max_bytes=1 << 20))
            centers, radii = payload["centers"], payload["radii"]
        except (ValueError, KeyError, TypeError) as e:
            raise CandidateInvalid(f"no usable result.json from the candidate: {e}") from None
        total, violation = check_packing(centers, radii)
        radii_arr = np.asarray(radii, dtype=float)
        feedback = (
            f"valid packing, sum of radii = {total:.6f} ({total / BEST_KNOWN:.1%} of the best known {BEST_KNOWN}); "
            f"radii range {radii_arr.min():.4f}..{radii_arr.max():.4f}, {int((radii_arr < 0.02).sum())} circles below 0.02"
        )
        if math.isclose(total, 0.0):
            feedback += "; all radii are zero"
        slack = radius_slack(centers, radii_arr)
        if slack > 1e-4:
            feedback += (
                f"; the radii are not tight: growing each circle in turn until it touches a wall or a "
                f"neighbour (centres unchanged) would add {slack:.4f} to the sum"
            )
        return StageOutcome(
            score=total / BEST_KNOWN,
            metrics={"sum_radii": total, "valid": 1.0, "max_violation": violation},
            feedback=feedback,
        )
