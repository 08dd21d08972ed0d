"""``bwrap``: bubblewrap namespaces around one untrusted command (the default backend).

What the candidate sees: a fresh tmpfs root holding read-only binds of ``/usr`` (plus the
merged-usr ``/bin``, ``/lib``, ``/lib64``, ``/sbin``), a short list of harmless ``/etc`` files, the
``ro_paths`` it was given (the Python install), a private ``/proc``, a minimal ``/dev``, a private
size-capped ``/tmp`` and ``/dev/shm``, and its work directory bound read-write at the same path. The
run directory, the evaluator's data, ``/root``, ``/home``, ``/var``, ``/run`` (the docker socket)
and the rest of ``/etc`` do not exist in there. Network, IPC, PID, UTS and cgroup namespaces are
private: there is no interface but a down loopback, so ``connect`` fails with ENETUNREACH.

Who the candidate is: when the orchestrator is root (the project's machines, CI) bwrap does the
mounts with root's rights, *without* a user namespace, keeps only CAP_SETUID/CAP_SETGID for the
child, and ``setpriv`` then drops to uid/gid 65534 with no capabilities, an empty bounding set and
``no_new_privs``. The candidate is then really ``nobody`` on the host, not "root mapped in a user
namespace" (``--unshare-user --uid 65534`` as root maps the sandbox uid to host uid 0). The work
directory is chowned to that uid so the candidate can write there; the evaluator (root) still reads
everything. As a non-root user bwrap needs a user namespace anyway: then ``--unshare-all --uid
65534`` is used and the candidate runs as the invoking user on the host.

Limits, kill and capture are the shared runner's (:mod:`sandboxes._runner`): bwrap joins the
per-run cgroup before it execs, so everything inside is accounted and killed.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Mapping, Sequence

from . import _runner, quota, uids
from .base import LIMIT_DISK, Limits, RunResult, Sandbox, SandboxError

log = logging.getLogger(__name__)

NOBODY = 65534
INSTALL_HINT = "install bubblewrap: apt-get install -y bubblewrap"

#: Host directories that are always visible (read-only). Symlinks (merged /usr) are recreated.
SYSTEM_PATHS = ("/usr", "/bin", "/lib", "/lib32", "/lib64", "/libx32", "/sbin")

#: /etc entries programs commonly need; nothing with secrets (no shadow, ssh, machine keys).
ETC_ENTRIES = (
    "passwd", "group", "hosts", "host.conf", "nsswitch.conf", "gai.conf", "protocols", "services",
    "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "timezone", "alternatives",
    "ssl", "ca-certificates", "ca-certificates.conf", "os-release", "debian_version",
    "mime.types", "locale.alias", "fonts", "python3", "python3.11", "magic", "magic.mime",
)

#: Device nodes a GPU job needs besides its own /dev/nvidiaN.
_SETPRIV_FLAGS = ("--clear-groups", "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs")


@functools.lru_cache(maxsize=None)
def _smoke_test(bwrap: str) -> str | None:
    """None if bwrap can create its namespaces here, else the reason it cannot."""
    try:
        p = subprocess.run(
            [bwrap, "--unshare-all", "--die-with-parent", "--ro-bind", "/usr", "/usr",
             "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib",
             "--symlink", "usr/lib64", "/lib64", "--", "/usr/bin/true"]
            if os.geteuid() != 0 else
            [bwrap, "--unshare-net", "--unshare-pid", "--die-with-parent", "--ro-bind", "/usr", "/usr",
             "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib",
             "--symlink", "usr/lib64", "/lib64", "--", "/usr/bin/true"],
            capture_output=True, timeout=20, env={},
        )
    except (OSError, subprocess.SubprocessError) as e:
        return str(e)
    if p.returncode != 0:
        return (p.stderr.decode(errors="replace").strip() or f"exit code {p.returncode}")
    return None


def _world_readable(p: Path) -> bool:
    try:
        st = p.stat()
    except OSError:
        return False
    need = 0o005 if p.is_dir() else 0o004  # dirs: r+x for others; files: r
    return st.st_mode & need == need


def _not_world_readable(directory: str, names: list[str]) -> set[str]:
    out = set()
    for n in names:
        p = Path(directory, n)
        if p.is_symlink():
            continue  # a link into /usr (ca-certificates) is harmless: the target decides
        if not _world_readable(p) or n == "private":
            out.add(n)
    return out


def etc_snapshot(entries: Sequence[str], passwd_extra: Sequence[str] = (),
                 group_extra: Sequence[str] = ()) -> Path:
    """A private copy of the chosen /etc entries, bound as the sandbox's whole /etc.

    One bind instead of one per file: every mount costs bwrap about a millisecond here, and /etc
    needs ~25 entries. The copy lives in the user's cache dir (root-owned, not writable by the
    sandbox user), is keyed by the entries and their mtimes (so edits to /etc/passwd etc. give a
    new snapshot), and is built atomically (temp dir + rename), so concurrent runs are safe.
    """
    stamp = []
    for e in entries:
        try:
            st = os.stat(f"/etc/{e}")
            stamp.append(f"{e}:{st.st_mtime_ns}:{st.st_size}")
        except OSError:
            continue
    extra = "\n".join([*passwd_extra, "--", *group_extra])
    key = hashlib.sha256(("v3\n" + "\n".join(stamp) + extra).encode()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dgm" / "sandbox-etc"
    dest = cache / key
    if dest.is_dir():
        return dest
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=cache))
    try:
        os.chmod(tmp, 0o755)
        for e in entries:
            src = Path("/etc", e)
            try:
                if src.is_dir():
                    # Modes are kept (copy2), and only world-readable files are copied at all:
                    # /etc/ssl/private and the like must not become readable by being copied.
                    shutil.copytree(src, tmp / e, symlinks=True, ignore=_not_world_readable)
                elif src.exists() and _world_readable(src):  # follows os-release -> ../usr/lib/...
                    shutil.copy2(src, tmp / e)
            except OSError as err:
                log.debug("sandbox /etc: skipping %s (%s)", src, err)
        # the pool's uids get names, so getpwuid()/getpass.getuser() work for the candidate
        for name, lines in (("passwd", passwd_extra), ("group", group_extra)):
            if lines and (tmp / name).is_file():
                with open(tmp / name, "a") as f:
                    f.write("".join(line + "\n" for line in lines))
        try:
            os.rename(tmp, dest)
        except OSError:  # another run made it first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _ancestors(path: str) -> list[str]:
    """'/a/b/c' -> ['/a', '/a/b'] (the directories bwrap must create before binding at path)."""
    parts = Path(path).parts[1:-1]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


def _is_under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


class BwrapSandbox(Sandbox):
    """Bubblewrap backend. Options (all keyword):

    ``uid``: ``"pool"`` (default: as root, each run leases its own host uid from ``uid_pool`` =
    (base, size), gid = uid, see :mod:`sandboxes.uids`), a fixed uid (``gid`` with it), or
    ``None`` (keep the caller's uid, not recommended as root);
    ``disk``/``inodes``: the work directory's quota in bytes and entries (a loop-mounted ext4
    image, see :mod:`sandboxes.quota`; ``disk=None`` turns it off; off with a warning when not root);
    ``seccomp``: install the syscall filter of :mod:`sandboxes.seccomp` (default True);
    ``cgroups``: ``None`` = use when writable, ``True`` = require, ``False`` = rlimits only;
    ``tmp_mb``: size of the private /tmp and /dev/shm; ``etc``: the /etc entries to expose;
    ``extra_ro``: more host paths to expose read-only on every run; ``capture_dir``: where the
    unnamed stdout/stderr files live.
    """

    name = "bwrap"
    isolated = True

    def __init__(
        self,
        *,
        bwrap: str | None = None,
        uid: int | str | None = "pool",
        gid: int | None = None,
        uid_pool: tuple[int, int] = (uids.DEFAULT_BASE, uids.DEFAULT_SIZE),
        disk: int | None = quota.DEFAULT_DISK,
        inodes: int | None = quota.DEFAULT_INODES,
        seccomp: bool = True,
        cgroups: bool | None = None,
        tmp_mb: int = 512,
        etc: Sequence[str] = ETC_ENTRIES,
        extra_ro: Sequence[Path] = (),
        hostname: str = "sandbox",
        capture_dir: str | None = None,
    ) -> None:
        found = bwrap or shutil.which("bwrap") or ("/usr/bin/bwrap" if os.path.exists("/usr/bin/bwrap") else None)
        if not found:
            raise SandboxError(f"bubblewrap (bwrap) is not installed: {INSTALL_HINT}")
        self.bwrap = found
        self.pool = None
        if uid == "pool":
            if os.geteuid() == 0:
                self.pool = uids.pool(*uid_pool)
                uid = gid = uid_pool[0]  # placeholder for command(); each run leases its own
            else:
                uid = NOBODY  # the uid inside the user namespace; the host sees the caller
        self.uid, self.gid = uid, (gid if gid is not None else uid)
        self.disk, self.inodes = disk, (inodes or quota.DEFAULT_INODES)
        if disk is not None and (reason := quota.unavailable_reason()):
            log.warning("no disk quota for sandbox work directories: %s", reason)
            self.disk = None
        self.seccomp = seccomp
        if seccomp:
            from . import seccomp as _seccomp

            _seccomp.filter_bpf()  # built once per process, now: fail early if libseccomp is missing
        self.cgroups = cgroups
        self.tmp_mb = tmp_mb
        self.etc = tuple(etc)
        self.extra_ro = tuple(Path(p) for p in extra_ro)
        self.hostname = hostname
        self.capture_dir = capture_dir
        self.setpriv = shutil.which("setpriv", path="/usr/bin:/bin:/usr/sbin:/sbin")
        # Root with setpriv: no user namespace, a real host uid (see module docstring).
        self.mode = ("setpriv" if os.geteuid() == 0 and self.uid is not None and self.setpriv
                     else "userns")
        if self.mode != "setpriv":
            self.pool = None
        if os.geteuid() == 0 and self.uid is not None and not self.setpriv:
            log.warning("setpriv (util-linux) not found: the sandbox uid %s will map to host root "
                        "in a user namespace; install util-linux for a real unprivileged uid", uid)

    @classmethod
    def available(cls) -> bool:
        path = shutil.which("bwrap") or ("/usr/bin/bwrap" if os.path.exists("/usr/bin/bwrap") else None)
        return bool(path) and _smoke_test(path) is None

    @classmethod
    def unavailable_reason(cls) -> str | None:
        path = shutil.which("bwrap") or ("/usr/bin/bwrap" if os.path.exists("/usr/bin/bwrap") else None)
        if not path:
            return f"bwrap not found: {INSTALL_HINT}"
        reason = _smoke_test(path)
        return (f"bwrap cannot create namespaces here ({reason}); run as root or enable "
                "unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1)") if reason else None

    # -- command line -------------------------------------------------------------------------
    def command(
        self,
        argv: Sequence[str],
        workdir: str,
        env: Mapping[str, str],
        ro_paths: Sequence[Path] = (),
        device_nodes: Sequence[str] = (),
        handshake_fds: tuple[int, int] | None = None,
        hide: Sequence[Path] = (),
        uid: int | None = None,
        seccomp_fd: int | None = None,
    ) -> list[str]:
        """The full bwrap command line for one run (public so that it can be inspected).

        ``handshake_fds`` = (info write fd, block read fd): bwrap reports its namespace init's pid
        on the first and pauses before starting the command until the second is written to.
        ``uid``: this run's sandbox uid (default ``self.uid``); ``seccomp_fd``: the BPF filter.
        """
        uid = self.uid if uid is None else uid
        a: list[str] = [self.bwrap]
        if handshake_fds is not None:
            a += ["--info-fd", str(handshake_fds[0]), "--block-fd", str(handshake_fds[1])]
        if seccomp_fd is not None:
            a += ["--seccomp", str(seccomp_fd)]
        if self.mode == "setpriv":
            a += ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
                  "--unshare-cgroup-try"]
        else:
            a += ["--unshare-all"]
            if uid is not None:
                a += ["--uid", str(uid), "--gid", str(uid if self.pool else self.gid), "--disable-userns"]
        a += ["--die-with-parent", "--new-session", "--clearenv", "--hostname", self.hostname]

        made: set[str] = {"/"}
        visible: list[str] = []  # read-only roots already mounted

        def mkdirs(path: str) -> None:
            for anc in _ancestors(path):
                if anc in made or any(_is_under(anc, v) for v in visible):
                    continue
                a.extend(["--perms", "0755", "--dir", anc])
                made.add(anc)

        for sp in SYSTEM_PATHS:
            if os.path.islink(sp):
                a += ["--symlink", os.readlink(sp), sp]
            elif os.path.isdir(sp):
                a += ["--ro-bind", sp, sp]
                visible.append(sp)
            made.add(sp)
        pw, gr = self.pool.passwd_lines() if self.pool is not None else ((), ())
        a += ["--ro-bind", str(etc_snapshot(self.etc, pw, gr)), "/etc"]
        made.add("/etc")
        visible.append("/etc")
        a += ["--proc", "/proc", "--dev", "/dev",
              "--perms", "1777", "--size", str(self.tmp_mb * 2**20), "--tmpfs", "/tmp",
              "--perms", "1777", "--size", str(self.tmp_mb * 2**20), "--tmpfs", "/dev/shm"]
        made.update({"/proc", "/dev", "/tmp", "/dev/shm"})

        for rp in [*self.extra_ro, *ro_paths]:
            p = os.path.abspath(str(rp))
            if p == "/":
                raise SandboxError("ro_paths contains '/': exposing the whole host file system "
                                   "defeats the sandbox; pass the specific directories (e.g. "
                                   "sandboxes.base.python_ro_paths())")
            if not os.path.exists(p):
                raise SandboxError(f"read-only path {p} does not exist on the host: fix ro_paths")
            if any(_is_under(p, v) for v in visible) or _is_under(workdir, p):
                if _is_under(workdir, p):
                    raise SandboxError(f"read-only path {p} contains the work directory {workdir}: "
                                       "expose a narrower directory")
                continue
            mkdirs(p)
            a += ["--ro-bind", p, p]
            visible.append(p)
        for hp in hide:  # an empty, read-only tmpfs over each hidden directory (or /dev/null over a file)
            p = os.path.abspath(str(hp))
            if not any(_is_under(p, v) for v in visible) or _is_under(workdir, p):
                continue  # not visible anyway
            if os.path.isdir(p):
                a += ["--perms", "0555", "--tmpfs", p, "--remount-ro", p]
            elif os.path.exists(p):
                a += ["--ro-bind", "/dev/null", p]
        for node in device_nodes:
            if not os.path.exists(node):
                raise SandboxError(f"device node {node} from the GPU lease does not exist: "
                                   "check nvidia-smi -L and the driver (ls -l /dev/nvidia*)")
            mkdirs(node)
            a += ["--dev-bind", node, node]
        if any(_is_under(workdir, v) for v in visible):
            raise SandboxError(f"work directory {workdir} lies inside a read-only path; "
                               "use a directory under /tmp or the run directory")
        mkdirs(workdir)
        a += ["--bind", workdir, workdir, "--chdir", workdir]
        for k, v in env.items():
            a += ["--setenv", k, v]
        if self.mode == "setpriv":
            a += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--",
                  self.setpriv, f"--reuid={uid}", f"--regid={uid if self.pool else self.gid}",
                  *_SETPRIV_FLAGS, "--"]
        else:
            a += ["--"]
        return a + list(argv)

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
        t0 = time.monotonic()
        wd = _runner.fresh_workdir(workdir)
        argv = _runner.check_argv(argv)
        child_env = _runner.child_env(env, gpu.env if gpu is not None else None)
        nodes = tuple(gpu.device_nodes) if gpu is not None else ()
        lease = qm = None
        fds: list[int] = []
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
            uid = lease.uid if lease is not None else self.uid
            gid = lease.gid if lease is not None else self.gid
            info_r, info_w = os.pipe()
            block_r, block_w = os.pipe()
            fds = [info_r, info_w, block_r, block_w]
            pass_fds = [info_w, block_r]
            sfd = None
            if self.seccomp:
                from . import seccomp as _seccomp

                sfd = _seccomp.filter_fd()
                fds.append(sfd)
                pass_fds.append(sfd)
            cmd = self.command(argv, wd, child_env, ro_paths, nodes, (info_w, block_r), hide=hide,
                               uid=uid, seccomp_fd=sfd)
            if self.mode == "setpriv":
                _runner.grant_workdir(wd, uid, gid)
            rlimits = {}
            if self.mode == "setpriv" and limits.pids:
                import resource

                # Fallback only (the runner drops it when the pids cgroup is in use): RLIMIT_NPROC
                # counts every process of the uid on the host (one uid per run from the pool).
                rlimits[resource.RLIMIT_NPROC] = (limits.pids, limits.pids)
            spawn = _runner.Spawn(argv=cmd, cwd="/", env={}, wrapped=True, rlimits=rlimits,
                                  needs_reaper=False, wait_children_on_kill=True,
                                  handshake=(info_r, block_w), pass_fds=tuple(pass_fds))
            fds = []  # the runner owns (and closes) them from here
            r = _runner.execute(spawn, limits, backend=self.name, t0=t0, use_cgroups=self.cgroups,
                                capture_dir=self.capture_dir,
                                extra={"uid_mode": self.mode, "uid": uid, "seccomp": self.seccomp})
            return _runner.disk_verdict(r, qm)
        finally:
            for fd in fds:
                os.close(fd)
            if lease is not None:
                lease.release()
            if qm is not None:
                quota.done(qm)
