"""Scratch directories that outlive no process: each dgm process keeps its temporary trees (stage
work dirs, agent copies, FM sockets, improver runs) under one root, ``/tmp/dgm.<pid>.<start>``,
named by its pid and its start time (so a reused pid is not mistaken for its owner).

A process killed with ``kill -9`` cannot clean up. The first process to need a scratch root
afterwards sweeps the roots of processes that are gone, disk-quota mounts included
(:func:`sandboxes.fs.remove_tree`), so a crash or a kill leaves nothing for long. Roots of live
processes, another campaign's included, are never touched.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import threading
from pathlib import Path

from . import quota
from .fs import remove_tree

log = logging.getLogger(__name__)

PREFIX = "dgm."
_NAME = re.compile(r"^dgm\.(\d+)\.(\d+)$")
_lock = threading.Lock()
_root: Path | None = None
_owner: int | None = None  # the pid that made _root (a forked child makes its own)


def _start_ticks(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot (/proc/PID/stat field 22); None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # the name may hold spaces and parens


def _base() -> Path:
    return Path(tempfile.gettempdir())


def root() -> Path:
    """This process's scratch root, created (0755: sandboxed uids must reach their work dirs and
    sockets) on first use, when the roots of dead processes are swept."""
    global _root, _owner
    with _lock:
        if _root is None or _owner != os.getpid() or not _root.is_dir():
            sweep()
            pid = os.getpid()
            path = _base() / f"{PREFIX}{pid}.{_start_ticks(pid)}"
            path.mkdir(mode=0o755, exist_ok=True)
            os.chmod(path, 0o755)  # whatever the umask
            _root, _owner = path, pid
        return _root


def mkdtemp(prefix: str) -> Path:
    """A fresh directory under this process's scratch root (0700, like ``tempfile.mkdtemp``)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir=root()))


def sweep(base: Path | None = None) -> list[Path]:
    """Remove the scratch roots whose process is gone; return them."""
    removed = []
    base = base or _base()
    try:
        entries = list(os.scandir(base))
    except OSError:
        return removed
    dead = []
    for entry in entries:
        m = _NAME.match(entry.name)
        if m and entry.is_dir(follow_symlinks=False) and _start_ticks(int(m.group(1))) != int(m.group(2)):
            dead.append(entry.path)
    if dead:
        try:  # the dead processes' quota mounts first: a root with a file system mounted in it stays
            quota.sweep()
        except OSError as e:
            log.warning("could not sweep stale quota mounts: %s", e)
    for path in dead:
        try:
            remove_tree(path)
            removed.append(Path(path))
        except OSError:  # another sweeper got there first, or a mount is busy: the next sweep retries
            log.warning("could not remove the scratch root %s of a dead process", path, exc_info=True)
    if removed:
        log.info("removed %d scratch roots left by dead processes", len(removed))
    return removed
