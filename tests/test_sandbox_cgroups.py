"""cgroup detection and limit writing against fake v1 and v2 trees (the kernel's behaviour is
covered by the real runs in test_sandbox.py)."""

from __future__ import annotations

from pathlib import Path

from sandboxes import _cgroups

V1_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
V1_CGROUP = "8:pids:/\n4:memory:/job/42\n1:cpu,cpuacct:/\n0::/\n"

V2_MOUNTINFO = "30 23 0:27 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
V2_CGROUP = "0::/user.slice/dgm.service\n"


def _fake(tmp_path: Path, mountinfo: str, cgroup: str) -> tuple[Path, Path]:
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "mountinfo").write_text(mountinfo)
    (proc / "cgroup").write_text(cgroup)
    return proc, tmp_path / "root"


def test_v1_detection_nests_under_our_own_cgroup(tmp_path):
    proc, root = _fake(tmp_path, V1_MOUNTINFO, V1_CGROUP)
    for d in ("cpu,cpuacct", "memory/job/42", "pids"):
        (root / "sys/fs/cgroup" / d).mkdir(parents=True)
    sup = _cgroups.detect(proc, prefix=root)
    assert sup is not None and sup.version == 1
    assert sup.parents["memory"] == root / "sys/fs/cgroup/memory/job/42/dgm"
    assert sup.parents["pids"] == root / "sys/fs/cgroup/pids/dgm"
    assert sup.parents["cpu"] == sup.parents["cpuacct"]  # co-mounted
    assert not sup.parents["memory"].exists()  # the probe leaves nothing behind

    cg = sup.create(256, 32, 0.5, run_id="run1")
    mem = root / "sys/fs/cgroup/memory/job/42/dgm/run1"
    assert (mem / "memory.limit_in_bytes").read_text() == str(256 * 2**20)
    assert (mem / "memory.memsw.limit_in_bytes").read_text() == str(256 * 2**20)
    assert (root / "sys/fs/cgroup/pids/dgm/run1/pids.max").read_text() == "32"
    cpu = root / "sys/fs/cgroup/cpu,cpuacct/dgm/run1"
    assert (cpu / "cpu.cfs_quota_us").read_text() == "50000"
    assert cg.limits_set == {"memory_mb": 256, "pids": 32, "cpus": 0.5}
    assert len(cg.procs_files()) == 3  # one per hierarchy, the co-mounted one once


def test_v1_counters(tmp_path):
    proc, root = _fake(tmp_path, V1_MOUNTINFO, V1_CGROUP)
    for d in ("cpu,cpuacct", "memory/job/42", "pids"):
        (root / "sys/fs/cgroup" / d).mkdir(parents=True)
    cg = _cgroups.detect(proc, prefix=root).create(64, 8, None, run_id="r")
    d = cg.dirs
    (d["memory"] / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    (d["pids"] / "pids.events").write_text("max 5\n")
    (d["cpuacct"] / "cpuacct.usage").write_text("1500000000\n")
    (d["pids"] / "cgroup.procs").write_text("")
    assert cg.oom_kills() == 2 and cg.pids_exhausted() == 5 and cg.cpu_seconds() == 1.5
    assert cg.pids() == []


def test_v2_detection_and_limits(tmp_path):
    proc, root = _fake(tmp_path, V2_MOUNTINFO, V2_CGROUP)
    base = root / "sys/fs/cgroup/user.slice/dgm.service"
    base.mkdir(parents=True)
    (base / "cgroup.controllers").write_text("cpu memory pids\n")
    (base / "cgroup.subtree_control").write_text("")
    sup = _cgroups.detect(proc, prefix=root)
    assert sup is not None and sup.version == 2 and sup.parents["unified"] == base / "dgm"
    cg = sup.create(128, 16, 2.0, run_id="r2")
    run = base / "dgm/r2"
    assert (run / "memory.max").read_text() == str(128 * 2**20)
    assert (run / "memory.swap.max").read_text() == "0"
    assert (run / "pids.max").read_text() == "16"
    assert (run / "cpu.max").read_text() == "200000 100000"
    assert (base / "dgm/cgroup.subtree_control").read_text() == "+memory +pids +cpu"
    (run / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    (run / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 2000000\n")
    assert cg.oom_kills() == 1 and cg.cpu_seconds() == 2.5


def test_nothing_usable_means_rlimits(tmp_path):
    proc, root = _fake(tmp_path, "22 1 0:5 / /proc rw - proc proc rw\n", "0::/\n")
    assert _cgroups.detect(proc, prefix=root) is None


def test_v2_without_the_controllers_is_not_usable(tmp_path):
    proc, root = _fake(tmp_path, V2_MOUNTINFO, V2_CGROUP)
    base = root / "sys/fs/cgroup/user.slice/dgm.service"
    base.mkdir(parents=True)
    (base / "cgroup.controllers").write_text("hugetlb\n")  # what the hybrid machines show
    assert _cgroups.detect(proc, prefix=root) is None
