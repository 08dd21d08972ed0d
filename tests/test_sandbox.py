"""Sandbox backends for real: real processes, real bubblewrap, real cgroups where writable.

Every test uses /bin/sh or ``python -I -S`` and sub-second limits so that the file runs in a few
seconds on two cores.
"""

from __future__ import annotations

import os
import socket
import sys
import time
import uuid
from pathlib import Path

import pytest

from sandboxes import _cgroups
from tests.campaign_helpers import wait_for
from sandboxes.base import Limits, SandboxError, python_ro_paths
from sandboxes.bwrap import BwrapSandbox
from sandboxes.factory import available_backends, make_sandbox
from sandboxes.process import ProcessSandbox

HAVE_BWRAP = BwrapSandbox.available()
HAVE_CGROUPS = _cgroups.support() is not None
needs_bwrap = pytest.mark.skipif(not HAVE_BWRAP, reason="bwrap missing: apt-get install -y bubblewrap")
needs_cgroups = pytest.mark.skipif(not HAVE_CGROUPS, reason="no writable cgroups (needs root)")
PY = [sys.executable, "-I", "-S"]

BACKENDS = [
    pytest.param("process", id="process"),
    pytest.param("process-nocg", id="process-rlimits-only"),
    pytest.param("bwrap", id="bwrap", marks=needs_bwrap),
    pytest.param("bwrap-nocg", id="bwrap-rlimits-only", marks=needs_bwrap),
]


def _make(name: str):
    if name == "process":
        return ProcessSandbox()
    if name == "process-nocg":
        return ProcessSandbox(cgroups=False)
    if name == "bwrap-nocg":
        return BwrapSandbox(cgroups=False)
    return BwrapSandbox()


@pytest.fixture(params=BACKENDS)
def sb(request):
    return _make(request.param)


@pytest.fixture
def wd(tmp_path):
    d = tmp_path / "wd"
    d.mkdir()
    return d


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except FileNotFoundError:
        return False


