"""Isolation backends for untrusted agent code (bwrap, docker, process) and the GPU device pool.

    from sandboxes import make_sandbox, Limits
    sb = make_sandbox()                       # bwrap if available, else docker, else an error
    r = sb.run([python, "agent.py"], workdir, Limits(wall_s=60, memory_mb=2048),
               env={}, ro_paths=python_ro_paths())
    r.ok, r.limit_hit, r.stdout

See ``sandboxes/README.md`` for what each backend guarantees.
"""

from .base import (
    LIMIT_CPU,
    LIMIT_DISK,
    LIMIT_FILE_SIZE,
    LIMIT_MEMORY,
    LIMIT_OUTPUT,
    LIMIT_PIDS,
    LIMIT_TIMEOUT,
    Limits,
    RunResult,
    Sandbox,
    SandboxError,
    python_ro_paths,
)
from ._runner import allow_runs, stop_all
from .factory import available_backends, make_sandbox

__all__ = [
    "LIMIT_CPU", "LIMIT_DISK", "LIMIT_FILE_SIZE", "LIMIT_MEMORY", "LIMIT_OUTPUT", "LIMIT_PIDS", "LIMIT_TIMEOUT",
    "Limits", "RunResult", "Sandbox", "SandboxError", "python_ro_paths", "available_backends",
    "make_sandbox", "stop_all", "allow_runs",
]
