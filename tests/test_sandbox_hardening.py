"""The seven escapes of issue 15, on bwrap and docker: disk/inode quota, deep trees, user
namespaces and kernel surface, state that outlives a run (keyrings), per-uid quotas shared between
concurrent sandboxes, a docker guard the candidate can stop, CPU seconds counted per process.

Every wait is on observable state with a deadline. Docker cases skip only when docker is truly
unavailable (as in test_sandbox_docker.py).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from sandboxes import fs, quota
from sandboxes.base import Limits, python_ro_paths
from sandboxes.bwrap import BwrapSandbox
from sandboxes.factory import make_sandbox

ROOT = Path(__file__).resolve().parents[1]
HAVE_BWRAP = BwrapSandbox.available()
IS_ROOT = os.geteuid() == 0


def _docker_possible() -> bool:
    try:
        from sandboxes.docker_backend import daemon_reachable
    except ImportError:
        return False
    return daemon_reachable() or (IS_ROOT and bool(shutil.which("dockerd", path="/usr/sbin:/usr/bin")))


HAVE_DOCKER = _docker_possible()
needs_bwrap = pytest.mark.skipif(not HAVE_BWRAP, reason="bwrap missing: apt-get install -y bubblewrap")
needs_docker = pytest.mark.skipif(not HAVE_DOCKER, reason="docker is not installed: apt-get install -y docker.io")
needs_root = pytest.mark.skipif(not IS_ROOT, reason="loop mounts, uid pools and keyrings need root")

BACKENDS = [pytest.param("bwrap", marks=needs_bwrap), pytest.param("docker", marks=needs_docker)]
QUOTA = {"disk": 32 * 2**20, "inodes": 2000}
_cache: dict = {}


def _sb(name: str, **opts):
    key = (name, tuple(sorted(opts.items())))
    if key not in _cache:
        _cache[key] = make_sandbox(name, **opts)
    return _cache[key]


@pytest.fixture(scope="module", autouse=True)
def _close_sandboxes():
    yield
    for sb in _cache.values():
        sb.close()
    _cache.clear()


def _py(sb, wd: Path, code: str, limits: Limits = Limits(wall_s=60, cpu_s=30, memory_mb=512, pids=64, file_mb=8)):
    (wd / "probe.py").write_text(textwrap.dedent(code))
    return sb.run([sys.executable, "-I", "-S", "probe.py"], wd, limits, ro_paths=python_ro_paths())


def _wait_for(cond, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def _our_loop_images() -> list[str]:
    out = []
    for d in Path("/sys/block").glob("loop*"):
        try:
            back = (d / "loop" / "backing_file").read_text().strip()
        except OSError:
            continue
        if back.startswith(str(quota.STATE_DIR)):
            out.append(back)
    return out


def _assert_nothing_left(wd: Path, image: str | None = None) -> None:
    assert not wd.exists(), f"{wd} left on the host"
    assert str(wd) not in quota.mounted()
    mounts = Path("/proc/self/mountinfo").read_text()
    assert f" {wd} " not in mounts, "quota mount left"
    if image:
        assert not os.path.exists(image), "quota image left"
        _wait_for(lambda: image not in " ".join(_our_loop_images()), 5, "the loop device to detach")


# -- 1. disk and inode quota ------------------------------------------------------------------
@needs_root
@pytest.mark.parametrize("backend", BACKENDS)
def test_disk_quota_stops_many_small_files(backend, tmp_path):
    sb = _sb(backend, **QUOTA)
    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / "agent.py").write_text("# the evaluator's copy of the agent\n")
    r = _py(sb, wd, """
    import errno, sys
    n = 0
    try:
        for i in range(64):  # 64 MiB in files of 1 MiB: each under the 8 MiB file cap
            with open(f"f{i}.bin", "wb") as f:
                for _ in range(4):
                    f.write(b"x" * 2**18)
            n += 1
    except OSError as e:
        print("stopped after", n, "files, errno", e.errno)
        sys.exit(3)
    print("WROTE ALL")
    """)
    assert "WROTE ALL" not in r.stdout, r
    assert "errno 28" in r.stdout or "errno 122" in r.stdout, r  # ENOSPC / EDQUOT
    assert r.limit_hit == "disk quota", r
    assert "disk quota" in r.describe()
    assert (wd / "agent.py").read_text().startswith("# the evaluator")  # contents kept across the mount
    used, _ = fs.tree_usage(wd)
    assert used <= QUOTA["disk"]
    # what the writes cost the host: the quota image's own blocks, a file of the quota's size that
    # cannot grow (the file system's free space, measured before, moved with the other pytest
    # worker's writes: 45 MB in a fresh clone's run, against 40 MB allowed)
    image = r.extra.get("quota_image")
    assert image and os.stat(image).st_size == QUOTA["disk"]
    assert os.stat(image).st_blocks * 512 <= QUOTA["disk"] + 2**20  # + the host file system's extent blocks
    fs.remove_tree(wd)
    _assert_nothing_left(wd, image)


@needs_root
@pytest.mark.parametrize("backend", BACKENDS)
def test_inode_quota_stops_many_empty_files(backend, tmp_path):
    sb = _sb(backend, **QUOTA)
    wd = tmp_path / "wd"
    wd.mkdir()
    r = _py(sb, wd, """
    import sys
    for i in range(20000):
        try:
            open(f"e{i}", "w").close()
        except OSError as e:
            print("stopped at", i, "errno", e.errno); sys.exit(3)
    print("MADE ALL")
    """)
    assert "MADE ALL" not in r.stdout and "errno 28" in r.stdout, r
    assert r.limit_hit == "disk quota", r
    image = r.extra.get("quota_image")
    fs.remove_tree(wd)
    _assert_nothing_left(wd, image)


@needs_root
@needs_bwrap
def test_quota_workdir_keeps_its_contents_between_runs_and_is_released_when_emptied(tmp_path, monkeypatch):
    monkeypatch.setattr(quota, "IDLE_EMPTY_RELEASE_S", 0.0)
    sb = _sb("bwrap", **QUOTA)
    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / "data.txt").write_text("from the evaluator")
    r = sb.run(["sh", "-c", "cat data.txt > out.txt; echo more >> out.txt"], wd, Limits(wall_s=20))
    assert r.ok, r
    assert os.path.ismount(wd)
    (wd / "second.txt").write_text("evaluator writes between runs")
    r = sb.run(["sh", "-c", "cat out.txt second.txt"], wd, Limits(wall_s=20))
    assert r.ok and "from the evaluator" in r.stdout and "between runs" in r.stdout, r
    # shutil.rmtree (what callers did before remove_tree) empties it and fails on the mount point;
    # the next attach releases such an idle empty mount.
    shutil.rmtree(wd, ignore_errors=True)
    other = tmp_path / "other"
    other.mkdir()
    assert sb.run(["true"], other, Limits(wall_s=20)).ok
    _wait_for(lambda: not os.path.ismount(wd), 5, "the emptied quota mount to be released")
    fs.remove_tree(wd)
    fs.remove_tree(other)
    _assert_nothing_left(wd)
    _assert_nothing_left(other)


# -- 2. deep trees ----------------------------------------------------------------------------
DEPTH = 10_000


def _deep(root: Path, depth: int = DEPTH) -> None:
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(depth):
        os.mkdir("d", dir_fd=fd)
        nfd = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    os.close(os.open("leaf", os.O_WRONLY | os.O_CREAT, dir_fd=fd))
    os.symlink("/etc/passwd", "link", dir_fd=fd)
    os.close(fd)


def test_fs_helpers_handle_10000_levels_without_recursion(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _deep(src)
    (tmp_path / "outside").write_text("keep")
    os.symlink(tmp_path / "outside", src / "escape")  # a link out must not be followed
    dst = tmp_path / "dst"
    dst.mkdir()
    fs.copy_tree(src, dst)
    assert fs.tree_usage(dst)[1] == fs.tree_usage(src)[1] == DEPTH + 3
    if IS_ROOT:
        fs.grant_tree(src, 4242, 4242)
        fs.walk(src, lambda w, kind, name, st: kind == fs.LEAVE or (
            st.st_uid == 4242 or name in ("link", "escape") or pytest.fail(name)))
        assert os.stat(tmp_path / "outside").st_uid != 4242
    fs.remove_tree(src)
    fs.remove_tree(dst)
    assert not src.exists() and not dst.exists()
    assert (tmp_path / "outside").read_text() == "keep"


@pytest.mark.parametrize("backend", BACKENDS)
def test_deep_tree_from_the_candidate_is_granted_and_cleaned(backend, tmp_path):
    sb = _sb(backend, disk=64 * 2**20, inodes=20_000) if IS_ROOT else _sb(backend)
    wd = tmp_path / "wd"
    wd.mkdir()
    code = f"""
    import os
    fd = os.open(".", os.O_RDONLY)
    for _ in range({DEPTH}):
        os.mkdir("d", dir_fd=fd)
        nfd = os.open("d", os.O_RDONLY, dir_fd=fd); os.close(fd); fd = nfd
    print("BUILT", {DEPTH})
    """
    r = _py(sb, wd, code)
    assert r.ok and "BUILT" in r.stdout, r
    r = sb.run(["sh", "-c", "echo second run ok"], wd, Limits(wall_s=30))  # grants the tree again
    assert r.ok and "second run ok" in r.stdout, r
    image = r.extra.get("quota_image")
    fs.remove_tree(wd)
    _assert_nothing_left(wd, image)


@needs_bwrap
def test_exec_cli_keeps_output_and_removes_a_deep_temporary_workdir(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from sandboxes.cli import sandbox

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    code = (f"import os\nfd = os.open('.', os.O_RDONLY)\nfor _ in range({DEPTH}):\n"
            " os.mkdir('d', dir_fd=fd); n = os.open('d', os.O_RDONLY, dir_fd=fd); os.close(fd); fd = n\n"
            "print('OUTPUT KEPT')\n")
    res = CliRunner().invoke(sandbox, ["exec", "--", "python", "-c", code], catch_exceptions=False)
    assert res.exit_code == 0 and "OUTPUT KEPT" in res.stdout, (res.stdout, res.stderr)
    assert not list(tmp_path.glob("dgm-sandbox-exec-*"))


# -- 3. user namespaces and the kernel surface ------------------------------------------------
SURFACE = """
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
def call(name, nr, *args):
    ctypes.set_errno(0)
    rc = libc.syscall(nr, *args)
    print(name, "OK" if rc >= 0 else errno.errorcode.get(ctypes.get_errno(), ctypes.get_errno()))
