"""Synthetic runs for the UI's tests and benchmarks: real archives (SQLite + git) written through the
``Archive`` API, shaped like a campaign's (a seed, children of the better admitted nodes, every
status, stages with public and private metrics, prompts, answers, tokens, cost, timings)."""

from __future__ import annotations

import random
from pathlib import Path

from archive import Archive, Node, NodeStatus

OPERATORS = ("diff", "tweak", "function", "rewrite", "fit")
STAGES = ("smoke", "full")
SEED_CODE = '''"""Pack circles in a unit square."""

N_RINGS = 3
RADIUS_SCALE = {scale:.4f}
STEP = {step:.4f}


def construct():
    return [(0.5, 0.5, RADIUS_SCALE * STEP)]
'''


def program(scale: float, step: float) -> str:
    return SEED_CODE.format(scale=scale, step=step)


def seed(arc: Archive, score: float = 0.5) -> Node:
    return arc.add_node(
        parent_id=None, status=NodeStatus.ADMITTED, operator="seed", files={"main.py": program(1.0, 0.1)},
        message="seed", score=score, stages=_stages(score, valid=True, gate=True),
        public_metrics={"sum_radii": score * 4}, private_metrics={"hidden_sum": score * 4 - 0.01},
    )


def _stages(score: float | None, valid: bool, gate: bool, upto: int = 2) -> list[dict]:
    out = []
    for i, name in enumerate(STAGES[:upto]):
        last = i == upto - 1
        s = None if score is None else round(score * (0.9 if i == 0 else 1.0), 6)
        out.append({
            "stage": name, "valid": valid or not last, "passed_gate": gate or not last, "score": s if (valid or not last) else None,
            "public": {"sum_radii": (s or 0) * 4}, "private": {"hidden_sum": (s or 0) * 4 - 0.01},
            "feedback": f"{name}: sum of radii {((s or 0) * 4):.4f}", "error": "" if (valid or not last) else "overlapping circles",
            "wall_s": 0.4 + i, "sandbox_s": 0.3 + i, "start_overhead_s": 0.05, "limit_hit": None,
        })
    return out


def add_child(arc: Archive, rng: random.Random, admitted: list[tuple[float, int]]) -> Node:
    """One attempt from a good admitted parent; ``admitted`` ((score, id), kept sorted) grows."""
    top = admitted[-20:]
    parent_score, parent_id = rng.choice(top) if rng.random() < 0.75 else rng.choice(admitted)
    op = rng.choice(OPERATORS)
    roll = rng.random()
    fm = op != "fit"
    usage = dict(
        fm_model="synthetic-1.5b" if fm else "", prompt=f"Improve this program (parent {parent_id}).\n" + "context line\n" * 20 if fm else "",
        response=f"<<<<<<< SEARCH\nSTEP = 0.1\n=======\nSTEP = {rng.random():.4f}\n>>>>>>> REPLACE\n" if fm else "",
        prompt_tokens=rng.randint(300, 900) if fm else 0, completion_tokens=rng.randint(20, 200) if fm else 0,
        cost_usd=round(rng.random() * 1e-3, 6) if fm else 0.0,
        timings={"select_s": 0.001, "fm_s": round(rng.uniform(0.5, 4.0), 3) if fm else 0.0, "archive_s": 0.002},
    )
    msg = f"{op} child of {parent_id}"
    if roll < 0.22:  # the answer was unusable: no code, no evaluation
        return arc.add_node(parent_id=parent_id, status=NodeStatus.INVALID, operator=op, message=msg,
                            error="no edit found in the answer", feedback="no edit found in the answer", **usage)
    if roll < 0.26:
        return arc.add_node(parent_id=parent_id, status=NodeStatus.FAILED, operator=op, message=msg,
                            error="FM call failed (timeout): no answer in 60 s", **usage)
    score = round(max(0.0, parent_score + rng.gauss(-0.004, 0.02)), 6)
    files = {"main.py": program(1.0 + rng.random(), rng.random())}
    usage["timings"]["eval_s"] = round(rng.uniform(0.5, 6.0), 3)
    if roll < 0.34:
        return arc.add_node(parent_id=parent_id, status=NodeStatus.INVALID, operator=op, files=files, message=msg,
                            error="[full] overlapping circles", stages=_stages(score, valid=False, gate=True), **usage)
    if roll < 0.40:
        return arc.add_node(parent_id=parent_id, status=NodeStatus.REJECTED, operator=op, files=files, message=msg,
                            error="gate smoke: score below 0.3", stages=_stages(score, valid=True, gate=False, upto=1), **usage)
    status = NodeStatus.ADMITTED if score >= parent_score - 0.01 else NodeStatus.REJECTED
    node = arc.add_node(parent_id=parent_id, status=status, operator=op, files=files, message=msg, score=score,
                        stages=_stages(score, True, True), public_metrics={"sum_radii": score * 4},
                        private_metrics={"hidden_sum": score * 4 - 0.01},
                        error="" if status == NodeStatus.ADMITTED else "not better than its parent", **usage)
    if status == NodeStatus.ADMITTED:
        admitted.append((score, node.id))
        admitted.sort()
    return node


def build(run_dir: str | Path, n: int, seed_value: int = 0, campaign: str = "synthetic") -> Path:
    """A run of n nodes (the seed included) in run_dir."""
    rng = random.Random(seed_value)
    with Archive.create(run_dir, campaign) as arc:
        s = seed(arc)
        admitted = [(s.score, s.id)]
        for _ in range(n - 1):
            add_child(arc, rng, admitted)
    return Path(run_dir)
