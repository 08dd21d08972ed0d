"""``dgm report``: what a campaign found, in numbers a paper can quote. Seed and best (by the run's
lower confidence bound) on public and held-out (private) metrics with their spread over repeated
evaluations, each operator's and each idea's yield, and how many FM calls it took to the first improvement."""

from __future__ import annotations

import json
import statistics
import textwrap
from typing import Any, Sequence

from archive import Node, NodeStatus
from orchestrator.ledger import Ledger


def _side(node: Node | None, ledger: Ledger) -> dict[str, Any] | None:
    """A node's numbers. A held-out metric measured in several draws is their mean, with their
    spread (``held_out_spread``); one measured once is that value, with no spread."""
    if node is None:
        return None
    held_out = dict(node.private_metrics)
    held_out.update({k: statistics.fmean(v) for k, v in node.private_draws.items()})
    return {
        "id": node.id, "score": node.score, "lower_bound": ledger.lcb(node) if node.score is not None else None,
        "draws": list(node.draws), "draw_seeds": node.seed_offsets, "draw_spread": statistics.stdev(node.draws) if len(node.draws) > 1 else None,
        "public_metrics": dict(node.public_metrics), "held_out": held_out,
        "held_out_draws": {k: list(v) for k, v in node.private_draws.items()},
        "held_out_spread": {k: statistics.stdev(v) for k, v in node.private_draws.items()},
        "operator": node.operator,
    }


def paired_difference(seed_offsets: Sequence[int], seed_values: Sequence[float],
                      best_offsets: Sequence[int], best_values: Sequence[float]) -> dict[str, Any]:
    """Best minus seed on each evaluation seed both were measured on. A learning suite's draw k
    meets the same tasks for every program, so this difference leaves out how hard a draw's tasks
    were, which dominates the unpaired spread on optimizer and rl_objective. Empty below 2 pairs."""
    on_seed, on_best = dict(zip(seed_offsets, seed_values)), dict(zip(best_offsets, best_values))
    shared = sorted(set(on_seed) & set(on_best))
    diffs = [on_best[k] - on_seed[k] for k in shared]
    if len(diffs) < 2:
        return {}
    return {"paired_gains": diffs, "paired_seeds": shared, "paired_mean": statistics.fmean(diffs),
            "paired_sd": statistics.stdev(diffs)}


def _paired(seed: Node | None, best: Node | None) -> dict[str, Any]:
    """The best's paired gain over the seed on the score and on each held-out metric."""
    if seed is None or best is None or seed.id == best.id:
        return {}
    out = {"score": paired_difference(seed.seed_offsets, seed.draws, best.seed_offsets, best.draws)}
    for k in sorted(set(seed.private_draws) & set(best.private_draws)):
        out[k] = paired_difference(seed.seed_offsets, seed.private_draws[k], best.seed_offsets, best.private_draws[k])
    return {k: v for k, v in out.items() if v}


def fm_calls_to_first_improvement(nodes: Sequence[Node]) -> int | None:
    """Model calls made (in node order, the improving node's own included) until the first admitted
    node that scores above the seed; None if none did."""
    seed = next((n for n in nodes if n.parent_id is None), None)
    if seed is None or seed.score is None:
        return None
    calls = 0
    for n in sorted(nodes, key=lambda n: n.id):
        if n.parent_id is None:
            continue
        if n.fm_model:
            calls += int(n.timings.get("fm_calls", 1))
        if n.status == NodeStatus.ADMITTED and n.score is not None and n.score > seed.score:
            return calls
    return None


def fit_overhead(nodes: Sequence[Node]) -> dict[str, Any] | None:
    """The ``fit`` operator's own cost: its wall time less the time it waited on evaluations, over
    every fit of the run (None if none recorded its timing)."""
    wall = waited = 0.0
    fits = trials = 0
    for n in nodes:
        if n.operator != "fit" or not n.response.startswith("{"):
            continue
        try:
            record = json.loads(n.response)
        except ValueError:
            continue
        if "wall_s" in record:
            fits, wall, waited = fits + 1, wall + record["wall_s"], waited + record["evaluating_s"]
            trials += sum(1 for t in record.get("trials", []) if not t.get("parent"))  # not the parent's own point
    if not fits:
        return None
    return {"fits": fits, "trials": trials, "wall_s": round(wall, 3), "evaluating_s": round(waited, 3),
            "overhead_share": (wall - waited) / wall if wall > 0 else 0.0}


def run_repairs(nodes: Sequence[Node]) -> dict[str, int] | None:
    """Execution feedback's yield: answers checked by running the first stage, attempts whose
    program crashed there and went back to the model, and of those, the children that came out
    valid (None when no attempt ran a check)."""
    checked = [n for n in nodes if n.timings.get("checks")]
    if not checked:
        return None
    repaired = [n for n in checked if n.timings.get("run_repairs")]
    return {"checked": len(checked), "sent_back": len(repaired),
            "valid_after": sum(1 for n in repaired if n.status in (NodeStatus.ADMITTED, NodeStatus.REJECTED))}


