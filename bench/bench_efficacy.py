"""What campaigns find on the embedded model: one campaign per call, its result appended to
bench/results/efficacy.json, so the table (suite × random seed) fills piece by piece. One campaign
at a time on 2 cores.

Each entry: suite, random seed, iterations, operator mix, wall time, valid share, seed and best
score (with their draws), held-out (private) metrics of both, yield per operator, FM calls to the
first improvement. `--summary` prints the median and spread over seeds per (suite, mix, idea
choice, other [mutation] keys a run changed).

Run:  .venv/bin/python bench/bench_efficacy.py --suite optimizer --seed 0 --iterations 10
      .venv/bin/python bench/bench_efficacy.py --suite circle_packing --seed 8 --idea-choice yield --mutation run_repairs=2
      .venv/bin/python bench/bench_efficacy.py --summary
      .venv/bin/python bench/bench_efficacy.py --rescore   # reports rebuilt from the kept run dirs
      .venv/bin/python bench/bench_efficacy.py --from-run DIR/camp/run --commit C   # a run stopped early
      .venv/bin/python bench/bench_efficacy.py --measure-run DIR/camp/run --draws 3   # more draws, after the fact

After the campaign, the seed and the best are evaluated again until each has ``--draws`` draws
(default 3), each on a new evaluation seed (``dgm remeasure``): the held-out criterion then compares
two means of as many draws, and holds the gain against the seed's spread over them, instead of one
draw of the best (a fit child of a suite whose public runs use fixed seeds was never raced).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from archive import Archive  # noqa: E402
from orchestrator.campaign import Campaign  # noqa: E402
from orchestrator.cli.init_cmd import write_campaign  # noqa: E402
from orchestrator.cli.remeasure_cmd import remeasure_in_run  # noqa: E402
from orchestrator.config import CampaignConfig, MutationSection, load_config, parse_config  # noqa: E402
from orchestrator.fm.providers import open_fm  # noqa: E402
from orchestrator.report import build_report, paired_difference  # noqa: E402
from bench.provenance import commit as commit_of_head, utc_now  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "efficacy.json"
#: each learning suite's held-out headline (higher is better), the criterion's "held-out split"
HELD_OUT = {"optimizer": "hidden_rel_adam", "continual": "hidden_score", "fewshot": "hidden_score",
            "rl_objective": "heldout_frac_optimal"}


def held_out_gain(e: dict) -> dict | None:
    """Best minus seed on the suite's held-out headline (each a mean over its draws where it has
    several), against twice the seed's spread between evaluation seeds: the spread of that held-out
    metric where the run kept its draws, else (older runs) the spread of the public score."""
    key = HELD_OUT.get(e["suite"])
    seed, best = e.get("seed") or {}, e.get("best") or {}
    if key is None or key not in seed.get("held_out", {}) or key not in best.get("held_out", {}):
        return None
    gain = best["held_out"][key] - seed["held_out"][key]
    held_spread = (seed.get("held_out_spread") or {}).get(key)
    spread = held_spread if held_spread is not None else seed.get("draw_spread")
    return {"metric": key, "seed": seed["held_out"][key], "best": best["held_out"][key], "gain": gain,
            "seed_spread": spread, "spread_of": "held-out draws" if held_spread is not None else "public score draws",
            "beats_twice_the_spread": spread is not None and gain > 2 * spread, **paired_gain(seed, best, key)}


def paired_gain(seed: dict, best: dict, key: str) -> dict:
    """Best minus seed on ``key``, pairing the draws that ran on the same evaluation seed
    (``report.paired_difference``). Reported beside the criterion (which is the issue's, unpaired),
    not instead of it. Summaries without ``draw_seeds`` (before 2026-12-04) pair by position."""
    s, b = (seed.get("held_out_draws") or {}).get(key) or [], (best.get("held_out_draws") or {}).get(key) or []
    return paired_difference(seed.get("draw_seeds") or range(len(s)), s, best.get("draw_seeds") or range(len(b)), b)


def config_of_run(run_dir: Path) -> CampaignConfig:
    """The config a kept run last worked under (its archive keeps it), not its campaign file: the
    bench's runs up to 2026-12-04 set the random seed and the operator mix in memory only (their
    files say random seed 0), and the evaluation seeds of new draws follow the random seed."""
    with Archive.open(run_dir, readonly=True) as archive:
        data = json.loads(archive.get_meta("config") or "{}")
    if not data:
        raise SystemExit(f"{run_dir}: the run keeps no config (not a dgm run, or it never started)")
    return parse_config(data, source=f"{run_dir}/archive.db (meta config)", base_dir=run_dir.parent)


def measure_seed_and_best(run_dir: Path, draws: int) -> dict[str, int]:
    """Evaluate the seed and the best again until each has ``draws`` draws; returns the draws added
    per node id. New draws can change which node is best (a lucky first draw regresses), so this
    repeats for the new best, a few times at most."""
    cfg = config_of_run(run_dir)
    added: dict[str, int] = {}
    for _ in range(4):
        report = report_of(run_dir, cfg.admission.confidence, cfg.evaluator.name)
        short = [(n["id"], draws - len(n.get("draws") or [])) for n in (report["seed"], report["best"]) if n]
        short = [(i, k) for i, k in dict(short).items() if k > 0]
        if not short:
            break
        for node_id, k in short:
            node, failed = remeasure_in_run(cfg, run_dir, node_id, k, log=lambda m: print(m, flush=True))
            added[str(node_id)] = added.get(str(node_id), 0) + k - len(failed)
            print(f"  node {node_id}: {len(node.draws)} draws, mean {node.score:.6g}"
                  + "".join(f"; not complete: {r}" for r in failed), flush=True)
            if failed:  # a draw that cannot complete will not complete on the next round either
                return added
    return added


def run_one(suite: str, seed: int, iterations: int, operators: str | None, keep: Path | None,
            draws: int = 3, mutation: dict | None = None) -> dict:
    """One campaign and its entry. Without ``keep`` it runs in a temporary directory that is removed
    afterwards, whatever happens (a refused [mutation] key, a crash, Ctrl-C)."""
    if keep is not None:
        return _run_in(keep, suite, seed, iterations, operators, True, draws, mutation)
    with tempfile.TemporaryDirectory(prefix=f"dgm-eff-{suite}-") as tmp:
        return _run_in(Path(tmp), suite, seed, iterations, operators, False, draws, mutation)


def _run_in(root: Path, suite: str, seed: int, iterations: int, operators: str | None, keep: bool,
            draws: int, mutation: dict | None) -> dict:
    # the seed, the mix and other [mutation] keys go into the kept campaign file, so `dgm run` /
    # `dgm remeasure` on it agree
    cfg = load_config(write_campaign(root / "camp", suite, random_seed=seed, operators=json.loads(operators) if operators else None,
                                     mutation=mutation))
    commit = commit_of_head()  # the code the campaign runs (read at its start)
    t0 = time.monotonic()
    with open_fm(cfg.fm, log=lambda m: print(f"dgm: {m}", flush=True)) as fm:
        Campaign(cfg, root / "camp" / "run", fm, on_update=_progress).run(iterations)
    wall = time.monotonic() - t0
    t1 = time.monotonic()
    added = measure_seed_and_best(root / "camp" / "run", draws) if draws > 1 else {}
    report = report_of(root / "camp" / "run", cfg.admission.confidence, suite)
    return {
        "suite": suite, "random_seed": seed, "iterations": iterations, "mix": cfg.mutation.operators, "commit": commit,
        "idea_choice": cfg.mutation.idea_choice, "mutation": mutation_overrides(cfg.model_dump(mode="json")["mutation"]),
        "stages": cfg.evaluator.stages, "wall_s": round(wall, 1), "run_dir": str(root / "camp" / "run") if keep else None,
        "when": utc_now(),
        "remeasured": {"draws": draws, "added": added, "wall_s": round(time.monotonic() - t1, 1)}, **report,
    }


def entry_of_run(run_dir: Path, commit: str | None) -> dict:
    """The entry of a kept run that ``run_one`` did not finish recording: a campaign stopped before
    its iterations (a deadline, Ctrl-C) or resumed with ``dgm run``. Its config and wall time come
    from the run; the commit is the one given (the code the campaign ran), else HEAD's."""
    with Archive.open(run_dir, readonly=True) as archive:
        cfg = json.loads(archive.get_meta("config") or "{}")
        wall = float(archive.get_meta("wall_s", "0") or 0)
    suite = cfg["evaluator"]["name"]
    report = report_of(run_dir, cfg.get("admission", {}).get("confidence", 2.0), suite)
    return {
        "suite": suite, "random_seed": cfg["campaign"]["random_seed"], "iterations": report["iterations"],
        "mix": cfg["mutation"]["operators"], "idea_choice": cfg["mutation"].get("idea_choice", "uniform"),
        "mutation": mutation_overrides(cfg["mutation"]),
        "commit": commit or commit_of_head(), "stages": cfg["evaluator"]["stages"],
        "wall_s": round(wall, 1), "run_dir": str(run_dir), "recorded_from_run": True,
        "when": utc_now(), **report,
    }


