"""The archive of a run: every attempt as a SQLite row and a git commit (see archive.archive)."""

from .archive import Archive, NotARunDir, RecoveryReport
from .lock import ArchiveLocked
from .node import Node, NodeStatus

__all__ = ["Archive", "ArchiveLocked", "Node", "NodeStatus", "NotARunDir", "RecoveryReport"]