CLONE_NEWUSER, CLONE_NEWNET, CLONE_NEWNS = 0x10000000, 0x40000000, 0x00020000
call("unshare_user_net", 272, CLONE_NEWUSER | CLONE_NEWNET)
call("unshare_mnt", 272, CLONE_NEWNS)
call("setns", 308, 0, 0)
SIGCHLD = 17
pid = libc.syscall(56, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0)  # clone(): a child in a new user ns
if pid == 0:
    os._exit(0)
print("clone_newuser", "OK" if pid > 0 else errno.errorcode.get(ctypes.get_errno()))
if pid > 0:
    os.waitpid(pid, 0)
call("add_key", 248, b"user", b"dgm-probe", b"secret", 6, -4)
call("keyctl", 250, 0, -4, 0)  # KEYCTL_GET_KEYRING_ID @u
call("request_key", 249, b"user", b"dgm-probe", 0, 0)
call("bpf", 321, 0, 0, 0)
call("perf_event_open", 298, 0, 0, -1, -1, 0)
call("userfaultfd", 323, 0)
call("mount", 165, b"none", b"/tmp", b"tmpfs", 0, 0)
call("kexec_load", 246, 0, 0, 0, 0)
call("fsopen", 430, b"tmpfs", 0)
r = os.fork()
if r == 0:
    os._exit(7)
