"""How far above the seed can a learning suite's held-out metric go with well-known changes?

The efficacy criterion asks a campaign's best to beat the seed on the held-out split by more than
twice the seed's own spread between evaluation seeds. This measures, for the same yardstick,
programs nobody had to discover: the suite's references (evaluators/SUITE/reference/) and a few
textbook one-edit variants of the seed: another value of one of its constants (``CONSTANTS``: a
learning rate, the clip, the entropy bonus, the inner step), or a few lines more
(bench/headroom/SUITE/: a learning-rate schedule, an annealed entropy bonus, momentum). Each
program is evaluated as a campaign evaluates a node (the stages `dgm init` writes, `dgm eval` in
the sandbox) on the evaluation seeds of campaign random seed ``--random-seed``, draws 0 to
``--draws``-1, so the gains are paired by draw with the seed's.

    .venv/bin/python bench/bench_headroom.py --suite optimizer [--draws 5] [--program DIR ...] [--run RUN ...]

``--run`` adds the best program of a kept campaign run (as `dgm report` picks it), so a campaign's
find is held against the same draws as the textbook variants.

Appends one entry per call to bench/results/headroom.json. A measurement beside the criterion,
not a change of it, and nothing here reaches a campaign: no prompt, idea or seed reads these files.
"""

from __future__ import annotations

import argparse
import ast
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from archive import Archive  # noqa: E402
from bench.bench_efficacy import HELD_OUT  # noqa: E402
from bench.dgm_eval import dgm_eval  # noqa: E402
from bench.provenance import commit, utc_now  # noqa: E402
from evaluators import registry  # noqa: E402
from orchestrator.campaign import evaluation_seed  # noqa: E402
from orchestrator.cli.init_cmd import campaign_stages  # noqa: E402
from orchestrator.report import build_report, paired_difference  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "headroom.json"
VARIANTS = ROOT / "bench" / "headroom"
#: one-constant variants of each suite's seed: name -> {module-level constant: new value}
CONSTANTS: dict[str, dict[str, dict[str, float]]] = {
    "optimizer": {"adam_lr3e-2": {"LR": 0.03}, "adam_lr3e-3": {"LR": 0.003}},
    "rl_objective": {"ppo_clip0.3": {"CLIP": 0.3}, "ppo_no_entropy": {"ENTROPY_COEF": 0.0}},
    "fewshot": {f"inner_lr{v}": {"INNER_LR": v} for v in (0.015, 0.02, 0.03, 0.1)},
    "continual": {},
}


def with_constants(source: str, constants: dict[str, float], path: str = "<seed>") -> str:
    """``source`` with each module-level ``NAME = <number>`` of ``constants`` given the new value
    (the line rewritten, the rest untouched); a name that is not such an assignment is an error."""
    lines = source.splitlines(keepends=True)
    found = {}
    for node in ast.parse(source).body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and isinstance(node.value, ast.Constant) and type(node.value.value) in (int, float)
                and node.lineno == node.end_lineno):
            found[node.targets[0].id] = node.lineno - 1
    for name, value in constants.items():
        if name not in found:
            raise ValueError(f"{path}: no module-level numeric constant {name!r} to set to {value!r}")
        lines[found[name]] = f"{name} = {value!r}\n"
    return "".join(lines)


def constant_variants(suite: str, seed: Path, into: Path) -> dict[str, Path]:
    """Write each of ``CONSTANTS[suite]`` as an agent (the seed's files, one line changed) under ``into``."""
    from evaluators.agent import load_manifest

    entry = load_manifest(seed).entry
    out = {}
    for name, constants in CONSTANTS[suite].items():
        dest = into / suite / name
        shutil.copytree(seed, dest)
        (dest / entry).write_text(with_constants((seed / entry).read_text(), constants, str(seed / entry)))
        out[f"variant/{name}"] = dest
    return out


def programs_of(suite: str, extra: list[Path], scratch: Path) -> dict[str, Path]:
    """Seed first, then the suite's references, this bench's variants (the one-constant ones
    written under ``scratch``), and any ``--program``."""
    cls = registry.load_class(suite)
    seed = Path(cls().seed_agent())
    found = {"seed": seed}
    for folder, prefix in ((seed.parent / "reference", "reference/"), (VARIANTS / suite, "variant/")):
        for d in sorted(folder.glob("*/agent.toml")) if folder.is_dir() else []:
            found[prefix + d.parent.name] = d.parent
    found.update(constant_variants(suite, seed, scratch))
    for p in extra:
        found[f"program/{p.name}"] = p
    return found


def where(name: str, path: Path, suite: str) -> str:
    """What a program of the entry is: its path in the repository, the seed with which constants,
    or (a run's best) the scratch path it was materialised at."""
    if path.is_relative_to(ROOT):
        return str(path.relative_to(ROOT))
    constants = CONSTANTS[suite].get(name.removeprefix("variant/"))
    return f"seed with {constants}" if constants else str(path)


