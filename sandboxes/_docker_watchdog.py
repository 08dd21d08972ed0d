"""Host-side deadline enforcer for docker sandboxes: kills containers past their deadline even
when the dgm that started them is dead.

Every sandbox container carries a ``dgm.sandbox.deadline`` label (Unix time: start + wall clock
+ grace). This process, started detached by :func:`sandboxes.docker_backend.ensure_watchdog` in its
own session (so it does not die with dgm), checks once a second and force-removes any labelled
container past its deadline. One runs per machine (an ``flock`` on the lock file); it exits after
``idle_s`` without labelled containers. Stdlib only (``python -I -S``): it talks to the docker
socket directly.

Exit protocol without a gap: dgm labels and creates its container *before* it checks the lock,
and the watchdog releases the lock *before* its last look for containers; so either the
watchdog's last look sees the new container (and it takes the lock back), or dgm sees the lock
free and starts a new watchdog.
"""

from __future__ import annotations

import fcntl
import http.client
import json
import os
import socket
import sys
import time
import urllib.parse

SOCK = "/var/run/docker.sock"
DEADLINE_LABEL = "dgm.sandbox.deadline"
POLL_S = 1.0


class _Conn(http.client.HTTPConnection):
    def __init__(self) -> None:
        super().__init__("localhost", timeout=30)

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(30)
        s.connect(SOCK)
        self.sock = s


def _api(method: str, path: str) -> tuple[int, bytes]:
    c = _Conn()
    try:
        c.request(method, path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def scan(now: float | None = None) -> tuple[int, list[str]] | None:
    """(labelled containers, ids of those past their deadline), or None if docker is unreachable."""
    q = urllib.parse.quote(json.dumps({"label": [DEADLINE_LABEL]}))
    try:
        status, body = _api("GET", f"/containers/json?all=1&filters={q}")
    except OSError:
        return None
    if status != 200:
        return None
    now = time.time() if now is None else now
    containers = json.loads(body)
    expired = []
    for c in containers:
        try:
            if float((c.get("Labels") or {}).get(DEADLINE_LABEL, "inf")) < now:
                expired.append(c["Id"])
        except ValueError:
            continue
    return len(containers), expired


def reap(ids: list[str]) -> None:
    for cid in ids:
        try:
            _api("DELETE", f"/containers/{cid}?force=1&v=1")
        except OSError:
            pass


def _lock(path: str) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd
    except BlockingIOError:
        os.close(fd)
        return None


def main(lock_path: str, idle_s: float) -> int:
    fd = _lock(lock_path)
    if fd is None:
        return 0  # another watchdog is on duty
    idle_since = time.monotonic()
    while True:
        res = scan()
        if res is not None:
            count, expired = res
            reap(expired)
            if count:
                idle_since = time.monotonic()
        if time.monotonic() - idle_since > idle_s:
            os.close(fd)  # release first, then one last look (see the module doc)
            res = scan()
            if not res or not res[0]:
                return 0
            fd = _lock(lock_path)
            if fd is None:
                return 0  # a new watchdog took over
            idle_since = time.monotonic()
        time.sleep(POLL_S)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 60.0))
