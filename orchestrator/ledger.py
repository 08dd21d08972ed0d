"""The ledger: every node of a run held in memory, and what is derived from them, kept up to date
node by node (never recomputed from all nodes): counts by status, FM usage, the best admitted node,
admitted children per parent, the parents a proposal may start from, each parent's failed
children, and each operator's yield.

The campaign loop records every node it writes here; ``dgm status`` builds one from the archive, so
both show the same numbers from one implementation.
"""

from __future__ import annotations

import bisect
import contextlib
import math
import statistics
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from archive import Node, NodeStatus

#: statuses of a child whose answer failed (the model wrote something unusable, or the call broke)
FAILED_CHILD = (NodeStatus.INVALID, NodeStatus.FAILED)


@dataclass
class OperatorYield:
    """What one operator's attempts became."""

    attempts: int = 0
    valid: int = 0  # evaluated, valid and ranked (admitted or rejected with a score)
    better_than_parent: int = 0
    better_than_seed: int = 0

    def add(self, other: "OperatorYield", sign: int) -> None:
        self.attempts += sign * other.attempts
        self.valid += sign * other.valid
        self.better_than_parent += sign * other.better_than_parent
        self.better_than_seed += sign * other.better_than_seed


@dataclass
class UsageTotals:
    fm_calls: int = 0  # model calls of child attempts (fit's trials make none, an improver run several)
    tokens: int = 0
    cost_usd: float = 0.0
    gpu_s: float = 0.0  # GPU-seconds evaluations held (fit's trials included)


@dataclass
class _Share:
    """One node's contribution to the ledger's totals: subtracted when the node is updated."""

    status: NodeStatus
    fm_call: int  # model calls it made
    tokens: int
    cost_usd: float
    gpu_s: float
    admitted_child_of: int | None
    ranked: bool  # a possible parent: admitted with a score
    clade: tuple[float, float]  # (successes, failures) it adds to its own clade and every ancestor's
    noise: tuple[float, int]  # (sum of squared deviations of its draws, degrees of freedom)
    draws: int  # independent evaluations of it
    score: float | None
    operator: str | None
    yield_: OperatorYield = field(default_factory=OperatorYield)
    idea: str = ""  # the idea its prompt carried: its yield counts for that idea too


def _clade_mass(node: Node) -> tuple[float, float]:
    """What one node adds to the clades it belongs to (HGM's metaproductivity counts): a ranked
    score clipped to [0, 1] as success and the rest as failure; an invalid child one failure."""
    if node.status in (NodeStatus.ADMITTED, NodeStatus.REJECTED) and node.score is not None:
        s = min(1.0, max(0.0, node.score))
        return (s, 1.0 - s)
    if node.status == NodeStatus.INVALID and node.parent_id is not None:
        return (0.0, 1.0)
    return (0.0, 0.0)


def _noise(draws: list[float]) -> tuple[float, int]:
    if len(draws) < 2:
        return (0.0, 0)
    mean = statistics.fmean(draws)
    return (sum((d - mean) ** 2 for d in draws), len(draws) - 1)


class ParentIndex:
    """The possible parents as arrays (id, mean score, evaluations, admitted children), so that a
    selection policy over 100,000 of them is a few vector operations. Order: as admitted (a removal,
    which is rare, moves the last one into the gap)."""

    def __init__(self) -> None:
        self._cap = 0
        self.size = 0
        self.ids = np.zeros(0, dtype=np.int64)
        self.score = np.zeros(0)
        self.draws = np.zeros(0)
        self.children = np.zeros(0)
        self.pos: dict[int, int] = {}

    def _grow(self) -> None:
        self._cap = max(1024, 2 * self._cap)
        for name in ("ids", "score", "draws", "children"):
            old = getattr(self, name)
            new = np.zeros(self._cap, dtype=old.dtype)
            new[: self.size] = old[: self.size]
            setattr(self, name, new)

    def add(self, node_id: int, score: float, draws: int, children: int) -> None:
        if self.size == self._cap:
            self._grow()
        i = self.size
        self.ids[i], self.score[i], self.draws[i], self.children[i] = node_id, score, max(1, draws), children
        self.pos[node_id] = i
        self.size += 1

    def remove(self, node_id: int) -> None:
        i, last = self.pos.pop(node_id), self.size - 1
        if i != last:
            moved = int(self.ids[last])
            for arr in (self.ids, self.score, self.draws, self.children):
                arr[i] = arr[last]
            self.pos[moved] = i
        self.size -= 1

    def add_child(self, parent_id: int, sign: int) -> None:
        i = self.pos.get(parent_id)
        if i is not None:
            self.children[i] += sign


