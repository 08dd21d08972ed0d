"""The sandbox contract: run one untrusted command in one work directory, under limits.

Every backend (``process``, ``bwrap``, later ``docker``) implements :class:`Sandbox`. The evaluator
prepares the work directory, asks a sandbox to run the candidate there, and reads the artifacts the
candidate left behind. Nothing a backend returns is trusted beyond "this is what the process did".
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from .gpu import GpuLease

# Why a run was stopped by us (or by the kernel on our behalf). ``None`` means it exited by itself.
LIMIT_TIMEOUT = "timeout"
LIMIT_CPU = "cpu"
LIMIT_MEMORY = "memory"
LIMIT_FILE_SIZE = "file_size"
LIMIT_PIDS = "pids"
LIMIT_OUTPUT = "output"
#: the work directory's disk or inode quota (writes failed with ENOSPC/EDQUOT); see sandboxes.quota
LIMIT_DISK = "disk quota"


@dataclass(frozen=True)
class Limits:
    """Resource limits for one sandboxed run. ``None`` disables a limit."""

    wall_s: float = 60.0
    cpu_s: int | None = 60
    memory_mb: int | None = 2048
    pids: int | None = 256
    file_mb: int | None = 64
    output_bytes: int = 64_000  # stdout and stderr are each truncated to their last N bytes
    cpus: float | None = None  # CPU bandwidth in cores (cgroup cpu quota / docker nano_cpus)

    def __post_init__(self) -> None:
        if self.wall_s <= 0:
            raise ValueError(f"Limits.wall_s = {self.wall_s}: must be > 0")
        for name in ("cpu_s", "memory_mb", "pids", "file_mb", "cpus"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"Limits.{name} = {value}: must be > 0 or None")


@dataclass
class RunResult:
    """What one sandboxed command did."""

    returncode: int | None  # None only if the process could not be started
    stdout: str
    stderr: str
    wall_s: float
    limit_hit: str | None = None  # one of the LIMIT_* names, or None
    backend: str = ""
    start_overhead_s: float = 0.0  # time from run() to the child being spawned
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.limit_hit is None

    def describe(self) -> str:
        """One line a person (and the FM) can act on."""
        if self.limit_hit == LIMIT_TIMEOUT:
            return f"killed: exceeded the wall-clock limit ({self.wall_s:.1f} s)"
        if self.limit_hit == LIMIT_DISK:
            q = self.extra.get("disk_quota_mb")
            return ("exceeded the disk quota" + (f" ({q} MiB, {self.extra.get('inode_quota')} files)" if q else "")
                    + ": writes failed with 'No space left on device'")
        if self.limit_hit:
            return f"killed: exceeded the {self.limit_hit} limit"
        if self.returncode is None:
            return "could not start"
        if self.returncode < 0:
            return f"killed by signal {-self.returncode}"
        return f"exit code {self.returncode}"


class SandboxError(RuntimeError):
    """The sandbox itself could not run (missing binary, bad setup) - not the candidate's fault."""


class Sandbox(abc.ABC):
    """Runs a command with ``workdir`` as its only writable directory."""

    name: str = "abstract"
    #: False for backends that give no isolation (``process``): callers warn about it.
    isolated: bool = True

    @abc.abstractmethod
    def run(
        self,
        argv: Sequence[str],
        workdir: Path,
        limits: Limits,
        env: Mapping[str, str] | None = None,
        ro_paths: Sequence[Path] = (),
        *,
        gpu: "GpuLease | None" = None,
        hide: Sequence[Path] = (),
    ) -> RunResult:
        """Run ``argv`` with cwd ``workdir``.

        ``env`` is the *whole* environment of the child (scrubbed: nothing is inherited from the
        orchestrator except what the backend needs, e.g. PATH). ``ro_paths`` are extra host paths
        made readable (read-only) inside the sandbox, e.g. the Python installation to use.
        ``hide`` are host paths inside visible trees that must look empty in the sandbox (datasets
        bundled in packages, e.g. the test split an evaluator draws from them); backends without
        isolation (``process``) cannot hide anything.
        The whole process tree is killed when ``limits.wall_s`` passes.
        ``gpu`` is a lease from :class:`sandboxes.gpu.GpuPool`: its ``CUDA_VISIBLE_DEVICES`` goes
        into this child's environment only, and only its device nodes are exposed.
        """

    @classmethod
    def available(cls) -> bool:
        """Whether this backend can run on this machine."""
        return True

    def close(self) -> None:
        """Release pooled resources (warm containers, ...)."""


def python_ro_paths() -> list[Path]:
    """Host paths a sandbox must expose read-only so that ``sys.executable`` works inside it."""
    import sys

    paths = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.executable).resolve().parent.parent}
    return sorted(p for p in paths if p.exists())
