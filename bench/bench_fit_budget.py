"""How far one `fit` goes with its budget: the real operator (CMA-ES over a program's float
constants), its trials evaluated sandboxed by the real circle-packing evaluator through a local
executor, as in a campaign, but with no model and no loop around it.

Budgets compared (each on the same programs and sampling seeds):
  - "16 trials": `max_evaluations = 16` (what every fit ran before the time budget; 8 constants);
  - "60 s": the default `[mutation.fit]` (at least 16 trials, then more while under 60 s, up to
    512, and more constants at once when trials are cheap).
Programs: the circle-packing seed, and the seed with a radius-growth pass after its pairwise
shrink (each circle grown in turn until it touches a wall or a neighbour). The growth pass is
written here, in the bench, to ask what fit would make of that structure were a model to write
it; it is never shown to a model (no prompt, idea or seed carries it).

    .venv/bin/python bench/bench_fit_budget.py [--seeds 3] [--workers 2]

Appends one entry to bench/results/fit_budget.json: per program and budget, each fit's best sum of
radii, trials, constants, seconds and what stopped it. Run it alone on the 2 cores (its timings
are the point). Scores are the evaluator's (the sum of radii over 2.635, the best known).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evaluators import registry  # noqa: E402
from evaluators.circle_packing.evaluator import BEST_KNOWN  # noqa: E402
from orchestrator.executor import EvalJob, EvaluationEnvironment, LocalExecutor, SandboxSpec  # noqa: E402
from orchestrator.config import FitSettings  # noqa: E402
from orchestrator.mutation.fit import FitOperator  # noqa: E402
from orchestrator.mutation.operators import Sampling  # noqa: E402
from orchestrator.mutation.prompts import ProposalContext  # noqa: E402
from bench.provenance import commit, utc_now  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "fit_budget.json"
SUITE = "circle_packing"
SHRINK_END = """                radii[j] *= scale
    return radii"""
GROWTH = """                radii[j] *= scale
    distances = np.linalg.norm(centers[:, None] - centers[None], axis=-1)
    np.fill_diagonal(distances, np.inf)
    walls = np.minimum.reduce([centers[:, 0], centers[:, 1], 1 - centers[:, 0], 1 - centers[:, 1]])
    for i in range(len(centers)):
        radii[i] = max(radii[i], min(walls[i], np.min(distances[i] - radii)))
    return radii"""


def seed_tree() -> dict[str, bytes]:
    root = registry.load_class(SUITE)().seed_agent()
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def programs(tree: dict[str, bytes]) -> dict[str, dict[str, bytes]]:
    seed = tree["packing.py"].decode()
    assert SHRINK_END in seed, "the seed's compute_max_radii changed: update GROWTH"
    return {"seed": tree, "seed + growth pass": {**tree, "packing.py": seed.replace(SHRINK_END, GROWTH).encode()}}


def evaluator_of(executor: LocalExecutor, tree: dict[str, bytes]):
    """ProposalContext.evaluate for trials of ``tree``: sandboxed, on evaluation seed 0."""
    def evaluate(changed: dict[str, str]):
        job = EvalJob(node_id=0, files={**tree, **{p: t.encode() for p, t in changed.items()}}, evaluator=SUITE,
                      sandbox=SandboxSpec(use_gpu=False))
        return executor.submit(job)
    return evaluate


def one_fit(op: FitOperator, executor: LocalExecutor, tree: dict[str, bytes], score: float, trial_s: float, seed: int) -> dict:
    texts = {"packing.py": tree["packing.py"].decode()}  # the editable file (agent.toml), as a campaign's context has it
    ctx = ProposalContext(task="", parent_id=0, files=texts, editable=["packing.py"], target="packing.py", score=score,
                          first_draw_score=score, evaluate=evaluator_of(executor, tree), trial_s=trial_s)
    t0 = time.perf_counter()
    proposal = op.propose(ctx, None, Sampling(0.7, seed, 100))
    wall = time.perf_counter() - t0
    record = json.loads(proposal.response)
    scores = [t["score"] for t in record["trials"] if t["score"] is not None]
    best = max(scores) if scores else None
    return {"seed": seed, "best_score": best, "best_sum_radii": round(best * BEST_KNOWN, 4) if best is not None else None,
            "found_better": proposal.error == "", "trials": len(record["trials"]) - 1, "constants": len(record["constants"]),
            "expected_trials": record["expected_trials"], "stopped_by": record["stopped_by"], "wall_s": round(wall, 2),
            "evaluating_s": record["evaluating_s"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=3, help="fits per program and budget (sampling seeds 0..N-1)")
    ap.add_argument("--workers", type=int, default=2, help="evaluations in flight ([evaluation] workers)")
    args = ap.parse_args()
    default = FitSettings()
    budgets = {"16 trials": dict(seconds=default.seconds, max_evaluations=16),
               "60 s": dict(seconds=default.seconds, max_evaluations=default.max_evaluations)}
    executor = LocalExecutor(args.workers, EvaluationEnvironment())
    out: dict = {"when": utc_now(), "commit": commit(), "suite": SUITE, "workers": args.workers, "programs": {}}
    try:
        for name, tree in programs(seed_tree()).items():
            first = executor.submit(EvalJob(node_id=0, files=tree, evaluator=SUITE, sandbox=SandboxSpec(use_gpu=False))).result()
            assert first.complete, first.error
            trial_s = first.timings().get("eval_s") or None  # what a campaign's parent records (ProposalContext.trial_s)
            row = {"score": first.score, "sum_radii": round(first.score * BEST_KNOWN, 4), "trial_s": trial_s, "budgets": {}}
            for label, kw in budgets.items():
                op = FitOperator(evaluations=default.evaluations, sigma=default.sigma, **kw)
                fits = [one_fit(op, executor, tree, first.score, trial_s, s) for s in range(args.seeds)]
                sums = [f["best_sum_radii"] for f in fits if f["best_sum_radii"] is not None]
                row["budgets"][label] = {"fits": fits, "median_sum_radii": statistics.median(sums) if sums else None,
                                         "range": [min(sums), max(sums)] if sums else None,
                                         "median_wall_s": statistics.median(f["wall_s"] for f in fits)}
                print(f"{name:20s} {label:10s} best sum of radii {[f['best_sum_radii'] for f in fits]}, "
                      f"trials {[f['trials'] for f in fits]}, constants {fits[0]['constants']}, "
                      f"wall {[f['wall_s'] for f in fits]} s", flush=True)
            out["programs"][name] = row
    finally:
        executor.shutdown()
    entries = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    entries.append(out)
    RESULTS.write_text(json.dumps(entries, indent=1) + "\n")


if __name__ == "__main__":
    main()
