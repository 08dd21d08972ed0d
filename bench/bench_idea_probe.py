"""What the embedded model makes of one idea: K attempts of the FM operators on a suite's seed
program, each the whole attempt a campaign runs (a repair turn, the run check, a fix conversation),
its final program evaluated (sandboxed, `dgm eval`). A probe of one prompt shape, not a campaign:
the seed is the parent every time, so the answers differ only by their sampling seed.

    .venv/bin/python bench/bench_idea_probe.py --suite circle_packing --idea 5 --k 8 [--no-library-docs] [--keep DIR]
    .venv/bin/python bench/bench_idea_probe.py --idea 3 --operators function --function compute_max_radii

Appends one entry per run to bench/results/idea_probe.json: the attempts (operator, calls, error,
valid, score) and the counts (usable answers, valid programs, better than the seed, fixes that
came back valid). `--idea -1` shows no idea. One probe at a time on 2 cores (the model is the cost).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from concurrent.futures import Future
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evaluators import registry  # noqa: E402
from evaluators.agent import load_manifest  # noqa: E402
from evaluators.pipeline import EvaluationResult, StageResult  # noqa: E402
from orchestrator.fm.config import FMConfig  # noqa: E402
from orchestrator.fm.providers import open_fm  # noqa: E402
from orchestrator.mutation.api_reference import references  # noqa: E402
from orchestrator.mutation.operators import FM_OPERATORS, Sampling  # noqa: E402
from orchestrator.mutation.prompts import ProposalContext  # noqa: E402
from bench.dgm_eval import dgm_eval  # noqa: E402
from bench.provenance import commit, utc_now  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "idea_probe.json"


def evaluate(suite: str, seed_dir: Path, target: str, text: str, stage: str | None = None) -> dict:
    """`dgm eval` of the seed agent with ``target`` replaced by ``text`` (sandboxed, as a campaign)."""
    with tempfile.TemporaryDirectory(prefix="dgm-probe-") as tmp:
        agent = Path(tmp) / "agent"
        shutil.copytree(seed_dir, agent)
        (agent / target).write_text(text)
        return dgm_eval(agent, suite, stages=[stage] if stage else [], timeout_s=1800)


def as_result(res: dict) -> EvaluationResult:
    stages = [StageResult(s.get("stage", "?"), bool(s.get("valid")), bool(s.get("passed_gate")), s.get("score"),
                          error=s.get("error") or "") for s in res.get("stages", [])]
    return EvaluationResult(stages=stages, evaluator_error=res.get("evaluator_error") or "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", default="circle_packing")
    ap.add_argument("--idea", type=int, default=0, help="index into the evaluator's ideas (-1: none)")
    ap.add_argument("--k", type=int, default=8, help="attempts")
    ap.add_argument("--operators", default="function,rewrite", help="taken in turn")
    ap.add_argument("--seed", type=int, default=2000, help="sampling seed of the first attempt")
    ap.add_argument("--no-library-docs", action="store_true")
    ap.add_argument("--keep", type=Path, help="write each attempt's conversation and final program here (K.txt, K.py)")
    ap.add_argument("--function", help="the function the `function` operator asks for (default: one drawn per attempt, as a campaign does)")
    a = ap.parse_args()

    cls = registry.load_class(a.suite)
    seed_dir = cls().seed_agent()
    target = load_manifest(seed_dir).editable[0]
    files = {target: (seed_dir / target).read_text()}
    first_stage = cls.stages[0].name if cls.stages else None
    seed_eval = evaluate(a.suite, seed_dir, target, files[target])
    idea = cls.ideas[a.idea] if a.idea >= 0 else ""
    docs = not a.no_library_docs
    seed_score = seed_eval.get("score")

    def check(changed: dict[str, str]) -> Future:
        fut: Future = Future()
        fut.set_result(as_result(evaluate(a.suite, seed_dir, target, changed[target], first_stage)))
        return fut

    attempts, names, started = [], a.operators.split(","), time.time()
    with open_fm(FMConfig()) as fm:
        for k in range(a.k):
            op = FM_OPERATORS[names[k % len(names)]]()
            if a.function and op.name == "function":
                op.instructions = op.instructions.replace("{name}", a.function)  # the draw then finds no {name}
            op.repairs, op.run_repairs, op.library_docs = 1, 1, docs
            ctx = ProposalContext(task=cls.task, parent_id=0, files=files, editable=[target], target=target,
                                  score=seed_score, public_metrics=seed_eval.get("public_metrics") or {},
                                  feedback=seed_eval.get("feedback") or "", idea=idea,
                                  reference=references(idea) if docs and idea else "", check=check)
            t = time.time()
            p = op.propose(ctx, fm, Sampling(temperature=0.8, seed=a.seed + k, max_tokens=FMConfig().max_tokens))
            asked = re.search(r"Improve the function `(\w+)`", p.prompt) if op.name == "function" else None
            row = {"operator": op.name, "function": asked.group(1) if asked else None, "seed": a.seed + k, "wall_s": round(time.time() - t, 1), "error": p.error,
                   "counts": p.counts, "library_docs_in_fix": "for the call on that line" in p.prompt}
            if a.keep:
                a.keep.mkdir(parents=True, exist_ok=True)
                (a.keep / f"{k}.txt").write_text(f"{p.prompt}\n\n=== last answer ===\n{p.response}\n")
                if p.files:
                    (a.keep / f"{k}.py").write_text(p.files[target])
            if p.files:
                res = evaluate(a.suite, seed_dir, target, p.files[target])
                row["valid"] = bool(res.get("valid"))
                row["score"] = res.get("score")
                row["eval_error"] = (res.get("error") or res.get("evaluator_error") or "")[-300:]
            attempts.append(row)
            print(k, row["operator"], row["error"] or "", row.get("valid"), row.get("score"), row["counts"], flush=True)

    valid = [r for r in attempts if r.get("valid")]
    entry = {
        "suite": a.suite, "idea": idea, "library_docs": docs, "operators": names, "k": a.k, "function": a.function,
        "loop": "whole attempt (repair turn, run check, fix conversation)",
        "when": utc_now(), "wall_s": round(time.time() - started, 1), "commit": commit(),
        "seed_score": seed_score,
        "usable": sum(1 for r in attempts if not r["error"]),
        "valid": len(valid),
        "better_than_seed": sum(1 for r in valid if seed_score is not None and (r["score"] or 0) > seed_score),
        "sent_to_fix": sum(1 for r in attempts if r["counts"].get("run_repairs")),
        "valid_after_fix": sum(1 for r in valid if r["counts"].get("run_repairs")),
        "attempts": attempts,
    }
    out = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    RESULTS.write_text(json.dumps(out + [entry], indent=1) + "\n")
    print(json.dumps({k: v for k, v in entry.items() if k != "attempts"}))


if __name__ == "__main__":
    main()
