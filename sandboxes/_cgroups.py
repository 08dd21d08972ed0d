"""Per-run cgroups: the only limits that hold for a whole process tree.

rlimits are per process (a fork multiplies them) and ``RLIMIT_AS`` breaks CUDA, so when the
machine lets us we put every sandboxed run in its own cgroup: memory (OOM-kill reported as
``memory``), pids (fork bombs, reported as ``pids``), CPU bandwidth (``Limits.cpus``) and total CPU
time across the tree (``cpuacct``/``cpu.stat``, polled by the runner). The cgroup also lets us find
and kill *every* descendant, including ones that called ``setsid()`` or double-forked.

Layout: the run's cgroup is created *under the cgroup this process already lives in*
(``<mount>/<our path>/dgm/<run id>``), not at the hierarchy root, so that limits somebody set on
us (a CI job, a container) keep applying to the sandboxed code. Both cgroup v1 (one hierarchy per
controller, as on the project's machines) and v2 (unified) are handled; v2 needs a delegated
subtree where ``cgroup.subtree_control`` can be written. When nothing is writable,
:func:`detect` returns ``None`` and the backends fall back to rlimits.
"""

from __future__ import annotations

import errno
import os
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

#: Controllers we use, by cgroup v1 hierarchy name.
V1_CONTROLLERS = ("memory", "pids", "cpu", "cpuacct")
_V2_ENABLE = "+memory +pids +cpu"


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _mounts(mountinfo: str) -> list[tuple[str, str, str, set[str]]]:
    """(mount point, fs type, root inside the hierarchy, super options) of each cgroup mount."""
    out = []
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields, rfields = left.split(), right.split()
        if len(fields) < 5 or len(rfields) < 3 or rfields[0] not in ("cgroup", "cgroup2"):
            continue
        out.append((fields[4], rfields[0], fields[3], set(rfields[2].split(","))))
    return out


@dataclass
class CgroupSupport:
    """Where this process may create per-run cgroups: controller name -> parent directory."""

    version: int  # 1 or 2
    parents: dict[str, Path]  # v1: controller -> <mount>/<our path>/dgm ; v2: {"unified": ...}
    _last_sweep: float = field(default=-1e9, repr=False)

    @property
    def controllers(self) -> set[str]:
        if self.version == 2:
            return {"memory", "pids", "cpu", "cpuacct"}  # v2's cpu.stat gives the CPU time
        return set(self.parents)

    def create(self, limits_memory_mb: int | None, pids: int | None, cpus: float | None,
               run_id: str | None = None) -> "RunCgroup":
        """Make ``dgm/<run_id>`` under every usable controller and write the limits into it."""
        self.sweep()
        run_id = run_id or f"{owner_tag()}-{uuid.uuid4().hex[:8]}"
        cg = RunCgroup(self.version, {}, run_id)
        try:
            targets = self.parents.items() if self.version == 1 else [("unified", self.parents["unified"])]
            for name, parent in targets:
                if name == "cpu" and not cpus and self.parents.get("cpuacct") != parent:
                    continue  # the cpu hierarchy only carries the bandwidth quota: skip a join
                path = parent / run_id
                if path in cg.dirs.values():  # co-mounted controllers (cpu,cpuacct) share a dir
                    cg.dirs[name] = path
                    continue
                for attempt in range(3):  # a concurrent run may rmdir the empty parent under us
                    try:
                        if not parent.is_dir():
                            parent.mkdir(exist_ok=True)
                            if self.version == 2:  # dgm/'s children get only what dgm/ delegates
                                _write(parent / "cgroup.subtree_control", _V2_ENABLE)
                        path.mkdir()
                        break
                    except FileNotFoundError:
                        if attempt == 2:
                            raise
                cg.dirs[name] = path
            cg._apply(limits_memory_mb, pids, cpus)
        except OSError:
            cg.remove()
            raise
        return cg


    def sweep(self, every_s: float = 30.0) -> int:
        """Remove run cgroups left behind by orchestrators that died (SIGKILL, OOM, power).

        A run cgroup is named ``<pid ns>.<owner pid>.<owner start time>-<random>``: when that
        process no longer exists, whatever is still inside is killed and the cgroup removed.
        Entries from other pid namespaces, or not named so, are left alone. Runs at most every
        ``every_s`` seconds per process.
        """
        now = time.monotonic()
        if now - self._last_sweep < every_s:
            return 0
        self._last_sweep = now
        stale: dict[str, dict[str, Path]] = {}
        for name, parent in self.parents.items():
            try:
                entries = os.listdir(parent)
            except OSError:
                continue
            ns = str(_pidns())
            for entry in entries:
                parts = entry.split("-", 1)[0].split(".")
                if len(parts) != 3 or not all(p.isdigit() for p in parts) or parts[0] != ns:
                    continue  # not ours to judge (another pid namespace, or not a run cgroup)
                if _start_time(int(parts[1])) == int(parts[2]):
                    continue  # its orchestrator is alive
                if (parent / entry).is_dir():
                    stale.setdefault(entry, {})[name] = parent / entry
        for entry, dirs in stale.items():
            cg = RunCgroup(self.version, dirs, entry)
            cg.kill_all(0.5)
            cg.remove(0.5)
        return len(stale)


