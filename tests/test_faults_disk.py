"""The run directory's disk fills up: the campaign stops with one clear line (no traceback), every
node written so far is kept, the archive is consistent, and after space is freed the same command
resumes. A 3 MiB tmpfs stands in for the full disk."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from archive import Archive
from tests.campaign_helpers import distinct_grids, write_config
from tests.fm_server import ScriptedFMServer

ROOT = Path(__file__).resolve().parents[1]
DGM = [sys.executable, "-m", "orchestrator.cli"]


@pytest.fixture
def small_disk(tmp_path):
    if os.geteuid() != 0:
        pytest.fail("mounting a small tmpfs needs root (CI and make test run as root)")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_run_directory_stops_cleanly_and_resumes(tmp_path, small_disk):
    env = {**os.environ, "DGM_TEST_KEY": "k"}
    run_dir = small_disk / "run"
    with ScriptedFMServer(responder=distinct_grids()) as srv:
        cfg = write_config(tmp_path, srv.base_url, iterations=400)
        res = subprocess.run([*DGM, "run", str(cfg), "--no-live", "--run-dir", str(run_dir)], env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=600)
        assert res.returncode == 2, res.stderr[-2000:]
        assert "the disk is full" in res.stderr and "run the same command again to resume" in res.stderr
        assert "Traceback" not in res.stderr
        with Archive.open(run_dir, readonly=True) as archive:
            before = {n.id: n.commit for n in archive.nodes()}
        assert 3 < len(before) < 401
        subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)  # space is freed
        target = len(before) + 2
        res = subprocess.run([*DGM, "run", str(cfg), "--no-live", "--run-dir", str(run_dir), "--iterations", str(target)],
                             env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0 and f"reached {target} iterations" in res.stdout, res.stderr[-2000:]
    check = subprocess.run([*DGM, "archive", "check", str(run_dir)], cwd=ROOT, capture_output=True, text=True)
    assert check.returncode == 0 and "ok" in check.stdout, check.stdout + check.stderr
    with Archive.open(run_dir, readonly=True) as archive:
        after = {n.id: n.commit for n in archive.nodes()}
        assert all(n.status.finished for n in archive.nodes())
    assert sorted(after) == list(range(target + 1))
    assert all(after[i] == commit for i, commit in before.items())  # nothing written before was lost