def report_of(run_dir: Path, confidence: float, suite: str) -> dict:
    with Archive.open(run_dir, readonly=True) as archive:
        nodes = archive.nodes()
    return build_report(nodes, confidence=confidence, campaign=suite)


def rescore(entries: list[dict]) -> int:
    """Rebuild each entry's report from its kept run directory (after the report's definitions
    change); entries whose run is gone stay as they were. Returns how many were rebuilt."""
    done = 0
    for e in entries:
        run = e.get("run_dir")
        if run and (Path(run) / "archive.db").exists():
            with Archive.open(run, readonly=True) as archive:
                confidence = json.loads(archive.get_meta("config") or "{}").get("admission", {}).get("confidence", 2.0)
            e.update(report_of(Path(run), confidence, e["suite"]), rescored=utc_now())
            done += 1
    return done


def _progress(stats) -> None:
    if stats.last_event:
        print(f"  {stats.last_event}", flush=True)
        stats.last_event = ""


def latest_per_run(entries: list[dict]) -> list[dict]:
    """The entries, less those a later entry of the same kept run supersedes (a run recorded again
    after a resume): one campaign counts once."""
    last = {e["run_dir"]: i for i, e in enumerate(entries) if e.get("run_dir")}
    return [e for i, e in enumerate(entries) if not e.get("run_dir") or last[e["run_dir"]] == i]


