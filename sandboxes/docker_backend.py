"""``docker``: one throw-away container per run, for machines without bwrap or for a second wall.

Every run gets a fresh container from a locally built image: no network (``network_mode=none``),
read-only root with private tmpfs ``/tmp`` and ``/dev/shm``, all capabilities dropped,
``no-new-privileges``, uid/gid 65534, memory (swap included), pids, CPU bandwidth, and rlimits for
CPU seconds, file size and core dumps; ``docker-init`` reaps zombies; the work directory and the
``ro_paths`` are bind-mounted at the same paths (so the host's Python install works unchanged). On
timeout, crash or interrupt the container is killed and removed. GPUs are passed as
``device_requests`` for exactly the leased devices.

Images are never pulled (there is no registry here): :func:`build_image` makes one from a local
root file system, by default a copy of the host's own binaries and libraries (offline, ~20 s; the
same exposure as bwrap, which binds the host's /usr), or ``debootstrap --variant=minbase bookworm``
plus python3 (needs the Debian mirror, ~2 min, ~200 MB). Either way the result is
``docker import``-ed and tagged, and later calls reuse the tag.

Logs: the json-file driver with rotation keeps only the last ~``output_bytes`` of output on disk,
so a candidate cannot fill the host's disk through stdout.

The guard the candidate cannot stop: the container starts as root with only CAP_KILL, CAP_SETUID,
CAP_SETGID and CAP_SETPCAP; ``docker-init`` (pid 1) and ``timeout -s KILL <wall + grace>`` run as
that root, and ``setpriv`` drops the candidate to its pool uid with no capabilities, an empty
bounding set and ``no-new-privileges`` before it execs. A process may only signal processes of its
own uid (without CAP_KILL), so ``kill(-1, SIGSTOP)`` from the candidate cannot reach them. Behind
that, the container carries its deadline (label ``dgm.sandbox.deadline``), and a host-side
watchdog (``_docker_watchdog.py``, its own session, so it outlives dgm) removes any container past
it; every new DockerSandbox also reaps expired ones when it starts.

CPU seconds are the container cgroup's (``cpuacct.usage`` / ``cpu.stat``), polled every 50 ms while
the run waits, as on bwrap: a run whose processes together pass ``cpu_s`` is killed (``cpu``).
Each run also gets a uid of its own from the pool (:mod:`sandboxes.uids`) and, as root, a disk and
inode quota on its work directory (:mod:`sandboxes.quota`).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Mapping, Sequence

from . import _runner, quota, uids
from ._cgroups import owner_tag
from .base import (
    LIMIT_CPU,
    LIMIT_DISK,
    LIMIT_FILE_SIZE,
    LIMIT_MEMORY,
    LIMIT_PIDS,
    LIMIT_TIMEOUT,
    Limits,
    RunResult,
    Sandbox,
    SandboxError,
)

log = logging.getLogger(__name__)

IMAGE = "dgm-sandbox:bookworm"
LABEL = "dgm.sandbox"
DEADLINE_LABEL = f"{LABEL}.deadline"  # Unix time after which the container must not exist
GUARD_GRACE_S = 30.0
WATCHDOG_LOCK = "/var/tmp/dgm-docker-watchdog.lock"
WATCHDOG_IDLE_S = 60.0
_WATCHDOG = str(Path(__file__).with_name("_docker_watchdog.py"))
_GUARD_CAPS = ["KILL", "SETUID", "SETGID", "SETPCAP"]
_SETPRIV_DROP = ["--clear-groups", "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]
DOCKERD_LOG = "/var/log/dgm-dockerd.log"
INSTALL_HINT = ("install and start docker: apt-get install -y docker.io, then start the daemon "
                "(as root: `dockerd &`, or `dgm sandbox build-image` which starts it)")
_DAEMON_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: Host paths copied into the image by the ``host`` build method (no network needed).
HOST_IMAGE_PATHS = ("usr/bin", "usr/sbin", "usr/lib/x86_64-linux-gnu", "usr/lib64", "usr/libexec",
                    "usr/lib/python3", "usr/lib/python3.11", "usr/lib/os-release", "usr/share/zoneinfo",
                    "usr/share/ca-certificates", "usr/share/misc", "usr/lib/locale",
                    "etc/passwd", "etc/group", "etc/nsswitch.conf", "etc/ld.so.cache", "etc/ld.so.conf",
                    "etc/ld.so.conf.d", "etc/alternatives", "etc/ssl", "etc/hosts", "etc/localtime")


def _client(timeout: int = 60):
    try:
        import docker
    except ImportError as e:  # pragma: no cover - it is a dependency
        raise SandboxError("the docker Python SDK is missing: pip install 'docker>=7'") from e
    return docker.from_env(timeout=timeout)


def daemon_reachable() -> bool:
    try:
        return bool(_client(timeout=5).ping())
    except Exception:
        return False


def ensure_dockerd(timeout_s: float = 60.0):
    """A client for a running daemon, starting ``dockerd`` in the background if we are root.

    Tests and ``dgm sandbox build-image`` call this, so docker tests run for real on CI (root, with
    docker.io installed but no daemon). The daemon's log goes to ``/var/log/dgm-dockerd.log``.
    """
    if daemon_reachable():
        return _client()
    dockerd = shutil.which("dockerd", path=_DAEMON_PATH)
    if not dockerd:
        raise SandboxError(f"the docker daemon is not reachable and dockerd is not installed: {INSTALL_HINT}")
    if os.geteuid() != 0:
        raise SandboxError("the docker daemon is not reachable and only root can start it: start "
                           "it (sudo dockerd &, or systemctl start docker) or add yourself to the docker group")
    logf = open(DOCKERD_LOG, "ab")
    subprocess.Popen([dockerd], stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                     start_new_session=True, env={"PATH": _DAEMON_PATH})
    logf.close()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if daemon_reachable():
            return _client()
        time.sleep(0.2)
    raise SandboxError(f"dockerd did not come up within {timeout_s:.0f} s: see {DOCKERD_LOG}")


def _debian_mirror() -> str:
    for f in ("/etc/apt/sources.list.d/debian.sources", "/etc/apt/sources.list"):
        try:
            text = Path(f).read_text()
        except OSError:
            continue
        for line in text.splitlines():
            parts = line.split()
            if line.startswith("URIs:") and len(parts) > 1 and "security" not in parts[1]:
                return parts[1]
            if line.startswith("deb ") and len(parts) > 1 and "security" not in parts[1]:
                return parts[2] if parts[1].startswith("[") else parts[1]
    return "http://deb.debian.org/debian"


def _rootfs_debootstrap(dest: Path) -> None:
    exe = shutil.which("debootstrap", path=_DAEMON_PATH)
    if not exe:
        raise SandboxError("debootstrap is not installed: apt-get install -y debootstrap, "
                           "or build with method='host'")
    cmd = [exe, "--variant=minbase", "--include=python3", "bookworm", str(dest), _debian_mirror()]
    p = subprocess.run(cmd, capture_output=True, text=True, env={"PATH": _DAEMON_PATH})
    if p.returncode != 0:
        raise SandboxError(f"debootstrap failed (exit {p.returncode}); is the Debian mirror "
                           f"{_debian_mirror()} reachable? Last output:\n{(p.stdout + p.stderr)[-2000:]}")
    shutil.rmtree(dest / "var/cache/apt/archives", ignore_errors=True)
    (dest / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)


def _import(client, rootfs_tar_cmd: list[str], tag: str, method: str) -> str:
    repo, _, version = tag.partition(":")
    changes = [f"LABEL {LABEL}.method={method}", f"LABEL {LABEL}=1",
               "ENV PATH=/usr/local/bin:/usr/bin:/bin", "WORKDIR /tmp", 'CMD ["/bin/sh"]']
    proc = subprocess.Popen(rootfs_tar_cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        client.api.import_image_from_data(proc.stdout, repository=repo, tag=version or "latest",
                                          changes=changes)
    finally:
        proc.stdout.close()
        err = proc.stderr.read().decode(errors="replace")
        proc.wait()
    if proc.returncode not in (0, 1):  # GNU tar exits 1 for "file changed as we read it"
        raise SandboxError(f"packing the image root file system failed: {err[-2000:]}")
    return client.images.get(tag).id


def build_image(tag: str = IMAGE, *, method: str = "auto", force: bool = False, client=None) -> str:
    """Build (or reuse) the sandbox image under ``tag``; returns the image id.

    ``method``: ``host`` (a copy of this machine's ``/usr/bin``, ``/usr/sbin``, libraries and
    system Python: offline, about 20 s and 1.4 GB here, and exactly the libraries the host's Python
    install in ``ro_paths`` was built against), ``debootstrap`` (a clean Debian bookworm minbase +
    python3 from the apt mirror: about 2 min, 200 MB), or ``auto`` (= host). Nothing is pulled.
    """
    import docker

    client = client or ensure_dockerd()
    if not force:
        try:
            return client.images.get(tag).id
        except docker.errors.ImageNotFound:
            pass
    if method == "auto":  # host: offline and ~20 s here; debootstrap: clean but ~2 min + mirror
        method = "host"
    log.warning("building the docker sandbox image %s with %s (20 s to 2 min, once; later runs "
                "reuse the tag)", tag, method)
    t = time.monotonic()
    if method == "debootstrap":
        with tempfile.TemporaryDirectory(prefix="dgm-rootfs-", dir="/var/tmp") as d:
            root = Path(d) / "root"
            _rootfs_debootstrap(root)
            os.chmod(root / "root", 0o755)  # ro_paths under /root (pyenv) must be traversable by 65534
            image_id = _import(client, ["tar", "-C", str(root), "--numeric-owner", "-c", "."], tag, method)
    elif method == "host":
        paths = [p for p in HOST_IMAGE_PATHS if os.path.lexists("/" + p)]
        with tempfile.TemporaryDirectory(prefix="dgm-rootfs-", dir="/var/tmp") as d:
            skel = Path(d)
            for name in ("bin", "lib", "lib64", "sbin"):
                target = os.readlink("/" + name) if os.path.islink("/" + name) else f"usr/{name}"
                os.symlink(target, skel / name)
            for name in ("tmp", "root", "proc", "sys", "dev", "home", "var/tmp", "run"):
                (skel / name).mkdir(parents=True, mode=0o755, exist_ok=True)
            os.chmod(skel / "tmp", 0o1777)
            cmd = ["tar", "--numeric-owner", "-c", "-C", str(skel), ".", "-C", "/", *paths]
            image_id = _import(client, cmd, tag, method)
    else:
        raise SandboxError(f"unknown image build method {method!r}: use auto, debootstrap or host")
    log.info("built sandbox image %s (%s) in %.1f s", tag, method, time.monotonic() - t)
    return image_id


def _cgroup_counter(controller: str, container_id: str, file: str, key: str) -> int:
    """Read a counter from the container's v1 cgroup (cgroupfs driver), 0 if not found."""
    for base in (f"/sys/fs/cgroup/{controller}/docker/{container_id}",
                 f"/sys/fs/cgroup/{controller}/system.slice/docker-{container_id}.scope"):
        try:
            for line in Path(base, file).read_text().splitlines():
                parts = line.split()
                if len(parts) == 2 and parts[0] == key:
                    return int(parts[1])
        except OSError:
            continue
    return 0


