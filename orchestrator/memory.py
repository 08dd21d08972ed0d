"""Program memory: which programs a campaign has already sent for evaluation, so that none is
evaluated twice. A proposal that rebuilds one, from any parent, is recorded as invalid and costs no
evaluation. Rebuilt from the nodes on resume; the loop feeds it every node as it is written.
"""

from __future__ import annotations

import ast
import hashlib

from evaluators import syntax
from orchestrator.events import NodeEvent


def program_digest(files: dict[str, str]) -> str:
    """A short digest of a program's editable files, to recognise a program the archive holds."""
    h = hashlib.sha256()
    for path in sorted(files):
        h.update(path.encode() + b"\0" + files[path].encode() + b"\0")
    return h.hexdigest()[:16]


def _content(path: str, data: bytes) -> bytes:
    """What a file contributes to a digest. Python that parses counts by its syntax tree, so an edit
    of comments, layout or a literal's spelling (``1e-2`` → ``0.01``) is the same program: a small
    model writes such edits often, and evaluating them again measures only noise."""
    if path.endswith(".py"):
        try:
            return ast.dump(syntax.parse(data)).encode()
        except (SyntaxError, ValueError):
            pass
    return data


def tree_digest(tree: dict[str, bytes]) -> str:
    """A digest of an agent's whole tree: its program, its manifest and its improver."""
    h = hashlib.sha256()
    for path in sorted(tree):
        h.update(path.encode() + b"\0" + hashlib.sha256(_content(path, tree[path])).digest())
    return h.hexdigest()[:16]


class ProgramMemory:
    def __init__(self) -> None:
        self._trees: dict[str, int] = {}  # digest of a whole agent tree → first node holding it

    def observe(self, event: NodeEvent) -> None:
        """Remember the tree of a node sent for evaluation (invalid proposals and FM failures hold
        their parent's tree and are skipped)."""
        if event.sent_for_evaluation:  # the stored digest spares reading the tree back on resume
            self._trees.setdefault(event.node.digest or tree_digest(event.tree), event.node.id)

    def duplicate_of(self, tree: dict[str, bytes]) -> int | None:
        """The node that already holds this agent (every file the same, Python up to comments and
        layout), if any. The whole tree counts, not only the evaluated program: a child whose
        improver alone changed is new."""
        return self._trees.get(tree_digest(tree))
