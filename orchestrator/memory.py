"""Program memory: which programs a campaign has already sent for evaluation, so that none is
evaluated twice. A proposal that rebuilds one, from any parent, is recorded as invalid and costs no
evaluation. Rebuilt from the nodes on resume; the loop feeds it every node as it is written.
"""

from __future__ import annotations

import hashlib
from typing import Callable

from evaluators.agent import MANIFEST
from orchestrator.events import NodeEvent


def program_digest(files: dict[str, str]) -> str:
    """A short digest of a program's editable files, to recognise a program the archive holds."""
    h = hashlib.sha256()
    for path in sorted(files):
        h.update(path.encode() + b"\0" + files[path].encode() + b"\0")
    return h.hexdigest()[:16]


class ProgramMemory:
    def __init__(self, manifest_of: Callable[[int], bytes | None]) -> None:
        self._manifest_of = manifest_of  # a node's agent.toml, to tell programs with other manifests apart
        self._programs: dict[str, int] = {}  # digest of the editable files → first node holding them

    def observe(self, event: NodeEvent) -> None:
        """Remember the program of a node sent for evaluation (invalid proposals and FM failures
        hold their parent's tree and are skipped)."""
        if not event.sent_for_evaluation:
            return
        texts = event.texts
        if texts is None:  # a child that broke its agent.toml: nothing to note
            return
        self._programs.setdefault(program_digest(texts), event.node.id)

    def duplicate_of(self, texts: dict[str, str], manifest: bytes | None) -> int | None:
        """The node that already holds this program (same editable files and manifest), if any."""
        other = self._programs.get(program_digest(texts))
        if other is not None and self._manifest_of(other) == manifest:
            return other
        return None
