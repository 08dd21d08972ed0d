"""SQLite node table of a run: one row per attempt, readable while a campaign writes.

Why SQLite in WAL mode: readers in other processes (CLI, web UI) see a consistent
snapshot while the single writer appends, and every write is one committed
transaction, so a kill -9 loses at most the write that was in flight.
"""

from __future__ import annotations

import contextlib
import enum
import json
import math
import sqlite3
import threading
import time
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic_core import from_json

from .node import Node, NodeStatus

DB_NAME = "archive.db"
SCHEMA_VERSION = "1"
BUSY_TIMEOUT_MS = 10_000

StatusFilter = NodeStatus | str | Iterable[NodeStatus | str] | None


def _column_kind(annotation: Any) -> str:
    """Map a Node field annotation to 'json', 'INTEGER', 'REAL' or 'TEXT'."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    origin = typing.get_origin(annotation) or annotation
    if origin in (list, dict):
        return "json"
    if annotation is bool or annotation is int:
        return "INTEGER"
    if annotation is float:
        return "REAL"
    return "TEXT"


# Column layout derived from the Node model, so a new Node field becomes a new column.
FIELDS: dict[str, str] = {name: _column_kind(f.annotation) for name, f in Node.model_fields.items()}
JSON_FIELDS = frozenset(n for n, k in FIELDS.items() if k == "json")


def _json_default(obj: Any) -> Any:
    """Make numpy scalars, enums and paths storable instead of failing the write."""
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, enum.Enum):
        return obj.value
    return str(obj)


def _to_db(name: str, value: Any) -> Any:
    if name in JSON_FIELDS:
        return json.dumps(value, default=_json_default)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, float) and math.isnan(value):
        return None  # SQLite stores NaN as NULL anyway; be explicit
    return value


def _statuses(status: StatusFilter) -> list[str] | None:
    if status is None:
        return None
    if isinstance(status, (str, NodeStatus)):
        status = [status]
    return [NodeStatus(s).value for s in status]


class NodeStore:
    """The `nodes` and `meta` tables of RUN_DIR/archive.db.

    Thread-safe: one connection guarded by a lock (SQLite serialises writers anyway).
    Every write is its own autocommitted transaction.
    """

    def __init__(self, path: str | Path, *, readonly: bool = False, create: bool = False):
        self.path = Path(path)
        self.readonly = readonly
        self._lock = threading.RLock()
        if readonly:
            uri = self.path.resolve().as_uri() + "?mode=ro"
            self._conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        else:
            if not create and not self.path.exists():
                raise FileNotFoundError(f"no archive database at {self.path}")
            self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        if not readonly:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._migrate()
        self._columns = self._existing_columns()

    @classmethod
    def open_readonly(cls, path: str | Path) -> NodeStore:
        """A read-only connection for another process (CLI, web UI) while a campaign writes."""
        return cls(path, readonly=True)

    # ---- schema -------------------------------------------------------------------

    def _existing_columns(self) -> set[str]:
        with self._lock:
            return {r[1] for r in self._conn.execute("PRAGMA table_info(nodes)")}

    def _migrate(self) -> None:
        """Create the tables, or add columns for Node fields newer than the file."""
        cols = []
        for name, kind in FIELDS.items():
            if name == "id":
                cols.append("id INTEGER PRIMARY KEY")
            else:
                cols.append(f'"{name}" {_sql_type(kind)}')
        with self._lock, self._transaction():
            self._conn.execute(f"CREATE TABLE IF NOT EXISTS nodes ({', '.join(cols)})")
            self._conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            for col in ("campaign", "parent_id", "status"):
                self._conn.execute(f"CREATE INDEX IF NOT EXISTS nodes_{col} ON nodes({col})")
            have = self._existing_columns()
            for name, kind in FIELDS.items():
                if name not in have:
                    default = Node.model_fields[name].get_default(call_default_factory=True)
                    literal = _sql_literal(_to_db(name, default))
                    self._conn.execute(f'ALTER TABLE nodes ADD COLUMN "{name}" {_sql_type(kind)} DEFAULT {literal}')
            self._conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))

    @contextlib.contextmanager
    def _transaction(self):
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    # ---- rows <-> nodes -------------------------------------------------------------

    def _select_cols(self) -> list[str]:
        return [n for n in FIELDS if n in self._columns]

    def _row_to_node(self, cols: list[str], row: tuple) -> Node:
        data = dict(zip(cols, row))
        for name in JSON_FIELDS:
            value = data.get(name)
            if value is not None:
                data[name] = from_json(value)
        if None in row:  # NULL from a migrated column: the model default (parent_id and score may be None)
            for name in [n for n, v in data.items() if v is None and n not in ("parent_id", "score")]:
                del data[name]
        if len(data) != len(FIELDS):  # a column older than the model, or a NULL dropped above
            for name in FIELDS:
                if name not in data:
                    data[name] = Node.model_fields[name].get_default(call_default_factory=True)
        # rows are what insert/update wrote from validated Nodes: rebuilding them without
        # validating again makes loading a 100,000-node archive several times faster
        data["status"] = NodeStatus(data["status"])
        node = object.__new__(Node)
        object.__setattr__(node, "__dict__", data)
        object.__setattr__(node, "__pydantic_fields_set__", set(data))
        object.__setattr__(node, "__pydantic_extra__", None)
        object.__setattr__(node, "__pydantic_private__", None)
        return node

    def _check_writable(self) -> None:
        if self.readonly:
            raise PermissionError(f"{self.path} is open read-only")

    # ---- writes ---------------------------------------------------------------------

    def insert(self, node: Node) -> None:
        """Insert a new row; ValueError if the id exists."""
        self._check_writable()
        names = list(FIELDS)
        values = [_to_db(n, getattr(node, n)) for n in names]
        with self._lock:
            try:
                self._conn.execute(
                    f"INSERT INTO nodes ({_cols_sql(names)}) VALUES ({', '.join('?' * len(names))})", values
                )
            except sqlite3.IntegrityError as e:
                raise ValueError(f"node {node.id} already exists in {self.path}") from e

    def update(self, node_id: int, **fields: Any) -> Node:
        """Change some fields of a row (validated through Node); sets updated_at. Returns the new node."""
        self._check_writable()
        unknown = sorted(set(fields) - set(FIELDS))
        if unknown:
            raise ValueError(f"unknown node field(s) {unknown}; valid: {sorted(FIELDS)}")
        if "id" in fields:
            raise ValueError("a node's id cannot be changed")
        fields.setdefault("updated_at", time.time())
        with self._lock:
            current = self.get(node_id)
            node = Node.model_validate({**current.model_dump(), **fields})
            names = list(fields)
            self._conn.execute(
                f"UPDATE nodes SET {_assign_sql(names)} WHERE id = ?",
                [_to_db(n, getattr(node, n)) for n in names] + [node_id],
            )
        return node

    def set_meta(self, key: str, value: str) -> None:
        self._check_writable()
        with self._lock:
            self._conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, str(value)))

    # ---- reads ----------------------------------------------------------------------

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        with self._lock:
            row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else row[0]

    def get(self, node_id: int) -> Node:
        cols = self._select_cols()
        with self._lock:
            row = self._conn.execute(f"SELECT {_cols_sql(cols)} FROM nodes WHERE id = ?", (node_id,)).fetchone()
        if row is None:
            raise KeyError(f"no node {node_id} in {self.path}")
        return self._row_to_node(cols, row)

    def _where(self, campaign: str | None, status: StatusFilter) -> tuple[str, list[Any]]:
        clauses, params = [], []
        if campaign is not None:
            clauses.append("campaign = ?")
            params.append(campaign)
        sts = _statuses(status)
        if sts is not None:
            clauses.append(f"status IN ({', '.join('?' * len(sts))})")
            params.extend(sts)
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params

    def all(self, campaign: str | None = None, status: StatusFilter = None) -> list[Node]:
        """Nodes ordered by id; status may be one status or several."""
        cols = self._select_cols()
        where, params = self._where(campaign, status)
        with self._lock:
            rows = self._conn.execute(f"SELECT {_cols_sql(cols)} FROM nodes{where} ORDER BY id", params).fetchall()
        return [self._row_to_node(cols, r) for r in rows]

    def count(self, campaign: str | None = None, status: StatusFilter = None) -> int:
        where, params = self._where(campaign, status)
        with self._lock:
            return self._conn.execute(f"SELECT COUNT(*) FROM nodes{where}", params).fetchone()[0]

    def next_id(self) -> int:
        """Ids are consecutive integers; 0 is the seed."""
        with self._lock:
            return self._conn.execute("SELECT COALESCE(MAX(id), -1) + 1 FROM nodes").fetchone()[0]

    def children_counts(self, statuses: StatusFilter = (NodeStatus.ADMITTED,)) -> dict[int, int]:
        """parent id -> number of its children whose status is in `statuses` (parents with none are absent)."""
        sts = _statuses(statuses)
        where = f" AND status IN ({', '.join('?' * len(sts))})" if sts is not None else ""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT parent_id, COUNT(*) FROM nodes WHERE parent_id IS NOT NULL{where} GROUP BY parent_id",
                sts or [],
            ).fetchall()
        return {int(p): int(c) for p, c in rows}

    def skeleton(self) -> list[tuple[int, int | None, str, str, str]]:
        """Raw (id, parent_id, status, commit, campaign) rows, unvalidated, for consistency checks."""
        with self._lock:
            return [
                tuple(r) for r in self._conn.execute('SELECT id, parent_id, status, "commit", campaign FROM nodes ORDER BY id')
            ]

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _sql_type(kind: str) -> str:
    return "TEXT" if kind == "json" else kind


def _cols_sql(names: Iterable[str]) -> str:
    return ", ".join(f'"{n}"' for n in names)


def _assign_sql(names: Iterable[str]) -> str:
    return ", ".join(f'"{n}" = ?' for n in names)


def _sql_literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"
