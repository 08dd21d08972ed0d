"""GPU leasing: each evaluation borrows specific GPUs and sees only those.

A lease never touches ``os.environ`` (other evaluations run in the same orchestrator process): it
carries the ``CUDA_VISIBLE_DEVICES`` value for *that job's* environment and the device nodes the
sandbox must expose (``/dev/nvidiaN`` plus the shared control nodes). GPUs are named by UUID when
``nvidia-smi`` gives one, because CUDA's own device order need not match nvidia-smi's, and inside a
sandbox that exposes one device node the GPU is always CUDA device 0 anyway.

``per_gpu`` evaluations may share one GPU (small models leave most of an H100 idle). A lease is a
context manager: it is returned on success, crash and timeout alike.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Sequence

from .base import SandboxError

#: Nodes every CUDA process needs besides its own /dev/nvidiaN (those that exist are exposed).
CONTROL_NODES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset")

_SMI_LINE = re.compile(r"^GPU (\d+): (.*?)(?: \(UUID: (\S+)\))?$")


@dataclass(frozen=True)
class Gpu:
    index: int  # nvidia-smi index == N in /dev/nvidiaN (minor number)
    name: str = "GPU"
    uuid: str | None = None
    device_node: str = ""

    def __post_init__(self) -> None:
        if not self.device_node:
            object.__setattr__(self, "device_node", f"/dev/nvidia{self.index}")

    @property
    def visible_id(self) -> str:
        """What CUDA_VISIBLE_DEVICES / docker device_ids should name."""
        return self.uuid or str(self.index)


def parse_nvidia_smi(text: str) -> list[Gpu]:
    """Parse ``nvidia-smi -L`` ("GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-...)")."""
    gpus = []
    for line in text.splitlines():
        m = _SMI_LINE.match(line.strip())
        if m:
            gpus.append(Gpu(int(m.group(1)), m.group(2), m.group(3)))
    return gpus


def detect_gpus() -> list[Gpu]:
    """The machine's NVIDIA GPUs: from ``nvidia-smi -L``, else from ``/dev/nvidia[0-9]*``."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30, env={
                "PATH": os.environ.get("PATH", "/usr/bin:/bin")})
            if out.returncode == 0:
                gpus = parse_nvidia_smi(out.stdout)
                if gpus:
                    return gpus
        except (OSError, subprocess.SubprocessError):
            pass
    nodes = sorted(glob.glob("/dev/nvidia[0-9]*"), key=lambda p: int(re.sub(r"\D", "", p) or 0))
    return [Gpu(int(re.sub(r"\D", "", p)), device_node=p) for p in nodes]


@dataclass
class GpuLease:
    """GPUs lent to one evaluation. Pass it as ``gpu=`` to :meth:`Sandbox.run`."""

    gpus: tuple[Gpu, ...]
    device_nodes: tuple[str, ...]
    _pool: "GpuPool | None" = field(default=None, repr=False)
    released: bool = False

    @property
    def indices(self) -> tuple[int, ...]:
        return tuple(g.index for g in self.gpus)

    @property
    def env(self) -> dict[str, str]:
        """Environment entries for this job only (merge into the child's env, never os.environ)."""
        return {
            "CUDA_VISIBLE_DEVICES": ",".join(g.visible_id for g in self.gpus),
            "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        }

    @property
    def device(self) -> str:
        """The torch device string the candidate should use."""
        return "cuda" if self.gpus else "cpu"

    def release(self) -> None:
        """Give the GPUs back (idempotent)."""
        if not self.released and self._pool is not None:
            self._pool._release(self)
        self.released = True

    def __enter__(self) -> "GpuLease":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class GpuPool:
    """Hands out GPUs, ``per_gpu`` concurrent evaluations each, least-loaded GPU first.

    ``gpus=None`` detects them; tests pass a fake list. Thread-safe; :meth:`lease` blocks (up to
    ``timeout``) until enough GPUs have a free slot.
    """

    def __init__(self, gpus: Sequence[Gpu] | None = None, *, per_gpu: int = 1,
                 control_nodes: Sequence[str] | None = None) -> None:
        if per_gpu < 1:
            raise ValueError(f"per_gpu = {per_gpu}: must be >= 1 (evaluations sharing one GPU)")
        self.gpus = list(detect_gpus() if gpus is None else gpus)
        self.per_gpu = per_gpu
        self.control_nodes = tuple(
            n for n in (CONTROL_NODES if control_nodes is None else control_nodes)
            if control_nodes is not None or os.path.exists(n)
        )
        self._load = {g.index: 0 for g in self.gpus}
        self._cond = threading.Condition()

    def __len__(self) -> int:
        return len(self.gpus)

    @property
    def capacity(self) -> int:
        return len(self.gpus) * self.per_gpu

    def in_use(self) -> dict[int, int]:
        with self._cond:
            return dict(self._load)

    def _pick(self, count: int) -> list[Gpu] | None:
        free = [g for g in self.gpus if self._load[g.index] < self.per_gpu]
        if len(free) < count:
            return None
        free.sort(key=lambda g: (self._load[g.index], g.index))
        return free[:count]

    def try_lease(self, count: int = 1) -> GpuLease | None:
        """A lease now, or ``None`` if not enough GPUs have a free slot."""
        self._check(count)
        with self._cond:
            return self._take(count)

    def lease(self, count: int = 1, timeout: float | None = None) -> GpuLease:
        """Block until ``count`` distinct GPUs have a free slot; raise after ``timeout`` seconds."""
        self._check(count)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                got = self._take(count)
                if got is not None:
                    return got
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"no {count} GPU(s) free within {timeout} s "
                                       f"(load {self._load}, {self.per_gpu} per GPU)")
                self._cond.wait(remaining)

    def _check(self, count: int) -> None:
        if count < 1:
            raise ValueError(f"count = {count}: lease at least one GPU (or do not lease)")
        if count > len(self.gpus):
            raise SandboxError(f"{count} GPU(s) requested but this machine has {len(self.gpus)}"
                               + ("" if self.gpus else " (nvidia-smi -L found none)")
                               + ": lower the request or run on a GPU machine")

    def _take(self, count: int) -> GpuLease | None:
        picked = self._pick(count)
        if picked is None:
            return None
        for g in picked:
            self._load[g.index] += 1
        nodes = tuple(g.device_node for g in picked) + self.control_nodes
        return GpuLease(tuple(picked), nodes, self)

    def _release(self, lease: GpuLease) -> None:
        with self._cond:
            for g in lease.gpus:
                self._load[g.index] = max(0, self._load[g.index] - 1)
            self._cond.notify_all()
