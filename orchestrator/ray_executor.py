"""Evaluations as Ray tasks: ``[evaluation] backend = "ray"``.

Each evaluation is one Ray task running :func:`orchestrator.executor.run_job` on whichever node Ray
picks, with the job (agent files as bytes, evaluator name and options, sandbox spec, seed) shipped
as the task's argument. Each Ray worker process builds its own :class:`EvaluationEnvironment` on
its first task (evaluator instances, sandboxes, and the GPUs Ray assigned to the task). The archive
stays with the driver: ``submit`` returns a ``concurrent.futures.Future`` that settles when the task
does, so results stream back in the order they finish.

A worker or node that dies mid-evaluation is retried by Ray (``[evaluation] retries``, system
failures only; an evaluator's own exception is not retried); once the retries are spent, the Future
raises :class:`EvaluationLost` and the campaign records the node ``failed`` with that reason.

Without ``address``, a local cluster is started for the campaign, bound to loopback (no dashboard,
no usage reporting), and shut down with the executor. A process already connected to Ray (a test
fixture, a notebook) uses that connection and leaves it running. docs/ray.md covers multi-node use.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from concurrent.futures import Future
from typing import Any

from orchestrator.executor import EvalJob, EvaluationEnvironment, Executor, run_job

__all__ = ["EvaluationLost", "RayExecutor", "start_local_cluster"]

LOOPBACK = "127.0.0.1"
#: the object store of a local cluster: jobs and results are small (agent files, metrics)
LOCAL_OBJECT_STORE = 512 * 2**20
#: the function name Ray shows as the worker's process title while it evaluates (``ray::dgm_evaluate``)
TASK_NAME = "dgm_evaluate"


class EvaluationLost(RuntimeError):
    """The Ray worker or node running an evaluation died, and Ray's retries are spent."""


def _import_ray(local: bool):
    """Ray, set up so that a local cluster listens on loopback only. Ray resolves 127.0.0.1 to the
    machine's routable address unless told that clusters are off (its Windows/macOS switch, read at
    import); the environment variable also reaches the processes Ray starts."""
    if local:
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # never phone home
    try:
        import ray
    except ImportError as e:  # pragma: no cover - ray is a pinned dependency
        raise RuntimeError("[evaluation] backend = \"ray\" needs the ray package (pip install ray)") from e
    if local:
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False  # when ray was imported before the variable was set
    return ray


def start_local_cluster(num_cpus: int | None = None, object_store_memory: int = LOCAL_OBJECT_STORE,
                        num_gpus: int | None = None) -> None:
    """Start a Ray cluster in this process's machine, every port on loopback, and connect to it."""
    ray = _import_ray(local=True)
    ray.init(
        address="local", num_cpus=num_cpus, num_gpus=num_gpus, object_store_memory=object_store_memory,
        include_dashboard=False, _node_ip_address=LOOPBACK, log_to_driver=False,
        logging_level=logging.WARNING, configure_logging=False,
    )


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """Fail at once when ``host:port`` (or ``ray://host:port``) refuses TCP connections."""
    hostport = address.split("://", 1)[-1]
    if address == "auto" or ":" not in hostport:
        return  # Ray resolves these itself
    host, _, port = hostport.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except (OSError, ValueError) as e:
        raise ConnectionError(f"nothing answers at {hostport}: {e}") from None


