"""Containment probes: small hostile programs that try to get out, and host-side checks of whether
they did.

Each probe runs one command in the sandbox and judges the outcome from the *host's* point of view
(did the listener get a connection, did the canary file change, is the sleeper still alive), not from
what the probe prints - the probe is untrusted code too. Canaries are world-readable/writable on
purpose, so a probe is contained only when the sandbox hides them, not merely because of file
permissions. ``dgm sandbox check`` runs :func:`run_probes` and prints the table.

The ``process`` backend is *expected* to fail most probes: it isolates nothing.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .base import Limits, RunResult, Sandbox, python_ro_paths


@dataclass
class ProbeResult:
    name: str
    contained: bool
    detail: str
    seconds: float = 0.0
    error: str = ""  # the probe itself broke (not the same as escaped)


class _Listener:
    """A TCP listener in the orchestrator that records whether anybody connected."""

    def __init__(self, host: str) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = False
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()

    def _loop(self) -> None:
        while not self._stop:
            try:
                c, _ = self.sock.accept()
                self.connections += 1
                c.close()
            except OSError:
                continue

    def close(self) -> None:
        self._stop = True
        self._t.join(1)
        self.sock.close()


def _host_ip() -> str | None:
    """This machine's address on its main interface (no packet is sent)."""
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect(("10.254.254.254", 1))
        ip = s.getsockname()[0]
        s.close()
        return None if ip.startswith("127.") else ip
    except OSError:
        return None