print("fork", os.waitpid(r, 0)[1] >> 8)
"""
DENIED = ("unshare_user_net", "unshare_mnt", "setns", "clone_newuser", "add_key", "keyctl",
          "request_key", "bpf", "perf_event_open", "userfaultfd", "mount", "kexec_load", "fsopen")


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_user_namespaces_keys_or_kernel_surface(backend, tmp_path):
    r = _py(_sb(backend), tmp_path, SURFACE)
    assert r.ok, r
    got = dict(line.split(None, 1) for line in r.stdout.splitlines())
    allowed = {k: v for k, v in got.items() if k in DENIED and v not in ("EPERM", "ENOSYS")}
    assert not allowed, f"reachable inside the sandbox: {allowed}\n{r.stdout}"
    assert got["fork"] == "7"  # plain fork/clone still works


def test_seccomp_filter_is_built_once_and_small():
    from sandboxes import seccomp

    assert seccomp.filter_bpf() is seccomp.filter_bpf()
    assert 0 < len(seccomp.filter_bpf()) < 65536


# -- 4. state that outlives a run -------------------------------------------------------------
KEY_ADD = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
print("add", libc.syscall(248, b"user", b"dgm-leak", b"from-run-1", 10, -4), ctypes.get_errno())
"""
KEY_FIND = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
print("found", libc.syscall(250, 10, -4, b"user", b"dgm-leak", 0))  # KEYCTL_SEARCH @u
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_key_from_one_run_is_not_found_by_the_next(backend, tmp_path):
    sb = _sb(backend)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _py(sb, tmp_path / "a", KEY_ADD)
    r = _py(sb, tmp_path / "b", KEY_FIND)
    found = int(r.stdout.split()[1]) if r.stdout.startswith("found") else -1
    assert found < 0, f"a later run found the key: {r.stdout}"


