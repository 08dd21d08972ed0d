"""A host uid per concurrent sandbox run, from a pool (``base`` .. ``base + size - 1``).

Per-uid kernel state is shared by every process of a uid: inotify instances (128), key quotas,
POSIX message queue bytes, ``RLIMIT_NPROC``. With one uid for all sandboxes, one candidate can use
it up for every other candidate running at the same time. Each run therefore leases a uid of its
own (gid = uid), held with an ``flock`` on ``<lock dir>/<uid>.lock``, so concurrent orchestrators on
one machine (and threads of one) never get the same uid; a crashed holder's lock goes with it.

Before each run the uid's user keyrings are emptied when ``/proc/key-users`` shows it has keys
(the seccomp filter and Docker's profile deny the key syscalls, so this is a net, not the wall).
A pool uid that some mounted file system names as ``resuid``/``resgid`` (allowed to use the blocks
reserved for root, as uid 65534 is on this machine's root fs) is refused.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from .base import SandboxError

log = logging.getLogger(__name__)

DEFAULT_BASE = 200_000
DEFAULT_SIZE = 64
LOCK_DIR = Path(os.environ.get("DGM_UID_LOCK_DIR", "/var/tmp/dgm-uids"))
_SETPRIV = shutil.which("setpriv", path="/usr/bin:/bin:/usr/sbin:/sbin")
# the system Python: a venv under /root is not reachable by a pool uid on the host
_HOST_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable

# keyctl(KEYCTL_CLEAR, KEY_SPEC_USER_KEYRING) and the user-session keyring, as the uid itself
# (root cannot clear another uid's keyring: key permissions do not yield to root).
_CLEAR_KEYS = ("import ctypes; l = ctypes.CDLL(None, use_errno=True)\n"
               "for ring in (-4, -5): l.syscall(250, 7, ring)\n")


def reserved_block_ids() -> set[int]:
    """uids/gids that mounted file systems let use their reserved blocks (``resuid=``/``resgid=``
    in a mount's super or per-mount options)."""
    ids = set()
    try:
        text = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return ids
    for line in text.splitlines():
        left, _, right = line.partition(" - ")
        lf, rf = left.split(), right.split()
        opts = (lf[5] if len(lf) > 5 else "") + "," + (rf[2] if len(rf) > 2 else "")
        for opt in opts.split(","):
            key, _, val = opt.partition("=")
            if key in ("resuid", "resgid") and val.isdigit():
                ids.add(int(val))
    return ids


def key_counts() -> dict[int, int]:
    """uid -> number of keys it owns (``/proc/key-users``; includes its keyrings once made)."""
    out = {}
    try:
        for line in Path("/proc/key-users").read_text().splitlines():
            uid, _, rest = line.partition(":")
            out[int(uid)] = int(rest.split()[1].split("/")[0])
    except (OSError, ValueError, IndexError):
        pass
    return out


class UidLease:
    def __init__(self, pool: "UidPool", uid: int, fd: int) -> None:
        self.pool, self.uid, self.gid, self._fd = pool, uid, uid, fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # drops the flock
            self._fd = None

    def __enter__(self) -> "UidLease":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class UidPool:
    """Lease uids ``base .. base+size-1``; :meth:`lease` blocks never: it raises when all are taken."""

    def __init__(self, base: int = DEFAULT_BASE, size: int = DEFAULT_SIZE,
                 lock_dir: Path = LOCK_DIR) -> None:
        if base < 1000 or size < 1 or base + size > 2**31 - 2:
            raise SandboxError(f"uid pool {base}+{size}: use unprivileged uids (e.g. 200000+64)")
        bad = reserved_block_ids() & set(range(base, base + size))
        if bad:
            raise SandboxError(f"uid pool {base}..{base + size - 1} contains {sorted(bad)}, which a "
                               "mounted file system lets use its reserved blocks (resuid/resgid): "
                               "choose another base")
        self.base, self.size, self.lock_dir = base, size, Path(lock_dir)
        self.lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._next = 0
        self._mutex = threading.Lock()
        self._cleared: dict[int, int] = {}  # uid -> key count right after our last clear

    def lease(self, prefer: int | None = None) -> UidLease:
        """A free uid: ``prefer`` if it is in the pool and free (the work directory's owner from
        an earlier run: no re-chown of its whole tree), else the next one round robin."""
        with self._mutex:
            start = self._next
            order = [self.base + (start + i) % self.size for i in range(self.size)]
            if prefer is not None and self.base <= prefer < self.base + self.size:
                order.remove(prefer)
                order.insert(0, prefer)
            for uid in order:
                fd = os.open(self.lock_dir / f"{uid}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue
                if uid != prefer:  # round robin: spread per-uid leftovers
                    self._next = (uid - self.base + 1) % self.size
                return UidLease(self, uid, fd)
        raise SandboxError(f"all {self.size} sandbox uids ({self.base}..{self.base + self.size - 1}) "
                           "are in use: more concurrent runs than the pool; pass a larger uid_pool")

    def clear_keys(self, uid: int) -> bool:
        """Empty ``uid``'s user keyrings if it has keys we have not seen after a clear. True if
        a clear ran."""
        n = key_counts().get(uid, 0)
        if n == 0 or self._cleared.get(uid) == n:
            return False
        if not _SETPRIV or os.geteuid() != 0:
            return False
        subprocess.run([_SETPRIV, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--",
                        _HOST_PYTHON, "-I", "-S", "-c", _CLEAR_KEYS],
                       env={}, stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
        self._cleared[uid] = key_counts().get(uid, 0)
        return True

    def passwd_lines(self) -> tuple[list[str], list[str]]:
        """/etc/passwd and /etc/group lines naming the pool's uids (``getpwuid`` must work)."""
        pw = [f"dgm-sbx{u - self.base}:x:{u}:{u}:dgm sandbox:/tmp:/usr/sbin/nologin"
              for u in range(self.base, self.base + self.size)]
        gr = [f"dgm-sbx{u - self.base}:x:{u}:" for u in range(self.base, self.base + self.size)]
        return pw, gr


_pools: dict[tuple[int, int], UidPool] = {}
_pools_lock = threading.Lock()


def pool(base: int = DEFAULT_BASE, size: int = DEFAULT_SIZE) -> UidPool:
    """One pool object per (base, size) per process (every sandbox instance shares it)."""
    with _pools_lock:
        if (base, size) not in _pools:
            _pools[(base, size)] = UidPool(base, size)
        return _pools[(base, size)]