def _procs_with(token: str) -> list[int]:
    """Host pids whose command line mentions token (works across pid namespaces)."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != os.getpid():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    if token.encode() in f.read() and _alive(int(name)):
                        out.append(int(name))
            except OSError:
                pass
    return out


def _none_left(token: str, timeout: float = 5.0) -> list[int]:
    """The processes mentioning ``token`` once they are gone, or those still there at the deadline:
    a SIGKILL is delivered asynchronously, but a leaked ``sleep 30`` would outlast any deadline."""
    try:
        wait_for(lambda: not _procs_with(token), f"the processes mentioning {token} to be gone", timeout)
    except AssertionError:
        pass  # the caller asserts on what is left, naming the pids
    return _procs_with(token)


def test_exit_code_and_output_pass_through(sb, wd):
    r = sb.run(["sh", "-c", "echo out; echo err >&2; exit 7"], wd, Limits(wall_s=10))
    assert r.returncode == 7 and r.limit_hit is None and not r.ok
    assert r.stdout == "out\n" and r.stderr == "err\n"
    assert sb.run(["true"], wd, Limits(wall_s=10)).ok


def test_missing_program_is_not_a_crash(sb, wd):
    r = sb.run(["/no/such/program"], wd, Limits(wall_s=10))
    assert not r.ok and r.limit_hit is None


def test_timeout_kills_busy_loop_and_detached_grandchild(sb, wd):
    token = f"dgm-{uuid.uuid4().hex}"
    script = (f"setsid sh -c 'echo $$ > gpid; while :; do :; done; : {token}' & "
              "while :; do :; done")
    t = time.monotonic()
    r = sb.run(["sh", "-c", script], wd, Limits(wall_s=1.0, cpu_s=30))
    assert r.limit_hit == "timeout", r
    assert time.monotonic() - t < 15
    assert _procs_with(token) == []
    if sb.name == "process":  # in bwrap the pid is a namespace pid: the token scan covers it
        assert not _alive(int((wd / "gpid").read_text()))


def test_stop_all_ends_the_runs_in_flight_and_refuses_new_ones_until_allowed(sb, wd):
    # what an interrupted campaign does: its evaluation threads must not wait out their sandboxes
    import threading

    from sandboxes import SandboxError, allow_runs, stop_all

    token = f"dgm-{uuid.uuid4().hex}"
    results = []
    command = f"setsid sh -c 'sleep 60; : {token}' & echo started > started; sleep 60; : {token}"
    runner = threading.Thread(target=lambda: results.append(sb.run(["sh", "-c", command], wd, Limits(wall_s=90))))
    runner.start()
    try:
        wait_for((wd / "started").exists, "the sandboxed command to start", 20)
        assert stop_all() >= 1
        runner.join(15)
        assert not runner.is_alive(), "the run did not return after stop_all"
        assert not results[0].ok and _none_left(token) == []
        with pytest.raises(SandboxError, match="stopping"):
            sb.run(["true"], wd, Limits(wall_s=10))
    finally:
        allow_runs()
        runner.join(90)
    assert sb.run(["true"], wd, Limits(wall_s=10)).ok


def test_forked_sleeper_that_outlives_the_command_is_killed(sb, wd):
    token = f"dgm-{uuid.uuid4().hex}"
    r = sb.run(["sh", "-c", f"setsid sh -c 'sleep 30; : {token}' & echo started"], wd, Limits(wall_s=10))
    assert r.ok and r.stdout == "started\n"
    assert _none_left(token) == []


def test_cpu_limit(sb, wd):
    # The wall limit is generous (the machine may be shared): hitting "cpu" first is the test.
    r = sb.run(["sh", "-c", "while :; do :; done"], wd, Limits(wall_s=30, cpu_s=1))
    assert r.limit_hit == "cpu", r


def test_file_size_limit(sb, wd):
    r = sb.run(["sh", "-c", "head -c 3000000 /dev/zero > big"], wd, Limits(wall_s=10, file_mb=1))
    assert r.limit_hit == "file_size", r
    assert (wd / "big").stat().st_size <= 1024 * 1024


def test_file_size_limit_python_ignores_sigxfsz(sb, wd):
    code = "open('big', 'wb').write(b'x' * 3_000_000)"
    r = sb.run([*PY, "-c", code], wd, Limits(wall_s=10, file_mb=1), ro_paths=python_ro_paths())
    assert r.limit_hit == "file_size", r


def test_output_is_capped_to_its_tail(sb, wd):
    r = sb.run(["sh", "-c", "yes x | head -c 200000; echo END; yes e | head -c 50000 >&2"], wd,
               Limits(wall_s=10, output_bytes=1000))
    assert r.ok
    assert len(r.stdout) == 1000 and r.stdout.endswith("x\nEND\n")
    assert len(r.stderr) == 1000
    assert r.extra["stdout_bytes"] == 200004


def test_environment_is_scrubbed(sb, wd, monkeypatch):
    monkeypatch.setenv("DGM_TEST_API_KEY", "sk-canary-secret")
    r = sb.run(["sh", "-c", "env"], wd, Limits(wall_s=10), env={"MINE": "1"})
    assert r.ok
    assert "sk-canary-secret" not in r.stdout and "DGM_TEST_API_KEY" not in r.stdout
    assert "MINE=1" in r.stdout and "PATH=" in r.stdout


def test_bad_workdir_is_an_actionable_error(sb, tmp_path):
    with pytest.raises(SandboxError, match="does not exist"):
        sb.run(["true"], tmp_path / "missing", Limits(wall_s=10))


@needs_cgroups
@pytest.mark.parametrize("name", ["process", pytest.param("bwrap", marks=needs_bwrap)])
def test_memory_limit_via_cgroup(name, wd):
    code = "b = bytearray(400 * 2**20); b[::4096] = b'x' * (len(b) // 4096)"
    r = _make(name).run([*PY, "-c", code], wd, Limits(wall_s=20, memory_mb=128),
                        ro_paths=python_ro_paths())
    assert r.limit_hit == "memory", r
    assert r.extra["memory_enforced_by"] == "cgroup"


def test_memory_limit_via_rlimit_without_cgroups(wd):
    r = ProcessSandbox(cgroups=False).run([*PY, "-c", "b = bytearray(600 * 2**20)"], wd,
                                          Limits(wall_s=20, memory_mb=128))
    assert r.limit_hit == "memory", r
    assert r.extra["memory_enforced_by"] == "rlimit_as"


@needs_cgroups
@pytest.mark.parametrize("name", ["process", pytest.param("bwrap", marks=needs_bwrap)])
def test_fork_bomb_hits_pids_limit(name, wd):
    bomb = "i=0; while [ $i -lt 200 ]; do sleep 5 & i=$((i+1)); done; wait"
    r = _make(name).run(["sh", "-c", bomb], wd, Limits(wall_s=3, pids=16))
    assert r.limit_hit == "pids", r


@needs_cgroups
def test_cpu_time_is_limited_across_the_whole_tree(wd):
    # Four busy children: each stays under RLIMIT_CPU, the tree total does not.
    script = "for i in 1 2 3 4; do (while :; do :; done) & done; wait"
    r = ProcessSandbox().run(["sh", "-c", script], wd, Limits(wall_s=30, cpu_s=2))
    assert r.limit_hit == "cpu", r
    assert r.extra["cpu_s"] < 4 * 2  # stopped on the total, not on each child's RLIMIT_CPU


@needs_cgroups
@pytest.mark.parametrize("name", ["process", pytest.param("bwrap", marks=needs_bwrap)])
def test_no_cgroup_is_left_behind(name, wd):
    support = _cgroups.support()
    r = _make(name).run(["sh", "-c", "sleep 30 & exit 0"], wd, Limits(wall_s=10))
    run_id = r.extra["cgroup_id"]
    assert run_id
    for parent in support.parents.values():
        assert not (parent / run_id).exists()


# -- bwrap containment -----------------------------------------------------------------------


@needs_bwrap
def test_bwrap_has_no_network(wd):
    code = ("import socket\n"
            "for host in ('1.1.1.1', '127.0.0.1'):\n"
            "    try:\n"
            "        socket.create_connection((host, 80), timeout=2); print(host, 'connected')\n"
            "    except OSError as e:\n"
            "        print(host, e.errno)\n")
    r = BwrapSandbox().run([*PY, "-c", code], wd, Limits(wall_s=10), ro_paths=python_ro_paths())
    assert r.ok, r
    assert "1.1.1.1 101" in r.stdout  # ENETUNREACH
    assert "connected" not in r.stdout


@needs_bwrap
def test_bwrap_cannot_reach_a_host_loopback_listener(wd):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]
    try:
        code = (f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
                "    print('REACHED')\nexcept OSError as e:\n    print('refused', e.errno)\n")
        r = BwrapSandbox().run([*PY, "-c", code], wd, Limits(wall_s=10), ro_paths=python_ro_paths())
    finally:
        srv.close()
    assert "REACHED" not in r.stdout and "refused" in r.stdout, r


@needs_bwrap
def test_bwrap_filesystem_view(tmp_path, wd):
    secret_dir = tmp_path / "evaluator_data"
    secret_dir.mkdir()
    (secret_dir / "hidden.csv").write_text("labels")
    code = f"""