@needs_root
@needs_bwrap
def test_the_slot_uid_keyring_is_emptied_before_each_run(tmp_path):
    from sandboxes import uids

    pool = uids.UidPool(base=210_000, size=1, lock_dir=tmp_path / "locks")
    uid = pool.base
    plant = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--",
                            sys.executable, "-I", "-S", "-c", KEY_ADD], capture_output=True, text=True)
    assert plant.stdout.startswith("add") and int(plant.stdout.split()[1]) > 0, plant
    assert uids.key_counts().get(uid, 0) > 0
    assert pool.clear_keys(uid)
    find = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--",
                           sys.executable, "-I", "-S", "-c", KEY_FIND], capture_output=True, text=True)
    assert int(find.stdout.split()[1]) < 0, find


# -- 5. per-uid kernel quotas -----------------------------------------------------------------
HOG = """
import ctypes, os, time
libc = ctypes.CDLL(None, use_errno=True)
fds = []
while True:
    fd = libc.inotify_init()
    if fd < 0:
        break
    fds.append(fd)
open("ready", "w").write(str(len(fds)))
deadline = time.monotonic() + 60
while not os.path.exists("done") and time.monotonic() < deadline:
    time.sleep(0.05)
print("held", len(fds), "uid", os.getuid())
"""
NEEDS_ONE = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init()
print("inotify", fd, ctypes.get_errno(), "uid", os.getuid())
"""


@needs_root
@pytest.mark.parametrize("backend", BACKENDS)
def test_concurrent_sandboxes_share_no_per_uid_quota(backend, tmp_path):
    from sandboxes.uids import reserved_block_ids

    sb = _sb(backend)
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("hog", _py(sb, a, HOG)))
    t.start()
    try:
        _wait_for(lambda: (a / "ready").exists(), 60, "the hog to take every inotify instance")
        r = _py(sb, b, NEEDS_ONE)
    finally:
        (a / "done").write_text("")
        t.join(60)
    assert int(r.stdout.split()[1]) >= 0, f"a concurrent sandbox could not get an inotify instance: {r.stdout}"
    uid_a, uid_b = int(out["hog"].stdout.split()[-1]), int(r.stdout.split()[-1])
    assert uid_a != uid_b
    assert not {uid_a, uid_b} & reserved_block_ids(), "a sandbox uid may use reserved blocks"


# -- 6. docker: a guard the candidate cannot stop, a deadline that outlives dgm ----------------
STOPPER = """
import os, signal, time
try:
    os.kill(-1, signal.SIGSTOP)  # every process this uid may signal: the guard, docker-init
except ProcessLookupError:
    pass  # none: the guard is out of reach
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    open("heartbeat.tmp", "w").write(str(time.time())); os.replace("heartbeat.tmp", "heartbeat")
    time.sleep(0.1)
