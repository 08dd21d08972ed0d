"""Sandbox start overhead and the cost of ``import torch``, measured on this machine.

    .venv/bin/python bench/bench_sandbox.py [--repeat 30] [--no-docker] [--no-torch] [--before REV]

Each row runs ``true`` (or a trivial torch op) N times and reports the median and p90 wall time of
one complete run as the caller sees it (spawn, wait, capture, clean-up). Overheads are medians minus
the bare ``subprocess.run(["true"])`` median. Targets: bwrap <= 20 ms over bare, docker run <= 250
ms. Results go to ``bench/results/sandbox.json`` and a table is printed. The machine may be shared:
the load average is recorded with the numbers.

``--before REV`` (default ``5b04c16``, the code before issue 15's hardening) also loads that
revision's ``sandboxes`` package (``git archive``, imported as ``sandboxes_old``) and times it in
the same rounds: ``bwrap_before`` / ``docker_before`` against ``bwrap`` / ``docker`` (seccomp, a
pool uid, a quota mount reused by the work dir), and ``bwrap_fresh_quota_workdir`` (a new work dir
per run: attaching its quota mount, the run, and ``remove_tree``, i.e. one evaluation stage).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sandboxes.base import Limits, python_ro_paths  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "sandbox.json"
LIMITS = Limits(wall_s=60, cpu_s=60, memory_mb=2048, pids=256, file_mb=64)
IDLE_S = 0.5


def _stats(samples: list[float]) -> dict:
    s = sorted(samples)
    return {"n": len(s), "median_ms": round(statistics.median(s) * 1000, 2),
            "p90_ms": round(s[min(len(s) - 1, int(len(s) * 0.9))] * 1000, 2),
            "min_ms": round(s[0] * 1000, 2)}


def _time(fn, repeat: int, warmup: int = 2) -> dict:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return _stats(out)


def _check(r):
    if not r.ok:
        raise RuntimeError(f"benchmark command failed: {r.describe()} {r.stderr[-500:]}")
    return r


def _interleaved(fns: dict, repeat: int, warmup: int = 2) -> dict:
    """Time every fn once per round, round after round, so that load from other processes on a
    shared machine hits all variants alike (the overheads are differences of medians)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    cpu: dict[str, float] = {name: 0.0 for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            c0, k0 = _cpu_now(), _cpu_self()
            t = time.perf_counter()
            r = fn()
            samples[name].append(time.perf_counter() - t)
            extra = getattr(r, "extra", None) or {}
            if extra.get("cgroup"):  # the cgroup saw every process of the run (bwrap's pid 1 too)
                cpu[name] += _cpu_self() - k0 + extra["cpu_s"]
            else:
                cpu[name] += _cpu_now() - c0
    out = {name: _stats(v) for name, v in samples.items()}
    for name in fns:  # CPU time (ours + reaped children's) hardly depends on the machine's load
        out[name]["cpu_ms"] = round(cpu[name] / repeat * 1000, 2)
    return out


def _cpu_self() -> float:
    s = resource.getrusage(resource.RUSAGE_SELF)
    return s.ru_utime + s.ru_stime


def _cpu_now() -> float:
    """User+system CPU seconds of this process and of its reaped children so far."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def load_before(rev: str):
    """The ``sandboxes`` package as of ``rev``, imported as ``sandboxes_old`` (None if unavailable)."""
    import importlib.util

    dest = Path(tempfile.mkdtemp(prefix="dgm-bench-before-"))
    p = subprocess.run(f"git -C {ROOT} archive {rev} sandboxes | tar -x -C {dest}", shell=True,
                       capture_output=True, text=True)
    if p.returncode != 0:
        print(f"--before {rev}: {p.stderr.strip()}", file=sys.stderr)
        return None
    pkg = dest / "sandboxes"
    spec = importlib.util.spec_from_file_location("sandboxes_old", pkg / "__init__.py",
                                                  submodule_search_locations=[str(pkg)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules["sandboxes_old"] = mod
    spec.loader.exec_module(mod)
    return mod


def bench_start(repeat: int, docker: bool, before: str | None = None) -> dict:
    from sandboxes import fs
    from sandboxes.bwrap import BwrapSandbox
    from sandboxes.process import ProcessSandbox

    old = load_before(before) if before else None
    wd = Path(tempfile.mkdtemp(prefix="dgm-bench-"))
    wd_old = Path(tempfile.mkdtemp(prefix="dgm-bench-old-"))
    ro = python_ro_paths()
    fns = {"bare_subprocess": lambda: subprocess.run(["true"], env={"PATH": "/usr/bin:/bin"})}
    if BwrapSandbox.available():
        if old is not None:
            import sandboxes_old.bwrap  # noqa: F401

            sb_old = sys.modules["sandboxes_old.bwrap"].BwrapSandbox()
            fns["bwrap_before"] = lambda: _check(sb_old.run(["true"], wd_old, LIMITS, ro_paths=ro))
        for name, sb in (("bwrap", BwrapSandbox()), ("bwrap_no_cgroup", BwrapSandbox(cgroups=False))):
            fns[name] = lambda sb=sb: _check(sb.run(["true"], wd, LIMITS, ro_paths=ro))
        sb_q = BwrapSandbox()

        def fresh() -> object:  # one evaluation stage: new work dir, quota attach, run, removal
            d = Path(tempfile.mkdtemp(prefix="dgm-bench-stage-"))
            (d / "agent.py").write_text("print('agent')\n")
            try:
                return _check(sb_q.run(["true"], d, LIMITS, ro_paths=ro))
            finally:
                fs.remove_tree(d)

        fns["bwrap_fresh_quota_workdir"] = fresh
    fns["process"] = lambda sb=ProcessSandbox(): _check(sb.run(["true"], wd, LIMITS))
    rows = _interleaved(fns, repeat)
    # A campaign starts one sandbox every few seconds, not back to back. The first cgroup move
    # after a pause waits for an RCU grace period (10-20 ms here), so measure that pattern too.
    iso = {k: fns[k] for k in ("bare_subprocess", "bwrap_before", "bwrap", "bwrap_no_cgroup", "process") if k in fns}
    idle = {f"{k}_after_idle": (lambda f=f: (time.sleep(IDLE_S), f())[1]) for k, f in iso.items()}
    for k, row in _interleaved(idle, max(8, repeat // 4), warmup=0).items():
        for key in ("median_ms", "p90_ms", "min_ms"):
            row[key] = round(row[key] - IDLE_S * 1000, 2)
        rows[k] = row
    # Measured on its own: interleaved, the Python subreaper run made the *next* cgroup run ~10 ms
    # slower (kernel-side; not seen after a plain python exit), which would skew the bwrap row.
    nocg = ProcessSandbox(cgroups=False)
    rows.update(_interleaved({"process_no_cgroup": lambda: _check(nocg.run(["true"], wd, LIMITS))},
                             max(5, repeat // 2)))
    if docker:
        try:
            from sandboxes.docker_backend import DockerSandbox, ensure_dockerd

            client = ensure_dockerd()
            sb = DockerSandbox(client=client)
            n = max(5, repeat // 3)
            c = client.containers.run(sb.image, ["sleep", "600"], detach=True, network_mode="none",
                                      user="65534:65534", read_only=True, labels={"dgm.sandbox": "bench"})
            dfns = {}
            if old is not None:
                import sandboxes_old.docker_backend  # noqa: F401

                sbd_old = sys.modules["sandboxes_old.docker_backend"].DockerSandbox(client=client)
                dfns["docker_before"] = lambda: _check(sbd_old.run(["true"], wd_old, LIMITS))
            try:
                rows.update(_interleaved({
                    **dfns,
                    "docker_run": lambda: _check(sb.run(["true"], wd, LIMITS)),
                    "docker_exec_warm_raw": lambda: c.exec_run(["true"]),
                    "bare_subprocess_docker_rounds": fns["bare_subprocess"],
                }, n, warmup=1))
            finally:
                c.remove(force=True)
                sb.close()
        except Exception as e:  # docker is optional here
            rows["docker_run"] = {"error": str(e)}
    for name, row in rows.items():
        if "median_ms" in row and not name.startswith("bare_subprocess"):
            base = rows["bare_subprocess_after_idle" if name.endswith("_after_idle") else "bare_subprocess"]
            row["over_bare_ms"] = round(row["median_ms"] - base["median_ms"], 2)
    for new, before in (("bwrap", "bwrap_before"), ("docker_run", "docker_before")):
        if "median_ms" in rows.get(new, {}) and "median_ms" in rows.get(before, {}):
            rows[new]["over_before_ms"] = round(rows[new]["median_ms"] - rows[before]["median_ms"], 2)
    fs.remove_tree(wd)
    fs.remove_tree(wd_old)
    return rows


def _forked_torch_worker(repeat: int) -> dict:
    """A worker that imported torch once and forks a child per task (the amortised path)."""
    code = r"""
import os, sys, time, json
import torch
torch.set_num_threads(1)
out = []
for _ in range(int(sys.argv[1])):
    t = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        x = torch.ones(64, 64) @ torch.ones(64, 64)
        os._exit(0 if float(x[0, 0]) == 64.0 else 1)
    _, status = os.waitpid(pid, 0)
    assert status == 0
    out.append(time.perf_counter() - t)
print(json.dumps(out))
"""
    p = subprocess.run([sys.executable, "-c", code, str(repeat)], capture_output=True, text=True, check=True)
    return _stats(json.loads(p.stdout.strip().splitlines()[-1]))


def bench_torch(repeat: int) -> dict:
    from sandboxes.bwrap import BwrapSandbox

    code = "import torch; x = torch.ones(64, 64) @ torch.ones(64, 64)"
    n = max(3, repeat // 10)
    fns = {"fresh_python_import_torch": lambda: subprocess.run([sys.executable, "-c", code], check=True)}
    if BwrapSandbox.available():
        sb, wd = BwrapSandbox(), Path(tempfile.mkdtemp(prefix="dgm-bench-"))
        ro = python_ro_paths()
        fns["bwrap_import_torch"] = lambda: _check(sb.run([sys.executable, "-c", code], wd, LIMITS, ro_paths=ro))
    rows = _interleaved(fns, n, warmup=1)
    rows["forked_preimported_worker"] = _forked_torch_worker(max(10, repeat))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--no-docker", action="store_true")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--before", default="5b04c16", help="revision to time side by side ('' = none)")
    ap.add_argument("--out", default=str(RESULTS), help="where the JSON goes")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("note: not root; cgroups and the uid switch may be unavailable", file=sys.stderr)
    load_before = os.getloadavg()
    results = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version(),
                    "loadavg_before": [round(x, 2) for x in load_before]},
        "method": "median wall time of complete run() calls of `true` (spawn, wait, capture, "
                  "cgroup set-up and removal), variants interleaved round by round; "
                  "over_bare_ms = median - bare subprocess.run(['true']) median; cpu_ms = user+sys "
                  "CPU of the bench process and its reaped children per run (docker: client side "
                  "only, the daemon's work is not counted); torch rows: python -c 'import torch; "
                  "64x64 matmul' fresh, inside bwrap, and forked from a worker that imported torch",
        "before_rev": args.before or None,
        "start": bench_start(args.repeat, docker=not args.no_docker, before=args.before or None),
    }
    if not args.no_torch:
        results["torch"] = bench_torch(args.repeat)
    results["machine"]["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"sandbox start overhead ({os.cpu_count()} CPUs, load {load_before[0]:.1f})")
    for col in ("what", "median ms", "p90 ms", "over bare ms", "over before ms", "cpu ms", "n"):
        table.add_column(col, justify="left" if col == "what" else "right")
    for section in ("start", "torch"):
        for name, row in results.get(section, {}).items():
            if "error" in row:
                table.add_row(name, "-", "-", row["error"][:40], "-", "-", "-")
                continue
            table.add_row(name, f"{row['median_ms']:.1f}", f"{row['p90_ms']:.1f}",
                          f"{row['over_bare_ms']:.1f}" if "over_bare_ms" in row else "",
                          f"{row['over_before_ms']:+.1f}" if "over_before_ms" in row else "",
                          f"{row['cpu_ms']:.1f}" if "cpu_ms" in row else "", str(row["n"]))
    Console().print(table)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
