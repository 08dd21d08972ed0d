"""Spawn, limit, watch, kill and classify one sandboxed process tree (shared by every backend).

A backend only decides *what* to exec (the bare command, or ``bwrap ... -- command``); this module
does the rest the same way for all of them:

* the child gets its own session (``start_new_session``) so its whole process group can be killed;
* rlimits (CPU seconds, file size, core dumps off, address space only when no memory cgroup is
  available, nproc only as a fallback for the pids cgroup) are set by a ``prlimit`` exec in front of
  the command, not in ``preexec_fn`` (see ``_wrap``: a Python preexec forces a full fork of a
  possibly huge orchestrator); ``preexec_fn`` is only the fallback when prlimit is missing;
* when cgroups are writable the child joins a per-run cgroup *before it execs* (so nothing it forks
  can escape accounting), and the cgroup is used to kill every descendant at the end, including
  ones that called ``setsid()``; without cgroups the ``process`` backend runs the command under a
  subreaper wrapper (``_reaper.py``) that adopts and kills such orphans, and bwrap relies on its
  pid namespace (everything in it dies with its init);
* stdout/stderr go to unnamed temp files outside the work directory (never pipes: a child that
  floods a pipe would block, and reading it would need threads) and only their last
  ``limits.output_bytes`` are kept;
* the wait uses a pidfd, so a run returns as soon as the child exits, with no polling delay;
* the reason for a kill is classified into one of the ``LIMIT_*`` names.
"""

from __future__ import annotations

import logging
import os
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from . import _cgroups
from .base import (
    LIMIT_CPU,
    LIMIT_FILE_SIZE,
    LIMIT_MEMORY,
    LIMIT_OUTPUT,
    LIMIT_PIDS,
    LIMIT_TIMEOUT,
    Limits,
    RunResult,
    SandboxError,
)

log = logging.getLogger(__name__)

DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
# How often the wait loop wakes while a limit must be polled (tree CPU time, /proc tracking).
POLL_S = 0.05
REAPER_GRACE_S = 2.0  # how long the subreaper wrapper gets to kill its adopted orphans
from ._reaper import _descendants as _reaper_descendants  # noqa: E402


# ---- every run of this process, so that an interrupted campaign can end them at once ---------
# A campaign's evaluation threads are joined when the process exits, so without this Ctrl-C waits
# for every sandboxed run in flight (minutes). Each entry holds a pidfd, which names exactly that
# process even if its pid is reaped and reused meanwhile.
_live_lock = threading.Lock()
_live: dict[int, tuple[int, object, bool]] = {}  # pid -> (pidfd, cgroup or None, under the reaper)
_stopping = threading.Event()


def stop_all() -> int:
    """End every sandboxed run of this process now and refuse new ones (Ctrl-C on a campaign).

    Each run then returns as a killed run, through its usual clean-up. Returns how many runs it
    ended. :func:`allow_runs` undoes the refusal, for a process that goes on.
    """
    _stopping.set()
    with _live_lock:
        for pidfd, cg, reaper in _live.values():
            try:  # the reaper wrapper kills the descendants it adopted on SIGTERM
                signal.pidfd_send_signal(pidfd, signal.SIGTERM if reaper else signal.SIGKILL)
            except ProcessLookupError:
                pass
            if cg is not None:
                cg.kill_all()
        return len(_live)


def stopping() -> bool:
    """Whether :func:`stop_all` was called (backends that wait in their own loop poll this)."""
    return _stopping.is_set()


def refuse_if_stopping() -> None:
    """Raise SandboxError once :func:`stop_all` was called (for backends that start runs themselves)."""
    if _stopping.is_set():
        raise SandboxError("this process is stopping (interrupted): it starts no new sandboxed run")


def allow_runs() -> None:
    """Take back :func:`stop_all`'s refusal of new runs."""
    _stopping.clear()


def _track(pid: int, cg, reaper: bool) -> int | None:
    """Register a started run for :func:`stop_all`; if it was called meanwhile, end the run now."""
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None
    with _live_lock:
        _live[pid] = (pidfd, cg, reaper)
    if _stopping.is_set():
        stop_all()
    return pidfd


def _untrack(pid: int, pidfd: int | None) -> None:
    if pidfd is None:
        return
    with _live_lock:
        _live.pop(pid, None)
    os.close(pidfd)

_REAPER = str(Path(__file__).with_name("_reaper.py"))

