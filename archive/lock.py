"""One writing process per run directory.

Why: node ids are allocated as max(id)+1 and refs are overwritten by name, so two
campaign processes writing one run would clobber each other's commits. An flock
on RUN_DIR/writer.lock is released by the kernel when the holder dies (kill -9
included), so a crash never leaves the run locked. Within one process, writers
of the same run share the lock and one re-entrant mutex (reference-counted).
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

LOCK_NAME = "writer.lock"


class ArchiveLocked(RuntimeError):
    """Another process has the run directory open for writing."""


class _Held:
    def __init__(self, fd: int):
        self.fd = fd
        self.refs = 0
        self.mutex = threading.RLock()  # serialises id allocation + commit + insert


_held: dict[str, _Held] = {}
_registry_lock = threading.Lock()


class WriterLock:
    """Acquired on construction; release() (idempotent) when the writer closes."""

    def __init__(self, run_dir: str | Path):
        self.key = os.path.realpath(run_dir)
        path = os.path.join(self.key, LOCK_NAME)
        with _registry_lock:
            held = _held.get(self.key)
            if held is None:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    other = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                    os.close(fd)
                    raise ArchiveLocked(
                        f"run directory {self.key} is already open for writing by another process (pid {other})"
                    ) from None
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                held = _held[self.key] = _Held(fd)
            held.refs += 1
        self._held: _Held | None = held
        self.mutex = held.mutex

    def release(self) -> None:
        with _registry_lock:
            held, self._held = self._held, None
            if held is None:
                return
            held.refs -= 1
            if held.refs == 0:
                del _held[self.key]
                os.close(held.fd)  # closing the fd drops the flock
