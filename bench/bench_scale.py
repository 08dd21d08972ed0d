"""The loop's own cost as the archive grows: real archives (SQLite + git) of 1,000, 10,000 and
100,000 nodes, a resume of each, and the orchestrator's share of one proposal (drawing the
operator and the parent, building the context, recording the node and refreshing the totals;
neither the FM call nor the evaluation).

Writes bench/results/scale.json:
  {"nodes": {"100000": {"orchestrator_ms_per_proposal": …, "resume_s": …, …}, …}}

Run:  .venv/bin/python bench/bench_scale.py [--sizes 1000 10000 100000] [--proposals 200]
The archives are built once under --cache (default /tmp/dgm-scale) and reused.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from archive import Archive, NodeStatus  # noqa: E402
from orchestrator.campaign import Campaign  # noqa: E402
from orchestrator.config import CampaignConfig  # noqa: E402
from orchestrator.memory import tree_digest  # noqa: E402
from orchestrator.mutation.operators import Proposal  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "scale.json"
MANIFEST = b'[agent]\nentry = "a.py"\neditable = ["a.py"]\n'


def build(run_dir: Path, n: int, seed: int = 0) -> None:
    """A campaign-shaped archive: a tree grown by preferential attachment to good nodes, with the
    status mix of a real run (about half admitted, a third invalid, the rest rejected or failed)."""
    rng = random.Random(seed)
    archive = Archive.create(run_dir, "scale")
    cfg = CampaignConfig(campaign={"name": "scale"}, evaluator={"name": "circle_packing"})
    archive.set_meta("config", cfg.model_dump_json(exclude={"base_dir"}))
    seed = {"agent.toml": MANIFEST, "a.py": b"x = 0.5\n"}
    archive.add_node(parent_id=None, status=NodeStatus.ADMITTED, operator="seed", files=seed,
                     message="seed", score=0.5, draws=[0.5], digest=tree_digest(seed))
    admitted = [0]
    t0 = time.monotonic()
    for i in range(1, n):
        parent = admitted[-1 - min(len(admitted) - 1, int(rng.expovariate(0.05)))]
        roll = rng.random()
        status = (NodeStatus.ADMITTED if roll < 0.5 else NodeStatus.INVALID if roll < 0.83
                  else NodeStatus.REJECTED if roll < 0.95 else NodeStatus.FAILED)
        score = 0.5 + rng.random() * 0.5 if status in (NodeStatus.ADMITTED, NodeStatus.REJECTED) else None
        files = {"agent.toml": MANIFEST, "a.py": f"x = {i / n:.9f}\n".encode()} if status != NodeStatus.FAILED else None
        evaluated = status != NodeStatus.FAILED
        stages = [{"stage": "full", "valid": score is not None, "passed_gate": score is not None, "score": score,
                   "public": {"m": score or 0.0}, "private": {}, "feedback": "fine" if score else "", "error": ""}]
        archive.add_node(parent_id=parent, status=status, operator=rng.choice(["diff", "rewrite", "tweak"]),
                         files=files, message=f"node {i}", score=score, draws=[score] if score is not None else [],
                         stages=stages if evaluated else [], digest=tree_digest(files) if files else "",
                         fm_model="m", prompt_tokens=900, completion_tokens=300,
                         error="" if score is not None else "invalid", response="answer")
        if status == NodeStatus.ADMITTED:
            admitted.append(i)
        if i % 10000 == 0:
            print(f"  built {i} nodes ({time.monotonic() - t0:.0f} s)", flush=True)
    archive.close()


class Instant:
    """An operator stand-in that writes nothing (the bench measures the loop, not proposals)."""

    name, calls_fm, inline, selective, needs = "rewrite", True, True, False, ""

    def observe(self, event):
        pass

    def propose(self, ctx, fm, sampling):
        return Proposal("rewrite", ctx.target, None, error="bench")


def measure(run_dir: Path, n: int, proposals: int) -> dict:
    cfg = CampaignConfig(campaign={"name": "scale", "iterations": n - 1}, evaluator={"name": "circle_packing"},
                         mutation={"operators": {"rewrite": 1.0}})
    campaign = Campaign(cfg, run_dir, None)
    t0 = time.perf_counter()
    campaign.run(n - 1)  # a resume with nothing left to do: load, recover, stop
    resume_s = time.perf_counter() - t0
    campaign.operators = {"rewrite": Instant()}
    campaign.plan.operators = campaign.operators
    archive = campaign.archive = Archive.open(run_dir)
    campaign.files.archive = archive
    times, parts = [], {"draw": [], "context": [], "record": [], "refresh": []}
    try:
        for _ in range(proposals):
            t = time.perf_counter()
            name, parent = campaign._draw()
            t1 = time.perf_counter()
            ctx = campaign.context.build(parent, campaign.rng)
            t2 = time.perf_counter()
            node = archive.add_node(parent_id=parent.id, status=NodeStatus.INVALID, operator=name,
                                    message="bench", error="bench", response="r")
            t3 = time.perf_counter()
            campaign._record(node)
            t4 = time.perf_counter()
            campaign._refresh(0, 0)
            t5 = time.perf_counter()
            times.append((t2 - t) + (t4 - t3) + (t5 - t4))  # the archive write (t3 - t2) is SQLite + git
            for key, dt in zip(parts, (t1 - t, t2 - t1, t4 - t3, t5 - t4)):
                parts[key].append(dt)
            assert ctx.parent_id == parent.id
    finally:
        archive.close()
    return {
        "orchestrator_ms_per_proposal": round(1000 * statistics.median(times), 3),
        "orchestrator_ms_per_proposal_p90": round(1000 * sorted(times)[int(0.9 * len(times))], 3),
        "parts_ms_median": {k: round(1000 * statistics.median(v), 3) for k, v in parts.items()},
        "resume_s": round(resume_s, 2),
        "proposals_measured": proposals,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--proposals", type=int, default=200)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/dgm-scale"))
    args = ap.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"nodes": {}}
    for n in args.sizes:
        src = args.cache / f"n{n}"
        if not (src / "archive.db").exists():
            print(f"building {n} nodes under {src}", flush=True)
            build(src, n)
        # each measurement works on a copy: proposals add nodes
        import shutil

        work = args.cache / f"n{n}-work"
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(src, work)
        results["nodes"][str(n)] = measure(work, n, args.proposals)
        results["machine"] = "2 cores (the project's dev/CI machine), other work running: see the note"
        results["how"] = ("bench/bench_scale.py: real archive; resume = Campaign.run on a finished run; "
                          "per proposal = _draw + context.build + _record + _refresh, median of --proposals")
        print(n, json.dumps(results["nodes"][str(n)]), flush=True)
        RESULTS.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