def best_of_run(run: Path, into: Path) -> Path:
    """Materialise the best program of a kept run (the report's pick) under ``into``."""
    with Archive.open(run, readonly=True) as archive:
        cfg = json.loads(archive.get_meta("config") or "{}")
        report = build_report(archive.nodes(), confidence=cfg.get("admission", {}).get("confidence", 0.0))
        return archive.materialize(report["best"]["id"], into / f"{run.parent.parent.name}-node{report['best']['id']}")


def draw(agent: Path, suite: str, stages: list[str], seed: int) -> dict:
    """One evaluation: score and held-out metric, or the error that stopped it. A program a gate
    stopped is valid and keeps its last stage's figures (a campaign would admit it unranked); the
    row says so (``gated``), since a campaign's best is never such a program."""
    out = dgm_eval(agent, suite, stages=stages, seed=seed)
    held = (out.get("private_metrics") or {}).get(HELD_OUT[suite])
    if not out.get("valid") or held is None:
        return {"error": str(out.get("error") or out.get("evaluator_error") or "no held-out metric")[:300]}
    row = {"score": out["score"] if out.get("complete") else out["stages"][-1]["score"], "held_out": held}
    return {**row, "gated": out["gated"]} if out.get("gated") else row


def summarise(rows: dict[str, list[dict]], seed_rows: list[dict]) -> dict:
    """Per program: means, spreads, and the gain over the seed paired by draw, against the criterion's
    yardstick (twice the seed's held-out spread between draws)."""
    seed_held = [r.get("held_out") for r in seed_rows]
    twice = 2 * statistics.stdev(seed_held) if None not in seed_held and len(seed_held) > 1 else None
    out = {}
    for name, rs in rows.items():
        done = [k for k, (r, s) in enumerate(zip(rs, seed_rows)) if "error" not in r and "error" not in s]
        if len(done) < 2:
            out[name] = {"draws_completed": len(done), "errors": [r["error"] for r in rs if "error" in r]}
            continue

        def paired(key: str) -> dict:  # the report's pairing by evaluation seed, here by draw
            return paired_difference(done, [seed_rows[k][key] for k in done], done, [rs[k][key] for k in done])

        held, score = paired("held_out"), paired("score")
        # over the same draws the unpaired gain (the criterion's) is the mean of the paired gains
        gain = held["paired_mean"]
        out[name] = {
            "draws_completed": len(done),
            "score_mean": statistics.fmean(rs[k]["score"] for k in done),
            "score_paired_gain": score["paired_mean"], "score_paired_sd": score["paired_sd"],
            "held_out_mean": statistics.fmean(rs[k]["held_out"] for k in done),
            "held_out_sd": statistics.stdev(rs[k]["held_out"] for k in done),
            "held_out_gain": gain, "held_out_paired_sd": held["paired_sd"],
            "beats_twice_the_seed_spread": twice is not None and gain > twice,
            "gated_draws": sum(1 for k in done if rs[k].get("gated")),
        }
    return {"twice_seed_spread": twice, "programs": out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", required=True, choices=sorted(HELD_OUT))
    ap.add_argument("--draws", type=int, default=5, help="evaluation seeds per program (draws 0..N-1)")
    ap.add_argument("--random-seed", type=int, default=0, help="the campaign random seed whose evaluation seeds are used")
    ap.add_argument("--program", type=Path, action="append", default=[], help="another agent directory to measure")
    ap.add_argument("--run", type=Path, action="append", default=[], help="a kept run (DIR/camp/run): measure its best")
    a = ap.parse_args()
    if a.draws < 2:
        ap.error("--draws must be at least 2: the yardstick is a spread between draws")
    with tempfile.TemporaryDirectory(prefix="dgm-headroom-") as tmp:
        measure(a, [best_of_run(r, Path(tmp)) for r in a.run], Path(tmp))


def measure(a: argparse.Namespace, bests: list[Path], scratch: Path) -> None:
    """Evaluate every program on every draw and append the entry."""
    started = time.time()
    stages = campaign_stages(registry.load_class(a.suite))
    base = evaluation_seed(a.random_seed)
    programs = programs_of(a.suite, a.program + bests, scratch)
    rows: dict[str, list[dict]] = {}
    for name, agent in programs.items():
        rows[name] = []
        for k in range(a.draws):
            rows[name].append(draw(agent, a.suite, stages, base + k))
            print(json.dumps({"program": name, "draw": k, **rows[name][-1]}), flush=True)
    entry = {
        "suite": a.suite, "when": utc_now(), "commit": commit(), "wall_s": round(time.time() - started, 1),
        "stages": stages, "held_out_metric": HELD_OUT[a.suite], "random_seed": a.random_seed,
        "evaluation_seeds": [base + k for k in range(a.draws)], "runs": [str(r) for r in a.run],
        "programs": {n: where(n, p, a.suite) for n, p in programs.items()},
        "draws": rows, **summarise(rows, rows["seed"]),
    }
    out = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    RESULTS.write_text(json.dumps(out + [entry], indent=1) + "\n")
    print(json.dumps({k: entry[k] for k in ("twice_seed_spread", "programs")}, indent=1))


if __name__ == "__main__":
    main()
