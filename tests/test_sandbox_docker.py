"""The docker backend for real: dockerd is started by a fixture when it is installed but not
running (as on CI), and the image is built once and then reused by tag. Few tests on purpose:
the probe suite covers most of the containment in one go."""

from __future__ import annotations

import os
import shutil
import sys

import pytest

from sandboxes._cgroups import _pidns
from sandboxes.base import Limits, python_ro_paths
from sandboxes.docker_backend import IMAGE, LABEL, DockerSandbox, daemon_reachable, ensure_dockerd
from sandboxes.probes import run_probes

pytestmark = pytest.mark.skipif(
    not (daemon_reachable() or (os.geteuid() == 0 and shutil.which("dockerd", path="/usr/sbin:/usr/bin"))),
    reason="docker is not installed: apt-get install -y docker.io (tests start dockerd themselves)",
)


@pytest.fixture(scope="session")
def docker_sb():
    client = ensure_dockerd()
    sb = DockerSandbox(client=client, image=IMAGE)  # builds the image once; reused by tag afterwards
    yield sb
    sb.close()


def test_docker_run_contains_and_passes_exit_code(docker_sb, tmp_path, monkeypatch):
    monkeypatch.setenv("DGM_TEST_API_KEY", "sk-docker-canary")
    code = """
import os, socket
res = {"uid": os.getuid(), "env": "sk-docker-canary" in str(os.environ), "mine": os.environ.get("MINE")}
try:
    socket.create_connection(("1.1.1.1", 53), timeout=2); res["net"] = "open"
except OSError as e:
    res["net"] = e.errno
for p in ("/etc/x", "/usr/x", "/x"):
    try:
        open(p, "w"); res[p] = "WROTE"
    except OSError as e:
        res[p] = e.errno
open("/tmp/t", "w").write("tmpfs ok")
open("result.txt", "w").write("persisted")
print(res)
raise SystemExit(3)
"""
    r = docker_sb.run([sys.executable, "-I", "-S", "-c", code], tmp_path, Limits(wall_s=60),
                      env={"MINE": "1"}, ro_paths=python_ro_paths())
    assert r.returncode == 3 and r.limit_hit is None, r
    res = eval(r.stdout)
    assert res["uid"] == r.extra["uid"] and 200_000 <= res["uid"] < 200_064  # a pool uid per run
    assert res["env"] is False and res["mine"] == "1"
    assert res["net"] == 101  # ENETUNREACH: network_mode=none
    assert all(res[p] == 30 for p in ("/etc/x", "/usr/x", "/x")), res  # EROFS: read-only root
    assert (tmp_path / "result.txt").read_text() == "persisted"


def test_docker_timeout_kills_and_removes_the_container(docker_sb, tmp_path):
    r = docker_sb.run(["sh", "-c", "setsid sleep 60 & sleep 60"], tmp_path, Limits(wall_s=1))
    assert r.limit_hit == "timeout", r
    docker_sb.close()  # removal runs in the background: wait for it
    left = docker_sb.client.containers.list(all=True, filters={"label": f"{LABEL}={docker_sb.instance}"})
    assert left == []


def test_docker_stop_all_ends_a_running_container_and_refuses_new_ones(docker_sb, tmp_path):
    import threading

    from sandboxes import SandboxError, allow_runs, stop_all
    from tests.campaign_helpers import wait_for

    results = []
    runner = threading.Thread(target=lambda: results.append(docker_sb.run(
        ["sh", "-c", "echo started > started; sleep 60"], tmp_path, Limits(wall_s=90))))
    runner.start()
    try:
        wait_for((tmp_path / "started").exists, "the container to start", 60)
        stop_all()
        runner.join(30)
        assert not runner.is_alive() and not results[0].ok and results[0].wall_s < 30, results
        with pytest.raises(SandboxError, match="stopping"):
            docker_sb.run(["true"], tmp_path, Limits(wall_s=10))
    finally:
        allow_runs()
        runner.join(90)


def test_docker_probe_suite(docker_sb):
    escaped = {r.name: r.detail for r in run_probes(docker_sb) if not r.contained}
    assert not escaped


def test_docker_sweeps_containers_of_dead_orchestrators(docker_sb):
    dead_owner = docker_sb.client.containers.create(
        IMAGE, ["sleep", "60"], labels={f"{LABEL}.owner": f"{_pidns()}.999999.1", LABEL: "x"})
    dead_owner.start()
    assert docker_sb.sweep_dead_owners() >= 1
    assert not docker_sb.client.containers.list(all=True, filters={"id": dead_owner.id})
