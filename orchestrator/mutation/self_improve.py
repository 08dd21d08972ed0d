"""``self``: the parent's own improver writes its child (the Gödel half).

The agent's manifest names an improver (``self_improve = "improve.py"``). This operator copies the
parent's whole tree into a fresh sandbox work directory, puts the parent's *public* evaluation
record beside it (``record.json``: task, score, per-stage public results and feedback, recent failed
children; never private metrics or evaluator files), and runs the improver there. The improver
reaches the model only through an :class:`~orchestrator.fm.proxy.FMProxy` on a Unix socket bound
into the sandbox: nothing inside holds a key, every call is counted, and calls past the attempt's
(or the campaign's) token and call budget are refused. The child is the tree the improver leaves
behind; it may have changed any file, its own code included, so a better improver is inherited.

Work directory layout (inside the sandbox, at the same host path)::

    <work>/agent/        the parent's tree, which the improver edits in place
    <work>/record.json   the public evaluation record
    <sock>/fm.sock       the FM proxy (a separate read-only directory)

The improver gets ``DGM_AGENT``, ``DGM_RECORD``, ``DGM_FM_SOCKET``, ``DGM_SEED`` and
``DGM_MAX_TOKENS`` in its environment and nothing else of the orchestrator's.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

from evaluators.agent import MANIFEST, AgentManifestError, parse_manifest
from orchestrator.executor import write_tree
from orchestrator.fm.proxy import Budget, FMProxy
from orchestrator.mutation.operators import AttemptUsage, Operator, Proposal, Sampling
from orchestrator.mutation.parsing import ProposalInvalid, check_python
from orchestrator.mutation.prompts import ProposalContext
from sandboxes import scratch
from sandboxes.fs import remove_tree

#: what the improver may leave behind: files, total bytes (caches are ignored)
MAX_FILES = 200
MAX_TREE_BYTES = 8 << 20
IGNORED = {"__pycache__", ".pytest_cache", ".git"}
OUTPUT_TAIL = 4000


class SelfImproveOperator(Operator):
    name = "self"

    def __init__(self, limits: Any = None, sandbox_backend: str = "auto", trusted: bool = False,
                 quota: dict | None = None) -> None:
        from orchestrator.config import ImproverLimits

        self.limits = limits or ImproverLimits()
        self.max_calls = self.limits.calls  # an improver run may make this many model calls
        self.sandbox_backend, self.trusted = sandbox_backend, trusted
        self.quota = quota or {}  # disk / inodes of the improver's work directory
        self._sandbox = None
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, cfg: Any) -> "SelfImproveOperator":
        quota = {} if cfg.sandbox.backend == "process" else {"disk": cfg.sandbox.disk, "inodes": cfg.sandbox.inodes}
        return cls(cfg.mutation.improver, cfg.sandbox.backend, cfg.sandbox.trusted, quota)

    def sandbox(self):
        """One sandbox for every improver run of the campaign (built on first use)."""
        from sandboxes.factory import make_sandbox

        with self._lock:
            if self._sandbox is None:
                self._sandbox = make_sandbox(self.sandbox_backend, trusted=self.trusted, **self.quota)
            return self._sandbox

    def propose(self, ctx: ProposalContext, fm: Any, sampling: Sampling) -> Proposal:
        proposal = Proposal(self.name, "", None)
        try:
            manifest = parse_manifest(ctx.tree[MANIFEST].decode(), ctx.tree, source=f"node {ctx.parent_id}: {MANIFEST}")
        except (KeyError, AgentManifestError) as e:
            proposal.error = f"the parent's manifest is unusable: {e}"
            return proposal
        if not manifest.self_improve:
            proposal.error = f"node {ctx.parent_id} has no improver ({MANIFEST} names no self_improve)"
            return proposal
        if manifest.self_improve not in ctx.tree:
            proposal.error = f"node {ctx.parent_id}'s improver {manifest.self_improve!r} is not a file of the agent"
            return proposal
        proposal.target = manifest.self_improve
        tokens = self.limits.tokens if sampling.tokens_left is None else max(0, min(self.limits.tokens, sampling.tokens_left))
        calls = self.limits.calls if sampling.calls_left is None else min(self.limits.calls, sampling.calls_left)
        budget = Budget(limit_calls=calls, limit_tokens=tokens)
        tmp = scratch.mkdtemp("self-")
        try:
            work, sock_dir = Path(tmp) / "work", Path(tmp) / "fm"
            agent = work / "agent"
            write_tree(ctx.tree, agent)
            (work / "record.json").write_text(json.dumps(ctx.record, indent=1, default=str))
            sock_dir.mkdir()
            os.chmod(tmp, 0o755)  # the sandbox's unprivileged uid must reach the socket
            os.chmod(sock_dir, 0o755)
            proxy = FMProxy(fm, sock_dir / "fm.sock", node_id=f"parent-{ctx.parent_id}-self", budget=budget,
                            max_tokens_cap=sampling.max_tokens, default_temperature=sampling.temperature)
            with proxy:
                result = self._run(manifest.self_improve, work, sock_dir, sampling)
            usage, transcript = self._usage(proxy, fm), proxy.transcript()
            proposal.completion = usage
            proposal.prompt = json.dumps(transcript, indent=1)
            proposal.response = _tail(result)
            if result.limit_hit or result.returncode != 0:
                proposal.error = f"the improver {result.describe()}: {_last_line(result.stderr or result.stdout)}"
                return proposal
            try:
                child = read_tree(agent)
            except ProposalInvalid as e:
                proposal.error = str(e)
                return proposal
        finally:
            # without recursion (the improver may leave a tree of any depth); the work dir first, so
            # that its disk-quota file system, if the sandbox mounted one there, is released
            remove_tree(Path(tmp) / "work")
            remove_tree(tmp)
        self._accept(ctx, child, proposal, usage, silent=not (result.stdout.strip() or result.stderr.strip()))
        return proposal

    def _run(self, improver: str, work: Path, sock_dir: Path, sampling: Sampling):
        from sandboxes.base import Limits, python_ro_paths

        limits = Limits(wall_s=self.limits.wall_s, cpu_s=self.limits.cpu_s, memory_mb=self.limits.memory_mb,
                        pids=64, file_mb=16)
        env = {
            "DGM_AGENT": str(work / "agent"), "DGM_RECORD": str(work / "record.json"),
            "DGM_FM_SOCKET": str(sock_dir / "fm.sock"), "DGM_SEED": str(sampling.seed),
            "DGM_MAX_TOKENS": str(sampling.max_tokens), "HOME": str(work), "PYTHONDONTWRITEBYTECODE": "1",
        }
        # -E -s (not -I): the improver imports its own helpers from its directory
        argv = [sys.executable, "-E", "-s", str(work / "agent" / improver)]
        return self.sandbox().run(argv, work, limits, env=env, ro_paths=[*python_ro_paths(), sock_dir])

    @staticmethod
    def _usage(proxy: FMProxy, fm: Any) -> AttemptUsage:
        t = proxy.totals()
        return AttemptUsage(getattr(fm, "model", "") if t.calls else "", t.prompt_tokens, t.completion_tokens,
                             t.cost_usd, 0.0, t.calls, proxy.refused)

    @staticmethod
    def _accept(ctx: ProposalContext, child: dict[str, bytes], proposal: Proposal, usage: AttemptUsage,
                silent: bool = False) -> None:
        """Make the proposal valid when the child is a usable agent that differs from its parent."""
        if child == ctx.tree:
            proposal.error = "the improver left the tree unchanged"
            if not usage.calls and silent:
                # e.g. an improver that lost its `if __name__ == "__main__":` guard: it no longer runs
                proposal.error += (" without a model call or any output (does its improver still run? "
                                   "see the parent's diff)")
            return
        try:
            parse_manifest(child.get(MANIFEST, b"").decode("utf-8", "replace"), child, source=f"the child's {MANIFEST}")
        except AgentManifestError as e:
            proposal.error = f"the improver broke the manifest: {e}"
            return
        changed = {p: b for p, b in child.items() if ctx.tree.get(p) != b}
        removed = sorted(set(ctx.tree) - set(child))
        try:
            for path, data in changed.items():
                if path.endswith(".py"):
                    check_python(path, data.decode("utf-8", "replace"))
        except ProposalInvalid as e:
            proposal.error = f"the improver left code that does not compile: {e}"
            return
        proposal.tree = child
        proposal.files = {p: b.decode("utf-8", "replace") for p, b in changed.items()}
        what = ", ".join(sorted(changed)) + (f"; removed {', '.join(removed)}" if removed else "")
        proposal.summary = f"self: the improver changed {what} ({usage.calls} FM calls)"


def read_tree(root: Path) -> dict[str, bytes]:
    """An agent's tree (the one an improver left, or one on disk), read without following links,
    within size limits; ProposalInvalid says what is wrong with it."""
    out: dict[str, bytes] = {}
    total = 0
    stack = [root]
    while stack:  # iterative: a deep tree left by the improver cannot exhaust the stack
        top = stack.pop()
        with os.scandir(top) as entries:
            for entry in entries:
                if entry.name in IGNORED:
                    continue
                rel = str(Path(entry.path).relative_to(root))
                if entry.is_symlink():
                    raise ProposalInvalid(f"the improver left a symbolic link: {rel}")
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
                    if len(out) >= MAX_FILES or total > MAX_TREE_BYTES:
                        raise ProposalInvalid(f"the improver left more than {MAX_FILES} files or {MAX_TREE_BYTES >> 20} MiB")
                    with open(entry.path, "rb", opener=lambda p, f: os.open(p, f | os.O_NOFOLLOW)) as fh:
                        out[rel] = fh.read()
                else:
                    raise ProposalInvalid(f"the improver left something that is not a file: {rel}")
    return out


def _tail(result) -> str:
    text = f"[exit] {result.describe()}\n[stdout]\n{result.stdout[-OUTPUT_TAIL:]}\n[stderr]\n{result.stderr[-OUTPUT_TAIL:]}"
    return text


def _last_line(text: str) -> str:
    """The improver's last words, cut at 300 characters: for a traceback the exception line (as
    ``archive.node.what_broke`` reads it), otherwise the last line it printed. Unlike ``what_broke``,
    which takes the first line of an error message, the latest output of a program that was stopped or
    exited says most about where it stopped."""
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(no output)"
