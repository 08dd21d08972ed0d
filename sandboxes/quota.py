"""Disk and inode quota for a work directory: a loop-mounted ext4 image of bounded size.

Why a loop image: the host's file systems have no project quotas (that needs ext4 ``-O
project,quota`` set while unmounted, or XFS), a size-capped tmpfs is charged to the memory
limit (so a checkpoint-writing agent would trade RAM for disk), and per-uid quotas are not
enabled either. A sparse image file formatted ext4 (``-m 0``: no reserved blocks for anybody;
no journal: it is scratch space) and mounted ``loop,nodev,nosuid`` gives both limits exactly: past
``disk`` bytes or ``inodes`` entries the candidate's writes fail with ENOSPC, and the host loses at
most ``disk`` bytes per mounted work directory (the image only grows as it is written).

Life cycle, keeping ``Sandbox.run(argv, workdir)``'s contract (the evaluator fills ``workdir``
before the run and reads it after, at the same path):

* the first ``run`` on a work directory *attaches* a quota file system to it: the directory is
  renamed aside, an empty one made in its place, a fresh image mounted on it, the old contents
  copied in and the old directory removed. Later runs on the same path reuse the mount, so what
  the evaluator and earlier runs left there stays;
* :func:`sandboxes.fs.remove_tree` (use it instead of ``shutil.rmtree``) or :func:`release`
  unmounts it (the loop device is ``autoclear``: it detaches itself) and deletes the image. As a
  net for callers that empty the directory with ``shutil.rmtree`` (which then fails on the mount
  point), an idle quota mount whose file system is empty is released when another is attached,
  after ``IDLE_EMPTY_RELEASE_S`` or beyond ``MAX_IDLE_EMPTY`` of them (a file the caller created
  in the microseconds between the emptiness check and the unmount would be lost; ``remove_tree``
  never risks that);
* images are named after the owning orchestrator (``<pid ns>.<pid>.<start time>``): at start,
  mounts and images of dead owners are unmounted and deleted (:func:`sweep`, at the first attach
  and every ``SWEEP_EVERY_S`` after: forked workers that exit with ``os._exit`` leave theirs).

A formatted spare image is prepared in a background thread, so attaching costs a loop attach and
a mount(2) (~5 ms) plus copying the work directory's contents, not a ``mkfs`` (~15 ms).
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import shutil
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from ._cgroups import _pidns, _start_time, owner_tag

log = logging.getLogger(__name__)

STATE_DIR = Path(os.environ.get("DGM_QUOTA_DIR", "/var/tmp/dgm-quota"))
DEFAULT_DISK = 4 * 2**30  # bytes; large enough for every built-in suite (checkpoints included)
DEFAULT_INODES = 200_000
MIN_DISK = 4 * 2**20
_SBIN = "/usr/sbin:/usr/bin:/sbin:/bin"
_MKFS = shutil.which("mkfs.ext4", path=_SBIN)
_MOUNT = shutil.which("mount", path=_SBIN)
MNT_DETACH = 2
# noinit_itable: a fresh sparse image reads as zeros already; the kernel's lazy inode-table
# zeroing would only write ~50 MB per 200,000-inode mount to the host disk in the background.
MOUNT_OPTS = "loop,nodev,nosuid,noatime,noinit_itable"
#: an idle quota mount whose file system is empty is released when another is attached after it
#: has been idle this long (lossless: a later run re-attaches; keeps alternating runs cheap)
IDLE_EMPTY_RELEASE_S = 10.0

_libc = ctypes.CDLL(None, use_errno=True)
_lock = threading.RLock()
_mounts: dict[str, "QuotaMount"] = {}
_spares: dict[tuple[int, int], list[Path]] = {}
_preparing: set[tuple[int, int]] = set()
_last_sweep = [-1e9]
SWEEP_EVERY_S = 30.0
#: at most this many idle, empty quota mounts stay attached (the oldest beyond go first)
MAX_IDLE_EMPTY = 8


class QuotaExceeded(OSError):
    """The work directory's contents do not fit in the quota (before the candidate even ran)."""