def _start_time(pid: int) -> int | None:
    """A process's start time in clock ticks since boot (pid + start time names it uniquely)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return int(stat[stat.rfind(b")") + 2:].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _pidns() -> int:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


_owner_cache: dict[int, str] = {}


def owner_tag() -> str:
    """``<pid namespace>.<pid>.<start time>`` of this process: who a run cgroup belongs to."""
    pid = os.getpid()  # per pid, not per import: a forked worker is a different owner
    if pid not in _owner_cache:
        _owner_cache.clear()
        _owner_cache[pid] = f"{_pidns()}.{pid}.{_start_time(pid)}"
    return _owner_cache[pid]


@dataclass
class RunCgroup:
    """One run's cgroup(s). Put a process in with :meth:`procs_files`; always :meth:`remove`."""

    version: int
    dirs: dict[str, Path]
    run_id: str
    limits_set: dict[str, object] = field(default_factory=dict)

    # -- set-up -------------------------------------------------------------------------------
    def _apply(self, memory_mb: int | None, pids: int | None, cpus: float | None) -> None:
        if self.version == 1:
            mem, pid_dir, cpu = self.dirs.get("memory"), self.dirs.get("pids"), self.dirs.get("cpu")
            if mem is not None and memory_mb:
                limit = str(memory_mb * 1024 * 1024)
                _write(mem / "memory.limit_in_bytes", limit)
                try:  # no swap: memsw >= mem, so it must be written after the plain limit
                    _write(mem / "memory.memsw.limit_in_bytes", limit)
                except OSError:
                    pass
                self.limits_set["memory_mb"] = memory_mb
            if pid_dir is not None and pids:
                _write(pid_dir / "pids.max", str(pids))
                self.limits_set["pids"] = pids
            if cpu is not None and cpus:
                period = 100_000
                _write(cpu / "cpu.cfs_period_us", str(period))
                _write(cpu / "cpu.cfs_quota_us", str(max(1000, int(cpus * period))))
                self.limits_set["cpus"] = cpus
        else:
            d = self.dirs["unified"]
            if memory_mb:
                _write(d / "memory.max", str(memory_mb * 1024 * 1024))
                try:
                    _write(d / "memory.swap.max", "0")
                except OSError:
                    pass
                self.limits_set["memory_mb"] = memory_mb
            if pids:
                _write(d / "pids.max", str(pids))
                self.limits_set["pids"] = pids
            if cpus:
                _write(d / "cpu.max", f"{max(1000, int(cpus * 100_000))} 100000")
                self.limits_set["cpus"] = cpus

    def procs_files(self) -> list[Path]:
        """Files a process writes ``0`` into to join this run's cgroup(s) (before it execs)."""
        return sorted({d / "cgroup.procs" for d in self.dirs.values()})

    # -- observation --------------------------------------------------------------------------
    def _tracking_dir(self) -> Path | None:
        for name in ("unified", "pids", "memory", "cpuacct", "cpu"):
            if name in self.dirs:
                return self.dirs[name]
        return None

    def pids(self) -> list[int]:
        d = self._tracking_dir()
        if d is None:
            return []
        return [int(x) for x in _read(d / "cgroup.procs").split()]

    def cpu_seconds(self) -> float | None:
        """Total CPU time used by every process that ever ran in the cgroup."""
        if self.version == 1:
            d = self.dirs.get("cpuacct")
            raw = _read(d / "cpuacct.usage").strip() if d else ""
            return int(raw) / 1e9 if raw else None
        for line in _read(self.dirs["unified"] / "cpu.stat").splitlines():
            if line.startswith("usage_usec "):
                return int(line.split()[1]) / 1e6
        return None

    def _counter(self, file: Path | None, key: str) -> int:
        if file is None:
            return 0
        for line in _read(file).splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == key:
                return int(parts[1])
        return 0

    def oom_kills(self) -> int:
        if self.version == 1:
            d = self.dirs.get("memory")
            return self._counter(d / "memory.oom_control" if d else None, "oom_kill")
        return self._counter(self.dirs["unified"] / "memory.events", "oom_kill")

    def memory_failcnt(self) -> int:
        d = self.dirs.get("memory")
        raw = _read(d / "memory.failcnt").strip() if d else ""
        return int(raw) if raw else 0

    def pids_exhausted(self) -> int:
        """How many forks the pids limit refused."""
        d = self.dirs.get("pids") if self.version == 1 else self.dirs["unified"]
        return self._counter(d / "pids.events" if d else None, "max")

    def peak_memory_mb(self) -> float | None:
        if self.version == 1:
            d = self.dirs.get("memory")
            raw = _read(d / "memory.max_usage_in_bytes").strip() if d else ""
        else:
            raw = _read(self.dirs["unified"] / "memory.peak").strip()
        return int(raw) / 2**20 if raw.isdigit() else None

    # -- tear-down ----------------------------------------------------------------------------
    def kill_all(self, timeout_s: float = 2.0) -> int:
        """SIGKILL every process in the cgroup until it is empty; returns how many were signalled."""
        if self.version == 2:
            try:
                _write(self.dirs["unified"] / "cgroup.kill", "1")
            except OSError:
                pass
        killed = 0
        deadline = time.monotonic() + timeout_s
        pause = 0.0002  # dying processes leave within a millisecond or so: back off from short waits
        while True:
            pids = self.pids()
            if not pids:
                return killed
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
                except ProcessLookupError:
                    pass
            if time.monotonic() > deadline:
                return killed
            time.sleep(pause)
            pause = min(pause * 2, 0.01)

    def remove(self, timeout_s: float = 2.0) -> None:
        """Delete the run's cgroup(s) (and the shared ``dgm`` parent when it is left empty)."""
        for path in set(self.dirs.values()):
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as e:
                    if e.errno != errno.EBUSY or time.monotonic() > deadline:
                        break
                    self.kill_all(0.1)
                    time.sleep(0.01)
            try:  # leave no empty dgm/ behind: it would block whoever owns our cgroup from removing it
                path.parent.rmdir()
            except OSError:
                pass
        self.dirs = {}


