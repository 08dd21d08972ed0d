"""What the progress charts plot, as pure functions of a run's nodes (ordered by id).

One implementation for the web UI (``/api/runs/{r}/progress``), the static HTML export and
``dgm plot``. An iteration is a node id: node ``i`` is the ``i``-th attempt (0 = the seed).
Long runs are thinned to at most ``max_points`` points per series (every point kept is an exact
value at its iteration, never an average), except ``time_per_node``, which averages buckets of
consecutive nodes and says how many nodes each bucket holds.
"""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Any, Sequence

from archive import Node, NodeStatus
from orchestrator.ledger import OperatorYield

#: timing keys that are FM time / evaluation time (written by the campaign loop and the pipeline)
FM_TIME_KEY = "fm_s"
EVAL_TIME_KEY = "eval_s"
BOOKKEEPING_KEYS = ("select_s", "archive_s")  # the loop's own time per node


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def _keep(n: int, max_points: int) -> list[int]:
    """Indices 0..n-1 thinned to about max_points, always keeping the first and the last."""
    if n <= max_points:
        return list(range(n))
    return sorted({i * (n - 1) // (max_points - 1) for i in range(max_points)})


def progress(nodes: Sequence[Node], max_points: int = 2000) -> dict[str, Any]:
    """Best and mean admitted score so far at each iteration, and every ranked score.

    ``best[i]``/``mean[i]`` cover the admitted nodes with id <= ``iteration[i]`` (None before the
    first); ``scores`` lists (iteration, score, status) of admitted and rejected nodes with a score.
    """
    iteration: list[int] = []
    best: list[float | None] = []
    mean: list[float | None] = []
    top: float | None = None
    total, count = 0.0, 0
    scored: list[tuple[int, float, str]] = []
    for n in nodes:
        s = _finite(n.score)
        if s is not None and n.status in (NodeStatus.ADMITTED, NodeStatus.REJECTED):
            scored.append((n.id, s, n.status.value))
        if s is not None and n.status == NodeStatus.ADMITTED:
            top = s if top is None else max(top, s)
            total += s
            count += 1
        iteration.append(n.id)
        best.append(top)
        mean.append(total / count if count else None)
    keep = _keep(len(iteration), max_points)
    keep_scores = _keep(len(scored), max_points * 2)
    return {
        "iteration": [iteration[i] for i in keep],
        "best": [best[i] for i in keep],
        "mean": [mean[i] for i in keep],
        "scores": [list(scored[i]) for i in keep_scores],
        "admitted": count,
    }


def usage(nodes: Sequence[Node], max_points: int = 2000) -> dict[str, Any]:
    """FM tokens and cost, cumulative, per iteration and per second since the first node."""
    t0 = nodes[0].created_at if nodes else 0.0
    iteration, elapsed, tokens, cost = [], [], [], []
    tok, usd = 0, 0.0
    for n in nodes:
        tok += n.prompt_tokens + n.completion_tokens
        usd += n.cost_usd
        iteration.append(n.id)
        elapsed.append(round(n.created_at - t0, 3))
        tokens.append(tok)
        cost.append(round(usd, 6))
    keep = _keep(len(iteration), max_points)
    return {
        "iteration": [iteration[i] for i in keep],
        "elapsed_s": [elapsed[i] for i in keep],
        "tokens": [tokens[i] for i in keep],
        "cost_usd": [cost[i] for i in keep],
    }


def time_per_node(nodes: Sequence[Node], max_bars: int = 300) -> dict[str, Any]:
    """FM time and evaluation time per node (where the time goes); buckets of consecutive nodes
    averaged when there are more than ``max_bars`` nodes (``size`` says how many per bucket)."""
    size = max(1, math.ceil(len(nodes) / max_bars)) if nodes else 1
    first, fm, ev, other = [], [], [], []
    for start in range(0, len(nodes), size):
        chunk = nodes[start : start + size]
        t_fm = sum(n.timings.get(FM_TIME_KEY, 0.0) for n in chunk) / len(chunk)
        t_ev = sum(n.timings.get(EVAL_TIME_KEY, 0.0) for n in chunk) / len(chunk)
        t_rest = sum(sum(n.timings.get(k, 0.0) for k in BOOKKEEPING_KEYS) for n in chunk) / len(chunk)
        first.append(chunk[0].id)
        fm.append(round(t_fm, 4))
        ev.append(round(t_ev, 4))
        other.append(round(t_rest, 4))
    return {"first_id": first, "size": size, "fm_s": fm, "eval_s": ev, "bookkeeping_s": other}


YIELD_KEYS = tuple(f.name for f in fields(OperatorYield))  # attempts, valid, better than the parent, the seed


def _yield_lists(table: dict[str, dict[str, int]], names: list[str], key: str) -> dict[str, Any]:
    """Parallel lists, and ``keys``: which of them are counts, in order (the UI draws one bar per key
    from it rather than keep its own list)."""
    return {key: names, "keys": list(YIELD_KEYS), **{k: [table[n][k] for n in names] for k in YIELD_KEYS}}


def operator_yield(summary: dict[str, Any]) -> dict[str, Any]:
    """The ledger's per-operator yield (``Ledger.summary()['operators']``) as parallel lists."""
    ops = summary.get("operators", {})
    return _yield_lists(ops, sorted(ops), "operator")


def idea_yield(summary: dict[str, Any]) -> dict[str, Any]:
    """The ledger's per-idea yield (``Ledger.summary()['ideas']``) as parallel lists, the most tried
    idea first; empty lists when no prompt carried an idea (the charts then hide it)."""
    ideas = summary.get("ideas", {})
    return _yield_lists(ideas, list(ideas), "idea")


def all_series(nodes: Sequence[Node], summary: dict[str, Any]) -> dict[str, Any]:
    return {
        "progress": progress(nodes),
        "usage": usage(nodes),
        "time": time_per_node(nodes),
        "yield": operator_yield(summary),
        "ideas": idea_yield(summary),
    }
