"""Stage timings and reference figures of the ``continual`` and ``fewshot`` suites, measured here.

    .venv/bin/python bench/bench_suites_cl_fs.py [--suites continual,fewshot] [--stages smoke,small,full]
                                                 [--agents all|seed] [--repeat 3] [--sandbox auto]

For every suite, agent (the seed and each reference agent) and stage, one evaluation through the
real pipeline and sandbox (``evaluators.pipeline.evaluate``): wall time of the stage as the
orchestrator sees it (work directory, data, sandbox start, ``import torch``, the runs, scoring),
the time and CPU seconds inside the sandbox, the score and every metric. The seed's smoke and small stages are
repeated ``--repeat`` times (median reported). A probe times ``python -I -c "import torch"`` in the
same sandbox, the fixed cost of any stage. Results are merged into
``bench/results/suites_cl_fs.json`` (one entry per suite/stage/agent, newest wins); the machine
may be shared, so the load average is recorded with the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evaluators.continual import ContinualEvaluator  # noqa: E402
from evaluators.fewshot import FewShotEvaluator  # noqa: E402
from evaluators.pipeline import evaluate  # noqa: E402
from sandboxes.base import Limits, Sandbox, python_ro_paths  # noqa: E402
from sandboxes.factory import make_sandbox  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "suites_cl_fs.json"
SUITES = {"continual": ContinualEvaluator, "fewshot": FewShotEvaluator}


def torch_start(sandbox, repeat: int) -> dict:
    """Median wall time of ``python -I -c 'import torch'`` run in the sandbox."""
    times = []
    with tempfile.TemporaryDirectory() as wd:
        for _ in range(repeat):
            r = sandbox.run([sys.executable, "-I", "-c", "import torch"], Path(wd), Limits(wall_s=60),
                            env={"PYTHONDONTWRITEBYTECODE": "1"}, ro_paths=python_ro_paths())
            if not r.ok:
                raise RuntimeError(f"import torch failed in the sandbox: {r.describe()} {r.stderr[-500:]}")
            times.append(r.wall_s)
    return {"n": repeat, "median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3)}


class Recording(Sandbox):
    """Passes runs on to a real sandbox and keeps their results (for the CPU seconds they used)."""

    def __init__(self, inner: Sandbox) -> None:
        self.inner, self.name, self.isolated, self.results = inner, inner.name, inner.isolated, []

    def run(self, argv, workdir, limits, env=None, ro_paths=(), **kwargs):
        result = self.inner.run(argv, workdir, limits, env=env, ro_paths=ro_paths, **kwargs)
        self.results.append(result)
        return result


def one(evaluator, agent: Path, stage: str, sandbox: Recording, seed: int) -> dict:
    sandbox.results.clear()
    t = time.perf_counter()
    res = evaluate(evaluator, agent, sandbox, seed=seed, stages=[stage])
    wall = time.perf_counter() - t
    s = res.stages[0] if res.stages else None
    if s is None or not s.valid:
        raise RuntimeError(f"{evaluator.name}/{agent.name}/{stage}: {res.error}")
    return {
        "wall_s": round(wall, 3), "stage_wall_s": round(s.wall_s, 3), "sandbox_s": round(s.sandbox_s, 3),
        "cpu_s": round(sum(float(r.extra.get("cpu_s") or 0.0) for r in sandbox.results), 3),
        "score": s.score, "public": s.public, "private": s.private,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suites", default="continual,fewshot")
    ap.add_argument("--stages", default="smoke,small,full")
    ap.add_argument("--agents", default="all", choices=("all", "seed"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sandbox", default="auto")
    ap.add_argument("--seed", type=int, default=1, help="evaluation seed (draws the hidden variants)")
    args = ap.parse_args()
    sandbox = Recording(make_sandbox(args.sandbox, trusted=args.sandbox == "process"))
    before = os.getloadavg()
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    data.setdefault("suites", {})
    data["torch_start_in_sandbox"] = torch_start(sandbox, max(args.repeat, 3))
    print(f"import torch in the {sandbox.name} sandbox: {data['torch_start_in_sandbox']['median_s']} s (median)")
    for suite in args.suites.split(","):
        evaluator = SUITES[suite]()
        agents = {"seed": evaluator.seed_agent()} if args.agents == "seed" else evaluator.reference_agents()
        t = time.perf_counter()
        first = one(evaluator, evaluator.seed_agent(), "smoke", sandbox, args.seed)
        data["suites"].setdefault(suite, {})["first_smoke_cold_s"] = round(time.perf_counter() - t, 3)
        print(f"{suite}: first smoke in a fresh process (data loading included) {first['wall_s']} s")
        for stage in args.stages.split(","):
            for name, path in agents.items():
                repeat = args.repeat if (path == evaluator.seed_agent() and stage != "full") else 1
                rows = [one(evaluator, path, stage, sandbox, args.seed) for _ in range(repeat)]
                walls = [r["wall_s"] for r in rows]
                entry = {**rows[-1], "wall_s": round(statistics.median(walls), 3), "wall_s_all": walls,
                         "loadavg": [round(x, 2) for x in os.getloadavg()]}
                data["suites"][suite].setdefault(stage, {})[name] = entry
                print(f"{suite:9s} {stage:5s} {name:9s} wall {entry['wall_s']:7.2f} s (sandbox {entry['sandbox_s']:.2f} s, "
                      f"CPU {entry['cpu_s']:.2f} s) "
                      f"score {entry['score']:.4f}")
                RESULTS.parent.mkdir(parents=True, exist_ok=True)
                data.update({
                    "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                "loadavg_before": [round(x, 2) for x in before],
                                "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
                    "sandbox": sandbox.name, "device": "cpu", "eval_seed": args.seed,
                })
                RESULTS.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
