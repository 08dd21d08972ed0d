"""The archive of a run: the node table (SQLite) and the agents' code (git), kept consistent.

Why a facade: every attempt must be both a row and a commit whose git parent is
its parent node's commit. Writing order is id -> commit + ref -> row, so a crash
leaves at worst a ref without a row, which `recover()` removes; a row is never
visible before its code is.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .lock import WriterLock
from .node import Node, NodeStatus
from .repo import NODE_REF_PREFIX, REPO_NAME, AgentRepo, node_ref
from .store import DB_NAME, NodeStore, StatusFilter

# Fields tied to the git graph or assigned by add_node; never set by callers.
_STRUCTURAL = frozenset({"id", "campaign", "parent_id", "commit"})

STATUS_COLORS = {
    NodeStatus.PROPOSED: "#ffffbf",
    NodeStatus.EVALUATING: "#abd9e9",
    NodeStatus.ADMITTED: "#a6d96a",
    NodeStatus.REJECTED: "#d9d9d9",
    NodeStatus.INVALID: "#fdae61",
    NodeStatus.FAILED: "#d7191c",
}


class NotARunDir(FileNotFoundError):
    """The path does not hold an archive (archive.db + repo.git)."""


@dataclass
class RecoveryReport:
    deleted_refs: list[int] = field(default_factory=list)  # refs of attempts killed before their row was written
    removed_locks: list[str] = field(default_factory=list)  # stale ref lock files of a killed writer
    in_flight: list[int] = field(default_factory=list)  # nodes left proposed/evaluating: re-evaluate them


def _finite(obj: Any) -> Any:
    """Strict JSON for outside readers: NaN/inf become null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


