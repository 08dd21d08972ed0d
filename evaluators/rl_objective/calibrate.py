"""Measure the PPO-clip reference returns of the public environments and write reference_returns.json.

    python -m evaluators.rl_objective.calibrate [--seeds 16] [--device cpu] [--out PATH]

Runs the seed agent's objective (trusted code, so no sandbox) through the same harness and the same
evaluator-side rollouts as an evaluation, for every stage's public environments, with calibration
seeds that evaluations never use. The file ships with the suite; rerun this after changing the
trainer, the environments or the budgets.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from evaluators.rl_objective import suite
from evaluators.rl_objective.evaluator import HERE, REFERENCE_FILE, build_runs, load_checkpoint, reference_key, score_run
from evaluators.rl_objective.metrics import mean_std

CALIBRATION_SEED = -1  # evaluation seeds are >= 0


def calibrate(seeds: int = 16, device: str = "cpu", agent: Path = HERE / "seed") -> dict:
    """{"<env>@<budget>": {"ppo": mean return, "std", "seeds", "budget", "random"}} for every stage's public envs."""
    out = {}
    pairs = sorted({(name, budget) for plan in suite.PLANS.values() for name, budget in plan.budgets.items()})
    for name, budget in pairs:
        stage = f"calibrate/{reference_key(name, budget)}"
        runs = build_runs(stage, suite.Plan(budgets={name: budget}, seeds=seeds), CALIBRATION_SEED)
        with tempfile.TemporaryDirectory(prefix="rl-calibrate-") as tmp:
            work = Path(tmp)
            shutil.copytree(agent, work, dirs_exist_ok=True)
            shutil.copy(HERE / "harness.py", work / "_dgm_harness.py")
            shutil.copy(HERE / "core.py", work / "_dgm_core.py")
            config = {"entry": "objective.py", "device": device, "threads": 1,
                      "runs": [{k: r[k] for k in ("id", "env", "seeds", "env_seed", "budget", "hp")} for r in runs]}
            (work / "_dgm_config.json").write_text(json.dumps(config))
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-I", "-B", "_dgm_harness.py", "_dgm_config.json"], cwd=work, check=True)
            wall = time.perf_counter() - t0
            for r in runs:
                key = reference_key(r["public"], r["budget"])
                scored = score_run(r, load_checkpoint(work / f"ckpt_{r['id']}.npz", r), {key: {"ppo": 1e9}},
                                   stage, CALIBRATION_SEED)
                mean, std = mean_std(scored["returns"])
                out[key] = {"ppo": round(mean, 4), "std": round(std, 4), "seeds": seeds,
                            "random": round(scored["random"], 4), "train_s": round(wall, 2), "device": device}
                print(f"{key}: PPO {mean:.4g} ± {std:.3g} ({seeds} seeds), random {scored['random']:.4g}")
            print(f"{stage}: {wall:.1f} s of training on {device}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=REFERENCE_FILE)
    args = ap.parse_args()
    table = calibrate(args.seeds, args.device)
    args.out.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
