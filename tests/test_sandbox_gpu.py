"""GPU leasing on CPU machines: a fake device list drives the pool; a fake device node shows what a
bwrap run exposes."""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest

from sandboxes import gpu as gpu_mod
from sandboxes.base import Limits, SandboxError, python_ro_paths
from sandboxes.bwrap import BwrapSandbox
from sandboxes.gpu import Gpu, GpuPool, parse_nvidia_smi

SMI = """GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-aaaaaaaa-0000-0000-0000-000000000000)
GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-bbbbbbbb-0000-0000-0000-000000000000)
"""


def fake_pool(n=2, per_gpu=1, nodes=("/dev/nvidiactl",)):
    return GpuPool([Gpu(i, "fake", f"GPU-{i}") for i in range(n)], per_gpu=per_gpu, control_nodes=nodes)


def test_parse_nvidia_smi():
    gpus = parse_nvidia_smi(SMI)
    assert [g.index for g in gpus] == [0, 1]
    assert gpus[1].uuid.startswith("GPU-bbbb") and gpus[1].device_node == "/dev/nvidia1"
    assert gpus[0].name == "NVIDIA H100 80GB HBM3"


def test_detect_falls_back_to_device_nodes(monkeypatch):
    monkeypatch.setattr(gpu_mod.shutil, "which", lambda name, **kw: None)
    monkeypatch.setattr(gpu_mod.glob, "glob", lambda pat: ["/dev/nvidia1", "/dev/nvidia0"])
    gpus = gpu_mod.detect_gpus()
    assert [(g.index, g.device_node, g.uuid) for g in gpus] == [(0, "/dev/nvidia0", None), (1, "/dev/nvidia1", None)]


def test_lease_gives_env_and_nodes_without_touching_os_environ(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    pool = fake_pool()
    with pool.lease() as lease:
        assert lease.env["CUDA_VISIBLE_DEVICES"] == "GPU-0"
        assert lease.device_nodes == ("/dev/nvidia0", "/dev/nvidiactl")
        assert lease.device == "cuda"
        assert "CUDA_VISIBLE_DEVICES" not in os.environ
        assert pool.in_use() == {0: 1, 1: 0}
    assert pool.in_use() == {0: 0, 1: 0}


def test_least_loaded_first_and_per_gpu_sharing():
    pool = fake_pool(n=2, per_gpu=2)
    leases = [pool.try_lease() for _ in range(4)]
    assert [lease.indices for lease in leases] == [(0,), (1,), (0,), (1,)]
    assert pool.try_lease() is None  # 2 GPUs x 2 slots
    leases[1].release()
    assert pool.try_lease().indices == (1,)


def test_multi_gpu_lease_needs_distinct_gpus():
    pool = fake_pool(n=3)
    two = pool.lease(2)
    assert two.indices == (0, 1) and two.env["CUDA_VISIBLE_DEVICES"] == "GPU-0,GPU-1"
    assert pool.try_lease(2) is None
    assert pool.try_lease(1).indices == (2,)
    with pytest.raises(SandboxError, match="has 3"):
        pool.lease(4)


def test_release_on_crash_and_idempotent():
    pool = fake_pool(n=1)
    with pytest.raises(RuntimeError):
        with pool.lease():
            raise RuntimeError("candidate crashed")
    lease = pool.lease()
    lease.release()
    lease.release()
    assert pool.in_use() == {0: 0}


def test_blocking_lease_waits_and_times_out():
    pool = fake_pool(n=1)
    held = pool.lease()
    with pytest.raises(TimeoutError):
        pool.lease(timeout=0.05)
    threading.Timer(0.1, held.release).start()
    t = time.monotonic()
    with pool.lease(timeout=5) as got:
        assert got.indices == (0,)
    assert time.monotonic() - t < 4


def test_concurrent_leases_never_exceed_capacity():
    pool = fake_pool(n=2, per_gpu=2)
    peak, lock, errors = [0], threading.Lock(), []

    def worker():
        try:
            for _ in range(20):
                with pool.lease(timeout=10):
                    with lock:
                        load = sum(pool.in_use().values())
                        peak[0] = max(peak[0], load)
                    time.sleep(0.001)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and peak[0] <= 4 and sum(pool.in_use().values()) == 0


def test_no_gpu_machine_says_so():
    with pytest.raises(SandboxError, match="found none"):
        GpuPool([]).lease()


@pytest.mark.skipif(not BwrapSandbox.available(), reason="bwrap missing: apt-get install -y bubblewrap")
def test_bwrap_exposes_only_the_leased_device(tmp_path):
    # Stand-ins for /dev/nvidia0 and /dev/nvidia1: plain files, bound the way device nodes are.
    nodes = [tmp_path / "nvidia0", tmp_path / "nvidia1", tmp_path / "nvidiactl"]
    for n in nodes:
        n.write_text("node")
    pool = GpuPool([Gpu(0, "fake", "GPU-0", str(nodes[0])), Gpu(1, "fake", "GPU-1", str(nodes[1]))],
                   control_nodes=[str(nodes[2])])
    wd = tmp_path / "wd"
    wd.mkdir()
    code = (f"import os; print(os.environ['CUDA_VISIBLE_DEVICES'], "
            f"[os.path.exists(p) for p in {[str(n) for n in nodes]!r}])")
    pool.lease()  # GPU 0 is busy: the next lease gets GPU 1
    with pool.lease() as lease:
        r = BwrapSandbox().run([sys.executable, "-I", "-S", "-c", code], wd, Limits(wall_s=20),
                               ro_paths=python_ro_paths(), gpu=lease)
    assert r.ok, r
    assert r.stdout.strip() == "GPU-1 [False, True, True]"
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