_EFBIG_MARKERS = ("File too large", "[Errno 27]", "File size limit exceeded")
# What programs print when fork() fails with EAGAIN (the pids limit when no cgroup can tell us).
_PIDS_MARKERS = ("Cannot fork", "fork: Resource temporarily unavailable", "fork: retry",
                 "[Errno 11] Resource temporarily unavailable", "can't start new thread")
_MEMORY_MARKERS = ("MemoryError", "Cannot allocate memory", "std::bad_alloc", "out of memory",
                   "failed to allocate", "DefaultCPUAllocator: can't allocate memory")


def child_env(env: Mapping[str, str] | None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The child's whole environment: ``env`` (never ``os.environ``) plus a PATH default."""
    out = {str(k): str(v) for k, v in (env or {}).items()}
    for k, v in out.items():
        if "\0" in k or "\0" in v or "=" in k or not k:
            raise SandboxError(f"environment variable {k!r}: names must be non-empty, without '=' "
                               "or NUL, and values without NUL")
    out.update(extra or {})
    out.setdefault("PATH", DEFAULT_PATH)
    return out


@dataclass
class Spawn:
    """What a backend wants executed on the host."""

    argv: list[str]
    cwd: str
    env: dict[str, str]
    #: True when ``argv`` is a wrapper (bwrap, docker) that reports "inner command died of signal N"
    #: as exit code 128+N.
    wrapped: bool = False
    #: extra rlimits for the spawned process, e.g. RLIMIT_NPROC as a pids fallback
    rlimits: dict[int, tuple[int, int]] = field(default_factory=dict)
    #: without a cgroup, run the command under the subreaper wrapper (``_reaper.py``) so that
    #: detached descendants can still be found and killed; False when the backend has its own
    #: way (bwrap: the pid namespace dies with its init)
    needs_reaper: bool = True
    #: on a kill, wait for the spawned process's own children to die too (bwrap: its pid-namespace
    #: init, whose exit the kernel delays until every process in the namespace is gone)
    wait_children_on_kill: bool = False
    #: SIGKILL the command if the orchestrator dies (``setpriv --pdeathsig``); bwrap has its own
    #: ``--die-with-parent``. Safe with thread pools: the spawning thread waits in run() until the
    #: command ends, so it cannot exit first.
    pdeathsig: bool = False
    #: (info read fd, block write fd) for bwrap's ``--info-fd``/``--block-fd``: the sandbox pauses
    #: after its mounts, the runner moves it into the cgroup and sets its rlimits, then releases it.
    #: The cgroup move's first write waits for an RCU grace period (10-20 ms measured here); this
    #: way that wait overlaps with bwrap's own set-up instead of adding to it.
    handshake: tuple[int, int] | None = None
    pass_fds: tuple[int, ...] = ()
    umask: int = 0o022


class _Capture:
    """One stream captured to an unnamed temp file; read back as its last N bytes."""

    def __init__(self, directory: str | None) -> None:
        self.file = tempfile.TemporaryFile(dir=directory, prefix="dgm-sandbox-")

    def tail(self, n: int) -> tuple[str, int]:
        f = self.file
        f.flush()
        size = os.fstat(f.fileno()).st_size
        f.seek(max(0, size - n))
        data = f.read(n) if n > 0 else b""
        f.close()
        return data.decode("utf-8", "replace"), size


def _rlimits(limits: Limits, *, memory_by_rlimit: bool) -> list[tuple[int, tuple[int, int]]]:
    rl = [(resource.RLIMIT_CORE, (0, 0))]
    if limits.cpu_s is not None:
        # Soft limit sends SIGXCPU; the hard one (1 s later) SIGKILLs a child that ignores it.
        rl.append((resource.RLIMIT_CPU, (int(limits.cpu_s), int(limits.cpu_s) + 1)))
    if limits.file_mb is not None:
        b = int(limits.file_mb) * 1024 * 1024
        rl.append((resource.RLIMIT_FSIZE, (b, b)))
    if memory_by_rlimit and limits.memory_mb is not None:
        b = int(limits.memory_mb) * 1024 * 1024
        rl.append((resource.RLIMIT_AS, (b, b)))
    return rl


# Spawning: the orchestrator may be a big process (torch imported: GBs mapped), and a Python
# ``preexec_fn`` forces a full fork() of it (measured: 58 ms with 1.5 GB resident, against 8 ms).
# So the child is set up by a tiny exec chain instead, which lets subprocess use vfork:
#   /bin/sh -c JOIN sh CGROUP.procs... -- prlimit --cpu=.. --fsize=.. -- COMMAND...
# sh writes its own pid into each cgroup (before anything else runs), then execs prlimit, which
# sets the rlimits and execs the command: one process throughout, already limited and accounted.
_SH = "/bin/sh"
_PRLIMIT = shutil.which("prlimit", path="/usr/bin:/bin:/usr/sbin:/sbin")
_WRAPPER_OK = bool(_PRLIMIT) and os.access(_SH, os.X_OK)
_SETPRIV = shutil.which("setpriv", path="/usr/bin:/bin:/usr/sbin:/sbin")
_JOIN_FAILED = 125
_JOIN_MARKER = "dgm-sandbox: cannot join cgroup"
_JOIN = ('while [ "$1" != -- ]; do echo $$ > "$1" || { echo "%s $1" >&2; exit %d; }; shift; done; '
         'shift; exec "$@"') % (_JOIN_MARKER, _JOIN_FAILED)
_PRLIMIT_NAMES = {resource.RLIMIT_CORE: "core", resource.RLIMIT_CPU: "cpu", resource.RLIMIT_FSIZE: "fsize",
                  resource.RLIMIT_AS: "as", resource.RLIMIT_NPROC: "nproc"}


def _wrap(argv: list[str], procs_files: list[Path], rl: list[tuple[int, tuple[int, int]]],
          cg_fds: list[int]):
    """(argv to spawn, preexec_fn or None): the exec-chain wrapper, or preexec as the fallback."""
    if _WRAPPER_OK and all(r in _PRLIMIT_NAMES for r, _ in rl):
        prefix: list[str] = []
        if procs_files:
            prefix = [_SH, "-c", _JOIN, "dgm-sandbox", *map(str, procs_files), "--"]
        if rl:
            prefix += [_PRLIMIT, *(f"--{_PRLIMIT_NAMES[r]}={s}:{h}" for r, (s, h) in rl), "--"]
        return prefix + argv, None

    def preexec() -> None:  # runs in the child between fork and exec: keep it to syscalls
        for fd in cg_fds:
            os.write(fd, b"0")
        for res, val in rl:
            resource.setrlimit(res, val)

    return argv, preexec


def _signal_of(status: int, wrapped: bool) -> tuple[int, int | None]:
    """(returncode as subprocess reports it, signal that ended the command or None)."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return -sig, sig
    rc = os.WEXITSTATUS(status)
    if wrapped and 128 < rc < 128 + 65:
        return rc, rc - 128
    return rc, None


def execute(
    spawn: Spawn,
    limits: Limits,
    *,
    backend: str,
    t0: float,
    use_cgroups: bool | None = None,
    capture_dir: str | None = None,
    extra: dict | None = None,
) -> RunResult:
    """Run ``spawn`` under ``limits``; always leaves no process and no cgroup behind."""
    if _stopping.is_set():
        for fd in (*spawn.pass_fds, *(spawn.handshake or ())):
            os.close(fd)
        refuse_if_stopping()
    support = _cgroups.support() if use_cgroups is not False else None
    if use_cgroups and support is None:
        raise SandboxError("cgroups were required but none is writable here: run as root on a "
                           "machine with cgroup v1 controllers or a delegated cgroup v2 subtree, or "
                           "pass cgroups=None to fall back to rlimits")
    cg: _cgroups.RunCgroup | None = None
    if support is not None:
        try:
            cg = support.create(limits.memory_mb, limits.pids, getattr(limits, "cpus", None))
        except OSError as e:
            log.warning("could not create a cgroup (%s); falling back to rlimits", e)
            cg = None
    memory_by_cgroup = cg is not None and "memory_mb" in cg.limits_set
    rl = _rlimits(limits, memory_by_rlimit=not memory_by_cgroup)
    if not (cg is not None and "pids" in cg.limits_set):
        rl.extend(spawn.rlimits.items())
    info: dict = {"cgroup": (f"v{cg.version}:" + ",".join(sorted(cg.dirs))) if cg else None,
                  "cgroup_id": cg.run_id if cg else None,
                  "memory_enforced_by": ("cgroup" if memory_by_cgroup else
                                         "rlimit_as" if limits.memory_mb else None)}
    info.update(extra or {})

    cg_fds: list[int] = []
    out = err = None
    proc = None
    tracked = None
    reaper = False
    try:
        handshake = spawn.handshake is not None
        if cg is not None and not _WRAPPER_OK and not handshake:
            cg_fds = [os.open(p, os.O_WRONLY | os.O_CLOEXEC) for p in cg.procs_files()]
        out, err = _Capture(capture_dir), _Capture(capture_dir)

        reaper = cg is None and spawn.needs_reaper
        inner = [sys.executable, "-I", "-S", _REAPER, *spawn.argv] if reaper else spawn.argv
        info["reaper"] = reaper
        if spawn.pdeathsig and _SETPRIV:
            inner = [_SETPRIV, "--pdeathsig", "KILL", "--", *inner]
        if handshake:  # limits are applied to the paused sandbox below, not by a wrapper
            argv, preexec = inner, None
        else:
            argv, preexec = _wrap(inner, cg.procs_files() if cg is not None else [], rl, cg_fds)
        try:
            proc = subprocess.Popen(
                argv, cwd=spawn.cwd, env=spawn.env, stdin=subprocess.DEVNULL,
                stdout=out.file, stderr=err.file, start_new_session=True, close_fds=True,
                preexec_fn=preexec, umask=spawn.umask, pass_fds=spawn.pass_fds,
            )
        except (OSError, subprocess.SubprocessError) as e:
            for fd in spawn.handshake or ():
                os.close(fd)
            return RunResult(None, "", f"could not start {spawn.argv[0]!r}: {e}",
                             time.monotonic() - t0, None, backend,
                             time.monotonic() - t0, info)
        finally:
            for fd in cg_fds:
                os.close(fd)
            cg_fds = []
            for fd in spawn.pass_fds:  # the child holds its ends now
                os.close(fd)
        if handshake:
            _release_paused(proc.pid, spawn.handshake, cg, rl, t0 + limits.wall_s)
        # only once the whole tree is in its cgroup: a kill during bwrap's handshake could let the
        # paused namespace go on after its cgroup move was skipped
        tracked = _track(proc.pid, cg, reaper)
        spawned = time.monotonic()
        status, rusage, timed_out, cpu_killed = _wait(proc, limits, cg, spawned, reaper,
                                                      spawn.wait_children_on_kill)
        wall = time.monotonic() - spawned
        rc, sig = _signal_of(status, spawn.wrapped)
        proc.returncode = rc  # we reaped it ourselves (wait4 for rusage)
        stdout, out_size = out.tail(limits.output_bytes)
        stderr, err_size = err.tail(limits.output_bytes)
        out = err = None
        if rc == _JOIN_FAILED and _JOIN_MARKER in stderr:
            raise SandboxError(f"could not put the sandboxed process into its cgroup: {stderr.strip()}"
                               " - run as root, or pass cgroups=False to use rlimits only")

        cpu_used = rusage.ru_utime + rusage.ru_stime if rusage else 0.0
        tree_cpu = cg.cpu_seconds() if cg else None
        info.update(stdout_bytes=out_size, stderr_bytes=err_size, cpu_s=round(max(cpu_used, tree_cpu or 0), 3),
                    max_rss_mb=round(rusage.ru_maxrss / 1024, 1) if rusage else None)
        if cg is not None:
            info.update(oom_kills=cg.oom_kills(), pids_refused=cg.pids_exhausted(),
                        peak_memory_mb=cg.peak_memory_mb())
        limit = _classify(limits, rc=rc, sig=sig, timed_out=timed_out, cpu_killed=cpu_killed,
                          cpu_used=max(cpu_used, tree_cpu or 0.0), cg=cg, stderr=stderr,
                          stream_sizes=(out_size, err_size))
        return RunResult(rc, stdout, stderr, wall, limit, backend, spawned - t0, info)
    finally:
        if proc is not None:
            _untrack(proc.pid, tracked)
        if proc is not None and proc.returncode is None:  # interrupted (KeyboardInterrupt, bug)
            _kill_tree(proc.pid, cg, reaper)
            try:
                os.waitpid(proc.pid, 0)
            except ChildProcessError:
                pass
            proc.returncode = -signal.SIGKILL
        for fd in cg_fds:
            os.close(fd)
        for c in (out, err):
            if c is not None:
                c.file.close()
        if cg is not None:
            cg.remove()


# one walk of /proc for both: the reaper is standalone (stdlib only), so the package imports it
_descendants = _reaper_descendants


def _release_paused(pid: int, handshake: tuple[int, int], cg, rl, deadline: float) -> None:
    """Wait for bwrap's info (it has cloned its namespace init, which then pauses on the block
    fd), put both processes in the run's cgroup, set the rlimits on them, and let it go on.

    Nothing untrusted runs before the release: the command is forked by the paused init only
    after it. If bwrap fails before pausing, the pipe just closes and the run reports its error.
    """
    info_r, block_w = handshake
    try:
        if cg is not None:  # start the slow first cgroup move now, while bwrap sets up
            try:
                for path in cg.procs_files():
                    with open(path, "w") as f:
                        f.write(str(pid))
            except ProcessLookupError:
                pass
            except OSError as e:
                raise SandboxError(f"could not move the sandbox into its cgroup: {e} - run as "
                                   "root, or pass cgroups=False") from e
        poller = select.poll()
        poller.register(info_r, select.POLLIN | select.POLLHUP)
        data = b""
        while b"}" not in data:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not poller.poll(max(1, int(remaining * 1000))):
                return  # timed out: the wait loop will kill it
            chunk = os.read(info_r, 4096)
            if not chunk:
                return  # bwrap exited before its set-up finished
            data += chunk
        procs = [pid, *_descendants(pid)]
        try:
            if cg is not None:
                for path in cg.procs_files():
                    with open(path, "w") as f:
                        for p in procs:
                            try:
                                f.write(str(p))
                                f.flush()
                            except ProcessLookupError:
                                pass
            for p in procs:
                for res, val in rl:
                    try:
                        resource.prlimit(p, res, val)
                    except ProcessLookupError:
                        pass
        except OSError as e:
            raise SandboxError(f"could not move the sandbox into its cgroup or set its rlimits: {e}"
                               " - run as root, or pass cgroups=False") from e
        os.write(block_w, b"go")
    finally:
        os.close(info_r)
        os.close(block_w)


def _children_pidfds(pid: int) -> list[int]:
    fds = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    stat = f.read()
                if int(stat[stat.rfind(b")") + 2:].split()[1]) == pid:
                    fds.append(os.pidfd_open(int(name)))
            except (OSError, IndexError, ValueError):
                continue
    return fds


def _kill_tree(pid: int, cg: _cgroups.RunCgroup | None, reaper: bool, pidfd: int | None = None,
               wait_children: bool = False) -> None:
    """SIGKILL the child's process group and everything in its cgroup.

    Called while the child is still unreaped (a zombie at worst), so its pid - which is also its
    process-group id - cannot have been recycled. Under the subreaper wrapper the wrapper is asked
    first (SIGTERM) to kill the descendants it adopted: SIGKILLing it would orphan them.
    """
    if reaper:
        try:
            os.kill(pid, signal.SIGTERM)
            if pidfd is not None:
                p = select.poll()
                p.register(pidfd, select.POLLIN)
                p.poll(REAPER_GRACE_S * 1000)
        except ProcessLookupError:
            pass
    child_fds = _children_pidfds(pid) if wait_children and cg is None else []
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if cg is not None:
        cg.kill_all()
    for fd in child_fds:  # the kill is asynchronous: do not return while they still run
        try:
            p = select.poll()
            p.register(fd, select.POLLIN)
            p.poll(REAPER_GRACE_S * 1000)
        finally:
            os.close(fd)


def _wait(proc: subprocess.Popen, limits: Limits, cg, spawned: float, reaper: bool,
          wait_children: bool = False):
    """Wait for exit, the wall-clock deadline or the tree CPU limit; then clear the tree."""
    pid = proc.pid
    deadline = spawned + limits.wall_s
    cpu_watch = cg is not None and limits.cpu_s is not None and cg.cpu_seconds() is not None
    poll_every = POLL_S if cpu_watch else None
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None
    timed_out = cpu_killed = False
    try:
        poller = None
        if pidfd is not None:
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            step = remaining if poll_every is None else min(remaining, poll_every)
            if poller is not None:
                if poller.poll(max(1, int(step * 1000))):
                    break
            else:
                if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                    break
                time.sleep(min(step, 0.01))
            if cpu_watch and (cg.cpu_seconds() or 0.0) > limits.cpu_s:
                cpu_killed = True
                break
        _kill_tree(pid, cg, reaper and (timed_out or cpu_killed), pidfd, wait_children)
        _, status, rusage = os.wait4(pid, 0)
        # Anything that was still being forked while we killed: one more sweep after the reap.
        if cg is not None:
            cg.kill_all()
        return status, rusage, timed_out, cpu_killed
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _classify(limits: Limits, *, rc: int, sig: int | None, timed_out: bool, cpu_killed: bool,
              cpu_used: float, cg, stderr: str, stream_sizes: tuple[int, int]) -> str | None:
    """Which limit ended the run, most specific first; ``None`` when it ended by itself."""
    if cg is not None and cg.oom_kills() > 0:
        return LIMIT_MEMORY
    if cpu_killed:
        return LIMIT_CPU
    # A shell running the command reports "child died of signal N" as exit code 128+N.
    shell_sig = rc - 128 if sig is None and 128 < rc < 128 + 65 else None
    if limits.cpu_s is not None and (
        sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu_used >= limits.cpu_s * 0.95)
        or (shell_sig in (signal.SIGXCPU, signal.SIGKILL) and cpu_used >= limits.cpu_s * 0.9)
    ):
        return LIMIT_CPU
    if shell_sig == signal.SIGXFSZ:
        sig = shell_sig
    # Python (and many runtimes) ignore SIGXFSZ, so the write fails with EFBIG instead.
    efbig = rc != 0 and any(m in stderr[-4000:] for m in _EFBIG_MARKERS)
    if (sig == signal.SIGXFSZ or efbig) and limits.file_mb is not None:
        cap = limits.file_mb * 1024 * 1024
        return LIMIT_OUTPUT if max(stream_sizes) >= cap else LIMIT_FILE_SIZE
    refused = cg.pids_exhausted() if cg is not None else 0
    if timed_out:
        return LIMIT_PIDS if refused else LIMIT_TIMEOUT
    if rc != 0 and refused:
        return LIMIT_PIDS
    if rc != 0 and cg is None and limits.pids is not None and any(m in stderr[-4000:] for m in _PIDS_MARKERS):
        return LIMIT_PIDS
    if rc != 0 and limits.memory_mb is not None:
        if cg is not None and sig == signal.SIGKILL and cg.memory_failcnt() > 0:
            return LIMIT_MEMORY
        tail = stderr[-4000:]
        if any(m in tail for m in _MEMORY_MARKERS):
            return LIMIT_MEMORY
    return None


def grant_workdir(workdir: str, uid: int, gid: int) -> None:
    """Chown the work directory tree to the sandbox user so it can write there (any depth:
    :func:`sandboxes.fs.grant_tree`; links never followed, multiply-linked files skipped)."""
    from .fs import grant_tree

    grant_tree(workdir, uid, gid)


# What programs print when a write fails for lack of space (the quota, or a full private /tmp).
_DISK_MARKERS = ("No space left on device", "[Errno 28]", "Disk quota exceeded", "[Errno 122]",
                 "ENOSPC", "EDQUOT")


def disk_verdict(result: RunResult, qm=None) -> RunResult:
    """Mark ``result`` as ``LIMIT_DISK`` when the candidate ran into its disk or inode quota:
    the quota file system is full, or the run failed with an out-of-space error. Adds usage to
    ``extra`` (``disk_quota_mb``, ``inode_quota``, ``disk_used_mb``, ``quota_image``)."""
    from .base import LIMIT_DISK

    full = False
    if qm is not None:
        try:
            result.extra.update(qm.usage())
        except OSError:
            pass
        result.extra.update(disk_quota_mb=round(qm.disk / 2**20), inode_quota=qm.inodes,
                            quota_image=str(qm.image))
        full = qm.full()
    enospc = result.returncode not in (0, None) and any(m in result.stderr[-4000:] for m in _DISK_MARKERS)
    if (full or enospc) and result.limit_hit in (None, LIMIT_TIMEOUT, LIMIT_FILE_SIZE):
        if result.limit_hit != LIMIT_FILE_SIZE or full:
            result.limit_hit = LIMIT_DISK
    return result


def fresh_workdir(workdir: Path) -> str:
    """The work directory as an absolute, resolved path, with an actionable error if it is bad."""
    p = Path(workdir)
    if not p.is_dir():
        raise SandboxError(f"work directory {p} does not exist or is not a directory: create it "
                           "(the evaluator prepares it) before running the sandbox")
    return str(p.resolve())


def check_argv(argv: Sequence[str]) -> list[str]:
    argv = [str(a) for a in argv]
    if not argv or not argv[0]:
        raise SandboxError("empty command: pass the program and its arguments, e.g. "
                           "[sys.executable, 'agent.py']")
    return argv
