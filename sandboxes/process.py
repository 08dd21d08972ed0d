"""``process``: a plain subprocess, for *trusted* code only (it isolates nothing).

It exists so that trusted evaluator helpers and development runs work on machines without bwrap or
docker. It still applies every limit the runner can (rlimits, a per-run cgroup when writable), kills
the whole process tree on timeout, and never passes the orchestrator's environment on (which may hold
API keys). The candidate can read and write anything the orchestrator's user can: hence
``isolated = False`` and :func:`sandboxes.factory.make_sandbox` refusing it unless ``trusted=True``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Mapping, Sequence

import logging

from . import _runner, quota
from .base import LIMIT_DISK, Limits, RunResult, Sandbox

log = logging.getLogger(__name__)


class ProcessSandbox(Sandbox):
    """Run the command directly, in its own session, under rlimits (and cgroups when available).

    ``cgroups``: ``None`` uses them when writable (memory then goes to the cgroup instead of
    ``RLIMIT_AS``, which breaks CUDA), ``False`` never, ``True`` requires them.
    ``capture_dir``: where the unnamed stdout/stderr files live (default: the system temp dir).
    """

    name = "process"
    isolated = False

    def __init__(self, *, cgroups: bool | None = None, capture_dir: str | None = None,
                 disk: int | None = None, inodes: int | None = None) -> None:
        self.cgroups = cgroups
        self.capture_dir = capture_dir
        # off by default (trusted code); as root a quota mount works here as for bwrap
        self.disk, self.inodes = disk, (inodes or quota.DEFAULT_INODES)
        if disk is not None and (reason := quota.unavailable_reason()):
            log.warning("no disk quota for the work directory: %s", reason)
            self.disk = None

    def run(
        self,
        argv: Sequence[str],
        workdir: Path,
        limits: Limits,
        env: Mapping[str, str] | None = None,
        ro_paths: Sequence[Path] = (),
        *,
        gpu=None,
        hide: Sequence[Path] = (),  # nothing can be hidden without isolation (trusted code only)
    ) -> RunResult:
        t0 = time.monotonic()
        cwd = _runner.fresh_workdir(workdir)
        argv = _runner.check_argv(argv)
        child_env = _runner.child_env(env, gpu.env if gpu is not None else None)
        qm = None
        if self.disk is not None:
            try:
                qm = quota.attach(cwd, self.disk, self.inodes)
            except quota.QuotaExceeded as e:
                return RunResult(None, "", str(e), 0.0, LIMIT_DISK, self.name, time.monotonic() - t0)
        try:
            spawn = _runner.Spawn(argv=argv, cwd=cwd, env=child_env, pdeathsig=True)
            r = _runner.execute(spawn, limits, backend=self.name, t0=t0, use_cgroups=self.cgroups,
                                capture_dir=self.capture_dir)
            return _runner.disk_verdict(r, qm)
        finally:
            if qm is not None:
                quota.done(qm)