class RayExecutor(Executor):
    """Evaluations as Ray tasks on a running cluster (``address``) or on a local one started here."""

    def __init__(self, *, address: str | None = None, num_cpus: int | None = None, cpus_per_eval: float = 1.0,
                 retries: int = 1, object_store_memory: int = LOCAL_OBJECT_STORE) -> None:
        self.ray = ray = _import_ray(local=address is None)
        self.address = address
        self.cpus_per_eval = cpus_per_eval
        self.retries = retries
        self._owns = False  # started or joined here, so shut down here
        if not ray.is_initialized():
            try:
                if address is None:
                    start_local_cluster(num_cpus, object_store_memory)
                else:
                    _check_reachable(address)  # Ray itself retries an unreachable address for minutes
                    ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING,
                             configure_logging=False)
            except Exception as e:
                from orchestrator.errors import CampaignError

                where = f"the Ray cluster at {address!r}" if address else "a local Ray cluster"
                raise CampaignError(f"[evaluation] backend = \"ray\": cannot start or reach {where}: "
                                    f"{type(e).__name__}: {e}") from e
            self._owns = True
        self.has_gpus = ray.cluster_resources().get("GPU", 0) > 0
        self._task = ray.remote(dgm_evaluate)
        self._lock = threading.Lock()
        self._in_flight: dict[Any, Future] = {}  # ObjectRef → the Future handed to the campaign
        self._closed = False

    def resources(self, job: EvalJob) -> dict[str, float]:
        """What one evaluation reserves: a GPU share for GPU jobs when the cluster has GPUs, CPUs always."""
        out: dict[str, float] = {"num_cpus": self.cpus_per_eval}
        if job.sandbox.use_gpu and self.has_gpus:
            out["num_gpus"] = 1.0 / job.sandbox.evals_per_gpu
        return out

    def submit(self, job: EvalJob) -> Future:
        if self._closed:
            raise RuntimeError("the Ray executor is shut down")
        ref = self._task.options(
            **self.resources(job), max_retries=self.retries, retry_exceptions=False,
        ).remote(job)
        out: Future = Future()
        out.set_running_or_notify_cancel()
        with self._lock:
            self._in_flight[ref] = out
        ref.future().add_done_callback(lambda f: self._settle(ref, f, out, job))
        return out

    def _settle(self, ref, done: Future, out: Future, job: EvalJob) -> None:
        with self._lock:
            self._in_flight.pop(ref, None)
        exc = done.exception()
        if exc is None:
            out.set_result(done.result())
            return
        exceptions = self.ray.exceptions
        lost = (exceptions.WorkerCrashedError, exceptions.NodeDiedError, exceptions.ObjectLostError,
                exceptions.LocalRayletDiedError, exceptions.RaySystemError)
        if isinstance(exc, lost):
            tries = "" if not self.retries else f" (and on each of {self.retries} retries)"
            exc = EvaluationLost(
                f"node {job.node_id}: the Ray worker running its evaluation died{tries}: "
                f"{type(exc).__name__}: {exc}"
            )
        elif isinstance(exc, exceptions.TaskCancelledError):
            exc = EvaluationLost(f"node {job.node_id}: evaluation cancelled (the executor shut down)")
        out.set_exception(exc)

    def in_flight(self) -> int:
        with self._lock:
            return len(self._in_flight)

    def shutdown(self, wait: bool = True) -> None:
        """Stop taking jobs; with ``wait``, let running evaluations finish, else cancel them. A cluster
        started (or joined) here is shut down; one this process was already connected to is left."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            refs = list(self._in_flight)
        if refs:
            if wait:
                self.ray.wait(refs, num_returns=len(refs))
            else:
                for ref in refs:
                    try:
                        self.ray.cancel(ref, force=True)
                    except Exception:  # already finished, or the cluster is gone
                        pass
        if self._owns and self.ray.is_initialized():
            self.ray.shutdown()


# ---- in the Ray worker ----------------------------------------------------------------------

_ENV: EvaluationEnvironment | None = None
_ENV_LOCK = threading.Lock()


class _WorkerEnvironment(EvaluationEnvironment):
    """A Ray worker's environment: its GPU pool is the GPUs Ray assigned to the running task."""

    def __init__(self) -> None:
        super().__init__()
        self._pools: dict[tuple[str, ...], Any] = {}

    def gpu_pool(self, per_gpu: int):
        import ray
        from sandboxes.gpu import Gpu, GpuPool, detect_gpus

        ids = tuple(str(i) for i in ray.get_gpu_ids())
        with self._lock:
            if ids not in self._pools:
                if not ids:
                    self._pools[ids] = GpuPool(gpus=[], per_gpu=per_gpu, control_nodes=[])
                else:
                    found = [g for g in detect_gpus() if str(g.index) in ids or (g.uuid and g.uuid in ids)]
                    found = found or [Gpu(int(i)) for i in ids if i.isdigit()]
                    self._pools[ids] = GpuPool(gpus=found, per_gpu=per_gpu)
            return self._pools[ids]


def dgm_evaluate(job: EvalJob):
    """One evaluation, in a Ray worker process (its environment built on its first task)."""
    global _ENV
    with _ENV_LOCK:
        if _ENV is None:
            _ENV = _WorkerEnvironment()
    return run_job(job, _ENV)
