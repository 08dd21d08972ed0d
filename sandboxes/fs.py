"""Tree operations on directories an untrusted candidate wrote: any depth, no recursion, no links.

A candidate controls the shape of its work directory. ``shutil.rmtree`` and ``os.walk`` recurse in
Python (a chain of ~1,000 directories raises RecursionError) and build full paths (past 4,096
bytes every path-based call fails with ENAMETOOLONG). Everything here walks iteratively with
``*at()`` calls relative to one open directory fd, moving down by name and up by ``..`` (checked
against the device and inode recorded on the way down), so it holds at most two directory fds at
a time whatever the depth. Symlinks are never followed, and nothing crosses onto another file
system (a mount inside the tree is left alone).

``remove_tree`` is the clean-up to use on work directories (it also releases a disk-quota mount,
see :mod:`sandboxes.quota`); ``grant_tree`` chowns a tree to a sandbox uid; ``copy_tree`` copies
one (used to move a work directory's contents onto its quota file system).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from pathlib import Path
from typing import Callable, Iterator

log = logging.getLogger(__name__)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

# walk events
ENTER, FILE, LEAVE = "enter", "file", "leave"


class _Walker:
    """Depth-first walk below an open directory; ``fd`` is the directory the current event is in.

    Events: ``(ENTER, name, st)`` after moving *into* a subdirectory (``fd`` is now that
    directory), ``(FILE, name, st)`` for any non-directory in ``fd``, ``(LEAVE, name, st)`` after
    moving back *up* (``fd`` is the parent again; ``name`` is the directory just left). The
    consumer may unlink/rmdir/chown relative to ``fd`` while handling an event.
    """

    def __init__(self, top_fd: int) -> None:
        self.fd = top_fd
        st = os.fstat(top_fd)
        self.dev = st.st_dev
        # per level: (name, dev, ino, st, names still to visit); names are listed on entry
        self._stack: list[tuple[str, int, int, os.stat_result, list[str]]] = [
            ("", st.st_dev, st.st_ino, st, sorted(os.listdir(top_fd), reverse=True))]

    def __iter__(self) -> Iterator[tuple[str, str, os.stat_result]]:
        stack = self._stack
        while stack:
            pending = stack[-1][4]
            if pending:
                name = pending.pop()
                try:
                    st = os.lstat(name, dir_fd=self.fd)
                except FileNotFoundError:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    if st.st_dev != self.dev:
                        log.warning("not descending into %r: another file system is mounted there", name)
                        continue
                    try:
                        sub = os.open(name, _DIR_FLAGS, dir_fd=self.fd)
                    except PermissionError:  # a non-root caller and a chmod 000 directory
                        os.chmod(name, 0o700, dir_fd=self.fd, follow_symlinks=False)
                        sub = os.open(name, _DIR_FLAGS, dir_fd=self.fd)
                    sst = os.fstat(sub)
                    if (sst.st_dev, sst.st_ino) != (st.st_dev, st.st_ino):  # swapped under us
                        os.close(sub)
                        raise OSError(errno.ESTALE, f"directory {name!r} changed during the walk")
                    os.close(self.fd)
                    self.fd = sub
                    stack.append((name, sst.st_dev, sst.st_ino, sst, sorted(os.listdir(sub), reverse=True)))
                    yield ENTER, name, sst
                else:
                    yield FILE, name, st
                continue
            name, _dev, _ino, st, _ = stack.pop()
            if not stack:
                return
            parent = os.open("..", _DIR_FLAGS, dir_fd=self.fd)
            pst = os.fstat(parent)
            if (pst.st_dev, pst.st_ino) != (stack[-1][1], stack[-1][2]):
                os.close(parent)
                raise OSError(errno.ESTALE, "a directory was moved during the walk")
            os.close(self.fd)
            self.fd = parent
            yield LEAVE, name, st


def _open_top(path: str | os.PathLike) -> int | None:
    """An fd on ``path`` if it is a real directory (not a link to one), else None."""
    try:
        return os.open(path, _DIR_FLAGS)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno in (errno.ENOTDIR, errno.ELOOP):
            return None
        raise


def walk(path: str | os.PathLike, on_event: Callable[[_Walker, str, str, os.stat_result], None]) -> None:
    """Call ``on_event(walker, kind, name, st)`` for every entry below ``path`` (see ``_Walker``)."""
    fd = _open_top(path)
    if fd is None:
        return
    w = _Walker(fd)
    try:
        for kind, name, st in w:
            on_event(w, kind, name, st)
    finally:
        os.close(w.fd)


def clear_tree(path: str | os.PathLike) -> None:
    """Delete everything *inside* directory ``path`` (any depth); ``path`` itself stays."""

    def on(w: _Walker, kind: str, name: str, st) -> None:
        try:
            if kind == FILE:
                os.unlink(name, dir_fd=w.fd)
            elif kind == LEAVE:
                os.rmdir(name, dir_fd=w.fd)
        except FileNotFoundError:
            pass
        except PermissionError:  # non-root caller: the parent was made read-only by the candidate
            os.chmod(w.fd, 0o700)
            if kind == FILE:
                os.unlink(name, dir_fd=w.fd)
            else:
                os.rmdir(name, dir_fd=w.fd)

    walk(path, on)


def remove_tree(path: str | os.PathLike) -> None:
    """Remove ``path`` and everything below it, of any depth; never follows symlinks.

    Use this instead of ``shutil.rmtree`` on directories a candidate wrote. If ``path`` is a
    disk-quota work directory (:mod:`sandboxes.quota`), or holds some, their file systems are
    unmounted, loop devices detached and images deleted first. A missing ``path`` is not an error.
    """
    from . import quota

    path = os.path.abspath(path)
    for mnt in quota.mounted():  # ours, at or below path (deepest first)
        if mnt == path or mnt.startswith(path.rstrip("/") + "/"):
            quota.release(mnt)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(path)
        return
    clear_tree(path)
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass


def grant_tree(path: str | os.PathLike, uid: int, gid: int) -> None:
    """Chown ``path`` and everything below it to ``uid:gid`` so the sandbox user can write there.

    Symlinks are chowned themselves (never followed) and non-directories with several hard links
    are skipped, so a previous candidate cannot make the trusted side chown a host file.
    """
    os.lchown(path, uid, gid)

    def on(w: _Walker, kind: str, name: str, st) -> None:
        if kind == LEAVE or (st.st_uid == uid and st.st_gid == gid):
            return
        try:
            if kind == ENTER:
                os.fchown(w.fd, uid, gid)  # we are inside it now
            elif st.st_nlink == 1 or stat.S_ISLNK(st.st_mode):
                os.chown(name, uid, gid, dir_fd=w.fd, follow_symlinks=False)
        except FileNotFoundError:
            pass

    walk(path, on)


def copy_tree(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copy the contents of directory ``src`` into the existing directory ``dst`` (any depth).

    Regular files, directories and symlinks (as links) are copied with their modes, owners and
    times; other file types (fifos, sockets, devices) are skipped. ``dst`` must be empty of the
    copied names. Errors (ENOSPC when ``dst`` is a quota file system) propagate.
    """
    dfd = os.open(dst, _DIR_FLAGS)
    state = {"dfd": dfd}

    def meta(name: str | None, st, fd: int | None = None) -> None:
        kw = {} if fd is not None else {"dir_fd": state["dfd"], "follow_symlinks": False}
        target = fd if fd is not None else name
        try:
            os.chown(target, st.st_uid, st.st_gid, **kw)
        except PermissionError:
            pass  # not root: the copy belongs to us
        if not stat.S_ISLNK(st.st_mode):
            os.chmod(target, stat.S_IMODE(st.st_mode), **({} if fd is not None else {"dir_fd": state["dfd"]}))
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns), **kw)

    def on(w: _Walker, kind: str, name: str, st) -> None:
        if kind == ENTER:
            os.mkdir(name, 0o700, dir_fd=state["dfd"])
            sub = os.open(name, _DIR_FLAGS, dir_fd=state["dfd"])
            os.close(state["dfd"])
            state["dfd"] = sub
        elif kind == LEAVE:
            up = os.open("..", _DIR_FLAGS, dir_fd=state["dfd"])
            os.close(state["dfd"])
            state["dfd"] = up
            meta(name, st)
        elif stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(name, dir_fd=w.fd), name, dir_fd=state["dfd"])
            meta(name, st)
        elif stat.S_ISREG(st.st_mode):
            sfd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=w.fd)
            try:
                tfd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600,
                              dir_fd=state["dfd"])
                try:
                    _copy_data(sfd, tfd, st.st_size)
                    meta(None, st, fd=tfd)
                finally:
                    os.close(tfd)
            finally:
                os.close(sfd)

    try:
        walk(src, on)
    finally:
        os.close(state["dfd"])


def _copy_data(sfd: int, tfd: int, size: int) -> None:
    """Copy ``size`` bytes in the kernel (sendfile: copy_file_range refuses EXDEV across file
    systems here), falling back to read/write."""
    left = size
    try:
        while left > 0:
            n = os.sendfile(tfd, sfd, None, min(left, 1 << 30))
            if n == 0:
                return
            left -= n
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOSYS):
            raise
        while left > 0:
            chunk = os.read(sfd, min(left, 1 << 20))
            if not chunk:
                return
            os.write(tfd, chunk)
            left -= len(chunk)


def tree_usage(path: str | os.PathLike) -> tuple[int, int]:
    """(bytes allocated, entries) below ``path``, counted without recursion."""
    total = [0, 0]

    def on(w, kind, name, st) -> None:
        if kind != LEAVE:
            total[0] += st.st_blocks * 512
            total[1] += 1

    walk(path, on)
    return total[0], total[1]


def is_mount_point(path: str | os.PathLike) -> bool:
    try:
        return os.path.ismount(path)
    except OSError:
        return False


__all__ = ["remove_tree", "clear_tree", "grant_tree", "copy_tree", "tree_usage", "walk", "Path"]