"""
DGM_CHILD = """
import sys
sys.path.insert(0, {root!r})
from pathlib import Path
from sandboxes.base import Limits, python_ro_paths
from sandboxes.docker_backend import DockerSandbox
sb = DockerSandbox(guard_grace_s=2.0, disk=None)  # heartbeat on the host's disk: any sweep keeps it
sb.run([sys.executable, "-I", "-S", "probe.py"], Path({wd!r}), Limits(wall_s=3), ro_paths=python_ro_paths())
"""


@needs_docker
def test_docker_guard_and_deadline_outlive_a_killed_dgm(tmp_path):
    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / "probe.py").write_text(textwrap.dedent(STOPPER))
    child = subprocess.Popen([sys.executable, "-c", DGM_CHILD.format(root=str(ROOT), wd=str(wd))])
    try:
        _wait_for(lambda: (wd / "heartbeat").exists(), 120, "the candidate's heartbeat")
        from sandboxes._cgroups import _pidns, _start_time

        owner = f"{_pidns()}.{child.pid}.{_start_time(child.pid)}"
        child.kill()  # dgm dies (crash, OOM kill): nobody in dgm kills the container now
        child.wait()
        killed_at = time.monotonic()

        def stopped():
            before = (wd / "heartbeat").read_text()
            time.sleep(0.5)
            return (wd / "heartbeat").read_text() == before

        _wait_for(stopped, 3 + 2 + 20, "the container to be killed at its deadline")
        assert time.monotonic() - killed_at < 25
        from sandboxes.docker_backend import LABEL

        client = _sb("docker").client
        _wait_for(lambda: not client.containers.list(filters={"label": f"{LABEL}.owner={owner}"}), 20,
                  "the dead dgm's container to stop")
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


@needs_docker
def test_docker_reaps_expired_sandboxes_on_start_and_from_the_watchdog():
    from sandboxes.docker_backend import IMAGE, LABEL, DockerSandbox, ensure_watchdog

    sb = _sb("docker")
    expired = sb.client.containers.create(IMAGE, ["sleep", "60"],
                                          labels={LABEL: "x", f"{LABEL}.deadline": str(time.time() - 1)})
    expired.start()
    sb.reap_expired()  # (a running watchdog may get there first: either way it must be gone)
    _wait_for(lambda: not sb.client.containers.list(all=True, filters={"id": expired.id}), 10,
              "the expired container's removal")
    expired = sb.client.containers.create(IMAGE, ["sleep", "60"],
                                          labels={LABEL: "x", f"{LABEL}.deadline": str(time.time() + 1)})
    expired.start()
    ensure_watchdog()
    _wait_for(lambda: not sb.client.containers.list(all=True, filters={"id": expired.id}), 20,
              "the host-side watchdog to remove an expired container")


BWRAP_CHILD = """
import sys
sys.path.insert(0, {root!r})
from pathlib import Path
from sandboxes.base import Limits, python_ro_paths
from sandboxes.bwrap import BwrapSandbox
BwrapSandbox().run([sys.executable, "-I", "-S", "probe.py"], Path({wd!r}), Limits(wall_s=30),
                   ro_paths=python_ro_paths())
"""


@needs_root
@needs_bwrap
def test_bwrap_candidate_dies_with_a_killed_dgm_and_its_quota_mount_is_swept(tmp_path):
    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / "probe.py").write_text(textwrap.dedent(STOPPER))
    child = subprocess.Popen([sys.executable, "-c", BWRAP_CHILD.format(root=str(ROOT), wd=str(wd))])
    try:
        _wait_for(lambda: (wd / "heartbeat").exists(), 60, "the candidate's heartbeat")
        assert os.path.ismount(wd)
        child.kill()
        child.wait()

        def stopped():
            try:
                before = (wd / "heartbeat").read_text()
                time.sleep(0.5)
                return (wd / "heartbeat").read_text() == before
            except FileNotFoundError:  # another process's sweep already took the mount
                return True

        _wait_for(stopped, 10, "the candidate to die with its dgm")
        # the dead dgm's quota mount, loop device and image go at the next sweep (any dgm's)
        quota.sweep()
        _wait_for(lambda: not os.path.ismount(wd), 5, "the dead owner's quota mount to be swept")
        assert not [f for f in os.listdir(quota.STATE_DIR) if f".{child.pid}." in f]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


# -- 7. CPU seconds for the whole sandbox -----------------------------------------------------
SPREAD = """
import os, time
for _ in range(4):
    if os.fork() == 0:
        while True:
            pass