#: operators that write children without the model: their share of a run's draws follows the random
#: seed (random seed 1 drew ``fit`` 14 times in 30 on every suite, seed 0 five times), so the valid
#: share of model-written children is reported beside the valid share of all
NO_MODEL = {"fit"}


def model_valid_share(e: dict) -> float | None:
    """Valid children over attempts, counting only the operators that ask the model."""
    ops = [v for k, v in (e.get("operators") or {}).items() if k not in NO_MODEL]
    attempts = sum(v["attempts"] for v in ops)
    return sum(v["valid"] for v in ops) / attempts if attempts else None


def mutation_overrides(mutation: dict) -> dict:
    """The [mutation] keys of a run's config that differ from the defaults, which ``dgm init``'s
    campaign keeps (the operator mix and the idea choice have fields of their own in an entry)."""
    default = MutationSection().model_dump(mode="json")
    return {k: v for k, v in mutation.items() if k not in ("operators", "idea_choice") and k in default and v != default[k]}


def summary(entries: list[dict]) -> dict:
    groups: dict[str, list[dict]] = {}
    for e in latest_per_run(entries):
        choice = e.get("idea_choice", "uniform")  # entries before the option drew ideas uniformly
        key = f"{e['suite']} {json.dumps(e.get('mix'), sort_keys=True)}" + ("" if choice == "uniform" else f" ideas by {choice}")
        if e.get("mutation"):  # entries before the field ran dgm init's other [mutation] keys
            key += f" [mutation] {json.dumps(e['mutation'], sort_keys=True)}"
        groups.setdefault(key, []).append(e)
    out = {}
    for key, es in groups.items():
        shares = [e["valid_share"] for e in es if e["valid_share"] is not None]
        gains = [e["gain_over_seed"] for e in es if e["gain_over_seed"] is not None]
        held = [h for h in (held_out_gain(e) for e in es) if h is not None]
        model = [v for v in map(model_valid_share, es) if v is not None]
        out[key] = {
            "campaigns": len(es), "seeds": sorted(e["random_seed"] for e in es),
            "valid_share_median": statistics.median(shares) if shares else None,
            "valid_share_range": [min(shares), max(shares)] if shares else None,
            "model_valid_share_median": statistics.median(model) if model else None,
            "model_valid_share_range": [min(model), max(model)] if model else None,
            "gain_over_seed_median": statistics.median(gains) if gains else None,
            "gain_over_seed_range": [min(gains), max(gains)] if gains else None,
            "best_score_median": statistics.median(e["best"]["score"] for e in es if e.get("best")) if es else None,
            "held_out_gain_median": statistics.median(h["gain"] for h in held) if held else None,
            "held_out_gain_range": [min(h["gain"] for h in held), max(h["gain"] for h in held)] if held else None,
            "held_out_beats_twice_the_seed_spread": f"{sum(h['beats_twice_the_spread'] for h in held)} of {len(held)}" if held else None,
            # per seed: whose spread the gain was held against (older runs: the public score's)
            "held_out_spread_of": [h["spread_of"] for h in held] if held else None,
            # draw-by-draw gains (same evaluation seed, so the same held-out tasks), per seed: beside the criterion
            "held_out_paired_mean": [round(h["paired_mean"], 4) if "paired_mean" in h else None for h in held] if held else None,
            "held_out_paired_sd": [round(h["paired_sd"], 4) if "paired_sd" in h else None for h in held] if held else None,
            "iterations": sorted({e["iterations"] for e in es}),
        }
    return out