@dataclass
class QuotaMount:
    workdir: str
    image: Path
    disk: int
    inodes: int
    busy: int = 0  # runs in flight on it
    last_used: float = 0.0  # time.monotonic() when the last run on it ended

    def usage(self) -> dict:
        st = os.statvfs(self.workdir)
        return {"disk_used_mb": round((st.f_blocks - st.f_bfree) * st.f_frsize / 2**20, 2),
                "disk_free_mb": round(st.f_bavail * st.f_frsize / 2**20, 2),
                "inodes_free": st.f_favail}

    def full(self) -> bool:
        """Whether the candidate ran into the quota: (almost) no block or no inode left."""
        try:
            st = os.statvfs(self.workdir)
        except OSError:
            return False
        free = st.f_bavail * st.f_frsize
        # ext4 reserves a few blocks for metadata and delayed allocation, so "full" is fuzzy:
        # less than 1% (at most 1 MiB) left, or no inode left.
        return free < min(2**20, self.disk // 100) + 64 * 1024 or st.f_favail <= 1


def unavailable_reason() -> str | None:
    """None if quota mounts can be made here, else why not."""
    if os.geteuid() != 0:
        return "disk quotas need root (loop mounts); run as root or pass disk=None"
    if not _MKFS or not _MOUNT:
        return "mkfs.ext4 or mount is missing: apt-get install -y e2fsprogs mount"
    if not os.path.exists("/dev/loop-control"):
        return "no loop devices (/dev/loop-control missing): modprobe loop, or pass disk=None"
    return None


def _image_name() -> str:
    return f"{owner_tag()}.{uuid.uuid4().hex[:10]}.img"


def effective_inodes(disk: int, inodes: int) -> int:
    """``inodes``, capped so the inode tables (256 bytes each) take at most 1/8 of ``disk``:
    mkfs refuses more (``dgm sandbox exec --disk 16M`` with the default 200,000 inodes)."""
    return max(64, min(inodes, disk // 2048))


def _make_image(disk: int, inodes: int) -> Path:
    """A fresh, formatted, sparse ext4 image (never mounted yet)."""
    inodes = effective_inodes(disk, inodes)
    STATE_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    img = STATE_DIR / _image_name()
    with open(img, "wb") as f:
        f.truncate(disk)
    # -m 0: no reserved blocks (no uid may dip below the quota); -O ^has_journal: scratch space,
    # mkfs and mount are faster; nodiscard: a fresh sparse file needs no trim.
    p = subprocess.run([_MKFS, "-q", "-F", "-m", "0", "-N", str(inodes), "-O", "^has_journal",
                        "-E", "nodiscard,lazy_itable_init=1", "-L", "dgm-work", str(img)],
                       capture_output=True, text=True, env={"PATH": _SBIN})
    if p.returncode != 0:
        img.unlink(missing_ok=True)
        from .base import SandboxError

        raise SandboxError(f"mkfs.ext4 for the work-directory quota failed: {p.stderr.strip()[-500:]}")
    return img


def _prepare_spare(key: tuple[int, int]) -> None:
    try:
        img = _make_image(*key)
    except Exception as e:  # the next attach makes one itself and reports the error
        log.debug("could not prepare a spare quota image: %s", e)
        img = None
    with _lock:
        _preparing.discard(key)
        if img is not None:
            _spares.setdefault(key, []).append(img)


def _take_image(disk: int, inodes: int) -> Path:
    key = (disk, inodes)
    with _lock:
        spares = _spares.get(key) or []
        img = spares.pop() if spares else None
        if key not in _preparing:
            _preparing.add(key)
            threading.Thread(target=_prepare_spare, args=(key,), daemon=True,
                             name="dgm-quota-spare").start()
    return img if img is not None else _make_image(disk, inodes)


def _umount(path: str) -> None:
    """Detach the mount now (MNT_DETACH: no sync of data that is being thrown away; the kernel
    frees the file system, and autoclear the loop device, as soon as nothing uses it)."""
    if _libc.umount2(os.fsencode(path), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):  # EINVAL: not a mount point (any more)
            raise OSError(err, f"umount {path}: {os.strerror(err)}")


_LOOP_CTL_GET_FREE = 0x4C82
_LOOP_CONFIGURE = 0x4C0A  # Linux >= 5.8: attach + set flags in one ioctl
_LO_FLAGS_AUTOCLEAR = 4
_MS_NOSUID, _MS_NODEV, _MS_NOATIME = 2, 4, 1024


def _mount_direct(image: Path, target: str) -> None:
    """Loop-attach ``image`` (autoclear: the device detaches when the mount goes) and mount it,
    with ioctl + mount(2): no ``mount`` process (~5 ms here)."""
    import fcntl
    import struct

    ifd = os.open(image, os.O_RDWR | os.O_CLOEXEC)
    try:
        ctl = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
        try:
            for _ in range(8):  # another process may take the free device first
                n = fcntl.ioctl(ctl, _LOOP_CTL_GET_FREE)
                dev = f"/dev/loop{n}"
                lfd = os.open(dev, os.O_RDWR | os.O_CLOEXEC)
                try:
                    # struct loop_config {u32 fd; u32 block_size; loop_info64 info (lo_flags at
                    # offset 52 of 232 bytes); u64 reserved[8]}
                    cfg = bytearray(8 + 232 + 64)
                    struct.pack_into("=II", cfg, 0, ifd, 0)
                    struct.pack_into("=I", cfg, 8 + 52, _LO_FLAGS_AUTOCLEAR)
                    try:
                        fcntl.ioctl(lfd, _LOOP_CONFIGURE, bytes(cfg))
                    except OSError as e:
                        if e.errno == errno.EBUSY:
                            continue
                        raise
                    if _libc.mount(dev.encode(), os.fsencode(target), b"ext4",
                                   _MS_NOSUID | _MS_NODEV | _MS_NOATIME, b"noinit_itable") != 0:
                        err = ctypes.get_errno()
                        raise OSError(err, f"mount {dev} on {target}: {os.strerror(err)}")
                    return
                finally:
                    os.close(lfd)  # autoclear: detached now if the mount failed, else on umount
            raise OSError(errno.EBUSY, "no free loop device")
        finally:
            os.close(ctl)
    finally:
        os.close(ifd)


def _mount(image: Path, target: str) -> None:
    try:
        return _mount_direct(image, target)
    except OSError as e:  # old kernel (no LOOP_CONFIGURE), odd setup: the mount(8) way
        log.debug("direct loop mount failed (%s); using mount(8)", e)
    p = subprocess.run([_MOUNT, "-t", "ext4", "-o", MOUNT_OPTS, str(image), target],
                       capture_output=True, text=True, env={"PATH": _SBIN})
    if p.returncode != 0:
        from .base import SandboxError

        raise SandboxError(f"could not loop-mount the work-directory quota image on {target}: "
                           f"{p.stderr.strip()[-500:]} (free a loop device: losetup -D)")


def attach(workdir: str, disk: int = DEFAULT_DISK, inodes: int = DEFAULT_INODES) -> QuotaMount | None:
    """Put ``workdir`` (an existing directory) on a quota file system of ``disk`` bytes and
    ``inodes`` entries, keeping its contents; a no-op if it already is. Mark it busy: pair with
    :meth:`done`. Raises :class:`QuotaExceeded` when the current contents do not fit. Returns
    None (no quota, a warning) when ``workdir`` is already a mount point of something else."""
    from . import fs

    if disk < MIN_DISK:
        raise ValueError(f"disk quota {disk} bytes is too small: at least {MIN_DISK} (4 MiB)")
    workdir = os.path.abspath(workdir)
    with _lock:
        if time.monotonic() - _last_sweep[0] > SWEEP_EVERY_S:  # dead owners' mounts and images
            _last_sweep[0] = time.monotonic()
            try:
                sweep()
            except OSError as e:
                log.warning("could not sweep stale quota mounts: %s", e)
        qm = _mounts.get(workdir)
        if qm is not None and os.path.ismount(workdir):
            qm.busy += 1
            return qm
        _mounts.pop(workdir, None)
        if os.path.ismount(workdir):  # somebody else's mount (a tmpfs work dir): cannot rename it
            log.warning("work directory %s is a mount point already: no disk quota for it", workdir)
            return None
        _release_idle_empty()
        qm = QuotaMount(workdir, Path(), disk, effective_inodes(disk, inodes), busy=1)
        _mounts[workdir] = qm  # reserved under the lock: concurrent attaches of one path wait below
    try:
        qm.image = _take_image(disk, inodes)
        st = os.lstat(workdir)
        aside = f"{workdir}.dgm-{uuid.uuid4().hex[:8]}"
        os.rename(workdir, aside)
        try:
            os.mkdir(workdir, 0o700)
            os.chown(workdir, st.st_uid, st.st_gid)  # the plain directory under the mount, as
            os.chmod(workdir, st.st_mode & 0o7777)  # it reappears after release(keep=True)
            _mount(qm.image, workdir)
        except BaseException:
            if os.path.isdir(workdir):
                os.rmdir(workdir)
            os.rename(aside, workdir)
            raise
        os.chown(workdir, st.st_uid, st.st_gid)
        os.chmod(workdir, st.st_mode & 0o7777)
        try:
            os.rmdir(os.path.join(workdir, "lost+found"))  # the candidate's directory starts empty
        except OSError:
            pass
        try:
            fs.copy_tree(aside, workdir)
        except BaseException as e:
            # put the original directory back (unquota'd, as it was), then report
            with _lock:
                qm.busy = 0
                _release_locked(workdir)
            os.rmdir(workdir)
            os.rename(aside, workdir)
            if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise QuotaExceeded(e.errno, f"the work directory's contents exceed the disk quota "
                                    f"({disk / 2**20:.0f} MiB, {qm.inodes} files)") from e
            raise
        fs.remove_tree(aside)
        return qm
    except QuotaExceeded:
        raise
    except BaseException:
        with _lock:
            qm.busy = 0
        release(workdir)
        raise


def done(qm: QuotaMount) -> None:
    with _lock:
        qm.busy = max(0, qm.busy - 1)
        qm.last_used = time.monotonic()


def _release_idle_empty() -> None:
    """Release idle quota mounts whose file system is empty (lossless: a later run re-attaches)."""
    now = time.monotonic()
    idle_empty = []
    for path, qm in list(_mounts.items()):
        if qm.busy:
            continue
        try:
            empty = not os.listdir(path)
        except OSError:
            empty = True
        if empty:
            idle_empty.append((qm.last_used, path))
    idle_empty.sort()
    for i, (last_used, path) in enumerate(idle_empty):
        if now - last_used >= IDLE_EMPTY_RELEASE_S or i < len(idle_empty) - MAX_IDLE_EMPTY:
            _release_locked(path)


def _release_locked(workdir: str, keep: bool = False) -> bool:
    from . import fs

    qm = _mounts.pop(workdir, None)
    if qm is None:
        return False
    aside = None
    if keep and os.path.ismount(workdir) and os.listdir(workdir):
        # copy the contents off the quota fs next to the directory, then back in place of it
        aside = f"{workdir}.dgm-keep-{uuid.uuid4().hex[:8]}"
        os.mkdir(aside, 0o700)
        fs.copy_tree(workdir, aside)
    if os.path.ismount(workdir):
        _umount(workdir)
    if aside is not None:
        for name in os.listdir(aside):  # same file system: renames
            os.rename(os.path.join(aside, name), os.path.join(workdir, name))
        os.rmdir(aside)
    if qm.image != Path():
        try:
            qm.image.unlink()
        except FileNotFoundError:
            pass
    return True


def release(workdir: str | os.PathLike, keep: bool = False) -> bool:
    """Unmount the quota file system on ``workdir`` and delete its image; the loop device
    detaches itself. Its contents go with it, unless ``keep``: then they are copied back into the
    plain directory first. False if ``workdir`` had none of ours."""
    workdir = os.path.abspath(workdir)
    with _lock:
        return _release_locked(workdir, keep)


def mounted() -> list[str]:
    """Work directories this process has quota mounts on, deepest first."""
    with _lock:
        return sorted(_mounts, key=len, reverse=True)


def _loop_mounts() -> list[tuple[str, str]]:
    """(mount point, loop device) of every loop mount on this machine."""
    out = []
    try:
        text = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        left, _, right = line.partition(" - ")
        fields, rfields = left.split(), right.split()
        if len(fields) > 4 and len(rfields) > 1 and rfields[1].startswith("/dev/loop"):
            out.append((fields[4].encode().decode("unicode_escape"), rfields[1]))
    return out


def _backing_file(dev: str) -> str:
    try:
        return Path(f"/sys/block/{os.path.basename(dev)}/loop/backing_file").read_text().strip()
    except OSError:
        return ""


def _owner_alive(name: str) -> bool:
    parts = name.split(".")
    if len(parts) < 3 or not all(p.isdigit() for p in parts[:3]):
        return True  # not ours to judge
    if parts[0] != str(_pidns()):
        return True  # another pid namespace: cannot tell
    return _start_time(int(parts[1])) == int(parts[2])


def sweep() -> int:
    """Unmount and delete the quota images of orchestrators that died (SIGKILL, OOM, power).

    Their work directories' mount points are left as the empty directories under them, and are
    removed when empty. Returns how many images were removed.
    """
    if not STATE_DIR.is_dir():
        return 0
    removed = 0
    dead = {p.name for p in STATE_DIR.iterdir() if p.suffix == ".img" and not _owner_alive(p.name)}
    if not dead:
        return 0
    for mnt, dev in _loop_mounts():
        back = _backing_file(dev).removesuffix(" (deleted)")
        if os.path.dirname(back) == str(STATE_DIR) and os.path.basename(back) in dead:
            try:
                _umount(mnt)
                os.rmdir(mnt)
            except OSError as e:
                log.debug("stale quota mount %s: %s", mnt, e)
    for name in dead:
        try:
            (STATE_DIR / name).unlink()
            removed += 1
        except OSError:
            pass
    return removed


def wait_unmounted(path: str, timeout_s: float = 5.0) -> bool:
    """Tests: wait until ``path`` is no longer a mount point."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not os.path.ismount(path):
            return True
        time.sleep(0.01)
    return False


def _at_exit() -> None:
    """Delete unused spare images and release this process's quota mounts."""
    with _lock:
        for imgs in _spares.values():
            for img in imgs:
                try:
                    img.unlink()
                except OSError:
                    pass
        _spares.clear()
        for path in list(_mounts):
            try:
                _release_locked(path, keep=True)  # a caller's directory keeps its files
            except OSError:
                pass


def _forget_in_child() -> None:
    """A forked child owns none of its parent's mounts or spares: it must not release them."""
    global _lock
    _lock = threading.RLock()
    _mounts.clear()
    _spares.clear()
    _preparing.clear()


import atexit  # noqa: E402

atexit.register(_at_exit)
os.register_at_fork(after_in_child=_forget_in_child)
