"""A run directory seen read-only by the UI: every node in memory (light: no prompt, answer or
code), kept up to date from the database while a campaign writes, with a change cursor for clients.

Why a cursor of our own: clients poll ``nodes?since=<cursor>``; every node the view sees appear or
change gets the next sequence number, so a client receives each change once, whatever the
writer's clocks. The totals are the campaign's own :class:`~orchestrator.ledger.Ledger`, fed the
same way (one node at a time, never recomputed).

Loading: a big run is read ``LOAD_CHUNK`` rows at a time, each chunk under the lock, so a server
answers at once and pages receive the nodes through the same cursor as they are read.

Change detection: ``PRAGMA data_version`` says whether anyone committed since the last look (no
row read when nothing changed); then rows newer than the newest id, or changed among the nodes
still in flight and the last ``RECENT`` ids, are read by primary-key range. At most every
``FULL_SCAN_S`` seconds after a commit, the whole table is checked for rows edited since the last
full scan, so an edit of an old finished node shows up too.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import sqlite3
import threading
import time
from bisect import bisect_right
from pathlib import Path
from typing import Any

from archive import Archive, Node, NodeStatus
from archive.store import DB_NAME, FIELDS, JSON_FIELDS
from orchestrator.ledger import Ledger

from . import series

LOAD_CHUNK = 500  # rows read under the lock at a time while loading (requests wait at most one chunk)
RECENT = 1000  # ids below the newest that are re-checked on every refresh
FULL_SCAN_S = 30.0
SLACK_S = 5.0  # updated_at look-back: a writer's clock may step back a little
MAX_FILE_CHARS = 200_000  # per file on the node page
MAX_TEXT_CHARS = 400_000  # prompt, response, diff

#: large text columns the tree does not need: left out (the node page reads the full node)
HEAVY = ("prompt", "response", "feedback")
ERROR_CHARS = 300  # the error's start is enough for the tree's tooltip

#: what a client gets per node, in this order (``rows`` are lists, ``fields`` names them)
ROW_FIELDS = ["id", "parent", "status", "operator", "score", "stage", "tokens", "cost", "fm_s", "eval_s", "created", "note"]


def _num(x: Any) -> float | None:
    return x if isinstance(x, (int, float)) and math.isfinite(x) else None


def finite(obj: Any) -> Any:
    """Strict JSON: NaN/inf become null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


@functools.cache
def _defaults() -> dict[str, Any]:
    return {name: f.get_default(call_default_factory=True) for name, f in Node.model_fields.items()}


def light_node(rec: dict[str, Any]) -> Node:
    """A Node without prompt, response and feedback; stages keep their verdicts only. Built
    without validation (the writer validated it), every field given so no default is computed."""
    data: dict[str, Any] = {}
    for name, default in _defaults().items():
        value = rec.get(name)
        if value is None and name not in ("parent_id", "score"):
            value = copy.copy(default)  # a column older files lack
        data[name] = value
    data["status"] = NodeStatus(data["status"])
    data["stages"] = [
        {k: s.get(k) for k in ("stage", "valid", "passed_gate", "score")} for s in data["stages"] or [] if isinstance(s, dict)
    ]
    return Node.model_construct(**data)


def client_row(n: Node) -> list[Any]:
    """One node as the tree needs it (see ROW_FIELDS)."""
    stage = n.stages[-1].get("stage") or "" if n.stages else ""
    note = n.error_line[:160]
    return [
        n.id,
        n.parent_id,
        n.status.value,
        n.operator,
        _num(n.score),
        stage,
        n.prompt_tokens + n.completion_tokens,
        round(n.cost_usd, 6),
        _num(n.timings.get(series.FM_TIME_KEY)),
        _num(n.timings.get(series.EVAL_TIME_KEY)),
        round(n.created_at, 3),
        note,
    ]


def _text(data: bytes, limit: int = MAX_FILE_CHARS) -> dict[str, Any]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return {"binary": True, "bytes": len(data), "text": ""}
    return {"binary": False, "bytes": len(data), "text": text[:limit], "truncated": len(text) > limit}


