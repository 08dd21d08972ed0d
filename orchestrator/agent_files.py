"""A node's agent files, read from the archive on demand and cached (a node's code never changes):
the whole tree for a few recent nodes, and the editable files as text for every node read once."""

from __future__ import annotations

from archive import Archive
from evaluators.agent import MANIFEST, AgentManifestError, parse_manifest

#: whole trees kept in memory (evaluation jobs and children are built from them)
TREES_KEPT = 64


def editable_texts(files: dict[str, bytes], source: str) -> dict[str, str]:
    """An agent's editable files as text, as its manifest names them (AgentManifestError if broken)."""
    if MANIFEST not in files:
        raise AgentManifestError(f"{source} has no {MANIFEST}")
    manifest = parse_manifest(files[MANIFEST].decode(), files, source=f"{source}: {MANIFEST}")
    return {p: files[p].decode("utf-8", "replace") for p in manifest.editable}


class AgentFiles:
    def __init__(self, archive: Archive | None = None) -> None:
        self.archive = archive
        self._trees: dict[int, dict[str, bytes]] = {}
        self._texts: dict[int, dict[str, str]] = {}

    def tree(self, node_id: int) -> dict[str, bytes]:
        """Every file of the node's agent."""
        if node_id not in self._trees:
            self._trees[node_id] = self.archive.read_files(node_id)
            if len(self._trees) > TREES_KEPT:
                self._trees.pop(next(iter(self._trees)))
        return self._trees[node_id]

    def texts(self, node_id: int) -> dict[str, str]:
        """The node's editable files as text (AgentManifestError if its agent.toml is broken)."""
        if node_id not in self._texts:
            self._texts[node_id] = editable_texts(self.tree(node_id), f"node {node_id}")
        return self._texts[node_id]

    def texts_or_none(self, node_id: int) -> dict[str, str] | None:
        try:
            return self.texts(node_id)
        except (AgentManifestError, ValueError):
            return None

    def remember(self, node_id: int, tree: dict[str, bytes], texts: dict[str, str] | None) -> None:
        """A tree the loop just wrote: no need to read it back."""
        self._trees[node_id] = tree
        if texts is not None:
            self._texts[node_id] = texts
