"""The GPU paths, in one prepared run for a machine that has a GPU (issue 13: CI has none).

    .venv/bin/python bench/bench_gpu.py [--suite continual] [--stage full] [--skip-tests]

1. the GPU tests (`tests/test_sandbox_gpu.py`, which run real CUDA where a device is present);
2. one suite's stage on the seed, with ``device="cuda"`` under a GPU lease and with ``device="cpu"``;
3. two evaluations of that stage at once sharing one GPU (``evals_per_gpu = 2``), through the
   executor, with the GPU-seconds each was charged;
4. a Ray task on a local cluster that reserves ``num_gpus`` and sees its device.

Writes ``bench/results/gpu.json``. On a machine without a GPU it says so and writes nothing.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evaluators import registry  # noqa: E402
from evaluators.agent import copy_agent  # noqa: E402
from orchestrator.executor import EvalJob, EvaluationEnvironment, LocalExecutor, SandboxSpec  # noqa: E402
from sandboxes.gpu import GpuPool, detect_gpus  # noqa: E402

OUT = ROOT / "bench" / "results" / "gpu.json"


def seed_tree(suite: str) -> dict[str, bytes]:
    src = registry.create(suite, {}).seed_agent()
    dest = Path(f"/tmp/dgm-bench-gpu-{suite}")
    if not dest.exists():
        copy_agent(src, dest)
    return {str(p.relative_to(dest)): p.read_bytes() for p in dest.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def one(ex: LocalExecutor, job: EvalJob) -> dict:
    t0 = time.monotonic()
    r = ex.submit(job).result()
    return {"wall_s": round(time.monotonic() - t0, 2), "score": r.score, "valid": r.valid,
            "error": r.error[:300], "gpu_s": round(r.gpu_s, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", default="continual")
    ap.add_argument("--stage", default="full")
    ap.add_argument("--skip-tests", action="store_true")
    args = ap.parse_args()
    gpus = detect_gpus()
    if not gpus:
        print("bench_gpu: this machine has no GPU (nvidia-smi finds none); nothing measured")
        return
    out: dict = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "host": platform.node(),
                 "gpus": [g.name for g in gpus], "suite": args.suite, "stage": args.stage}
    if not args.skip_tests:
        t0 = time.monotonic()
        res = subprocess.run([sys.executable, "-m", "pytest", "-q", "tests/test_sandbox_gpu.py"], cwd=ROOT,
                             capture_output=True, text=True)
        out["gpu_tests"] = {"rc": res.returncode, "wall_s": round(time.monotonic() - t0, 1),
                            "tail": res.stdout.strip().splitlines()[-1:]}
    tree = seed_tree(args.suite)

    def job(i: int, use_gpu: bool, per_gpu: int = 1) -> EvalJob:
        return EvalJob(i, tree, args.suite, stages=[args.stage], sandbox=SandboxSpec(use_gpu=use_gpu, evals_per_gpu=per_gpu))

    ex = LocalExecutor(2, EvaluationEnvironment(gpu_pool=GpuPool(gpus, per_gpu=1)))
    out["cuda"] = one(ex, job(1, True))
    out["cpu"] = one(ex, job(2, False))
    ex.shutdown()
    shared = LocalExecutor(2, EvaluationEnvironment(gpu_pool=GpuPool(gpus[:1], per_gpu=2)))
    t0 = time.monotonic()
    futs = [shared.submit(job(10 + i, True, 2)) for i in range(2)]
    results = [f.result() for f in futs]
    out["two_sharing_one_gpu"] = {"wall_s": round(time.monotonic() - t0, 2),
                                  "scores": [r.score for r in results], "gpu_s": [round(r.gpu_s, 2) for r in results]}
    shared.shutdown()
    out["ray_num_gpus"] = ray_task()
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


def ray_task() -> dict:
    import ray

    ray.init(address="local", num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        @ray.remote(num_gpus=1)
        def where() -> dict:
            import os

            import torch

            return {"gpu_ids": [str(i) for i in ray.get_gpu_ids()], "cuda": torch.cuda.is_available(),
                    "visible": os.environ.get("CUDA_VISIBLE_DEVICES", "")}

        t0 = time.monotonic()
        got = ray.get(where.remote())
        return {**got, "wall_s": round(time.monotonic() - t0, 2)}
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
