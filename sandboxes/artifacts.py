"""Reading what a candidate left in its work directory, without being tricked by it.

The candidate controls every name in the work directory. If the trusted evaluator simply opens
``workdir / "preds.npy"``, a candidate that made ``preds.npy`` a symlink to the evaluator's hidden
labels gets the labels read back as its "predictions" (the sandbox hid the labels from the
candidate, but the evaluator runs outside the sandbox and follows the link). :func:`read_artifact`
refuses symlinks in every path component, non-regular files (FIFOs would block, devices would
stream), hard-linked files, and oversized files.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from .base import SandboxError


class ArtifactError(SandboxError):
    """The candidate's artifact is missing or unsafe to read: the candidate's fault."""


def open_artifact(workdir: Path, relpath: str) -> int:
    """An fd for ``workdir/relpath``, opened one component at a time with ``O_NOFOLLOW``."""
    parts = [p for p in Path(relpath).parts if p not in ("", ".")]
    if not parts or Path(relpath).is_absolute() or ".." in parts:
        raise ArtifactError(f"artifact path {relpath!r} must be relative to the work directory, without '..'")
    fd = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            try:
                nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as e:
                raise ArtifactError(f"artifact {relpath!r}: {part!r} is not a plain directory "
                                    f"({os.strerror(e.errno)})") from e
            os.close(fd)
            fd = nxt
        try:
            out = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise ArtifactError(f"artifact {relpath!r} is a symlink: refused") from e
            if e.errno == errno.ENOENT:
                raise ArtifactError(f"artifact {relpath!r} was not produced") from e
            raise ArtifactError(f"artifact {relpath!r}: {os.strerror(e.errno)}") from e
    finally:
        os.close(fd)
    st = os.fstat(out)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(out)
        raise ArtifactError(f"artifact {relpath!r} is not a plain, singly linked file: refused")
    return out


def read_artifact(workdir: Path, relpath: str, max_bytes: int = 256 * 2**20) -> bytes:
    """The bytes of ``workdir/relpath``; :class:`ArtifactError` if unsafe, missing or too big."""
    fd = open_artifact(Path(workdir), relpath)
    with os.fdopen(fd, "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ArtifactError(f"artifact {relpath!r} is larger than {max_bytes} bytes: refused")
    return data
