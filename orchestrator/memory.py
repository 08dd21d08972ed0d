"""What a campaign has learnt from its archive, beyond scores: which programs it holds (so none is
evaluated twice) and which numbers FM edits turn (the knobs ``refine`` tunes).

Rebuilt from the nodes on resume; the loop feeds it each node as it is written.
"""

from __future__ import annotations

from typing import Callable

from archive import Node, NodeStatus
from evaluators.agent import MANIFEST
from orchestrator.mutation.refine import Direction, KnobBook, text_key

#: a node's editable files as text; raises ValueError for an agent whose manifest is broken
Texts = Callable[[int], dict[str, str]]
EVALUATED = (NodeStatus.ADMITTED, NodeStatus.REJECTED, NodeStatus.INVALID)


class CampaignMemory:
    def __init__(self, texts: Texts, files: Callable[[int], dict[str, bytes]]) -> None:
        self._texts, self._files = texts, files
        self._programs: dict[str, int] = {}  # digest of the editable files → first node holding them
        self._known: frozenset[str] | None = frozenset()  # the same digests, frozen for operators
        self._book = KnobBook()

    @property
    def known(self) -> frozenset[str]:
        """Digests of every program sent for evaluation (frozen again only after a new one)."""
        if self._known is None:
            self._known = frozenset(self._programs)
        return self._known

    @property
    def knobs(self) -> frozenset[Direction]:
        """The knobs refine may move, each with a direction not yet retired."""
        return self._book.active

    def note_program(self, node: Node) -> None:
        """Remember the program of a node sent for evaluation (invalid proposals and FM failures
        hold their parent's tree and are skipped)."""
        if node.parent_id is None or node.stages or node.status in (NodeStatus.PROPOSED, NodeStatus.EVALUATING):
            try:
                key = text_key(self._texts(node.id))
            except ValueError:  # a child that broke its agent.toml: nothing to note
                return
            if key not in self._programs:
                self._programs[key], self._known = node.id, None

    def learn(self, node: Node, parent: Node | None) -> None:
        """Learn from an evaluated child which numbers the FM turns and which nudges break programs
        or change nothing."""
        if parent is None or not node.stages or node.status not in EVALUATED:
            return
        try:
            origin, texts = self._texts(parent.id), self._texts(node.id)
        except ValueError:
            return
        valid = node.status != NodeStatus.INVALID
        self._book.observe(origin, texts, by_fm=bool(node.fm_model), valid=valid,
                           same_score=valid and node.score is not None and node.score == parent.score)

    def duplicate_of(self, texts: dict[str, str], manifest: bytes | None) -> int | None:
        """The node that already holds this program (same editable files and manifest), if any."""
        other = self._programs.get(text_key(texts))
        if other is not None and self._files(other).get(MANIFEST) == manifest:
            return other
        return None
