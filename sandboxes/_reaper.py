"""Subreaper wrapper: ``python -I -S _reaper.py COMMAND...`` runs COMMAND and leaves no descendant.

Only used by the ``process`` backend when no cgroup can hold the process tree (not root, or a
machine without writable cgroups). A child that double-forks or calls ``setsid()`` escapes its
process group, and once its parent exits it is re-parented to init, where nobody can find it. This
wrapper marks itself ``PR_SET_CHILD_SUBREAPER``, so such orphans are re-parented to *it* instead;
when COMMAND exits, or when the wrapper gets SIGTERM (the runner's timeout), it SIGKILLs every
remaining descendant, reaps them, and exits with COMMAND's status (re-raising its signal).

Standalone on purpose (stdlib only, no package import): it must start fast.
"""

import ctypes
import os
import signal
import sys
import time

PR_SET_CHILD_SUBREAPER = 36


class _Stop(Exception):
    pass


def _raise_stop(signum, frame):
    raise _Stop()


def _descendants(root: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    stat = f.read()
                kids.setdefault(int(stat[stat.rfind(b")") + 2:].split()[1]), []).append(int(name))
            except (OSError, IndexError, ValueError):
                continue
    out, stack = [], [root]
    while stack:
        for c in kids.get(stack.pop(), ()):
            out.append(c)
            stack.append(c)
    return out


def _reap_nohang() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def main(argv: list[str]) -> None:
    if not argv:
        print("usage: _reaper.py COMMAND [ARGS...]", file=sys.stderr)
        os._exit(2)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print(f"dgm-sandbox: prctl(PR_SET_CHILD_SUBREAPER) failed: errno {ctypes.get_errno()}",
              file=sys.stderr)
    signal.signal(signal.SIGTERM, _raise_stop)
    child = os.fork()
    if child == 0:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        try:
            os.execvp(argv[0], argv)
        except OSError as e:
            print(f"{argv[0]}: {e.strerror}", file=sys.stderr)
        os._exit(127)
    status = None
    try:
        while status is None:
            try:
                pid, st = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            if pid == child:
                status = st
    except _Stop:
        pass
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        left = _descendants(os.getpid())
        if not left:
            break
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if status is None and child in left:
            try:
                _, status = os.waitpid(child, 0)
            except ChildProcessError:
                pass
        _reap_nohang()
        time.sleep(0.002)
    _reap_nohang()
    if status is None:
        os._exit(137)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)
    os._exit(os.WEXITSTATUS(status))


if __name__ == "__main__":
    main(sys.argv[1:])
