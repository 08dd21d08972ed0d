"""Where evaluations run. A job is plain data (files, evaluator name, seed), and ``run_job`` is a
module-level function, so a backend only has to ship both somewhere and hand back a Future:
threads on this machine now, Ray workers beyond it later.
"""

from __future__ import annotations

import abc
import contextlib
import os
import shutil
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evaluators import registry
from evaluators.api import Evaluator
from evaluators.pipeline import EvaluationResult, evaluate
from sandboxes import scratch
from sandboxes.fs import remove_tree


@dataclass(frozen=True)
class SandboxSpec:
    backend: str = "auto"
    trusted: bool = False
    use_gpu: bool = True  # lease a GPU per evaluation when this machine has any
    evals_per_gpu: int = 1
    disk: int | None = 4 << 30  # work-directory quota in bytes (None: off); see sandboxes.quota
    inodes: int = 200_000


@dataclass
class EvalJob:
    node_id: int
    files: dict[str, bytes]  # the agent's whole tree
    evaluator: str
    evaluator_options: dict[str, Any] = field(default_factory=dict)
    stages: list[str] | None = None
    sandbox: SandboxSpec = field(default_factory=SandboxSpec)
    seed: int = 0
    fm_calls: int | None = None  # the candidate's own model calls allowed (evaluators with fm_access)
    fm_tokens: int | None = None
    first_stage_only: bool = False  # a proposal's check that the program runs (not a node's evaluation)


class EvaluationEnvironment:
    """What evaluations on one host share: evaluator instances (one per name and options), sandboxes
    (one per spec) and the GPU pool. An executor owns one and hands it to every job; a Ray worker
    would build its own. Safe to use from the evaluation thread pool."""

    def __init__(self, *, gpu_pool: Any = None, sandboxes: dict[SandboxSpec, Any] | None = None, fm: Any = None,
                 evaluators: dict[str, Evaluator] | None = None) -> None:
        self.fm = fm  # the campaign's FMClient, served to candidates of evaluators with fm_access
        self._lock = threading.Lock()
        # instances given by name (with no options) are used as they are: tests, embedded plugins
        self._evaluators: dict[tuple, Evaluator] = {(name, ()): ev for name, ev in (evaluators or {}).items()}
        self._sandboxes: dict[SandboxSpec, Any] = dict(sandboxes or {})
        self._gpu_pool = gpu_pool  # None: detected on first use (empty on a machine without GPUs)
        self._per_gpu: int | None = None

    def evaluator(self, name: str, options: dict[str, Any]) -> Evaluator:
        key = (name, tuple(sorted((k, repr(v)) for k, v in options.items())))
        with self._lock:
            if key not in self._evaluators:
                self._evaluators[key] = registry.create(name, options)
            return self._evaluators[key]

    def sandbox(self, spec: SandboxSpec):
        from sandboxes.factory import make_sandbox

        with self._lock:
            if spec not in self._sandboxes:
                quota = {} if spec.backend == "process" else {"disk": spec.disk, "inodes": spec.inodes}
                self._sandboxes[spec] = make_sandbox(spec.backend, trusted=spec.trusted, **quota)
            return self._sandboxes[spec]

    def gpu_pool(self, per_gpu: int):
        """The host's GPUs, detected once; every job of this environment leases from this pool."""
        from sandboxes.gpu import GpuPool

        with self._lock:
            if self._gpu_pool is None:
                self._gpu_pool = GpuPool(per_gpu=per_gpu)
            return self._gpu_pool

    def close(self) -> None:
        with self._lock:
            for sandbox in self._sandboxes.values():
                sandbox.close()
            self._sandboxes.clear()