class Ledger:
    def __init__(self, nodes: Iterable[Node] = (), *, confidence: float = 0.0, clades: bool = False) -> None:
        self.confidence = confidence  # z of the lower confidence bound (0: rank by the mean)
        # clade counts cost O(depth) per evaluated node (a walk up the ancestry): kept only when a
        # selection policy reads them (cmp)
        self.track_clades = clades
        self._noise = [0.0, 0]  # pooled (sum of squares, degrees of freedom) of every node evaluated twice or more
        self.nodes: dict[int, Node] = {}
        self.counts: dict[str, int] = {s.value: 0 for s in NodeStatus}
        self.usage = UsageTotals()
        self.children: dict[int, int] = {}  # parent id → admitted children
        self.operators: dict[str, OperatorYield] = {}
        self.ideas: dict[str, OperatorYield] = {}  # what children whose prompt carried each idea became
        self._ranked: list[tuple[float, int]] = []  # (-score, id) of admitted scored nodes, sorted
        self.index = ParentIndex()  # the same nodes as arrays, for selection
        self._failures: dict[int, list[int]] = {}  # parent id → ids of children with a failed answer
        self._shares: dict[int, _Share] = {}
        self._clades: dict[int, list[float]] = {}  # node id → [successes, failures] of its clade
        self.lineage: dict[int, int] = {}  # node id → the seed's child it descends from (the seed: itself)
        self._bulk = False  # while loading: rank keys are appended and sorted once at the end
        with self.loading():
            for node in sorted(nodes, key=lambda n: n.id):
                self.record(node)

    # ---- writing ----------------------------------------------------------------------

    def record(self, node: Node) -> Node:
        """Add or replace a node; every total moves by the difference."""
        old = self._shares.pop(node.id, None)
        if old is not None:
            self._apply(node.id, old, -1)
        if node.id not in self.lineage:
            parent = self.nodes.get(node.parent_id) if node.parent_id is not None else None
            self.lineage[node.id] = node.id if parent is None or parent.parent_id is None else self.lineage[parent.id]
        share = self._share(node)
        self._shares[node.id] = share
        self.nodes[node.id] = node
        self._apply(node.id, share, +1)
        # an answer a model gave (fit's trials are a JSON record no model wrote: shown to the model as
        # 'fit change ("constants": [)', they told it nothing)
        if node.parent_id is not None and node.status in FAILED_CHILD and node.fm_model and node.response and node.error:
            ids = self._failures.setdefault(node.parent_id, [])
            if node.id not in ids:
                ids.append(node.id)
        return node

    def _share(self, node: Node) -> _Share:
        child = node.parent_id is not None
        ranked = node.status == NodeStatus.ADMITTED and node.score is not None
        y = OperatorYield()
        if child:
            y.attempts = 1
            # valid: no stage found it invalid (a child a gate stopped is valid, and has no score)
            y.valid = int(node.status in (NodeStatus.ADMITTED, NodeStatus.REJECTED))
            if y.valid and node.score is not None:
                parent, seed = self.nodes.get(node.parent_id), self.seed
                y.better_than_parent = int(parent is not None and parent.score is not None and node.score > parent.score)
                y.better_than_seed = int(seed is not None and seed.score is not None and node.score > seed.score)
        return _Share(
            status=node.status,
            # an improver run may call the model several times (timings["fm_calls"]); one otherwise
            fm_call=int(node.timings.get("fm_calls", 1 if child else 0)) if node.fm_model else 0,
            tokens=node.prompt_tokens + node.completion_tokens,
            cost_usd=node.cost_usd,
            gpu_s=node.timings.get("gpu_s", 0.0),
            admitted_child_of=node.parent_id if child and node.status == NodeStatus.ADMITTED else None,
            ranked=ranked,
            clade=_clade_mass(node),
            draws=len(node.draws),
            noise=_noise(node.draws),
            score=node.score,
            operator=node.operator if child else None,
            yield_=y,
            idea=node.idea if child else "",
        )

    def _apply(self, node_id: int, s: _Share, sign: int) -> None:
        self.counts[s.status.value] += sign
        self.usage.fm_calls += sign * s.fm_call
        self.usage.tokens += sign * s.tokens
        self.usage.cost_usd += sign * s.cost_usd
        self.usage.gpu_s += sign * s.gpu_s
        if s.admitted_child_of is not None:
            self.children[s.admitted_child_of] = self.children.get(s.admitted_child_of, 0) + sign
            self.index.add_child(s.admitted_child_of, sign)
        if s.operator is not None:
            self.operators.setdefault(s.operator, OperatorYield()).add(s.yield_, sign)
        if s.idea:
            self.ideas.setdefault(s.idea, OperatorYield()).add(s.yield_, sign)
        self._noise[0] += sign * s.noise[0]
        self._noise[1] += sign * s.noise[1]
        if self.track_clades and s.clade != (0.0, 0.0):  # walks the ancestry: O(depth) per evaluated node
            node_id_: int | None = node_id
            while node_id_ is not None:
                mass = self._clades.setdefault(node_id_, [0.0, 0.0])
                mass[0] += sign * s.clade[0]
                mass[1] += sign * s.clade[1]
                parent = self.nodes.get(node_id_)
                node_id_ = parent.parent_id if parent is not None else None
        if s.ranked:
            key = (-s.score, node_id)
            if sign > 0:
                if self._bulk:
                    self._ranked.append(key)
                else:
                    bisect.insort(self._ranked, key)
                self.index.add(node_id, s.score, s.draws, self.children.get(node_id, 0))
            else:
                del self._ranked[bisect.bisect_left(self._ranked, key)]
                self.index.remove(node_id)

    @contextlib.contextmanager
    def loading(self):
        """Record many nodes (a resume) with one sort of the ranking at the end instead of an
        insertion per node; nothing may read the ranking meanwhile."""
        self._bulk = True
        try:
            yield self
        finally:
            self._bulk = False
            self._ranked.sort()

    # ---- reading ----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.nodes)

    def get(self, node_id: int | None) -> Node | None:
        return None if node_id is None else self.nodes.get(node_id)

    @property
    def seed(self) -> Node | None:
        return self.nodes.get(0)

    @property
    def attempts(self) -> int:
        """Child attempts recorded (every node but the seed)."""
        return len(self.nodes) - (0 in self.nodes)

    @property
    def spread(self) -> float:
        """The score's standard deviation between evaluations of one program, pooled over every
        node evaluated more than once (0 until one was, and for a deterministic evaluator)."""
        ss, df = self._noise
        return math.sqrt(max(ss, 0.0) / df) if df > 0 else 0.0

    def lcb(self, node: Node) -> float:
        """Lower confidence bound of a scored node: mean − confidence · spread / √evaluations."""
        return node.score - self.confidence * self.spread / math.sqrt(max(1, len(node.draws)))

    @property
    def best(self) -> Node | None:
        """The admitted node with the highest lower confidence bound (ties: the highest mean, then
        the oldest). Nodes are scanned by mean until no later one can beat the bound found."""
        best, best_key = None, None
        for neg_mean, node_id in self._ranked:
            if best_key is not None and -neg_mean < best_key[0]:
                break  # a bound never exceeds its mean
            node = self.nodes[node_id]
            key = (self.lcb(node), -neg_mean, -node_id)
            if best_key is None or key > best_key:
                best, best_key = node, key
        return best

    def top(self, k: int, *, excluding: int | None = None) -> list[Node]:
        """The ``k`` best admitted nodes, best first."""
        out = []
        for _, node_id in self._ranked:
            if len(out) == k:
                break
            if node_id != excluding:
                out.append(self.nodes[node_id])
        return out

    def parents(self) -> list[Node]:
        """Nodes a proposal may start from: admitted, with a score (in the index's order)."""
        return [self.nodes[int(i)] for i in self.index.ids[: self.index.size]]

    def parent_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids, lower confidence bounds, admitted children) of every possible parent."""
        ix, n = self.index, self.index.size
        bound = ix.score[:n] - self.confidence * self.spread / np.sqrt(ix.draws[:n])
        return ix.ids[:n], bound, ix.children[:n]

    def clade(self, node_id: int) -> tuple[float, float]:
        """(successes, failures) of the node's clade: itself and every evaluated descendant."""
        s, f = self._clades.get(node_id, (0.0, 0.0))
        return (s, f)

    def failed_children(self, parent_id: int) -> list[Node]:
        """Children of ``parent_id`` whose answer was invalid or failed, newest first."""
        return [self.nodes[i] for i in reversed(self._failures.get(parent_id, []))]

    def summary(self) -> dict:
        """What ``dgm status`` shows."""
        best, seed = self.best, self.seed
        return {
            "nodes": len(self.nodes),
            "iterations": self.attempts,
            "counts": dict(self.counts),
            "best": {"id": best.id, "score": best.score, "public_metrics": best.public_metrics} if best else None,
            "seed_score": seed.score if seed else None,
            "fm_calls": self.usage.fm_calls,
            "operators": {name: vars(y).copy() for name, y in sorted(self.operators.items()) if y.attempts},
            # what the prompts that carried each idea became, the most tried first (prompts without one: not listed)
            "ideas": {idea: vars(y).copy() for idea, y in sorted(self.ideas.items(), key=lambda kv: (-kv[1].attempts, kv[0]))
                      if y.attempts},
            "tokens": self.usage.tokens,
            "cost_usd": round(self.usage.cost_usd, 6),
            "gpu_s": round(self.usage.gpu_s, 3),
            "last_update": max((n.updated_at for n in self.nodes.values()), default=None),
        }
