"""Scratch roots: one per process, named by pid and start time; a process killed with kill -9
leaves its root, and the next process to need one sweeps it, quota mounts included. Live
processes' roots, and anything not named like a root, are left alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sandboxes import quota, scratch
from tests.campaign_helpers import wait_for

ROOT = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent("""
    import signal
    from sandboxes import scratch
    d = scratch.mkdtemp("stage-")
    (d / "deep").mkdir()
    (d / "deep" / "f").write_text("x")
    print(d, flush=True)
    signal.pause()  # alive until the test kills it
""")


def test_a_killed_process_s_scratch_root_is_swept_and_live_ones_are_kept(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", CHILD], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        workdir = Path(child.stdout.readline().strip())
        child_root = workdir.parent
        assert child_root.name == f"dgm.{child.pid}.{scratch._start_ticks(child.pid)}"
        assert oct(child_root.stat().st_mode & 0o777) == "0o755"  # sandboxed uids reach their dirs
        mine = scratch.root()
        assert child_root not in scratch.sweep()  # a live process: never swept
        assert workdir.exists() and mine.exists()
        child.send_signal(signal.SIGKILL)
        child.wait()
        wait_for(lambda: scratch._start_ticks(child.pid) is None, "the killed process to be reaped", 10)
        removed = scratch.sweep()
        assert child_root in removed and not child_root.exists()
        assert mine.exists()  # ours, alive
    finally:
        child.kill()
        child.wait()


QUOTA_CHILD = textwrap.dedent("""
    import signal
    from sandboxes import quota, scratch
    d = scratch.mkdtemp("stage-")
    (d / "work").mkdir()
    quota.attach(str(d / "work"))  # a disk-quota file system mounted inside the root
    print(d, flush=True)
    signal.pause()
""")


@pytest.mark.skipif(os.geteuid() != 0, reason="quota mounts need root (loop devices)")
def test_a_root_holding_a_dead_process_s_quota_mount_is_swept_in_one_go(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", QUOTA_CHILD], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        workdir = Path(child.stdout.readline().strip())
        assert os.path.ismount(workdir / "work")
        child.send_signal(signal.SIGKILL)
        child.wait()
        wait_for(lambda: scratch._start_ticks(child.pid) is None, "the killed process to be reaped", 10)
        # the first sweep after the kill unmounts the dead root's quota file system, then removes the root
        assert workdir.parent in scratch.sweep()
        assert not workdir.parent.exists()
        assert not any(m.startswith(str(workdir)) for m, _ in quota._loop_mounts())
    finally:
        child.kill()
        child.wait()


def test_the_sweep_keeps_live_roots_and_other_names(tmp_path):
    live = tmp_path / f"dgm.{os.getpid()}.{scratch._start_ticks(os.getpid())}"
    reused_pid = tmp_path / f"dgm.{os.getpid()}.1"  # our pid, another start time: a dead owner
    dead = tmp_path / "dgm.999999999.5"
    other = tmp_path / "dgm.work"
    for d in (live, reused_pid, dead, other):
        (d / "a" / "b").mkdir(parents=True)
    assert sorted(scratch.sweep(tmp_path)) == sorted([reused_pid, dead])
    assert live.exists() and other.exists() and not dead.exists() and not reused_pid.exists()