time.sleep(60)
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_cpu_seconds_are_counted_over_the_whole_sandbox(backend, tmp_path):
    t = time.monotonic()
    r = _py(_sb(backend), tmp_path, SPREAD, Limits(wall_s=40, cpu_s=2, memory_mb=512, pids=64))
    assert r.limit_hit == "cpu", r
    assert r.extra.get("cpu_s", 99) < 2 + 2.5, r.extra
    assert time.monotonic() - t < 30  # 2 CPU-s of 4 busy processes, on a loaded 2-core machine


# -- the probes -------------------------------------------------------------------------------
def test_check_has_a_probe_for_each_escape():
    from sandboxes.probes import PROBES

    for name in ("disk_quota", "inode_quota", "deep_tree", "user_namespace", "keyring",
                 "per_uid_quota", "stopped_guard", "cpu_spread"):
        assert name in PROBES


# -- helpers the lead wires in ------------------------------------------------------------------
@needs_root
def test_release_keep_copies_the_contents_back_and_detaches(tmp_path):
    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / "in.txt").write_text("before")
    qm = quota.attach(str(wd), **QUOTA)
    quota.done(qm)
    assert os.path.ismount(wd) and (wd / "in.txt").read_text() == "before"
    (wd / "sub").mkdir()
    (wd / "sub" / "out.txt").write_text("written on the quota fs")
    assert quota.release(wd, keep=True)
    assert not os.path.ismount(wd)
    assert (wd / "sub" / "out.txt").read_text() == "written on the quota fs"
    assert not os.path.exists(qm.image)
    assert not list(tmp_path.glob("wd.dgm-*"))


@needs_root
def test_a_uid_pool_with_a_reserved_block_uid_is_refused(tmp_path, monkeypatch):
    from sandboxes import uids
    from sandboxes.base import SandboxError
    from sandboxes.uids import UidPool, reserved_block_ids

    reserved = sorted(u for u in reserved_block_ids() if u >= 1000)
    if not reserved:  # this machine mounts none with a resuid: stand one in, so the check still runs
        monkeypatch.setattr(uids, "reserved_block_ids", lambda: {70000})
        reserved = [70000]
    with pytest.raises(SandboxError, match="reserved blocks"):
        UidPool(base=reserved[0] - 1, size=4, lock_dir=tmp_path)


def test_run_result_names_the_disk_quota():
    from sandboxes.base import LIMIT_DISK, RunResult

    r = RunResult(3, "", "OSError: [Errno 28] No space left on device", 1.0, LIMIT_DISK, "bwrap",
                  extra={"disk_quota_mb": 32, "inode_quota": 2000})
    assert not r.ok and "disk quota" in r.describe() and "32 MiB" in r.describe()


def test_inode_count_is_capped_to_what_mkfs_accepts():
    assert quota.effective_inodes(16 * 2**20, 200_000) == 8192
    assert quota.effective_inodes(4 * 2**30, 200_000) == 200_000


@needs_root
@needs_bwrap
def test_contents_larger_than_the_quota_are_kept_and_reported(tmp_path):
    wd = tmp_path / "wd"
    wd.mkdir()
    with open(wd / "data.bin", "wb") as f:
        f.truncate(0)
        f.write(b"x" * (40 * 2**20))  # the evaluator's data, larger than the 32 MiB quota
    r = _sb("bwrap", **QUOTA).run(["true"], wd, Limits(wall_s=20))
    assert r.limit_hit == "disk quota" and "disk quota" in r.describe(), r
    assert not os.path.ismount(wd) and (wd / "data.bin").stat().st_size == 40 * 2**20
    assert not list(tmp_path.glob("wd.dgm-*"))
    fs.remove_tree(wd)
    _assert_nothing_left(wd)