def parse_mutation(pairs: list[str]) -> dict:
    """``["run_repairs=2", "ideas=[\"...\"]"]`` → ``{"run_repairs": 2, "ideas": ["..."]}``: each value
    read as JSON, else kept as the string it is."""
    out = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise SystemExit(f"--mutation {pair!r}: give KEY=VALUE, e.g. run_repairs=2")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--operators", help='JSON weights, e.g. \'{"diff": 0.5, "fit": 0.5}\' (default: dgm init\'s)')
    ap.add_argument("--keep", type=Path, help="keep the campaign under this directory")
    ap.add_argument("--idea-choice", choices=["uniform", "yield"], help="[mutation] idea_choice (default: dgm init's)")
    ap.add_argument("--mutation", action="append", default=[], metavar="KEY=VALUE",
                    help="another [mutation] key for the campaign, VALUE as JSON (else a string), e.g. run_repairs=2; repeatable")
    ap.add_argument("--summary", action="store_true")
    ap.add_argument("--rescore", action="store_true", help="rebuild the reports of kept runs")
    ap.add_argument("--from-run", type=Path, help="append the result of this kept run directory (a campaign stopped early)")
    ap.add_argument("--commit", help="with --from-run: the commit the campaign ran")
    ap.add_argument("--note", help="with --from-run: how the run went (stops, resumes, what ran beside it); its wall time covers only the last run")
    ap.add_argument("--draws", type=int, default=3, help="after the campaign, draws the seed and the best each get (1: none added)")
    ap.add_argument("--measure-run", type=Path, help="a kept run of an entry: measure its seed and best to --draws draws and rebuild that entry")
    args = ap.parse_args()
    entries = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    if args.summary:
        print(json.dumps(summary(entries), indent=2))
        return
    if args.rescore:
        print(f"rebuilt {rescore(entries)} of {len(entries)} reports")
        RESULTS.write_text(json.dumps(entries, indent=1, default=str) + "\n")
        return
    if args.measure_run:
        run = args.measure_run.resolve()
        mine = [e for e in entries if e.get("run_dir") and Path(e["run_dir"]).resolve() == run]
        if not mine:
            raise SystemExit(f"{run}: no entry of {RESULTS} kept this run (see --from-run)")
        t1 = time.monotonic()
        added = measure_seed_and_best(run, args.draws)
        mine[-1].update(report_of(run, config_of_run(run).admission.confidence, mine[-1]["suite"]), remeasured={
            "draws": args.draws, "added": added, "wall_s": round(time.monotonic() - t1, 1),
            "when": utc_now(), "commit": commit_of_head()})
        RESULTS.write_text(json.dumps(entries, indent=1, default=str) + "\n")
        print(json.dumps({"run": str(run), "added": added, "held_out_gain": held_out_gain(mine[-1])}, default=str))
        return
    if args.from_run:
        entry = entry_of_run(args.from_run.resolve(), args.commit)
        if args.note:
            entry["wall_note"] = args.note
    else:
        mutation = parse_mutation(args.mutation)
        if args.idea_choice:
            mutation["idea_choice"] = args.idea_choice
        try:
            entry = run_one(args.suite, args.seed, args.iterations, args.operators, args.keep, args.draws, mutation)
        except ValueError as e:  # a [mutation] key write_campaign refused: say which, no traceback
            if "[mutation]" not in str(e):
                raise
            raise SystemExit(f"--mutation: {e}") from None
    entries = json.loads(RESULTS.read_text()) if RESULTS.exists() else []  # as it is now, after the campaign
    entries.append(entry)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(entries, indent=1, default=str) + "\n")
    print(json.dumps({k: entry[k] for k in ("suite", "random_seed", "valid_share", "gain_over_seed", "wall_s")}, default=str))


if __name__ == "__main__":
    main()