def build_report(nodes: Sequence[Node], *, confidence: float = 0.0, campaign: str = "") -> dict[str, Any]:
    ledger = Ledger(nodes, confidence=confidence, clades=False)
    summary = ledger.summary()
    best, seed = ledger.best, ledger.seed
    children = [n for n in nodes if n.parent_id is not None]
    # valid: the child ran and no stage found it invalid (one a gate stopped is valid, but unranked)
    valid = sum(1 for n in children if n.status in (NodeStatus.ADMITTED, NodeStatus.REJECTED))
    ranked = sum(1 for n in children if n.status in (NodeStatus.ADMITTED, NodeStatus.REJECTED) and n.score is not None)
    return {
        "campaign": campaign,
        "iterations": summary["iterations"],
        "seed": _side(seed, ledger),
        "best": _side(best, ledger),
        "gain_over_seed": (best.score - seed.score) if best and seed and best.score is not None and seed.score is not None else None,
        "score_spread": ledger.spread,
        # best minus seed per evaluation seed both ran on: the score, then held-out metrics
        "paired_gain": _paired(seed, best),
        "valid_children": valid,
        "valid_share": valid / len(children) if children else None,
        "ranked_children": ranked,  # valid and through every gate: scored on the last stage
        "operators": summary["operators"],
        "ideas": summary["ideas"],
        "fm_calls": summary["fm_calls"],
        "tokens": summary["tokens"],
        "fm_calls_to_first_improvement": fm_calls_to_first_improvement(nodes),
        "fit": fit_overhead(nodes),
        "run_repairs": run_repairs(nodes),
    }


def _count(n: int, noun: str) -> str:
    """"1 fit", "6 fits"."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def yield_words(y: dict[str, int]) -> str:
    """One yield row (``OperatorYield`` as a dict) in words: "3 attempts, 1 valid, ..."."""
    return (f"{_count(y['attempts'], 'attempt')}, {y['valid']} valid, {y['better_than_parent']} better than "
            f"the parent, {y['better_than_seed']} better than the seed")


def yield_lines(operators: dict[str, dict[str, int]], ideas: dict[str, dict[str, int]]) -> list[str]:
    """The per-operator and per-idea yield of a run, indented under a summary (``dgm report``, ``dgm status``)."""
    out = [f"  {name}: {yield_words(y)}" for name, y in sorted(operators.items())]
    if ideas:
        out.append("ideas (the prompts that carried each):")
        out += [f"  {yield_words(y)}: {textwrap.shorten(idea, 70, placeholder=' …')}" for idea, y in ideas.items()]
    return out


def render(report: dict[str, Any]) -> str:
    """The report as text."""

    def side(name: str, s: dict | None) -> list[str]:
        if s is None:
            return [f"{name}: none"]
        spread = f" ± {s['draw_spread']:.4f} over {len(s['draws'])} evaluations" if s["draw_spread"] is not None else ""
        lines = [f"{name}: node {s['id']} ({s['operator']}) score {s['score']:.4f}{spread}"]
        if s["public_metrics"]:
            lines.append("  public:   " + ", ".join(f"{k} = {v:.6g}" for k, v in sorted(s["public_metrics"].items())))
        if s["held_out"]:
            spread = s.get("held_out_spread", {})
            lines.append("  held-out: " + ", ".join(
                f"{k} = {v:.6g}" + (f" ± {spread[k]:.3g}" if k in spread else "") for k, v in sorted(s["held_out"].items())))
        return lines

    out = [f"campaign {report['campaign']!r}: {report['iterations']} iterations"]
    out += side("seed", report["seed"]) + side("best", report["best"])
    if report["gain_over_seed"] is not None:
        out.append(f"gain over the seed: {report['gain_over_seed']:+.4f} (spread between evaluations of one program: "
                   f"{report['score_spread']:.4f})")
    for metric, p in (report.get("paired_gain") or {}).items():
        out.append(f"  paired by evaluation seed, {'score' if metric == 'score' else 'held-out ' + metric}: "
                   f"{p['paired_mean']:+.4f} ± {p['paired_sd']:.4f} over {len(p['paired_gains'])} seeds "
                   f"({', '.join(f'{d:+.4f}' for d in p['paired_gains'])})")
    share = report["valid_share"]
    out.append(f"valid children: {report['valid_children']}" + (f" ({share:.0%})" if share is not None else "")
               + f", {report.get('ranked_children', 0)} through every gate")
    out += yield_lines(report["operators"], report.get("ideas", {}))
    if report.get("fit"):
        f = report["fit"]
        trials = f" ({f['trials']:,} trials)" if "trials" in f else ""  # entries written before trials were counted
        out.append(f"fit: {_count(f['fits'], 'fit')}{trials}, {f['wall_s']:.1f} s, of which {f['overhead_share']:.1%} outside evaluations")
    if report.get("run_repairs"):
        r = report["run_repairs"]
        out.append(f"execution feedback: {r['checked']} attempts ran their answer, {r['sent_back']} crashed and went "
                   f"back to the model, {r['valid_after']} of those became valid children")
    first = report["fm_calls_to_first_improvement"]
    out.append(f"FM: {report['fm_calls']} calls, {report['tokens']:,} tokens; "
               + (f"{first} calls to the first improvement over the seed" if first is not None else "no improvement over the seed"))
    return "\n".join(out)
