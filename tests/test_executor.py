"""run_job: one evaluation as plain data, with a GPU leased per evaluation when the machine has any.
No GPU here: a fake one-GPU pool stands in for detection; the lease logic and plumbing are real."""

from __future__ import annotations

import pytest

from evaluators.circle_packing.evaluator import HERE as CP_DIR
from orchestrator import executor
from sandboxes.base import Sandbox
from sandboxes.factory import make_sandbox
from sandboxes.gpu import Gpu, GpuPool
from tests.campaign_helpers import CRASH


class Recording(Sandbox):
    """The real sandbox; remembers the GPU lease and environment each run was given."""

    name = "recording"

    def __init__(self):
        self.inner, self.seen = make_sandbox("auto"), []

    def run(self, argv, workdir, limits, env=None, ro_paths=(), *, gpu=None, **kw):
        self.seen.append({"gpu": gpu, "env": dict(env or {})})
        return self.inner.run(argv, workdir, limits, env=env, ro_paths=ro_paths, **kw)  # no device node here


def environment(pool: GpuPool):
    """An evaluation environment with this GPU pool and a recording sandbox for the default spec."""
    recording, spec = Recording(), executor.SandboxSpec("auto")
    return executor.EvaluationEnvironment(gpu_pool=pool, sandboxes={spec: recording}), recording, spec


@pytest.fixture
def one_gpu():
    pool = GpuPool(gpus=[Gpu(0, uuid="GPU-fake-0")], per_gpu=1, control_nodes=[])
    return (pool, *environment(pool))


def files(code: str | None = None) -> dict[str, bytes]:
    out = {p.name: p.read_bytes() for p in (CP_DIR / "seed").iterdir() if p.is_file()}
    if code is not None:
        out["packing.py"] = code.encode()
    return out


def test_each_evaluation_leases_the_gpu_and_returns_it(one_gpu):
    pool, env, recording, spec = one_gpu
    result = executor.run_job(executor.EvalJob(1, files(), "circle_packing", sandbox=spec), env)
    assert result.valid
    lease = recording.seen[0]["gpu"]
    assert lease is not None and lease.env["CUDA_VISIBLE_DEVICES"] == "GPU-fake-0"
    assert lease.released and pool.in_use() == {0: 0}


def test_lease_is_returned_when_the_candidate_crashes(one_gpu):
    pool, env, recording, spec = one_gpu
    result = executor.run_job(executor.EvalJob(2, files(CRASH), "circle_packing", sandbox=spec), env)
    assert not result.valid and "boom" in result.error
    assert recording.seen[0]["gpu"].released and pool.in_use() == {0: 0}


def test_no_gpu_means_no_lease():
    env, recording, spec = environment(GpuPool(gpus=[], control_nodes=[]))
    assert executor.run_job(executor.EvalJob(3, files(), "circle_packing", sandbox=spec), env).valid
    assert recording.seen[0]["gpu"] is None