def _own_paths(proc_cgroup: str) -> dict[str, str]:
    """controller -> our path in it, from /proc/self/cgroup ("2:pids:/a/b" lines; v2 is "0::/x")."""
    out = {}
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, ctrls, path = parts
        if ctrls == "":
            out["unified"] = path
        for c in ctrls.split(","):
            if c:
                out[c] = path
    return out


def detect(proc_root: Path = Path("/proc/self"), prefix: Path | None = None,
           probe: bool = True) -> CgroupSupport | None:
    """Find writable cgroup controllers for this process, or ``None`` (then use rlimits).

    ``prefix`` re-roots mount points (tests use a fake tree). With ``probe`` the ``dgm`` parent
    directory is created and removed to prove we may write there.
    """
    mountinfo, own = _read(proc_root / "mountinfo"), _own_paths(_read(proc_root / "cgroup"))

    def host(p: str) -> Path:
        return Path(str(prefix) + p) if prefix else Path(p)

    def usable(parent: Path) -> bool:
        if not probe:
            return parent.parent.is_dir()
        try:
            existed = parent.is_dir()
            parent.mkdir(exist_ok=True)
            ok = os.access(parent, os.W_OK)
            if not existed:
                parent.rmdir()
            return ok
        except OSError:
            return False

    mounts = _mounts(mountinfo)
    v1: dict[str, Path] = {}
    for mnt, fstype, root, opts in mounts:
        if fstype != "cgroup":
            continue
        for ctrl in V1_CONTROLLERS:
            if ctrl in opts and ctrl in own and ctrl not in v1:
                rel = os.path.relpath(own[ctrl], root) if root != "/" else own[ctrl].lstrip("/")
                if rel.startswith(".."):
                    continue  # our cgroup is outside what this mount shows
                parent = host(mnt) / (rel if rel != "." else "") / "dgm"
                if usable(parent):
                    v1[ctrl] = parent
    if "memory" in v1 or "pids" in v1:
        return CgroupSupport(1, v1)

    for mnt, fstype, root, _ in mounts:
        if fstype != "cgroup2" or "unified" not in own:
            continue
        base = host(mnt) / own["unified"].lstrip("/")
        if not {"memory", "pids"} <= set(_read(base / "cgroup.controllers").split()):
            continue
        parent = base / "dgm"
        if probe:
            try:
                # Our own cgroup must delegate the controllers; the kernel refuses this while it
                # holds processes (unless it is the root), which is why v2 needs a delegated subtree.
                if not {"memory", "pids"} <= set(_read(base / "cgroup.subtree_control").split()):
                    _write(base / "cgroup.subtree_control", _V2_ENABLE)
                if not os.access(base, os.W_OK):
                    continue
            except OSError:
                continue
        return CgroupSupport(2, {"unified": parent})
    return None


_cached: list[CgroupSupport | None] = []


def support() -> CgroupSupport | None:
    """:func:`detect`, once per process."""
    if not _cached:
        _cached.append(detect())
    return _cached[0]