def _alive_with(token: str) -> list[int]:
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                if token.encode() not in f.read():
                    continue
            with open(f"/proc/{name}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] in "ZX":
                    continue
            pids.append(int(name))
        except (OSError, IndexError):
            continue
    return pids


class ProbeContext:
    """Host-side fixtures shared by the probes: canaries, listeners, a sleeper process."""

    def __init__(self, base: Path | None = None) -> None:
        # /var/tmp, not /tmp: a private /tmp inside the sandbox must not be what hides the canaries.
        self.root = Path(tempfile.mkdtemp(prefix="dgm-probe-", dir=base or "/var/tmp"))
        os.chmod(self.root, 0o755)
        self.token = f"dgmprobe{uuid.uuid4().hex[:12]}"
        self.host_dir = self.root / "evaluator"  # stands for evaluator data, hidden splits, the archive
        self.host_dir.mkdir()
        os.chmod(self.host_dir, 0o777)
        self.secret = f"canary-secret-{uuid.uuid4().hex}"
        self.secret_file = self.host_dir / "hidden_labels.csv"
        self.secret_file.write_text(self.secret)
        os.chmod(self.secret_file, 0o644)
        self.metric_file = self.host_dir / "metrics.json"
        self.metric_text = '{"score": 0.1}'
        self.metric_file.write_text(self.metric_text)
        os.chmod(self.metric_file, 0o666)
        self.env_name = "DGM_PROBE_API_KEY"
        self.env_secret = f"sk-{uuid.uuid4().hex}"
        self.loopback = _Listener("127.0.0.1")
        self.outside = _Listener("0.0.0.0")
        self.host_ip = _host_ip()
        self.sleeper = subprocess.Popen(["sleep", "600"], stdin=subprocess.DEVNULL,
                                        start_new_session=True)

    def workdir(self, name: str) -> Path:
        d = self.root / "work" / name
        d.mkdir(parents=True)
        return d

    def close(self) -> None:
        self.loopback.close()
        self.outside.close()
        if self.sleeper.poll() is None:
            self.sleeper.kill()
        self.sleeper.wait()
        from .fs import remove_tree  # a probe may leave a deep tree: never recurse

        try:
            remove_tree(self.root)
        except OSError:
            shutil.rmtree(self.root, ignore_errors=True)


Probe = Callable[[Sandbox, ProbeContext], tuple[bool, str]]
PROBES: dict[str, tuple[str, Probe]] = {}


def probe(name: str, title: str):
    def deco(fn: Probe) -> Probe:
        PROBES[name] = (title, fn)
        return fn
    return deco


def _py(sb: Sandbox, ctx: ProbeContext, name: str, code: str, limits: Limits,
        env: dict | None = None, args: tuple = ()) -> tuple[RunResult, Path]:
    wd = ctx.workdir(name)
    (wd / "probe.py").write_text(textwrap.dedent(code))
    r = sb.run([sys.executable, "-I", "-S", "probe.py", *map(str, args)], wd, limits,
               env=env or {}, ro_paths=python_ro_paths())
    return r, wd


_QUICK = Limits(wall_s=20, cpu_s=10, memory_mb=256, pids=32, file_mb=8)


@probe("network_outbound", "outbound network (public IPs, the host's own address)")
def _net(sb, ctx):
    targets = [("1.1.1.1", 53), ("8.8.8.8", 53)]
    if ctx.host_ip:
        targets.append((ctx.host_ip, ctx.outside.port))
    code = f"""
    import socket
    for host, port in {targets!r}:
        try:
            socket.create_connection((host, port), timeout=3).close(); print("CONNECTED", host)
        except OSError as e:
            print("blocked", host, e.errno)
    try:
        socket.getaddrinfo("pypi.org", 443); print("RESOLVED")
    except OSError as e:
        print("no dns", e)
    """
    r, _ = _py(sb, ctx, "net", code, _QUICK)
    got = ctx.outside.connections
    escaped = got > 0 or "CONNECTED" in r.stdout
    return not escaped, (f"listener on the host address got {got} connection(s); " if got else "") + \
        " ".join(line for line in r.stdout.splitlines())[:200]


@probe("host_loopback", "host loopback service (127.0.0.1 listener in the orchestrator)")
def _loopback(sb, ctx):
    code = f"""
    import socket
    try:
        socket.create_connection(("127.0.0.1", {ctx.loopback.port}), timeout=3).close(); print("CONNECTED")
    except OSError as e:
        print("blocked", e.errno)
    """
    r, _ = _py(sb, ctx, "loopback", code, _QUICK)
    time.sleep(0.3)
    got = ctx.loopback.connections
    return got == 0, f"listener saw {got} connection(s); probe said: {r.stdout.strip()[:100]}"


@probe("write_outside", "write outside the work directory")
def _write(sb, ctx):
    targets = [str(ctx.host_dir / "dropped.txt"), "/tmp/" + ctx.token, "/var/tmp/" + ctx.token,
               "/usr/" + ctx.token, "/etc/" + ctx.token]
    code = f"""
    for p in {targets!r}:
        try:
            open(p, "w").write("x"); print("WROTE", p)
        except OSError as e:
            print("denied", p, e.errno)
    """
    r, _ = _py(sb, ctx, "write", code, _QUICK)
    landed = [t for t in targets if os.path.exists(t)]
    for t in landed:
        try:
            os.unlink(t)
        except OSError:
            pass
    return not landed, ("files appeared on the host: " + ", ".join(landed)) if landed else \
        "no file appeared on the host (/tmp writes stay in the sandbox's private tmpfs)"


@probe("read_host_file", "read a host file and the orchestrator's environment")
def _read(sb, ctx):
    # The sandbox may have its own /root/.bashrc or /etc/shadow (a docker image does): only the
    # host's content counts, so the probe prints digests and the host compares.
    paths = [str(ctx.secret_file), "/root/.bashrc", "/etc/shadow", f"/proc/{os.getpid()}/environ"]
    code = f"""
    import hashlib, os
    for p in {paths!r}:
        try:
            data = open(p, "rb").read()
            print("READ", p, hashlib.sha256(data).hexdigest(), data[:200])
        except OSError as e:
            print("denied", p, e.errno)
    print(dict(os.environ))
    """
    os.environ[ctx.env_name] = ctx.env_secret
    try:
        r, wd = _py(sb, ctx, "read", code, _QUICK)
    finally:
        del os.environ[ctx.env_name]
    leaked = []
    if ctx.secret in r.stdout:
        leaked.append("planted file")
    if ctx.env_secret in r.stdout or ctx.env_name in r.stdout:
        leaked.append("orchestrator env var")
    for p in paths[1:]:
        try:
            with open(p, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
        except OSError:
            continue
        if f"READ {p} {digest}" in r.stdout:
            leaked.append(p)
    return not leaked, ("read: " + ", ".join(leaked)) if leaked else \
        "canary file, host /root, /etc/shadow, the orchestrator's environ and env vars not readable"


@probe("evaluator_files", "list and read the evaluator's files (canary dir)")
def _evaluator(sb, ctx):
    code = f"""
    import os
    d = {str(ctx.host_dir)!r}
    try:
        for n in os.listdir(d):
            print(n, open(os.path.join(d, n)).read()[:200])
    except OSError as e:
        print("denied", e.errno)
    """
    r, _ = _py(sb, ctx, "evaluator", code, _QUICK)
    leaked = ctx.secret in r.stdout or "hidden_labels" in r.stdout
    return not leaked, "listed/read the evaluator dir" if leaked else "evaluator dir not visible"


@probe("tamper_metric", "overwrite the evaluator's metric file outside the work directory")
def _tamper(sb, ctx):
    code = f"""
    p = {str(ctx.metric_file)!r}
    try:
        open(p, "w").write('{{"score": 1e9}}'); print("TAMPERED")
    except OSError as e:
        print("denied", e.errno)
    """
    _py(sb, ctx, "tamper", code, _QUICK)
    same = ctx.metric_file.read_text() == ctx.metric_text
    if not same:
        ctx.metric_file.write_text(ctx.metric_text)
    return same, "metric file unchanged" if same else "metric file was overwritten"


@probe("signal_outside", "signal a process outside (kill an orchestrator-owned sleeper, see its pid)")
def _signal(sb, ctx):
    pid = ctx.sleeper.pid
    code = f"""
    import os, signal
    print("visible", os.path.exists("/proc/{pid}"))
    try:
        os.kill({pid}, signal.SIGKILL); print("SENT")
    except OSError as e:
        print("denied", e.errno)
    """
    r, _ = _py(sb, ctx, "signal", code, _QUICK)
    time.sleep(0.1)
    alive = ctx.sleeper.poll() is None
    if not alive:  # restart it for the probes that follow
        ctx.sleeper = subprocess.Popen(["sleep", "600"], stdin=subprocess.DEVNULL, start_new_session=True)
    return alive, "sleeper still alive" + ("" if "visible False" in r.stdout else " (but its pid was visible)") \
        if alive else "the sleeper outside was killed"


@probe("survive_timeout", "survive the wall-clock timeout via a detached double-forked child")
def _survive(sb, ctx):
    code = f"""
    import os, time, sys
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.execvp("sh", ["sh", "-c", "while :; do date +%s%N > heartbeat; sleep 0.1; done; : {ctx.token}"])
        os._exit(0)
    time.sleep(60)
    """
    r, wd = _py(sb, ctx, "survive", code, Limits(wall_s=1.5, cpu_s=10, memory_mb=256, pids=32, file_mb=8))
    time.sleep(0.5)
    survivors = _alive_with(ctx.token)
    hb = wd / "heartbeat"
    before = hb.read_text() if hb.exists() else None
    time.sleep(0.4)
    after = hb.read_text() if hb.exists() else None
    for pid in survivors:  # do not leave them running, whatever the verdict
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    escaped = bool(survivors) or (before is not None and before != after)
    return not escaped, (f"{len(survivors)} process(es) survived" if escaped else
                         f"run ended by {r.limit_hit or r.describe()}; no survivor")


@probe("fork_bomb", "fork bomb (pids limit 32)")
def _forkbomb(sb, ctx):
    code = """
    import os, time
    n = 0
    try:
        for _ in range(100000):
            if os.fork() == 0:
                time.sleep(30); os._exit(0)
            n += 1
    except OSError as e:
        print("fork refused after", n, e.errno)
        raise SystemExit(3)
    """
    t = time.monotonic()
    r, _ = _py(sb, ctx, "forkbomb", code, Limits(wall_s=4, cpu_s=10, memory_mb=512, pids=32, file_mb=8))
    survivors = _alive_with("probe.py")  # our probe processes carry "probe.py" in their cmdline
    survivors = [p for p in survivors if ctx.root.as_posix() in _cwd(p)]
    refused = "fork refused" in r.stdout
    contained = (refused or r.limit_hit in ("pids", "timeout", "memory")) and not survivors
    return contained, f"{r.limit_hit or r.describe()} after {time.monotonic() - t:.1f} s; " \
        f"{r.stdout.strip()[:80]}; survivors: {len(survivors)}"


def _cwd(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return ""


@probe("memory_bomb", "memory bomb (4 GiB against a 256 MiB limit)")
def _membomb(sb, ctx):
    code = """
    chunks = []
    for _ in range(64):
        b = bytearray(64 * 2**20); b[::4096] = b"x" * (len(b) // 4096); chunks.append(b)
    print("ALLOCATED 4 GiB")
    """
    r, _ = _py(sb, ctx, "membomb", code, Limits(wall_s=30, cpu_s=20, memory_mb=256, pids=32, file_mb=8))
    ok = "ALLOCATED" not in r.stdout and r.limit_hit == "memory"
    return ok, f"{r.describe()}; peak {r.extra.get('peak_memory_mb') or r.extra.get('max_rss_mb')} MB"


@probe("busy_loop", "busy loop (1 CPU-second limit)")
def _busy(sb, ctx):
    t = time.monotonic()
    r, _ = _py(sb, ctx, "busy", "while True: pass\n",
               Limits(wall_s=30, cpu_s=1, memory_mb=256, pids=32, file_mb=8))
    return r.limit_hit == "cpu", f"{r.describe()} after {time.monotonic() - t:.1f} s wall"


@probe("fill_disk", "fill the disk (1 GiB into the work dir and /tmp, 8 MiB file limit)")
def _disk(sb, ctx):
    code = """
    import os
    for path in ("big.bin", "/tmp/big.bin"):
        try:
            with open(path, "wb") as f:
                for _ in range(1024):
                    f.write(b"x" * 2**20)
            print("WROTE", path)
        except OSError as e:
            print("stopped", path, e.errno)
    """
    r, wd = _py(sb, ctx, "disk", code, Limits(wall_s=30, cpu_s=20, memory_mb=256, pids=32, file_mb=8))
    size = (wd / "big.bin").stat().st_size if (wd / "big.bin").exists() else 0
    ok = size <= 8 * 2**20 and "WROTE" not in r.stdout
    return ok, f"work dir file {size / 2**20:.1f} MiB; " + "; ".join(r.stdout.split("\n"))[:120].strip("; ")


@probe("host_processes", "see host processes (/proc)")
def _ps(sb, ctx):
    code = """
    import os
    n = [p for p in os.listdir("/proc") if p.isdigit()]
    print(len(n), "processes visible")
    """
    r, _ = _py(sb, ctx, "ps", code, _QUICK)
    try:
        n = int(r.stdout.split()[0])
    except (ValueError, IndexError):
        n = -1
    return 0 <= n <= 8, r.stdout.strip() or r.describe()


# -- issue 15: what a determined candidate tried next ------------------------------------------
_PROBE_DISK = 64 * 2**20
_PROBE_INODES = 2000


class _small_quota:
    """Run a probe with a small quota on the sandbox (the check's own instance), then restore."""

    def __init__(self, sb: Sandbox) -> None:
        self.sb = sb

    def __enter__(self) -> bool:
        self.saved = (getattr(self.sb, "disk", None), getattr(self.sb, "inodes", None))
        if self.saved[0] is None:
            return False
        self.sb.disk, self.sb.inodes = _PROBE_DISK, _PROBE_INODES
        return True

    def __exit__(self, *exc) -> None:
        self.sb.disk, self.sb.inodes = self.saved


def _finish(wd: Path) -> tuple[bool, str]:
    """Remove a probe work dir the way the evaluator does; True if nothing (mount, image) is left."""
    from . import fs, quota

    fs.remove_tree(wd)
    left = [str(wd)] if os.path.lexists(wd) else []
    if str(wd) in quota.mounted() or f" {wd} " in Path("/proc/self/mountinfo").read_text():
        left.append("quota mount")
    return not left, ", ".join(left)


@probe("disk_quota", "fill the work dir with many files under the file cap (64 MiB quota)")
def _disk_quota(sb, ctx):
    code = """
    import sys
    n = 0
    try:
        for i in range(256):  # 128 MiB in 512 KiB files, each far under the file-size cap
            with open(f"f{i}.bin", "wb") as f:
                f.write(b"x" * 2**19)
            n += 1
    except OSError as e:
        print("stopped after", n, "files, errno", e.errno); sys.exit(3)
    print("WROTE 128 MiB")
    """
    with _small_quota(sb) as on:
        if not on:
            return False, "this sandbox has no disk quota (disk=None, or not root)"
        free = shutil.disk_usage(ctx.root).free
        r, wd = _py(sb, ctx, "disk_quota", code, _QUICK)
        dropped = free - shutil.disk_usage(ctx.root).free
        from .fs import tree_usage

        used = tree_usage(wd)[0]
    clean, left = _finish(wd)
    ok = r.limit_hit == "disk quota" and used <= _PROBE_DISK and clean
    return ok, (f"{r.describe()}; {used / 2**20:.0f} MiB in the work dir, host free space "
                f"-{max(0, dropped) / 2**20:.0f} MiB" + (f"; left on the host: {left}" if left else ""))


@probe("inode_quota", "create 20,000 empty files (2,000-inode quota)")
def _inode_quota(sb, ctx):
    code = """
    import sys
    for i in range(20000):
        try:
            open(f"e{i}", "w").close()
        except OSError as e:
            print("stopped at", i, "errno", e.errno); sys.exit(3)
    print("MADE 20000")
    """
    with _small_quota(sb) as on:
        if not on:
            return False, "this sandbox has no inode quota (disk=None, or not root)"
        r, wd = _py(sb, ctx, "inode_quota", code, _QUICK)
    clean, left = _finish(wd)
    return r.limit_hit == "disk quota" and "MADE" not in r.stdout and clean, \
        f"{r.describe()}; {r.stdout.strip()[:60]}" + (f"; left: {left}" if left else "")


@probe("deep_tree", "a 10,000-level directory chain (the clean-up and the next run's grant)")
def _deep_tree(sb, ctx):
    code = """
    import os
    fd = os.open(".", os.O_RDONLY)
    for _ in range(10000):
        os.mkdir("d", dir_fd=fd)
        n = os.open("d", os.O_RDONLY, dir_fd=fd); os.close(fd); fd = n
    print("BUILT")
    """
    r, wd = _py(sb, ctx, "deep_tree", code, _QUICK)
    r2 = sb.run(["sh", "-c", "echo again"], wd, _QUICK)  # grants the tree to the next uid
    clean, left = _finish(wd)
    ok = "BUILT" in r.stdout and r2.ok and "again" in r2.stdout and clean
    return ok, f"built: {'BUILT' in r.stdout}; next run: {r2.describe()}; removed: {clean} {left}"


_SURFACE = """
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
def call(name, nr, *args):
    ctypes.set_errno(0)
    rc = libc.syscall(nr, *args)
    print(name, "OK" if rc >= 0 else errno.errorcode.get(ctypes.get_errno(), ctypes.get_errno()))
call("unshare(NEWUSER|NEWNET)", 272, 0x10000000 | 0x40000000)
call("unshare(NEWNS)", 272, 0x00020000)
call("setns", 308, 0, 0)
call("add_key", 248, b"user", b"dgm-probe", b"x", 1, -4)
call("keyctl", 250, 0, -4, 0)
call("bpf", 321, 0, 0, 0)
call("perf_event_open", 298, 0, 0, -1, -1, 0)
call("userfaultfd", 323, 0)
call("mount", 165, b"none", b"/tmp", b"tmpfs", 0, 0)
call("fsopen", 430, b"tmpfs", 0)
"""


@probe("user_namespace", "create a user+net namespace; keyctl, bpf, perf, userfaultfd, mount")
def _userns(sb, ctx):
    r, _ = _py(sb, ctx, "userns", _SURFACE, _QUICK)
    got = dict(line.rsplit(None, 1) for line in r.stdout.splitlines() if " " in line)
    reachable = [k for k, v in got.items() if v not in ("EPERM", "ENOSYS")]
    ok = bool(got) and not reachable
    return ok, ("reachable: " + ", ".join(f"{k}={got[k]}" for k in reachable)) if reachable else \
        (f"all {len(got)} denied" if got else f"probe did not run: {r.describe()} {r.stderr[-200:]}")


@probe("keyring", "leave a key in the uid's keyring for a later run")
def _keyring(sb, ctx):
    add = """
    import ctypes
    l = ctypes.CDLL(None, use_errno=True)
    print("add", l.syscall(248, b"user", b"dgm-leak", b"run-1", 5, -4))
    """
    find = """
    import ctypes
    l = ctypes.CDLL(None, use_errno=True)
    print("found", l.syscall(250, 10, -4, b"user", b"dgm-leak", 0))
    """
    _py(sb, ctx, "key_add", add, _QUICK)
    r, _ = _py(sb, ctx, "key_find", find, _QUICK)
    try:
        found = int(r.stdout.split()[1]) >= 0
    except (IndexError, ValueError):
        found = False
    return not found, "a later run found the key" if found else "no key crossed between runs"


@probe("per_uid_quota", "hold every inotify instance of its uid while another sandbox runs")
def _per_uid(sb, ctx):
    hog = """
    import ctypes, os, time
    l = ctypes.CDLL(None, use_errno=True)
    n = 0
    while l.inotify_init() >= 0:
        n += 1
    open("ready", "w").write(str(n))
    t = time.monotonic() + 15
    while not os.path.exists("done") and time.monotonic() < t:
        time.sleep(0.05)
    """
    one = """
    import ctypes, os
    print("inotify", ctypes.CDLL(None).inotify_init(), os.getuid())
    """
    box: dict = {}
    wd_holder: dict = {}

    def run_hog() -> None:
        box["r"], wd_holder["wd"] = _py(sb, ctx, "uid_hog", hog, _QUICK)

    t = threading.Thread(target=run_hog, daemon=True)
    t.start()
    ready = ctx.root / "work" / "uid_hog" / "ready"
    deadline = time.monotonic() + 15
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    r, _ = _py(sb, ctx, "uid_other", one, _QUICK)
    (ctx.root / "work" / "uid_hog" / "done").write_text("")
    t.join(20)
    try:
        got = int(r.stdout.split()[1]) >= 0
    except (IndexError, ValueError):
        got = False
    return got, ("the concurrent sandbox got its inotify instance" if got else
                 f"the concurrent sandbox was starved: {r.stdout.strip() or r.describe()}")


@probe("stopped_guard", "SIGSTOP every process it may signal (the guard), then outlive the wall clock")
def _stopped_guard(sb, ctx):
    code = f"""
    import os, signal, time
    try:
        os.kill(-1, signal.SIGSTOP)
    except OSError:
        pass
    stopped = []
    for p in os.listdir("/proc"):
        if p.isdigit() and int(p) != os.getpid():
            try:
                st = open(f"/proc/{{p}}/status").read()
                state = st.split("State:")[1].split()[0]
                if state == "T":  # whoever it belongs to: the guard must not be stoppable
                    stopped.append(p)
            except (OSError, IndexError, ValueError):
                pass
    print("STOPPED_OTHERS", len(stopped), flush=True)
    while True:
        open("heartbeat", "w").write(str(time.time())); time.sleep(0.1)  # {ctx.token}
    """
    t = time.monotonic()
    r, wd = _py(sb, ctx, "stopped_guard", code, Limits(wall_s=2, cpu_s=10, memory_mb=256, pids=32, file_mb=8))
    took = time.monotonic() - t
    hb = wd / "heartbeat"
    before = hb.read_text() if hb.exists() else None
    time.sleep(0.4)
    after = hb.read_text() if hb.exists() else None
    others = r.stdout.split("STOPPED_OTHERS")[1].split()[0] if "STOPPED_OTHERS" in r.stdout else "?"
    ok = r.limit_hit == "timeout" and took < 2 + 10 and before == after and others == "0"
    return ok, f"{r.describe()} after {took:.1f} s; guard processes stopped: {others}; " \
        f"heartbeat {'still advancing' if before != after else 'stopped'}"


@probe("cpu_spread", "spread CPU time over 4 processes (2 CPU-second limit for the sandbox)")
def _cpu_spread(sb, ctx):
    code = """
    import os, time
    for _ in range(4):
        if os.fork() == 0:
            while True:
                pass
    time.sleep(60)
    """
    t = time.monotonic()
    r, _ = _py(sb, ctx, "cpu_spread", code, Limits(wall_s=40, cpu_s=2, memory_mb=256, pids=32, file_mb=8))
    used = r.extra.get("cpu_s")
    ok = r.limit_hit == "cpu" and used is not None and used < 2 + 2.5
    return ok, f"{r.describe()} after {time.monotonic() - t:.1f} s wall, {used} CPU-s in all"


def run_probes(sandbox: Sandbox, names: list[str] | None = None,
               on_result: Callable[[ProbeResult], None] | None = None) -> list[ProbeResult]:
    """Run the probes (all by default) against ``sandbox``; never raises for a single probe."""
    ctx = ProbeContext()
    results = []
    try:
        for name in names or list(PROBES):
            title, fn = PROBES[name]
            t = time.monotonic()
            try:
                contained, detail = fn(sandbox, ctx)
                res = ProbeResult(name, bool(contained), detail, time.monotonic() - t)
            except Exception as e:  # a broken probe is reported, and counts as not proven contained
                res = ProbeResult(name, False, f"probe error: {type(e).__name__}: {e}",
                                  time.monotonic() - t, error=str(e))
            results.append(res)
            if on_result:
                on_result(res)
    finally:
        ctx.close()
    return results
