"""Does a fewshot campaign's public gain carry to tasks of the same kind it never saw?

fewshot's held-out split is a shifted task distribution (amplitudes 5-7, outside training's
0.1-5); its public tasks are a fixed set. This measures the seed and the best of a kept run on a
third set: tasks drawn from the training distribution by the evaluation seed (the evaluator's
option `unseen_tasks`), on the evaluation seeds the run's own draws of both used, so each gain
is paired by seed. The run's public score and held-out score are measured again beside it, so the
rows also show whether a re-evaluation reproduces the run's draws.

    .venv/bin/python bench/bench_unseen_tasks.py --run /tmp/eff/fewshot-6/camp/run [--draws 3] [--tasks 300]

Appends one entry to bench/results/unseen_tasks.json. A measurement beside the criterion, not a
change of it: the held-out criterion stays the shifted split's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from archive import Archive  # noqa: E402
from bench.dgm_eval import dgm_eval  # noqa: E402
from bench.provenance import commit, utc_now  # noqa: E402
from orchestrator.campaign import evaluation_seed  # noqa: E402
from orchestrator.report import build_report  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "unseen_tasks.json"
METRICS = ("score", "hidden_score", "unseen_score")


def evaluate(agent: Path, cfg: dict, seed: int, tasks: int) -> dict:
    """`dgm eval` of ``agent`` as the run evaluated it (its stages and options), plus unseen tasks."""
    ev = cfg["evaluator"]
    out = dgm_eval(agent, ev["name"], stages=ev.get("stages") or [], seed=seed,
                   options={**(ev.get("options") or {}), "unseen_tasks": tasks})
    if not out.get("complete"):
        raise SystemExit(f"dgm eval of {agent} on seed {seed} did not complete: "
                         f"{out.get('error') or out.get('evaluator_error')}")
    return {"score": out["score"], **{k: out["private_metrics"].get(k) for k in METRICS[1:]}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="a kept fewshot run directory (DIR/camp/run)")
    ap.add_argument("--draws", type=int, default=3, help="evaluation seeds, taken from those both programs ran on")
    ap.add_argument("--tasks", type=int, default=300, help="unseen tasks per evaluation (the small stage's public count)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="dgm-unseen-") as tmp:
        measure(a, Path(tmp))


def measure(a: argparse.Namespace, tmp: Path) -> None:
    """Evaluate the run's seed and best (materialised under ``tmp``) and append the entry."""
    started = time.time()
    with Archive.open(a.run, readonly=True) as archive:
        cfg = json.loads(archive.get_meta("config") or "{}")
        if cfg.get("evaluator", {}).get("name") != "fewshot":
            raise SystemExit(f"{a.run}: a {cfg.get('evaluator', {}).get('name')!r} run; unseen tasks are fewshot's option")
        report = build_report(archive.nodes(), confidence=cfg.get("admission", {}).get("confidence", 0.0))
        seed_node, best_node = (archive.get(report[side]["id"]) for side in ("seed", "best"))
        dirs = {"seed": archive.materialize(seed_node.id, tmp / "seed"), "best": archive.materialize(best_node.id, tmp / "best")}
    shared = [o for o in seed_node.seed_offsets if o in set(best_node.seed_offsets)][: a.draws]
    base = evaluation_seed(cfg["campaign"]["random_seed"])
    rows = []
    for offset in shared:
        row = {"offset": offset}
        for side, node in (("seed", seed_node), ("best", best_node)):
            row[side] = evaluate(dirs[side], cfg, base + offset, a.tasks)
            k = node.seed_offsets.index(offset)
            row[side]["run_draw"] = {"score": node.draws[k], "hidden_score": (node.private_draws.get("hidden_score") or [None] * (k + 1))[k]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    gains = {m: [r["best"][m] - r["seed"][m] for r in rows] for m in METRICS}
    entry = {
        "run": str(a.run), "when": utc_now(), "commit": commit(), "wall_s": round(time.time() - started, 1),
        "seed_node": seed_node.id, "best_node": best_node.id, "best_operator": best_node.operator,
        "unseen_tasks": a.tasks, "evaluation_seeds": [base + o for o in shared], "rows": rows,
        "paired": {m: {"gains": g, "mean": statistics.fmean(g), "sd": statistics.stdev(g) if len(g) > 1 else None}
                   for m, g in gains.items()},
        # the criterion's yardstick for each metric: twice the seed's own spread between evaluation seeds
        "twice_seed_spread": {m: 2 * statistics.stdev([r["seed"][m] for r in rows]) if len(rows) > 1 else None for m in METRICS},
    }
    out = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    RESULTS.write_text(json.dumps(out + [entry], indent=1) + "\n")
    print(json.dumps({k: entry[k] for k in ("paired", "twice_seed_spread")}, indent=1))


if __name__ == "__main__":
    main()