class Archive:
    """Open with `Archive.create` / `Archive.open`; close (or use as a context manager) when done.

    A writer holds RUN_DIR/writer.lock (one writing process per run; writers in one
    process share it). Thread-safe: writes are serialised by one mutex per run.
    Read-only archives take no lock and work while another process writes.
    """

    def __init__(self, run_dir: Path, store: NodeStore, repo: AgentRepo, lock: WriterLock | None):
        self.run_dir = run_dir
        self.store = store
        self.repo = repo
        self._lock = lock
        self.readonly = lock is None
        self.campaign: str = store.get_meta("campaign") or ""

    # ---- lifecycle --------------------------------------------------------------------

    @classmethod
    def create(cls, run_dir: str | Path, campaign: str) -> Archive:
        """Start a new run in run_dir (created if needed; must not already hold a run)."""
        if not isinstance(campaign, str) or not campaign:
            raise ValueError("campaign must be a non-empty string")
        run_dir = Path(run_dir)
        if (run_dir / DB_NAME).exists() or (run_dir / REPO_NAME).exists():
            raise FileExistsError(f"{run_dir} already holds a run; use Archive.open")
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = WriterLock(run_dir)
        try:
            repo = AgentRepo.init(run_dir / REPO_NAME)
            store = NodeStore(run_dir / DB_NAME, create=True)
            store.set_meta("campaign", campaign)
            store.set_meta("created_at", repr(time.time()))
        except BaseException:
            lock.release()
            raise
        return cls(run_dir, store, repo, lock)

    @classmethod
    def open(cls, run_dir: str | Path, readonly: bool = False) -> Archive:
        run_dir = Path(run_dir)
        if not (run_dir / DB_NAME).is_file() or not (run_dir / REPO_NAME / "objects").is_dir():
            raise NotARunDir(f"{run_dir} is not a dgm run directory (expected {DB_NAME} and {REPO_NAME}/ in it)")
        lock = None if readonly else WriterLock(run_dir)
        try:
            store = NodeStore.open_readonly(run_dir / DB_NAME) if readonly else NodeStore(run_dir / DB_NAME)
            repo = AgentRepo(run_dir / REPO_NAME)
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        return cls(run_dir, store, repo, lock)

    def close(self) -> None:
        self.store.close()
        self.repo.close()
        if self._lock is not None:
            self._lock.release()

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _writable(self) -> WriterLock:
        if self._lock is None:
            raise PermissionError(f"archive {self.run_dir} is open read-only")
        return self._lock

    # ---- writes -----------------------------------------------------------------------

    def add_node(
        self,
        *,
        parent_id: int | None,
        status: NodeStatus | str,
        operator: str,
        src_dir: str | Path | None = None,
        files: dict[str, bytes | str] | None = None,
        message: str,
        **fields: Any,
    ) -> Node:
        """Record one attempt: commit its code (src_dir, files, or neither = parent's tree) and insert its row.

        parent_id None makes the seed (only in an empty archive). Extra keyword
        arguments are Node fields (score, stages, fm_model, ...).
        """
        lock = self._writable()
        if src_dir is not None and files is not None:
            raise ValueError("give src_dir or files, not both")
        bad = sorted(set(fields) & _STRUCTURAL)
        if bad:
            raise ValueError(f"add_node assigns {bad} itself")
        with lock.mutex:
            node_id = self.store.next_id()
            parent = None
            if parent_id is None:
                if node_id != 0:
                    raise ValueError("the archive already has a seed; only the first node may have no parent_id")
            else:
                parent = self.store.get(parent_id)
            now = time.time()
            node = Node(  # validate before touching git
                **{"created_at": now, "updated_at": now, **fields},
                id=node_id,
                campaign=self.campaign,
                parent_id=parent_id,
                status=status,
                operator=operator,
                commit="",
            )
            ref = node_ref(node_id)
            msg = f"{message.strip() or f'node {node_id}'}\n\ndgm-node: {node_id}\ndgm-parent: {parent_id}\ndgm-operator: {operator}\n"
            parent_commit = parent.commit if parent is not None else None
            if src_dir is not None:
                sha = self.repo.commit_dir(src_dir, parent_commit, msg, ref)
            elif files is not None:
                sha = self.repo.commit_files(files, parent_commit, msg, ref)
            else:
                sha = self.repo.empty_child(parent_commit, msg, ref)
            node = node.model_copy(update={"commit": sha})
            try:
                self.store.insert(node)
            except BaseException:
                try:
                    self.repo.delete_ref(ref)
                except Exception:
                    pass  # recover() would remove it
                raise
            return node

    def update_node(self, node_id: int, **fields: Any) -> Node:
        """Change a node's non-structural fields (status, score, stages, ...); returns the updated node."""
        lock = self._writable()
        bad = sorted(set(fields) & _STRUCTURAL)
        if bad:
            raise ValueError(f"fields {bad} of a node cannot be changed")
        with lock.mutex:
            return self.store.update(node_id, **fields)

    def set_meta(self, key: str, value: str) -> None:
        self._writable()
        self.store.set_meta(key, value)

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        return self.store.get_meta(key, default)

    # ---- reads ------------------------------------------------------------------------

    def get(self, node_id: int) -> Node:
        return self.store.get(node_id)

    def nodes(self, status: StatusFilter = None) -> list[Node]:
        return self.store.all(status=status)

    def count(self, status: StatusFilter = None) -> int:
        return self.store.count(status=status)

    def children_counts(self, statuses: StatusFilter = (NodeStatus.ADMITTED,)) -> dict[int, int]:
        return self.store.children_counts(statuses)

    def read_files(self, node_id: int) -> dict[str, bytes]:
        return self.repo.read_files(self.get(node_id).commit)

    def materialize(self, node_id: int, dest: str | Path) -> Path:
        return self.repo.materialize(self.get(node_id).commit, dest)

    def diff(self, node_id: int) -> str:
        """Unified diff of a node's code against its parent's (the seed: against nothing)."""
        node = self.get(node_id)
        base = self.get(node.parent_id).commit if node.parent_id is not None else None
        return self.repo.diff(base, node.commit)

    def lineage(self, node_id: int) -> list[Node]:
        """The chain seed -> ... -> node."""
        chain = [self.get(node_id)]
        while chain[-1].parent_id is not None:
            if len(chain) > self.store.count():
                raise RuntimeError(f"parent cycle through node {node_id}")
            chain.append(self.get(chain[-1].parent_id))
        return chain[::-1]

    def best(self, n: int = 1) -> list[Node]:
        """Up to n admitted nodes with the highest score (ties: older first)."""
        scored = [x for x in self.store.all(status=NodeStatus.ADMITTED) if x.score is not None]
        return sorted(scored, key=lambda x: (-x.score, x.id))[:n]

    def export(self, fmt: str = "json") -> str:
        """The whole tree as strict JSON (every field) or Graphviz dot."""
        nodes = self.store.all()
        if fmt == "json":
            doc = {"campaign": self.campaign, "nodes": [n.model_dump(mode="python") for n in nodes]}
            return json.dumps(_finite(doc), indent=1, default=str)
        if fmt == "dot":
            lines = [
                "digraph dgm {",
                f'  label="{_dot_escape(self.campaign)}";',
                '  node [shape=box, style="rounded,filled", fontname="Helvetica"];',
            ]
            for n in nodes:
                score = "-" if n.score is None or not math.isfinite(n.score) else f"{n.score:.6g}"
                lines.append(
                    f'  n{n.id} [label="{n.id}\\n{n.status.value}\\n{score}", fillcolor="{STATUS_COLORS[n.status]}"];'
                )
            lines += [f"  n{n.parent_id} -> n{n.id};" for n in nodes if n.parent_id is not None]
            lines.append("}")
            return "\n".join(lines) + "\n"
        raise ValueError(f"unknown export format {fmt!r}; use 'json' or 'dot'")

    # ---- consistency ------------------------------------------------------------------

    def check(self) -> list[str]:
        """Problems between rows and git (empty list = consistent).

        On a live run (read-only, while a campaign writes) the attempt in flight
        may show up as a ref without a row.
        """
        problems: list[str] = []
        rows = self.store.skeleton()  # rows before refs: a ref is always written before its row
        refs = self.repo.list_node_refs()
        commit_parents = self.repo.commit_parents(r[3] for r in rows)
        by_id = {r[0]: r for r in rows}
        valid = {s.value for s in NodeStatus}
        seeds = [r[0] for r in rows if r[1] is None]
        if rows and len(seeds) != 1:
            problems.append(f"expected exactly one seed (node without parent), found {len(seeds)}: {seeds}")
        if rows:
            missing = sorted(set(range(max(by_id) + 1)) - set(by_id))
            if missing:
                problems.append(f"node ids are not consecutive; missing rows {missing}")
        for nid, parent, status, commit, campaign in rows:
            if status not in valid:
                problems.append(f"node {nid}: invalid status {status!r}")
            if campaign != self.campaign:
                problems.append(f"node {nid}: campaign {campaign!r} differs from the run's {self.campaign!r}")
            if parent is not None and parent not in by_id:
                problems.append(f"node {nid}: parent {parent} does not exist")
            elif parent is not None and parent >= nid:
                problems.append(f"node {nid}: parent {parent} is not older than the node")
            ref_sha = refs.get(nid)
            if ref_sha is None:
                problems.append(f"node {nid}: ref {node_ref(nid)} is missing")
            elif ref_sha != commit:
                problems.append(f"node {nid}: ref {node_ref(nid)} points at {ref_sha}, row says {commit}")
            git_parents = commit_parents.get(commit)
            if git_parents is None:
                problems.append(f"node {nid}: commit {commit!r} does not exist in the repository")
                continue
            if parent is None:
                if git_parents:
                    problems.append(f"node {nid}: seed commit {commit} has git parents {git_parents}")
            elif parent in by_id:
                want = by_id[parent][3]
                if git_parents[:1] != [want]:
                    got = git_parents[0] if git_parents else None
                    problems.append(
                        f"node {nid}: commit's git parent is {got}, expected node {parent}'s commit {want}"
                    )
        for nid in sorted(set(refs) - set(by_id)):
            problems.append(
                f"ref {node_ref(nid)} -> {refs[nid]} has no row (attempt in flight or killed before its row; "
                "recover() deletes it)"
            )
        return problems

    def recover(self) -> RecoveryReport:
        """Make a crashed run resumable: drop refs without rows and stale ref locks; list unfinished nodes.

        Node statuses are left alone: the caller re-evaluates (or fails) the in-flight ones.
        """
        lock = self._writable()
        with lock.mutex:
            report = RecoveryReport(removed_locks=self.repo.remove_stale_locks())
            ids = {r[0] for r in self.store.skeleton()}
            for nid in sorted(self.repo.node_ref_ids()):
                if nid not in ids:
                    self.repo.delete_ref(node_ref(nid))
                    report.deleted_refs.append(nid)
            report.in_flight = [n.id for n in self.store.all(status=(NodeStatus.PROPOSED, NodeStatus.EVALUATING))]
            return report


def _dot_escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"')


__all__ = ["Archive", "NotARunDir", "RecoveryReport", "NODE_REF_PREFIX"]
