"""Where one iteration's time goes: FM generation, sandbox start, evaluation, archive writes, and
the orchestrator's own share (everything but FM generation and evaluation).

Two modes:
  scripted (default)  a local OpenAI-protocol server answers instantly over real HTTP, so what is
                      left is the orchestrator, the sandbox and the evaluator; one worker, one
                      proposal in flight, so the per-iteration wall time is not hidden by overlap.
  --embedded N        N iterations on the embedded model, for the FM generation figures.
  --operators TOML    the scripted mix, e.g. '{ rewrite = 0.3, fit = 0.7 }' (each answer is a new
                      grid whose small circle shrinks).

Writes bench/results/iteration.json (iteration_mix.json with --operators, iteration_embedded.json
with --embedded) and prints a table.
Run:  .venv/bin/python bench/bench_iteration.py [--iterations 30] [--embedded 6]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from archive import Archive  # noqa: E402
from orchestrator.campaign import Campaign  # noqa: E402
from orchestrator.config import load_config  # noqa: E402
from tests.campaign_helpers import distinct_grids, write_config  # noqa: E402
from tests.fm_server import ScriptedFMServer  # noqa: E402


def _ms(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    return {
        "median_ms": round(1000 * statistics.median(values), 2),
        "p90_ms": round(1000 * values[int(0.9 * (len(values) - 1))], 2),
        "mean_ms": round(1000 * statistics.fmean(values), 2),
    }


def breakdown(run_dir: Path, wall_s: float) -> dict:
    with Archive.open(run_dir, readonly=True) as archive:
        nodes = [n for n in archive.nodes() if n.parent_id is not None and "eval_s" in n.timings]
    t = lambda key: [n.timings.get(key, 0.0) for n in nodes]  # noqa: E731
    fm = t("fm_s")
    prompt_parse = [n.timings["propose_s"] - n.timings["fm_s"] for n in nodes]
    own = lambda n: n.timings["select_s"] + (n.timings["propose_s"] - n.timings["fm_s"]) + n.timings["archive_s"]  # noqa: E731
    orchestrator = [own(n) for n in nodes]
    by_operator: dict[str, list[float]] = {}
    for n in nodes:
        by_operator.setdefault(n.operator, []).append(own(n))
    evaluation_other = [n.timings["eval_s"] - n.timings["sandbox_s"] for n in nodes]
    return {
        "iterations_measured": len(nodes),
        "wall_per_iteration": round(wall_s / max(len(nodes), 1), 3),
        "fm_generation": _ms(fm),
        "sandbox_start": _ms(t("sandbox_start_s")),
        "sandbox_run_total": _ms(t("sandbox_s")),
        "evaluator_outside_sandbox": _ms(evaluation_other),
        "archive_write": _ms(t("archive_s")),
        "select_and_context": _ms(t("select_s")),
        "prompt_and_parse": _ms(prompt_parse),
        "orchestrator_own_share": _ms(orchestrator),
        "orchestrator_own_share_by_operator": {op: {"n": len(v), **_ms(v)} for op, v in sorted(by_operator.items())},
    }


def scripted(iterations: int, operators: str) -> dict:
    os.environ["DGM_TEST_KEY"] = "bench"
    tmp = Path(tempfile.mkdtemp(prefix="dgm-bench-"))
    # a different valid packing every call, so every child is evaluated
    with ScriptedFMServer(responder=distinct_grids(prompt_tokens=600, completion_tokens=300)) as srv:
        cfg_path = write_config(tmp, srv.base_url, iterations=iterations, workers=1, operators=operators)
        cfg_path.write_text(cfg_path.read_text().replace("concurrency = 2", "concurrency = 1"))
        cfg = load_config(cfg_path)
        from orchestrator.fm.client import FMClient

        with FMClient.from_config(cfg.fm) as fm:
            t0 = time.perf_counter()
            Campaign(cfg, tmp / "run", fm).run()
            wall = time.perf_counter() - t0
    return {"mode": f"scripted FM over HTTP, 1 worker, 1 proposal in flight, operators {operators}",
            **breakdown(tmp / "run", wall)}


def embedded(iterations: int) -> dict:
    from orchestrator.cli.init_cmd import write_campaign
    from orchestrator.fm.providers import open_fm

    tmp = Path(tempfile.mkdtemp(prefix="dgm-bench-emb-"))
    cfg = load_config(write_campaign(tmp / "camp", "circle_packing"))
    with open_fm(cfg.fm) as fm:
        t0 = time.perf_counter()
        Campaign(cfg, tmp / "camp" / "run", fm).run(iterations)
        wall = time.perf_counter() - t0
    return {"mode": f"embedded model, {cfg.fm.concurrency} proposals in flight, {cfg.evaluation.workers} workers",
            **breakdown(tmp / "camp" / "run", wall)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--embedded", type=int, default=0, metavar="N")
    ap.add_argument("--operators", default="{ rewrite = 1.0 }", metavar="TOML")
    args = ap.parse_args()
    result = embedded(args.embedded) if args.embedded else scripted(args.iterations, args.operators)
    result["machine"] = {"cpus": os.cpu_count(), "load_avg_1m": os.getloadavg()[0]}
    name = "iteration_embedded" if args.embedded else "iteration" if args.operators == "{ rewrite = 1.0 }" else "iteration_mix"
    out = ROOT / "bench" / "results" / f"{name}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    for key, value in result.items():
        print(f"{key:28} {value}")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
