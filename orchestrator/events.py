"""What the loop tells the parts that learn from the archive (program memory, operators with state
of their own): one event per node written, and per node read back on resume,
in id order."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Callable

from archive import Node, NodeStatus

#: a node id → its editable files as text; None when its agent.toml is broken
TextsOf = Callable[[int], "dict[str, str] | None"]

_EVALUATED = (NodeStatus.ADMITTED, NodeStatus.REJECTED, NodeStatus.INVALID)


@dataclass
class NodeEvent:
    node: Node
    parent: Node | None
    texts_of: TextsOf
    tree_of: Callable[[int], dict[str, bytes]]

    @property
    def sent_for_evaluation(self) -> bool:
        """Its program went (or is going) to the evaluator: not an invalid proposal or FM failure,
        which hold their parent's tree."""
        n = self.node
        return n.parent_id is None or bool(n.stages) or n.status in (NodeStatus.PROPOSED, NodeStatus.EVALUATING)

    @property
    def evaluated(self) -> bool:
        """A child whose evaluation finished with a verdict on the candidate."""
        return self.parent is not None and bool(self.node.stages) and self.node.status in _EVALUATED

    @cached_property
    def texts(self) -> dict[str, str] | None:
        """The node's editable files (read on first use: most observers never need them)."""
        return self.texts_of(self.node.id)

    @cached_property
    def tree(self) -> dict[str, bytes]:
        """Every file of the node's agent."""
        return self.tree_of(self.node.id)

    @cached_property
    def parent_texts(self) -> dict[str, str] | None:
        return None if self.parent is None else self.texts_of(self.parent.id)
