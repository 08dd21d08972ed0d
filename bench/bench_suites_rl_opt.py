"""Time the rl_objective and optimizer stages and measure the reference agents' figures.

    .venv/bin/python bench/bench_suites_rl_opt.py [--suite rl_objective|optimizer] [--seeds 5] [--quick]

Every stage runs through the real pipeline and sandbox (``make_sandbox("auto")``), so the timings
include the sandboxed interpreter's start and ``import torch``. Reference figures are the small
stage's metrics over ``--seeds`` evaluation seeds (mean ± sample std across evaluations).
Writes bench/results/suites_rl_opt.json (merged with what is there for the other suite).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evaluators.optimizer import OptimizerEvaluator  # noqa: E402
from evaluators.pipeline import evaluate  # noqa: E402
from evaluators.rl_objective import RLObjectiveEvaluator  # noqa: E402
from sandboxes.factory import make_sandbox  # noqa: E402

OUT = ROOT / "bench" / "results" / "suites_rl_opt.json"
SUITES = {
    "rl_objective": (RLObjectiveEvaluator, ["seed", "reference/vanilla_pg", "reference/random"],
                     ["norm_return", "cartpole_norm", "bandit_norm", "grid_norm", "cartpole_return", "bandit_return",
                      "grid_return", "heldout_frac_optimal"]),
    "optimizer": (OptimizerEvaluator, ["seed", "reference/sgd"],
                  ["rel_adam", "log_ratio", "digits_ratio", "wine_ratio", "breast_cancer_ratio", "rosenbrock_ratio",
                   "quadratic_ratio", "hidden_rel_adam"]),
}
REPEATS = {"smoke": 3, "small": 2, "full": 1}


def mean_std(values):
    n = len(values)
    m = sum(values) / n
    return m, (math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0)


def fresh_import_torch_s() -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-I", "-c", "import torch"], check=True)
    return time.perf_counter() - t0


def time_stages(cls, sandbox, quick: bool) -> dict:
    ev = cls()
    out = {}
    for stage in ("smoke", "small", "full"):
        if quick and stage == "full":
            continue
        runs = []
        for r in range(REPEATS[stage]):
            t0 = time.perf_counter()
            res = evaluate(ev, ev.seed_agent(), sandbox, seed=100 + r, stages=[stage])
            total = time.perf_counter() - t0
            s = res.stages[0]
            assert s.valid, s.error
            runs.append({"total_s": round(total, 3), "stage_wall_s": round(s.wall_s, 3), "sandbox_s": round(s.sandbox_s, 3),
                         "evaluator_side_s": round(s.wall_s - s.sandbox_s, 3), "score": s.score})
            print(f"  {cls.name}/{stage} run {r}: {total:.2f} s (sandbox {s.sandbox_s:.2f} s)", flush=True)
        out[stage] = {"runs": runs, "min_total_s": min(r["total_s"] for r in runs),
                      "note": "run 0 of smoke includes the evaluator process's first torch/sklearn imports"}
    return out


def references(cls, agents, keys, sandbox, seeds: int) -> dict:
    ev = cls()
    out = {}
    for agent in agents:
        path = ev.seed_agent().parent / agent
        per_seed = []
        for s in range(seeds):
            res = evaluate(ev, path, sandbox, seed=s, stages=["small"])
            st = res.stages[0]
            assert st.valid, st.error
            per_seed.append({"score": st.score, **{k: v for k, v in {**st.public, **st.private}.items() if k in keys}})
            print(f"  {cls.name}/{agent} seed {s}: score {st.score:.3f}", flush=True)
        summary = {}
        for k in ["score", *keys]:
            vals = [p[k] for p in per_seed if k in p]
            if vals:
                m, sd = mean_std(vals)
                summary[k] = {"mean": round(m, 4), "std": round(sd, 4), "n": len(vals)}
        out[agent] = {"summary": summary, "per_seed": per_seed}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", choices=sorted(SUITES), action="append")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="timings of smoke and small only, no reference figures")
    args = ap.parse_args()
    sandbox = make_sandbox("auto")
    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    import torch

    results["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
                          "sandbox": sandbox.name, "cuda": torch.cuda.is_available()}
    for name in args.suite or sorted(SUITES):
        cls, agents, keys = SUITES[name]
        load_before = os.getloadavg()[0]
        entry = {"fresh_import_torch_s": round(min(fresh_import_torch_s() for _ in range(3)), 3)}
        entry["stages"] = time_stages(cls, sandbox, args.quick)
        if not args.quick:
            entry["references_small"] = references(cls, agents, keys, sandbox, args.seeds)
        entry["load_avg_1min"] = {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)}
        entry["measured_at"] = time.strftime("%Y-%m-%d %H:%M:%S")
        results[name] = entry
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