def _clip(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + f"\n… ({len(text) - limit:,} more characters cut)"


class RunView:
    """One run, opened read-only. Thread-safe; ``refresh`` is cheap when nothing changed."""

    def __init__(self, run_dir: str | Path, index: int = 0, *, min_interval_s: float = 0.3, load: bool = True):
        self.run_dir = Path(run_dir)
        self.index = index
        self.archive = Archive.open(self.run_dir, readonly=True)
        self.campaign = self.archive.campaign
        uri = (self.run_dir / DB_NAME).resolve().as_uri() + "?mode=ro"
        self._db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA busy_timeout=10000")
        cols = {r[1] for r in self._db.execute("PRAGMA table_info(nodes)")}
        exprs = {name: f'"{name}"' for name in FIELDS if name in cols and name not in HEAVY}
        if "error" in exprs:
            exprs["error"] = f'substr("error", 1, {ERROR_CHARS})'
        self._select = ", ".join(f'{expr} AS "{name}"' for name, expr in exprs.items())
        self._lock = threading.RLock()
        self.min_interval_s = min_interval_s
        self.nodes: dict[int, Node] = {}
        self.rows: dict[int, list[Any]] = {}
        self.children: dict[int, list[int]] = {}
        self.ledger = Ledger()
        self.seq = 0
        self._log: list[tuple[int, int]] = []  # (seq, node id), seq increasing
        self._unfinished: set[int] = set()
        self._data_version: int | None = None
        self._last_check = 0.0
        self._last_full = 0.0
        self._scan_mark = -math.inf  # updated_at as of the last full scan: later edits are newer
        self._unscanned = False  # a commit happened since the last full scan
        self._series: tuple[int, dict[str, Any]] | None = None
        self._summary: tuple[int, dict[str, Any]] | None = None
        self._closed = False
        self.loaded = False
        self.rows_at_open: int = self._db.execute("SELECT COUNT(*) FROM nodes").fetchone()[0]
        if load:
            self.load()

    @property
    def name(self) -> str:
        return f"{self.run_dir} ({self.campaign})" if self.campaign else str(self.run_dir)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._db.close()
            self.archive.close()

    # ---- keeping up with the writer ---------------------------------------------------

    def load(self, chunk: int = LOAD_CHUNK) -> None:
        """Read every node, ``chunk`` rows at a time, each chunk under the lock, so a server started
        on a big run answers (with the nodes read so far, through the same cursor) while it loads."""
        started = time.time()
        while True:
            with self._lock:
                if self._closed:
                    return
                newest = max(self.nodes, default=-1)
                cur = self._db.execute(f"SELECT {self._select} FROM nodes WHERE id > ? ORDER BY id LIMIT ?", (newest, chunk))
                if self._read(cur) < chunk:
                    break
        with self._lock:
            self.loaded = True
            self._scan_mark = started  # nodes edited while loading were edited after this
            self.refresh(force=True)

    def start_loading(self) -> threading.Thread:
        thread = threading.Thread(target=self.load, name=f"dgm-ui-load-{self.index}", daemon=True)
        thread.start()
        return thread

    def _read(self, cur: sqlite3.Cursor) -> int:
        """Apply the rows of a query; returns how many rows it had."""
        names = [d[0] for d in cur.description]
        n = 0
        for row in cur:
            n += 1
            rec = dict(zip(names, row))
            for k in JSON_FIELDS:
                if k in rec:
                    rec[k] = json.loads(rec[k]) if rec[k] else None
            self._apply(light_node(rec))
        return n

    def refresh(self, force: bool = False) -> int:
        """Read what changed since the last look (nothing while the first load runs); returns the
        change count of the view's cursor."""
        with self._lock:
            if not self.loaded or self._closed:
                return 0
            now = time.monotonic()
            if not force and now - self._last_check < self.min_interval_s:
                return 0
            self._last_check = now
            version = self._db.execute("PRAGMA data_version").fetchone()[0]
            committed = version != self._data_version
            self._data_version = version
            self._unscanned |= committed  # a commit since the last full scan may have edited an old node
            full = force or (self._unscanned and now - self._last_full >= FULL_SCAN_S)
            if not committed and not full:
                return 0
            newest = max(self.nodes, default=-1)
            if full:
                self._unscanned = False
                self._last_full = now
                low, since = 0, self._scan_mark - SLACK_S
            else:
                low = min(self._unfinished | {max(0, newest - RECENT)})
                since = max((self.nodes[i].updated_at for i in range(low, newest + 1) if i in self.nodes), default=0.0) - SLACK_S
            sql = f"SELECT {self._select} FROM nodes WHERE id > ? OR (id >= ? AND updated_at >= ?) ORDER BY id"
            seq = self.seq
            self._read(self._db.execute(sql, (newest, low, since if math.isfinite(since) else -1e300)))
            if full:
                self._scan_mark = max((n.updated_at for n in self.nodes.values()), default=-math.inf)
            return self.seq - seq

    def _apply(self, node: Node) -> bool:
        old = self.nodes.get(node.id)
        if old is not None and (old.updated_at, old.status, old.score) == (node.updated_at, node.status, node.score):
            return False
        if old is None and node.parent_id is not None:
            self.children.setdefault(node.parent_id, []).append(node.id)
        self.nodes[node.id] = node
        self.ledger.record(node)
        self.rows[node.id] = client_row(node)
        if node.status.finished:
            self._unfinished.discard(node.id)
        else:
            self._unfinished.add(node.id)
        self.seq += 1
        self._log.append((self.seq, node.id))
        return True

    # ---- what clients read ------------------------------------------------------------

    def changes(self, since: int) -> dict[str, Any]:
        """Nodes that appeared or changed after cursor ``since`` (0: all); ``reset`` tells a client
        whose cursor this view never issued (a restarted server) to start over."""
        self.refresh()
        with self._lock:
            reset = since <= 0 or since > self.seq
            if reset:
                ids = sorted(self.nodes)
            else:
                start = bisect_right(self._log, (since, math.inf))
                ids = sorted({i for _, i in self._log[start:]})
            return {
                "run": self.index,
                "cursor": self.seq,
                "reset": reset,
                "fields": ROW_FIELDS,
                "rows": [self.rows[i] for i in ids],
                "total": len(self.nodes),
                "loading": None if self.loaded else {"loaded": len(self.nodes), "rows": self.rows_at_open},
                "summary": self.summary(),
            }

    def summary(self) -> dict[str, Any]:
        """What ``dgm status`` shows (the ledger's summary), plus where the run is; kept until a node changes."""
        with self._lock:
            if self._summary is None or self._summary[0] != self.seq:
                self._summary = (self.seq, finite({"run_dir": str(self.run_dir), "campaign": self.campaign, **self.ledger.summary()}))
            return self._summary[1]

    def series(self) -> dict[str, Any]:
        self.refresh()
        with self._lock:
            if self._series is None or self._series[0] != self.seq:
                ordered = [self.nodes[i] for i in sorted(self.nodes)]
                self._series = (self.seq, finite(series.all_series(ordered, self.ledger.summary())))
            return self._series[1]

    def lineage_ids(self, node_id: int) -> list[int]:
        chain = [node_id]
        while (p := self.nodes[chain[-1]].parent_id) is not None and len(chain) <= len(self.nodes):
            chain.append(p)
        return chain[::-1]

    def detail(self, node_id: int) -> dict[str, Any]:
        """Everything about one node: every field, its code, its diff against the parent."""
        node = self.archive.get(node_id)  # KeyError when absent
        with self._lock:
            if node_id not in self.nodes:
                self.refresh(force=True)
            kids = list(self.children.get(node_id, []))
            lineage = self.lineage_ids(node_id) if node_id in self.nodes else [node_id]
        files = self.archive.read_files(node_id)
        data = node.model_dump(mode="json")
        for key in ("prompt", "response", "feedback", "error"):
            data[key] = _clip(data[key])
        parent = self.nodes.get(node.parent_id) if node.parent_id is not None else None
        return finite(
            {
                "run": self.index,
                "node": data,
                "final_feedback": node.final_feedback,
                "diff": _clip(self.archive.diff(node_id)),
                "files": {path: _text(blob) for path, blob in sorted(files.items())},
                "children": kids,
                "lineage": lineage,
                "parent_score": parent.score if parent is not None else None,
                "transcript": _transcript(data),
            }
        )


def _transcript(data: dict[str, Any]) -> Any:
    """An improver's transcript, where a node or one of its stages records one (any field named
    ``transcript``); None otherwise."""
    if data.get("transcript"):
        return data["transcript"]
    for stage in data.get("stages") or []:
        if isinstance(stage, dict) and stage.get("transcript"):
            return stage["transcript"]
    return None
