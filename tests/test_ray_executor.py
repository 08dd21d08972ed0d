"""The Ray executor on a real local Ray cluster bound to loopback: jobs as Ray tasks, whole campaigns
with ``[evaluation] backend = "ray"``, and a Ray worker killed mid-evaluation (fault injection).

One cluster serves the module (``cluster`` fixture, 2 CPUs, a 100 MiB object store); campaigns join
it and leave it running. ``dgm run`` is tested first, before that cluster exists, so that its own
cluster (started and shut down by the campaign) never runs beside the module's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from concurrent.futures import as_completed
from pathlib import Path
from types import SimpleNamespace

import pytest

ray = pytest.importorskip("ray")

from archive import Archive, NodeStatus  # noqa: E402
from orchestrator import executor  # noqa: E402
from orchestrator.campaign import Campaign  # noqa: E402
from orchestrator.config import load_config  # noqa: E402
from orchestrator.errors import CampaignError  # noqa: E402
from orchestrator.fm.client import FMClient  # noqa: E402
from orchestrator.ray_executor import TASK_NAME, EvaluationLost, RayExecutor, start_local_cluster  # noqa: E402
from tests import test_faults_executor as faults  # noqa: E402
from tests.campaign_helpers import CRASH, GRID, answer_once, distinct_grids, rewrite, write_config  # noqa: E402
from tests.fm_server import Reply, ScriptedFMServer  # noqa: E402
from tests.test_executor import files  # noqa: E402

@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("DGM_TEST_KEY", "sk-test-secret-123")


@pytest.fixture(scope="module")
def cluster():
    if ray.is_initialized():  # pragma: no cover - another module left one
        ray.shutdown()
    start_local_cluster(num_cpus=2, object_store_memory=100 * 2**20)
    yield ray
    ray.shutdown()


def ray_config(tmp_path, server, *, retries: int = 1, **kw) -> Path:
    """The usual test campaign, its evaluations on Ray ([evaluation] is the helper's last section)."""
    path = write_config(tmp_path, server.base_url, **kw)
    path.write_text(path.read_text() + f'backend = "ray"\nretries = {retries}\n')
    return path


def run_campaign(tmp_path, server, **kw):
    cfg = load_config(ray_config(tmp_path, server, **kw))
    with FMClient.from_config(cfg.fm) as fm:
        campaign = Campaign(cfg, tmp_path / "run", fm)
        assert isinstance(campaign.executor, RayExecutor)
        return campaign.run()


def listening_addresses(pids: set[int]) -> set[str]:
    """Local addresses of the TCP sockets these processes listen on (from /proc/net/tcp{,6})."""
    inodes = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            pass
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:  # LISTEN
                out.add(cols[1].rsplit(":", 1)[0])
    return out


def descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                children.setdefault(faults.parent_of(int(entry.name)), []).append(int(entry.name))
            except (OSError, IndexError):
                pass
    out, todo = set(), [root]
    while todo:
        pid = todo.pop()
        for child in children.get(pid, []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


LOOPBACK_HEX = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}


# ---- dgm run: a campaign that starts its own local cluster (before the module's exists) --------

def test_dgm_run_on_a_local_ray_cluster_started_for_the_campaign(tmp_path):
    assert not ray.is_initialized()
    with ScriptedFMServer([], responder=distinct_grids()) as srv:
        path = ray_config(tmp_path, srv, iterations=2)
        path.write_text(path.read_text() + "cpus = 2\n")
        dgm = Path(sys.executable).with_name("dgm")
        proc = subprocess.run([str(dgm), "run", str(path), "--no-live"], capture_output=True, text=True, timeout=300,
                              env={**os.environ, "DGM_TEST_KEY": "sk-test"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "stopped: reached 2 iterations" in proc.stdout
    with Archive.open(tmp_path / "run", readonly=True) as archive:
        assert [n.status for n in archive.nodes()] == [NodeStatus.ADMITTED] * 3
        assert archive.check() == []


def test_an_evaluator_with_fm_access_is_refused_on_ray_before_anything_starts():
    section = SimpleNamespace(backend="ray", address=None, cpus=None, cpus_per_eval=1.0, retries=1, workers=2)
    with pytest.raises(CampaignError, match=r"fm_access.*backend = \"local\""):
        executor.make_executor(section, executor.EvaluationEnvironment(), evaluator=SimpleNamespace(fm_access=True, name="coding"))
    assert not ray.is_initialized()
    local = executor.make_executor(SimpleNamespace(backend="local", workers=1), executor.EvaluationEnvironment())
    assert isinstance(local, executor.LocalExecutor)
    local.shutdown()


def test_an_unreachable_cluster_is_a_clear_error():
    with pytest.raises(CampaignError, match="cannot start or reach the Ray cluster at '127.0.0.1:9'"):
        RayExecutor(address="127.0.0.1:9")
    assert not ray.is_initialized()


# ---- on the module's cluster -------------------------------------------------------------------

def test_the_local_cluster_listens_on_loopback_only(cluster):
    assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}
    assert ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")
    ours = {p for p in descendants(os.getpid()) if "/ray/" in faults.cmdline(p) or faults.cmdline(p).startswith("ray::")}
    addresses = listening_addresses(ours)  # gcs, raylet, agents, workers
    assert addresses and addresses <= LOOPBACK_HEX, addresses


def test_jobs_run_as_ray_tasks_and_results_stream_back(cluster):
    ex = RayExecutor()
    try:
        assert ex._owns is False  # joined the module's cluster: left running at shutdown
        jobs = {"seed": executor.EvalJob(1, files(), "circle_packing"),
                "grid": executor.EvalJob(2, files(GRID), "circle_packing"),
                "crash": executor.EvalJob(3, files(CRASH), "circle_packing")}
        futures = {ex.submit(job): name for name, job in jobs.items()}
        got = {futures[f]: f.result() for f in as_completed(futures, timeout=120)}
        local = executor.run_job(executor.EvalJob(2, files(GRID), "circle_packing"), executor.EvaluationEnvironment())
        assert got["grid"].valid and got["grid"].score == pytest.approx(local.score) == pytest.approx(2.54 / 2.635)
        assert got["seed"].valid
        assert not got["crash"].valid and "boom in candidate" in got["crash"].error
        assert ex.in_flight() == 0
        # resources: CPUs always, a GPU share only for GPU jobs on a cluster with GPUs (none here)
        gpu_job = executor.EvalJob(4, {}, "circle_packing", sandbox=executor.SandboxSpec(evals_per_gpu=2))
        assert ex.resources(gpu_job) == {"num_cpus": 1.0}
        ex.has_gpus = True
        assert ex.resources(gpu_job) == {"num_cpus": 1.0, "num_gpus": 0.5}
        cpu_job = executor.EvalJob(5, {}, "circle_packing", sandbox=executor.SandboxSpec(use_gpu=False))
        assert ex.resources(cpu_job) == {"num_cpus": 1.0}
    finally:
        ex.shutdown()
    assert ray.is_initialized()
    with pytest.raises(RuntimeError, match="shut down"):
        ex.submit(executor.EvalJob(6, files(), "circle_packing"))


def test_a_campaign_on_ray_records_every_child_and_resumes(cluster, tmp_path):
    script = [Reply(rewrite(GRID)), Reply(rewrite(CRASH)), Reply("no code here")]
    with ScriptedFMServer(script, responder=distinct_grids()) as srv:
        stats = run_campaign(tmp_path, srv, iterations=4)
        assert stats.stop_reason == "reached 4 iterations"
        stats = run_campaign(tmp_path, srv, iterations=5)  # resume
        assert len(srv.requests) == 5
    assert ray.is_initialized()  # the campaign joined the module's cluster and left it running
    with Archive.open(tmp_path / "run", readonly=True) as archive:
        assert archive.check() == []
        nodes = archive.nodes()
        assert [n.id for n in nodes] == [0, 1, 2, 3, 4, 5] and all(n.status.finished for n in nodes)
        by_response = {n.response: n for n in nodes}
        grid = by_response[rewrite(GRID)]
        assert grid.status == NodeStatus.ADMITTED and grid.score == pytest.approx(2.54 / 2.635)
        assert by_response[rewrite(CRASH)].status == NodeStatus.INVALID
        assert "boom in candidate" in by_response[rewrite(CRASH)].error
        assert by_response["no code here"].status == NodeStatus.INVALID


def test_dgm_run_joins_a_running_cluster_by_address_and_leaves_it_running(cluster, tmp_path):
    gcs = ray.get_runtime_context().gcs_address  # "127.0.0.1:<port>", as a head started by `ray start` gives
    with ScriptedFMServer([], responder=distinct_grids()) as srv:
        path = ray_config(tmp_path, srv, iterations=2)
        path.write_text(path.read_text() + f'address = "{gcs}"\n')
        dgm = Path(sys.executable).with_name("dgm")
        proc = subprocess.run([str(dgm), "run", str(path), "--no-live"], capture_output=True, text=True, timeout=300,
                              env={**os.environ, "DGM_TEST_KEY": "sk-test"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "stopped: reached 2 iterations" in proc.stdout
    with Archive.open(tmp_path / "run", readonly=True) as archive:
        assert [n.status for n in archive.nodes()] == [NodeStatus.ADMITTED] * 3
    assert ray.get(ray.remote(lambda: os.getpid()).remote(), timeout=60) > 0  # the cluster outlived the campaign that joined it


@pytest.mark.parametrize("retries", [1, 0])
def test_a_ray_worker_killed_mid_evaluation_loses_nothing(cluster, tmp_path, retries):
    """The Ray worker evaluating node 1 is SIGKILLed (found from the marker its candidate writes:
    the candidate's process, then its nearest ancestor titled ``ray::dgm_evaluate``). With a retry
    Ray re-runs the evaluation on another worker; without, the node is recorded failed with the
    reason. Either way the campaign finishes, every attempt is recorded, and a resume works."""
    marker = f"kill-my-worker-{uuid.uuid4().hex}"
    seconds = 5.0 if retries else 60.0  # long enough to be found and killed under load; a retry runs it again, to the end

    def the_ray_worker(pids):
        workers = {faults.ancestor(pid, lambda cmd: cmd.startswith(f"ray::{TASK_NAME}")) for pid in pids}
        return [w for w in workers if w is not None]

    killer, killed = faults.kill_when_marked(marker, pick=the_ray_worker)
    after_kill = answer_once(tmp_path / "run", lambda nodes: len(nodes) > 1 and nodes[1].status.finished,
                             Reply(rewrite(GRID)), "the node whose worker was killed to be recorded")
    with ScriptedFMServer([Reply(rewrite(faults.slow_grid(marker, seconds)))], responder=after_kill) as srv:
        stats = run_campaign(tmp_path, srv, iterations=2, retries=retries, eval_timeout_s=90, timeout_s=200)
    killer.join(5)
    assert len(killed) == 1 and isinstance(killed[0], int), killed
    assert stats.stop_reason == "reached 2 iterations"
    with Archive.open(tmp_path / "run", readonly=True) as archive:
        assert archive.check() == []
        victim, after = archive.get(1), archive.get(2)
        if retries:
            assert victim.status == NodeStatus.ADMITTED and victim.score == pytest.approx(2.54 / 2.635), victim.error
        else:
            assert victim.status == NodeStatus.FAILED and victim.score is None
            assert EvaluationLost.__name__ in victim.error and "Ray worker running its evaluation died" in victim.error
        assert after.status == NodeStatus.ADMITTED and archive.get(0).status == NodeStatus.ADMITTED
        admitted = {n.id for n in archive.nodes() if n.status == NodeStatus.ADMITTED}
    with ScriptedFMServer([], default=Reply(rewrite(GRID.replace("0.04", "0.039")))) as srv:
        run_campaign(tmp_path, srv, iterations=3)
    with Archive.open(tmp_path / "run", readonly=True) as archive:
        nodes = archive.nodes()
        assert [n.id for n in nodes] == [0, 1, 2, 3] and all(n.status.finished for n in nodes)
        assert admitted <= {n.id for n in nodes if n.status == NodeStatus.ADMITTED}  # nothing admitted is lost
        assert archive.get(1).status == victim.status
        assert archive.check() == []


def test_a_worker_leases_only_the_gpus_ray_assigned_to_its_task(monkeypatch):
    """No GPU here: Ray's assignment and nvidia-smi are faked; the worker environment's choice is real."""
    from orchestrator import ray_executor
    from sandboxes import gpu

    monkeypatch.setattr(gpu, "detect_gpus", lambda: [gpu.Gpu(0, uuid="GPU-a"), gpu.Gpu(1, uuid="GPU-b")])
    env = ray_executor._WorkerEnvironment()
    monkeypatch.setattr(ray, "get_gpu_ids", lambda: ["1"])
    pool = env.gpu_pool(per_gpu=2)
    assert [g.uuid for g in pool.gpus] == ["GPU-b"] and pool.per_gpu == 2
    with pool.lease(1) as lease:
        assert lease.env["CUDA_VISIBLE_DEVICES"] == "GPU-b"
    monkeypatch.setattr(ray, "get_gpu_ids", lambda: [])
    assert len(env.gpu_pool(per_gpu=1)) == 0  # a CPU task: no GPU, device "cpu"
