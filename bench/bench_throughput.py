"""Attempts per minute of a simulated campaign: an instant scripted model over real HTTP, a trivial
evaluator that runs nothing (it reads the candidate's number from its file), the `process`
backend. What is left is the loop itself: proposals, parsing, archive writes (SQLite + git), the
staged pipeline and the verdicts.

Writes bench/results/throughput.json.
Run:  .venv/bin/python bench/bench_throughput.py [--attempts 600]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evaluators.api import CandidateInvalid, Evaluator, MetricSpec, Stage, StageOutcome  # noqa: E402
from orchestrator import plan as plan_module  # noqa: E402
from orchestrator.campaign import Campaign  # noqa: E402
from orchestrator.config import load_config  # noqa: E402
from orchestrator.executor import EvaluationEnvironment, LocalExecutor  # noqa: E402
from orchestrator.fm.client import FMClient  # noqa: E402
from sandboxes.base import Limits  # noqa: E402
from tests.fm_server import Reply, ScriptedFMServer  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "throughput.json"


class Trivial(Evaluator):
    name = "trivial"
    task = "Raise Q."
    stages = [Stage("full", Limits(wall_s=5))]
    metrics = [MetricSpec("q", 0, 10)]

    def seed_agent(self):
        raise NotImplementedError

    def run_stage(self, stage, run):
        m = re.search(r"Q = ([0-9.]+)", run.read_artifact("q.py").decode())
        if not m:
            raise CandidateInvalid("no Q")
        return StageOutcome(float(m.group(1)), {"q": float(m.group(1))})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--attempts", type=int, default=600)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    os.environ.setdefault("DGM_TEST_KEY", "k")
    root = Path(tempfile.mkdtemp(prefix="dgm-throughput-"))
    seed = root / "seed"
    seed.mkdir()
    (seed / "agent.toml").write_text('[agent]\nentry = "q.py"\neditable = ["q.py"]\n')
    (seed / "q.py").write_text("Q = 0.5\n")
    evaluator = Trivial()
    plan_module.registry.create = lambda name, options=None: evaluator
    count = itertools.count(1)

    def respond(request):  # a new program every time: none is skipped as a duplicate
        return Reply(f"Raise Q.\n```python\nQ = {0.5 + next(count) * 1e-6:.6f}\n```\n", 200, 20)

    with ScriptedFMServer([], responder=respond) as srv:
        (root / "campaign.toml").write_text(f"""
[campaign]
name = "throughput"
seed_agent = "{seed}"
[evaluator]
name = "trivial"
[fm]
provider = "openai"
model = "scripted"
base_url = "{srv.base_url}"
api_key_env = "DGM_TEST_KEY"
concurrency = 2
[mutation]
operators = {{ rewrite = 1.0 }}
[evaluation]
workers = {args.workers}
[sandbox]
backend = "process"
trusted = true
""")
        cfg = load_config(root / "campaign.toml")
        with FMClient.from_config(cfg.fm) as fm:
            env = EvaluationEnvironment(evaluators={"trivial": evaluator})
            campaign = Campaign(cfg, root / "run", fm, executor=LocalExecutor(args.workers, env))
            t0 = time.monotonic()
            stats = campaign.run(args.attempts)
            wall = time.monotonic() - t0
    result = {
        "attempts": stats.started, "wall_s": round(wall, 2),
        "attempts_per_minute": round(60 * stats.started / wall, 1),
        "counts": stats.counts, "workers": args.workers, "fm_concurrency": 2,
        "load_average": os.getloadavg(),
        "how": "bench/bench_throughput.py: instant scripted FM over HTTP, trivial evaluator (no sandboxed run), "
               "process backend; wall time of Campaign.run including the seed",
    }
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
