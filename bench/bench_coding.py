"""pass@1 on the coding suite's held-out split with the embedded model (Qwen2.5-Coder-1.5B, CPU).

    .venv/bin/python bench/bench_coding.py --mode bare --problems 20 --out bench/results/coding_bare.json
    .venv/bin/python bench/bench_coding.py --mode seed --problems 20 --out bench/results/coding_seed.json

``bare``: the model answers each prompt once (the seed's system prompt, temperature 0.2); its code
block is graded as it is (the seed's ``extract_code`` pulls it out). ``seed``: the agent (the seed,
or ``--agent DIR``, e.g. a campaign's best node exported) solves each problem exactly as in an
evaluation (one sandbox run per problem, the per-problem relay and budget, the FM proxy in front of
the model). Both are graded by the suite's hidden-test grader in the sandbox. ``--problems K``
takes K held-out problems (data.HELDOUT order) after ``--skip N``. Each row keeps the problem, the
verdict, the model calls, tokens and seconds; the summary the means.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evaluators.agent import copy_agent  # noqa: E402
from evaluators.api import CandidateRun  # noqa: E402
from evaluators.coding import CodingEvaluator, data  # noqa: E402
from orchestrator.fm.config import FMConfig  # noqa: E402
from orchestrator.fm.providers import open_fm  # noqa: E402
from orchestrator.fm.proxy import Budget, FMProxy  # noqa: E402
from bench.provenance import commit, git, utc_now  # noqa: E402
from sandboxes.factory import make_sandbox  # noqa: E402

sys.path.insert(0, str(ROOT / "evaluators" / "coding" / "seed"))
import coder  # noqa: E402
import coder_tools  # noqa: E402


def bare(ev: CodingEvaluator, fm, run: CandidateRun, problems, max_tokens: int) -> list[dict]:
    rows = []
    for p in problems:
        messages = [{"role": "system", "content": coder.SYSTEM},
                    {"role": "user", "content": coder.draft_request(p.public())}]
        t0 = time.perf_counter()
        c = fm.complete(messages, temperature=0.2, max_tokens=max_tokens, seed=random.randrange(2**31))
        call_s = time.perf_counter() - t0
        code = coder_tools.extract_code(c.text, p.public())
        passed, why = ev.grade(run, p, code)
        rows.append({"task_id": p.task_id, "passed": passed, "why": why, "calls": 1, "call_s": round(call_s, 2),
                     "prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def seed(ev: CodingEvaluator, fm, run: CandidateRun, problems) -> list[dict]:
    sock_dir = Path(tempfile.mkdtemp(prefix="dgm-bc-", dir="/tmp"))
    os.chmod(sock_dir, 0o755)
    rows = []
    with FMProxy(fm, sock_dir / "fm.sock", node_id="bench", budget=Budget()) as proxy:
        run.fm_socket = proxy.socket_path
        stage = next(s for s in ev.stages if s.name == "full")
        for p in problems:  # one at a time, so that each row is printed as it finishes
            a = ev.solve_and_grade(stage, run, [p])[0]
            rows.append({"task_id": p.task_id, "passed": a.passed, "why": a.why, "calls": a.calls,
                         "tokens": a.tokens, "refused": a.refused, "wall_s": round(a.wall_s, 2)})
            print(json.dumps(rows[-1]), flush=True)
        t = proxy.totals()
        rows.append({"proxy_totals": {"calls": t.calls, "prompt_tokens": t.prompt_tokens,
                                      "completion_tokens": t.completion_tokens}})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["bare", "seed"], required=True)
    ap.add_argument("--problems", type=int, default=len(data.HELDOUT))
    ap.add_argument("--skip", type=int, default=0, help="start after this many held-out problems")
    ap.add_argument("--agent", type=Path, default=None, help="an agent directory (default: the seed), e.g. a campaign's best node")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    ev = CodingEvaluator()
    problems = data.select(data.HELDOUT[args.skip: args.skip + args.problems])
    work = Path(tempfile.mkdtemp(prefix="dgm-bench-coding-", dir="/tmp"))
    copy_agent(args.agent or ev.seed_agent(), work / "agent")
    run = CandidateRun(workdir=work / "agent", sandbox=make_sandbox("auto"), python=sys.executable, seed=0)
    run.hide = [*run.hide, *data.hidden_dirs()]
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    with open_fm(FMConfig(provider="embedded")) as fm:
        rows = bare(ev, fm, run, problems, ev.options.max_tokens) if args.mode == "bare" else seed(ev, fm, run, problems)
        model = fm.model
    per = [r for r in rows if "task_id" in r]
    solved = sum(r["passed"] for r in per)
    summary = {
        "command": " ".join([".venv/bin/python", "bench/bench_coding.py", *sys.argv[1:]]),
        "commit": commit(),
        "seed_uncommitted_changes": bool(git("status", "--porcelain", "--", "evaluators/coding/seed")),
        "when": utc_now(),
        "model": model,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "loadavg_before": load_before,
                    "loadavg_after": os.getloadavg()},
        "split": f"held-out, problems {args.skip + 1}-{args.skip + len(per)} of {len(data.HELDOUT)} (data.HELDOUT order)",
        "mode": args.mode,
        "agent": str(args.agent or "seed"),
        "options": ev.options.model_dump(),
        "problems": len(per),
        "solved": solved,
        "pass_at_1": solved / len(per),
        "mean_calls_per_problem": sum(r["calls"] for r in per) / len(per),
        "wall_s_total": round(time.perf_counter() - t0, 1),
        "rows": rows,
    }
    if args.mode == "bare":
        summary["mean_call_s"] = sum(r["call_s"] for r in per) / len(per)
        summary["mean_tokens_per_problem"] = sum(r["prompt_tokens"] + r["completion_tokens"] for r in per) / len(per)
    else:
        summary["mean_wall_s_per_problem"] = sum(r["wall_s"] for r in per) / len(per)
        summary["mean_tokens_per_problem"] = sum(r["tokens"] for r in per) / len(per)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}, indent=2))


if __name__ == "__main__":
    main()
