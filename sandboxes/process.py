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

from . import _runner
from .base import Limits, RunResult, Sandbox


class ProcessSandbox(Sandbox):
    """Run the command directly, in its own session, under rlimits (and cgroups when available).

    ``cgroups``: ``None`` uses them when writable (memory then goes to the cgroup instead of
    ``RLIMIT_AS``, which breaks CUDA), ``False`` never, ``True`` requires them.
    ``capture_dir``: where the unnamed stdout/stderr files live (default: the system temp dir).
    """

    name = "process"
    isolated = False

    def __init__(self, *, cgroups: bool | None = None, capture_dir: str | None = None) -> None:
        self.cgroups = cgroups
        self.capture_dir = capture_dir

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
        spawn = _runner.Spawn(argv=argv, cwd=cwd, env=child_env, pdeathsig=True)
        return _runner.execute(spawn, limits, backend=self.name, t0=t0, use_cgroups=self.cgroups,
                               capture_dir=self.capture_dir)