def _cgroup_cpu_file(container_id: str) -> Path | None:
    """The file holding the container's total CPU time (v1 cpuacct.usage in ns, v2 cpu.stat)."""
    for f in (f"/sys/fs/cgroup/cpuacct/docker/{container_id}/cpuacct.usage",
              f"/sys/fs/cgroup/cpu,cpuacct/docker/{container_id}/cpuacct.usage",
              f"/sys/fs/cgroup/cpuacct/system.slice/docker-{container_id}.scope/cpuacct.usage",
              f"/sys/fs/cgroup/docker/{container_id}/cpu.stat",
              f"/sys/fs/cgroup/system.slice/docker-{container_id}.scope/cpu.stat"):
        if os.path.exists(f):
            return Path(f)
    return None


def _cpu_seconds(f: Path | None) -> float | None:
    if f is None:
        return None
    try:
        text = f.read_text()
    except OSError:
        return None
    if f.name == "cpuacct.usage":
        return int(text) / 1e9
    for line in text.splitlines():
        if line.startswith("usage_usec "):
            return int(line.split()[1]) / 1e6
    return None


def ensure_watchdog(idle_s: float = WATCHDOG_IDLE_S) -> bool:
    """Start the host-side deadline watchdog unless one runs (~20 us when it does). True if started.

    It runs in its own session, not tied to dgm: if dgm is SIGKILLed it still removes the
    containers at their deadline. Call after creating a labelled container (see the watchdog's
    module doc for why that order leaves no gap).
    """
    import fcntl

    fd = os.open(WATCHDOG_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # the watchdog takes the lock itself
    import sys

    subprocess.Popen([sys.executable, "-I", "-S", _WATCHDOG, WATCHDOG_LOCK, str(idle_s)],
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True, close_fds=True, cwd="/", env={"PATH": _DAEMON_PATH})
    return True


class DockerSandbox(Sandbox):
    """Docker backend. Options: ``image`` (built on first use if missing), ``user`` (``"pool"``,
    the default: a uid per run from ``uid_pool``; or a fixed ``"uid:gid"``), ``runtime`` (e.g.
    ``runsc`` for gVisor), ``tmp_mb``, ``build_method``, ``disk``/``inodes`` (the work directory's
    quota, as for bwrap; ``disk=None`` turns it off), ``guard_grace_s`` (how long after the wall
    clock the in-container guard and the host watchdog kill a container nobody collected)."""

    name = "docker"
    isolated = True

    def __init__(self, *, image: str = IMAGE, user: str = "pool", runtime: str | None = None,
                 tmp_mb: int = 512, build_method: str = "auto", client=None,
                 uid_pool: tuple[int, int] = (uids.DEFAULT_BASE, uids.DEFAULT_SIZE),
                 disk: int | None = quota.DEFAULT_DISK, inodes: int | None = quota.DEFAULT_INODES,
                 guard_grace_s: float = GUARD_GRACE_S) -> None:
        self.client = client or ensure_dockerd()
        self.image = image
        self.pool = uids.pool(*uid_pool) if user == "pool" else None
        self.user = user if user != "pool" else f"{uid_pool[0]}:{uid_pool[0]}"
        self.guard_grace_s = guard_grace_s
        self.disk, self.inodes = disk, (inodes or quota.DEFAULT_INODES)
        if disk is not None and (reason := quota.unavailable_reason()):
            log.warning("no disk quota for sandbox work directories: %s", reason)
            self.disk = None
        self._waiter = ThreadPoolExecutor(max_workers=64, thread_name_prefix="dgm-docker-wait")
        self.runtime = runtime
        self.tmp_mb = tmp_mb
        self.instance = uuid.uuid4().hex[:12]  # label value: close() removes only our containers
        # Removing a container takes ~60 ms: done off the run's critical path, one at a time.
        self._remover = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dgm-docker-rm")
        build_image(image, method=build_method, client=self.client)
        self.sweep_dead_owners()
        self.reap_expired()

    def reap_expired(self) -> int:
        """Remove every dgm sandbox container past its deadline (label ``dgm.sandbox.deadline``)."""
        removed = 0
        now = time.time()
        for c in self.client.containers.list(all=True, filters={"label": DEADLINE_LABEL}):
            try:
                if float(c.labels.get(DEADLINE_LABEL, "inf")) < now:
                    c.remove(force=True)
                    removed += 1
            except Exception as e:  # another dgm or the watchdog may be removing it too
                log.debug("could not remove expired container %s: %s", c.name, e)
        return removed

    def sweep_dead_owners(self) -> int:
        """Remove sandbox containers whose orchestrator process died (labelled with its owner tag)."""
        from ._cgroups import _pidns, _start_time

        removed = 0
        for c in self.client.containers.list(all=True, filters={"label": f"{LABEL}.owner"}):
            parts = c.labels.get(f"{LABEL}.owner", "").split(".")
            if len(parts) != 3 or not all(p.isdigit() for p in parts) or parts[0] != str(_pidns()):
                continue
            if _start_time(int(parts[1])) == int(parts[2]):
                continue
            try:
                c.remove(force=True)
                removed += 1
            except Exception as e:  # another orchestrator may be removing it too
                log.debug("could not remove stale container %s: %s", c.name, e)
        return removed

    @classmethod
    def available(cls) -> bool:
        if daemon_reachable():
            return True
        return os.geteuid() == 0 and bool(shutil.which("dockerd", path=_DAEMON_PATH))

    @classmethod
    def unavailable_reason(cls) -> str | None:
        return None if cls.available() else INSTALL_HINT

    def _create_kwargs(self, argv, wd, env, limits: Limits, ro_paths, gpu, hide=(), uid=None) -> dict:
        from docker.types import DeviceRequest, LogConfig, Ulimit

        volumes = {wd: {"bind": wd, "mode": "rw"}}
        if self.pool is not None:  # name the pool's uids (getpwuid, getpass.getuser())
            from .bwrap import ETC_ENTRIES, etc_snapshot

            etc = etc_snapshot(ETC_ENTRIES, *self.pool.passwd_lines())
            for name in ("passwd", "group"):
                if (etc / name).is_file():
                    volumes[str(etc / name)] = {"bind": f"/etc/{name}", "mode": "ro"}
        for rp in ro_paths:
            p = os.path.abspath(str(rp))
            if p == "/":
                raise SandboxError("ro_paths contains '/': pass the specific directories")
            if not os.path.exists(p):
                raise SandboxError(f"read-only path {p} does not exist on the host: fix ro_paths")
            volumes.setdefault(p, {"bind": p, "mode": "ro"})
        ulimits = [Ulimit(name="core", soft=0, hard=0)]
        if limits.cpu_s is not None:
            ulimits.append(Ulimit(name="cpu", soft=int(limits.cpu_s), hard=int(limits.cpu_s) + 1))
        if limits.file_mb is not None:
            b = limits.file_mb * 2**20
            ulimits.append(Ulimit(name="fsize", soft=b, hard=b))
        log_kb = max(16, limits.output_bytes * 2 // 1024)
        # Safety net if the orchestrator dies mid-run (nobody left to kill the container):
        # `timeout` inside, as root (the candidate cannot signal it), ends it a little after the
        # wall-clock limit; setpriv drops the candidate to its uid. The host watchdog is behind it.
        u, _, g = self.user.partition(":")
        u = str(uid) if uid is not None else u
        g = str(uid) if uid is not None else (g or u)
        guard = ["timeout", "-s", "KILL", str(int(limits.wall_s + self.guard_grace_s)),
                 "setpriv", f"--reuid={u}", f"--regid={g}", *_SETPRIV_DROP, "--"]
        kw = dict(
            image=self.image, command=guard + list(argv), working_dir=wd, user="0:0",
            environment=dict(env), network_mode="none", read_only=True,
            tmpfs={"/tmp": f"rw,nosuid,nodev,size={self.tmp_mb}m,mode=1777",
                   "/dev/shm": f"rw,nosuid,nodev,size={self.tmp_mb}m,mode=1777"},
            cap_drop=["ALL"], cap_add=list(_GUARD_CAPS), security_opt=["no-new-privileges"], init=True,
            hostname="sandbox", volumes=volumes, ulimits=ulimits, detach=True,
            labels={LABEL: self.instance, f"{LABEL}.owner": owner_tag(),
                    # + 5 s for creating and starting it
                    DEADLINE_LABEL: f"{time.time() + limits.wall_s + self.guard_grace_s + 5:.3f}"},
            stdin_open=False, tty=False,
            log_config=LogConfig(type="json-file", config={"max-size": f"{log_kb}k", "max-file": "2"}),
        )
        for hp in hide:  # bundled datasets etc.: an empty read-only tmpfs over a visible directory
            p = os.path.abspath(str(hp))
            if os.path.isdir(p) and any(p.startswith(v.rstrip("/") + "/") for v in volumes if v != wd):
                kw["tmpfs"][p] = "ro,size=1k,mode=0555"
        if limits.memory_mb is not None:
            kw["mem_limit"] = f"{limits.memory_mb}m"
            kw["memswap_limit"] = f"{limits.memory_mb}m"
        if limits.pids is not None:
            kw["pids_limit"] = limits.pids
        if getattr(limits, "cpus", None):
            kw["nano_cpus"] = int(limits.cpus * 1e9)
        if self.runtime:
            kw["runtime"] = self.runtime
        if gpu is not None and gpu.gpus:
            kw["device_requests"] = [DeviceRequest(device_ids=[g.visible_id for g in gpu.gpus],
                                                   capabilities=[["gpu"]])]
        return kw

    def run(
        self,
        argv: Sequence[str],
        workdir: Path,
        limits: Limits,
        env: Mapping[str, str] | None = None,
        ro_paths: Sequence[Path] = (),
        *,
        gpu=None,
        hide: Sequence[Path] = (),
    ) -> RunResult:
        import docker
        import requests

        _runner.refuse_if_stopping()
        t0 = time.monotonic()
        wd = _runner.fresh_workdir(workdir)
        argv = _runner.check_argv(argv)
        child_env = _runner.child_env(env, gpu.env if gpu is not None else None)
        lease = qm = None
        container = None
        try:
            if self.disk is not None:
                try:
                    qm = quota.attach(wd, self.disk, self.inodes)
                except quota.QuotaExceeded as e:
                    r = RunResult(None, "", str(e), 0.0, LIMIT_DISK, self.name, time.monotonic() - t0)
                    r.extra.update(disk_quota_mb=round(self.disk / 2**20), inode_quota=self.inodes)
                    return r
            if self.pool is not None:
                lease = self.pool.lease(prefer=os.stat(wd).st_uid)
                self.pool.clear_keys(lease.uid)
                uid, gid = lease.uid, lease.gid
            else:
                u, _, g = self.user.partition(":")
                uid, gid = (int(u), int(g or u)) if u.isdigit() else (None, None)
            if uid is not None and os.geteuid() == 0:
                _runner.grant_workdir(wd, uid, gid)
            kw = self._create_kwargs(argv, wd, child_env, limits, ro_paths, gpu, hide, uid=uid)
            kw["name"] = f"dgm-sbx-{uuid.uuid4().hex[:12]}"
            try:
                container = self.client.containers.create(**kw)
                try:
                    ensure_watchdog()  # after the labelled container exists (see _docker_watchdog)
                except OSError as e:  # e.g. a non-root user and root's lock file
                    log.warning("could not start the docker deadline watchdog (%s); the guard "
                                "inside the container still ends it", e)
                container.start()
            except docker.errors.APIError as e:
                msg = str(e)
                if container is not None and "executable file not found" in msg:
                    return RunResult(None, "", f"could not start {argv[0]!r}: {e.explanation}",
                                     time.monotonic() - t0, None, self.name, time.monotonic() - t0)
                raise SandboxError(f"docker could not start the container: {e}") from e
            started = time.monotonic()
            rc, timed_out, cpu_killed, cpu_used, pids_seen = self._wait(container, limits, started)
            wall = time.monotonic() - started
            state = self.client.api.inspect_container(container.id)["State"]
            out = container.logs(stdout=True, stderr=False)[-limits.output_bytes:]
            err = container.logs(stdout=False, stderr=True)[-limits.output_bytes:]
            stdout, stderr = out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
            pids_refused = max(pids_seen, _cgroup_counter("pids", container.id, "pids.events", "max"))
            oom = bool(state.get("OOMKilled"))
            limit = None
            sig = rc - 128 if rc > 128 else None
            if oom:
                limit = LIMIT_MEMORY
            elif cpu_killed or (sig == 24 and limits.cpu_s is not None):  # SIGXCPU
                limit = LIMIT_CPU
            elif (sig == 25 or (rc != 0 and any(m in stderr[-4000:] for m in _runner._EFBIG_MARKERS))) \
                    and limits.file_mb is not None:
                limit = LIMIT_FILE_SIZE
            elif timed_out:
                limit = LIMIT_PIDS if pids_refused else LIMIT_TIMEOUT
            elif rc != 0 and limits.pids is not None and (
                    pids_refused or any(m in stderr[-4000:] for m in _runner._PIDS_MARKERS)):
                # The container's cgroup is gone once it exits: pids.events was read while it ran,
                # and what fork failures print is the fallback.
                limit = LIMIT_PIDS
            elif rc != 0 and limits.memory_mb is not None and any(
                    m in stderr[-4000:] for m in _runner._MEMORY_MARKERS):
                limit = LIMIT_MEMORY
            r = RunResult(rc, stdout, stderr, wall, limit, self.name, started - t0,
                          {"container": container.name, "oom_killed": oom, "uid": uid,
                           "pids_refused": pids_refused, "image": self.image,
                           "cpu_s": round(cpu_used, 3) if cpu_used is not None else None})
            return _runner.disk_verdict(r, qm)
        finally:
            if container is not None:
                self._remover.submit(self._remove, container)  # force-removal kills it if needed
            if lease is not None:
                lease.release()
            if qm is not None:
                quota.done(qm)

    def _wait(self, container, limits: Limits, started: float):
        """Wait for the container to exit, its wall clock, or its cgroup's CPU seconds passing
        ``limits.cpu_s`` (polled every 50 ms: RLIMIT_CPU alone is per process).
        Returns (exit code, timed out, CPU-killed, CPU seconds or None, pids refused)."""
        import docker
        from concurrent.futures import TimeoutError as FutureTimeout

        deadline = started + limits.wall_s
        fut = self._waiter.submit(container.wait, timeout=limits.wall_s + 5)
        cpu_file = None
        cpu_used = None
        pids_refused = 0
        timed_out = cpu_killed = False
        status = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            try:
                status = fut.result(timeout=min(remaining, _runner.POLL_S))
                break
            except FutureTimeout:
                pass
            except Exception:  # the wait request itself timed out or broke: treat as the clock
                timed_out = time.monotonic() >= deadline - 0.5
                break
            if _runner.stopping():  # the campaign was interrupted: end the run now
                break
            if cpu_file is None:
                cpu_file = _cgroup_cpu_file(container.id)
            used = _cpu_seconds(cpu_file)
            if used is not None:
                cpu_used = used
                pids_refused = max(pids_refused, _cgroup_counter("pids", container.id, "pids.events", "max"))
                if limits.cpu_s is not None and used > limits.cpu_s:
                    cpu_killed = True
                    break
        if status is None:
            try:
                container.kill()
            except docker.errors.APIError:
                pass
            status = container.wait(timeout=30)
        return int(status.get("StatusCode", -1)), timed_out, cpu_killed, cpu_used, pids_refused

    @staticmethod
    def _remove(container) -> None:
        import docker

        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as e:
            log.warning("could not remove container %s: %s", container.name, e)

    def close(self) -> None:
        """Finish pending removals and remove any container of this instance left behind."""
        self._remover.shutdown(wait=True)
        self._remover = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dgm-docker-rm")
        for c in self.client.containers.list(all=True, filters={"label": f"{LABEL}={self.instance}"}):
            try:
                c.remove(force=True)
            except Exception:
                pass