def write_tree(files: dict[str, bytes], dest: Path) -> None:
    for rel, data in files.items():
        path = dest / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def run_job(job: EvalJob, env: EvaluationEnvironment) -> EvaluationResult:
    """Materialise the agent in a temporary directory and run the staged evaluation on it."""
    agent_dir = scratch.mkdtemp(f"agent-{job.node_id}-")
    pool = env.gpu_pool(job.sandbox.evals_per_gpu) if job.sandbox.use_gpu else None
    lease = pool.lease(1) if pool is not None and len(pool) else None  # blocks until a slot is free
    evaluator = env.evaluator(job.evaluator, job.evaluator_options)
    leased_at = time.monotonic()
    try:
        write_tree(job.files, agent_dir)
        with _fm_for(evaluator, env, job) as proxy:
            result = evaluate(
                evaluator, agent_dir, env.sandbox(job.sandbox), seed=job.seed, stages=job.stages,
                device=lease.device if lease else "cpu", gpu=lease,
                fm_socket=proxy.socket_path if proxy is not None else None, first_only=job.first_stage_only,
            )
            if proxy is not None:
                t = proxy.totals()
                result.fm_usage = {"calls": t.calls, "refused": proxy.refused, "prompt_tokens": t.prompt_tokens,
                                   "completion_tokens": t.completion_tokens, "cost_usd": t.cost_usd,
                                   "model": getattr(env.fm, "model", "")}
        if lease is not None:  # what [budget] max_gpu_s counts: the lease, whatever the candidate did with it
            result.gpu_s = (time.monotonic() - leased_at) * len(lease.gpus) / max(1, pool.per_gpu)
        return result
    finally:
        if lease is not None:
            lease.release()  # on success, crash and timeout alike
        remove_tree(agent_dir)  # never recursive: a tree of any depth goes


@contextlib.contextmanager
def _fm_for(evaluator: Evaluator, env: EvaluationEnvironment, job: EvalJob):
    """An FM proxy for this evaluation's candidate, when its evaluator grants model access and the
    campaign has a model; None otherwise. Its calls are tagged with the node being evaluated."""
    if not evaluator.fm_access or env.fm is None:
        yield None
        return
    from orchestrator.fm.proxy import Budget, FMProxy

    sock_dir = scratch.mkdtemp("fm-")  # short: a socket path has 107 bytes
    os.chmod(sock_dir, 0o755)  # the sandbox's unprivileged uid connects to it
    proxy = FMProxy(env.fm, sock_dir / "fm.sock", node_id=f"node-{job.node_id}",
                    budget=Budget(limit_calls=job.fm_calls, limit_tokens=job.fm_tokens))
    try:
        with proxy:
            yield proxy
    finally:
        shutil.rmtree(sock_dir, ignore_errors=True)


class Executor(abc.ABC):
    @abc.abstractmethod
    def submit(self, job: EvalJob) -> Future: ...

    @abc.abstractmethod
    def shutdown(self, wait: bool = True) -> None:
        """Stop taking jobs; with ``wait``, let running evaluations finish."""


class LocalExecutor(Executor):
    """N evaluation workers on this machine; each evaluation is its own sandboxed process."""

    def __init__(self, workers: int, env: EvaluationEnvironment | None = None) -> None:
        self.env = env or EvaluationEnvironment()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dgm-eval")

    def submit(self, job: EvalJob) -> Future:
        return self._pool.submit(run_job, job, self.env)

    def shutdown(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=True)
        if wait:  # sandboxes still in use by abandoned evaluations are left to the process exit
            self.env.close()


def make_executor(section: Any, env: EvaluationEnvironment, *, evaluator: Evaluator | None = None) -> Executor:
    """The executor ``[evaluation]`` names: ``backend = "local"`` (threads here, sharing ``env``) or
    ``"ray"`` (tasks on a Ray cluster; each worker builds its own environment)."""
    if getattr(section, "backend", "local") != "ray":
        return LocalExecutor(section.workers, env)
    if evaluator is not None and evaluator.fm_access:
        from orchestrator.errors import CampaignError

        raise CampaignError(
            f"evaluator {evaluator.name!r} lets candidates call the FM while evaluated (fm_access), which "
            "the ray backend does not serve yet: use [evaluation] backend = \"local\" (docs/ray.md)"
        )
    from orchestrator.ray_executor import RayExecutor

    return RayExecutor(address=section.address, num_cpus=section.cpus, cpus_per_eval=section.cpus_per_eval,
                       retries=section.retries)
