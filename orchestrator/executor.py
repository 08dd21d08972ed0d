"""Where evaluations run. A job is plain data (files, evaluator name, seed), and ``run_job`` is a
module-level function, so a backend only has to ship both somewhere and hand back a Future:
threads on this machine now, Ray workers beyond it later.
"""

from __future__ import annotations

import abc
import shutil
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evaluators import registry
from evaluators.api import Evaluator
from evaluators.pipeline import EvaluationResult, evaluate


@dataclass(frozen=True)
class SandboxSpec:
    backend: str = "auto"
    trusted: bool = False
    use_gpu: bool = True  # lease a GPU per evaluation when this machine has any
    evals_per_gpu: int = 1


@dataclass
class EvalJob:
    node_id: int
    files: dict[str, bytes]  # the agent's whole tree
    evaluator: str
    evaluator_options: dict[str, Any] = field(default_factory=dict)
    stages: list[str] | None = None
    sandbox: SandboxSpec = field(default_factory=SandboxSpec)
    seed: int = 0


_cache_lock = threading.Lock()
_evaluators: dict[tuple, Evaluator] = {}
_sandboxes: dict[SandboxSpec, Any] = {}
_gpu_pools: dict[int, Any] = {}


def _gpu_pool(per_gpu: int):
    """One pool per process (GPUs detected once); empty on a machine without GPUs."""
    from sandboxes.gpu import GpuPool

    with _cache_lock:
        if per_gpu not in _gpu_pools:
            _gpu_pools[per_gpu] = GpuPool(per_gpu=per_gpu)
        return _gpu_pools[per_gpu]


def _evaluator(name: str, options: dict[str, Any]) -> Evaluator:
    key = (name, tuple(sorted((k, repr(v)) for k, v in options.items())))
    with _cache_lock:
        if key not in _evaluators:
            _evaluators[key] = registry.create(name, options)
        return _evaluators[key]


def _sandbox(spec: SandboxSpec):
    from sandboxes.factory import make_sandbox

    with _cache_lock:
        if spec not in _sandboxes:
            _sandboxes[spec] = make_sandbox(spec.backend, trusted=spec.trusted)
        return _sandboxes[spec]


def write_tree(files: dict[str, bytes], dest: Path) -> None:
    for rel, data in files.items():
        path = dest / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def run_job(job: EvalJob) -> EvaluationResult:
    """Materialise the agent in a temporary directory and run the staged evaluation on it."""
    agent_dir = Path(tempfile.mkdtemp(prefix=f"dgm-agent-{job.node_id}-"))
    pool = _gpu_pool(job.sandbox.evals_per_gpu) if job.sandbox.use_gpu else None
    lease = pool.lease(1) if pool is not None and len(pool) else None  # blocks until a slot is free
    try:
        write_tree(job.files, agent_dir)
        return evaluate(
            _evaluator(job.evaluator, job.evaluator_options), agent_dir, _sandbox(job.sandbox),
            seed=job.seed, stages=job.stages, device=lease.device if lease else "cpu", gpu=lease,
        )
    finally:
        if lease is not None:
            lease.release()  # on success, crash and timeout alike
        shutil.rmtree(agent_dir, ignore_errors=True)


class Executor(abc.ABC):
    @abc.abstractmethod
    def submit(self, job: EvalJob) -> Future: ...

    @abc.abstractmethod
    def shutdown(self, wait: bool = True) -> None:
        """Stop taking jobs; with ``wait``, let running evaluations finish."""


class LocalExecutor(Executor):
    """N evaluation workers on this machine; each evaluation is its own sandboxed process."""

    def __init__(self, workers: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dgm-eval")

    def submit(self, job: EvalJob) -> Future:
        return self._pool.submit(run_job, job)

    def shutdown(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=True)
