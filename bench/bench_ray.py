"""The Ray executor's cost per evaluation against the local executor, on a local loopback cluster.

Each job is submitted and waited for on its own (latency), then a batch is submitted at once
(throughput, 2 in flight). Two jobs: a trivial one (an empty agent: the pipeline fails it at once,
no candidate runs) shows the executor's own overhead; the circle-packing seed (one sandboxed run)
shows it beside a real evaluation. Also: the cluster's start and stop time, and the resident memory
of its processes. Writes bench/results/ray.json.

Usage: python bench/bench_ray.py [N]
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from concurrent.futures import wait
from pathlib import Path

from evaluators.circle_packing.evaluator import HERE as CP_DIR
from orchestrator.executor import EvalJob, EvaluationEnvironment, LocalExecutor
from orchestrator.ray_executor import RayExecutor, start_local_cluster

OUT = Path(__file__).resolve().parent / "results" / "ray.json"
SEED = {p.name: p.read_bytes() for p in (CP_DIR / "seed").iterdir() if p.is_file()}
JOBS = {"trivial": lambda i: EvalJob(i, {}, "circle_packing"), "circle_packing_seed": lambda i: EvalJob(i, SEED, "circle_packing")}


def ms(samples: list[float]) -> dict:
    s = sorted(samples)
    return {"n": len(s), "median_ms": round(statistics.median(s) * 1000, 2),
            "p90_ms": round(s[int(0.9 * (len(s) - 1))] * 1000, 2), "min_ms": round(s[0] * 1000, 2)}


def measure(ex, n: int) -> dict:
    out = {}
    for name, make in JOBS.items():
        for i in range(2):  # warm-up: worker start, imports, sandbox set-up
            ex.submit(make(i)).result()
        lat = []
        for i in range(n):
            t = time.perf_counter()
            ex.submit(make(i)).result()
            lat.append(time.perf_counter() - t)
        t = time.perf_counter()
        wait([ex.submit(make(i)) for i in range(n)])
        out[name] = {"latency": ms(lat), "batch_ms_per_job": round((time.perf_counter() - t) / n * 1000, 2)}
    return out


def ray_rss_mb() -> float:
    """Resident memory of this process's Ray descendants (gcs, raylet, agents, workers)."""
    kids: dict[int, list[int]] = {}
    for e in Path("/proc").iterdir():
        if e.name.isdigit():
            try:
                ppid = int((e / "stat").read_text().rsplit(")", 1)[1].split()[1])
                kids.setdefault(ppid, []).append(int(e.name))
            except (OSError, IndexError):
                pass
    total, todo, seen = 0, [os.getpid()], set()
    while todo:
        for c in kids.get(todo.pop(), []):
            if c in seen:
                continue
            seen.add(c)
            todo.append(c)
            try:
                cmd = (Path(f"/proc/{c}/cmdline").read_bytes().replace(b"\0", b" ")).decode(errors="replace")
                if "/ray/" in cmd or cmd.startswith("ray::"):
                    rss = [line for line in Path(f"/proc/{c}/status").read_text().splitlines() if line.startswith("VmRSS")]
                    total += int(rss[0].split()[1]) if rss else 0
            except OSError:
                pass
    return round(total / 1024, 1)


def main(n: int = 20) -> None:
    load_before = os.getloadavg()
    local = LocalExecutor(2, EvaluationEnvironment())
    local_res = measure(local, n)
    local.shutdown()

    t = time.perf_counter()
    start_local_cluster(num_cpus=2, object_store_memory=100 * 2**20)
    start_s = time.perf_counter() - t
    ex = RayExecutor()
    ray_res = measure(ex, n)
    rss = ray_rss_mb()
    ex.shutdown()
    import ray

    t = time.perf_counter()
    ray.shutdown()
    stop_s = time.perf_counter() - t

    result = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "ray": ray.__version__,
                    "loadavg_before": [round(x, 2) for x in load_before],
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
        "method": ("submit → result wall time per job, one at a time after 2 warm-up jobs (latency), then n jobs "
                   "submitted at once with 2 in flight (batch_ms_per_job = wall / n); local = LocalExecutor(2) "
                   "threads, ray = RayExecutor on a local loopback cluster (num_cpus=2, 100 MiB object store) "
                   "started in this process; trivial = an empty agent (the pipeline fails it without running a "
                   "candidate), circle_packing_seed = one sandboxed run of the seed; overhead = ray median - "
                   "local median; ray_rss_mb = VmRSS of the cluster's processes after the runs"),
        "local": local_res,
        "ray": ray_res,
        "overhead_ms": {k: round(ray_res[k]["latency"]["median_ms"] - local_res[k]["latency"]["median_ms"], 2)
                        for k in JOBS},
        "cluster_start_s": round(start_s, 2),
        "cluster_stop_s": round(stop_s, 2),
        "ray_rss_mb": rss,
    }
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