import os
res = {{}}
for p in ('/x', '/usr/x', '/etc/x', '{secret_dir}/y', '/tmp/../x'):
    try:
        open(p, 'w').write('x'); res[p] = 'WROTE'
    except OSError as e:
        res[p] = e.errno
for p in ('{secret_dir}/hidden.csv', '/root/.bashrc', '/etc/shadow', '/etc/ssh'):
    res['read ' + p] = os.path.exists(p)
res['uid'] = os.getuid()
open('result.txt', 'w').write('persisted')
print(res)
"""
    r = BwrapSandbox().run([*PY, "-c", code], wd, Limits(wall_s=10), ro_paths=python_ro_paths())
    assert r.ok, r
    res = eval(r.stdout)
    assert all(v != "WROTE" for v in res.values()), res
    assert not any(v is True for k, v in res.items() if k.startswith("read ")), res
    # as root: a uid of its own from the pool (200000+), never the caller's; else the caller (userns)
    assert res["uid"] == (r.extra["uid"] if os.geteuid() == 0 else os.getuid())
    assert res["uid"] != 0 and (os.geteuid() != 0 or 200_000 <= res["uid"] < 200_064)
    assert (wd / "result.txt").read_text() == "persisted"
    assert not (tmp_path / "x").exists()


@needs_bwrap
def test_bwrap_python_and_venv_work_inside(wd):
    r = BwrapSandbox().run([sys.executable, "-I", "-c", "import numpy, sys; print(sys.prefix)"], wd,
                           Limits(wall_s=30), ro_paths=python_ro_paths())
    assert r.ok, r
    assert r.stdout.strip() == sys.prefix


@needs_bwrap
def test_bwrap_rejects_exposing_the_root(wd):
    with pytest.raises(SandboxError, match="whole host"):
        BwrapSandbox().run(["true"], wd, Limits(wall_s=10), ro_paths=[Path("/")])


# -- factory ---------------------------------------------------------------------------------


def test_factory_refuses_process_for_untrusted_code():
    with pytest.raises(SandboxError, match="trusted=True"):
        make_sandbox("process")
    assert make_sandbox("process", trusted=True).isolated is False


def test_factory_auto_and_unknown():
    assert "process" in available_backends()
    if HAVE_BWRAP:
        assert make_sandbox("auto").name == "bwrap"
    with pytest.raises(SandboxError, match="unknown sandbox backend"):
        make_sandbox("chroot")


def test_factory_without_isolating_backend_says_how_to_install(monkeypatch):
    from sandboxes import factory

    class Nope:
        @classmethod
        def available(cls):
            return False

    monkeypatch.setattr(factory, "_cls", lambda name: Nope)
    with pytest.raises(SandboxError, match="apt-get install -y bubblewrap"):
        make_sandbox("auto")


@needs_cgroups
@pytest.mark.parametrize("name", ["process", pytest.param("bwrap", marks=needs_bwrap)])
def test_orchestrator_killed_mid_run_leaves_nothing_after_the_next_sweep(name, tmp_path):
    """SIGKILL the orchestrator while its sandbox runs a detached child: the direct child dies with
    it (pdeathsig / --die-with-parent) and the next run's sweep kills the rest and the cgroup."""
    import subprocess

    token = f"dgm-{uuid.uuid4().hex}"
    wd = tmp_path / "wd"
    wd.mkdir()
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})\n"
            "from tests.test_sandbox import _make\nfrom sandboxes.base import Limits\n"
            f"_make({name!r}).run(['sh', '-c', \"setsid sh -c 'sleep 60; : {token}' & sleep 60\"], "
            f"{str(wd)!r}, Limits(wall_s=100))\n")
    orch = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 20
    while not _procs_with(token) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _procs_with(token), "the sandboxed child never started"
    orch.kill()
    orch.wait()
    support = _cgroups.support()
    support._last_sweep = -1e9
    support.sweep()
    assert _none_left(token) == []
