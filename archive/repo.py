"""Bare git repository holding every agent's code: one commit per node.

Why git: children share unchanged files with their parents (content-addressed
blobs), lineage is the commit graph, and diffs between any two agents are free.
Objects are written as loose files (blob -> tree -> commit; GitPython's own
store spawns `git hash-object` per object) and refs with git's own lock-file-then-rename protocol, so a commit costs a few
file writes and no subprocess; a kill -9 can leave only unreferenced objects or
a stale `*.lock`, never a half-written ref.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import tempfile
import threading
import time
import zlib
from collections.abc import Iterable
from pathlib import Path

import git
from gitdb.util import bin_to_hex, hex_to_bin

REPO_NAME = "repo.git"
NODE_REF_PREFIX = "refs/dgm/nodes/"
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
IDENTITY = b"dgm <dgm@localhost>"
IGNORED_DIRS = frozenset({"__pycache__", ".git"})
IGNORED_SUFFIXES = (".pyc", ".pyo")

_REF_RE = re.compile(r"^refs/[A-Za-z0-9_\-]+(/[A-Za-z0-9_\-][A-Za-z0-9_.\-]*)*$")
_SHA_RE = re.compile(r"^[0-9a-f]{40}$")

# Run git subprocesses (diff, for-each-ref, update-ref) independent of the user's config.
_GIT_ENV = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_TERMINAL_PROMPT": "0"}


def node_ref(node_id: int) -> str:
    return f"{NODE_REF_PREFIX}{int(node_id)}"


def _is_ignored(parts: list[str]) -> bool:
    return any(p in IGNORED_DIRS for p in parts[:-1]) or parts[-1].endswith(IGNORED_SUFFIXES) or parts[-1] in IGNORED_DIRS


def _check_path(path: str) -> list[str]:
    """Split a relative POSIX path, refusing anything that could escape the agent dir."""
    if not isinstance(path, str) or not path or path.startswith("/") or "\\" in path or "\0" in path:
        raise ValueError(f"invalid file path {path!r}: must be a non-empty relative POSIX path")
    parts = path.split("/")
    if any(p in ("", ".", "..", ".git") for p in parts):
        raise ValueError(f"invalid file path {path!r}: empty, '.', '..' or '.git' component")
    return parts


def _check_ref(ref: str) -> None:
    if not _REF_RE.match(ref) or ref.endswith(".lock"):
        raise ValueError(f"invalid ref name {ref!r}")


class AgentRepo:
    """RUN_DIR/repo.git. Thread-safe (one lock around all git access)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not (self.path / "objects").is_dir():
            raise FileNotFoundError(f"no bare git repository at {self.path}")
        self._objects = self.path / "objects"
        self._lock = threading.RLock()
        self._repo = git.Repo(self.path)
        self._repo.git.update_environment(**_GIT_ENV)

    @classmethod
    def init(cls, path: str | Path) -> AgentRepo:
        path = Path(path)
        r = git.Repo.init(path, bare=True)
        with r.config_writer() as cw:
            cw.set_value("gc", "auto", "0")  # nothing is ever garbage; never stall a write on gc
        r.close()
        return cls(path)

    def close(self) -> None:
        with self._lock:
            self._repo.close()

    # ---- writing objects --------------------------------------------------------------

    def _store(self, kind: str, data: bytes) -> bytes:
        """Write a loose object (skipped if present): temp file + rename, as git does."""
        raw = f"{kind} {len(data)}\0".encode() + data
        sha = hashlib.sha1(raw).hexdigest()
        path = self._objects / sha[:2] / sha[2:]
        if not path.exists():
            path.parent.mkdir(exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix="tmp_obj_", dir=path.parent)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(zlib.compress(raw, 1))
                os.chmod(tmp, 0o444)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        return bytes.fromhex(sha)

    def _write_tree(self, entries: dict) -> bytes:
        """entries: name -> (mode, binsha) for blobs or name -> dict for subtrees."""
        items = []
        for name, val in entries.items():
            bname = os.fsencode(name)
            if isinstance(val, dict):
                items.append((bname + b"/", b"40000", bname, self._write_tree(val)))
            else:
                items.append((bname, val[0], bname, val[1]))
        items.sort(key=lambda it: it[0])  # git order: a tree sorts as "name/"
        return self._store("tree", b"".join(mode + b" " + name + b"\0" + sha for _, mode, name, sha in items))

    def _write_commit(self, tree: bytes, parent_commit: str | None, message: str) -> str:
        stamp = f"{int(time.time())} +0000".encode()
        lines = [b"tree " + bin_to_hex(tree)]
        if parent_commit is not None:
            if not self._has_loose(parent_commit) and not self.commit_exists(parent_commit):
                raise ValueError(f"parent commit {parent_commit} does not exist in {self.path}")
            lines.append(b"parent " + parent_commit.encode())
        lines += [b"author " + IDENTITY + b" " + stamp, b"committer " + IDENTITY + b" " + stamp]
        msg = message if message.endswith("\n") else message + "\n"
        return bin_to_hex(self._store("commit", b"\n".join(lines) + b"\n\n" + msg.encode())).decode()

    def _commit_entries(self, blobs: dict[tuple[str, ...], tuple[bytes, bytes]], parent_commit, message, ref) -> str:
        _check_ref(ref)
        root: dict = {}
        for parts, (mode, data) in blobs.items():
            d = root
            for p in parts[:-1]:
                d = d.setdefault(p, {})
                if not isinstance(d, dict):
                    raise ValueError(f"path conflict at {'/'.join(parts)}: a file is also a directory")
            if parts[-1] in d:
                raise ValueError(f"path conflict at {'/'.join(parts)}: given twice or also a directory")
            d[parts[-1]] = (mode, self._store("blob", data))
        sha = self._write_commit(self._write_tree(root), parent_commit, message)
        self.set_ref(ref, sha)
        return sha

    def commit_dir(self, src_dir: str | Path, parent_commit: str | None, message: str, ref: str) -> str:
        """Commit the regular files under src_dir (no __pycache__/*.pyc/.git; symlinks skipped) and point ref at it."""
        src = Path(src_dir)
        if not src.is_dir():
            raise NotADirectoryError(f"{src} is not a directory")
        blobs: dict[tuple[str, ...], tuple[bytes, bytes]] = {}

        def walk(d: Path, prefix: tuple[str, ...]) -> None:
            with os.scandir(d) as it:
                for e in it:
                    parts = prefix + (e.name,)
                    if e.is_symlink() or _is_ignored(list(parts)):
                        continue
                    if e.is_dir():
                        walk(Path(e.path), parts)
                    elif e.is_file():
                        mode = b"100755" if e.stat().st_mode & 0o100 else b"100644"
                        with open(e.path, "rb") as f:
                            blobs[parts] = (mode, f.read())

        with self._lock:
            walk(src, ())
            return self._commit_entries(blobs, parent_commit, message, ref)

    def commit_files(self, files: dict[str, bytes | str], parent_commit: str | None, message: str, ref: str) -> str:
        """Commit exactly this set of files (the whole agent, not a patch). Paths are validated."""
        blobs = {}
        for path, data in files.items():
            parts = tuple(_check_path(path))
            if _is_ignored(list(parts)):
                continue
            blobs[parts] = (b"100644", data.encode() if isinstance(data, str) else bytes(data))
        with self._lock:
            return self._commit_entries(blobs, parent_commit, message, ref)

    def empty_child(self, parent_commit: str | None, message: str, ref: str) -> str:
        """A commit with the parent's tree (no code produced), so every node still has a commit."""
        _check_ref(ref)
        with self._lock:
            tree = hex_to_bin(self.tree_of(parent_commit)) if parent_commit else self._write_tree({})
            sha = self._write_commit(tree, parent_commit, message)
            self.set_ref(ref, sha)
            return sha

    # ---- reading objects --------------------------------------------------------------

    def _commit(self, sha: str) -> git.Commit:
        if not isinstance(sha, str) or not _SHA_RE.match(sha) or not self.commit_exists(sha):
            raise ValueError(f"no commit {sha!r} in {self.path}")
        return git.Commit(self._repo, hex_to_bin(sha))

    def _has_loose(self, sha: str) -> bool:
        return bool(_SHA_RE.match(sha)) and (self._objects / sha[:2] / sha[2:]).is_file()

    def _run_git(self, *args: str, input: str | None = None) -> str:
        return subprocess.run(
            ["git", f"--git-dir={self.path}", *args],
            input=input, capture_output=True, text=True, check=True, env={**os.environ, **_GIT_ENV},
        ).stdout

    def commit_parents(self, shas: Iterable[str]) -> dict[str, list[str] | None]:
        """sha -> its parent shas, or None if it is not a commit in the repo. Two git calls for any number."""
        wanted = list(dict.fromkeys(s for s in shas))
        out: dict[str, list[str] | None] = {s: None for s in wanted}
        valid = [s for s in wanted if isinstance(s, str) and _SHA_RE.match(s)]
        if not valid:
            return out
        with self._lock:
            kinds = self._run_git("cat-file", "--batch-check", input="\n".join(valid) + "\n").splitlines()
            commits = [line.split()[0] for line in kinds if line.split()[1:2] == ["commit"]]
            if commits:
                for line in self._run_git("rev-list", "--no-walk=unsorted", "--parents", "--stdin",
                                          input="\n".join(commits) + "\n").splitlines():
                    sha, *parents = line.split()
                    out[sha] = parents
        return out

    def commit_exists(self, sha: str) -> bool:
        with self._lock:
            try:
                return self._repo.odb.info(hex_to_bin(sha)).type == b"commit"
            except Exception:
                return False

    def parents(self, sha: str) -> list[str]:
        with self._lock:
            return [p.hexsha for p in self._commit(sha).parents]

    def tree_of(self, sha: str) -> str:
        with self._lock:
            return self._commit(sha).tree.hexsha

    def message(self, sha: str) -> str:
        with self._lock:
            return self._commit(sha).message

    def read_files(self, commit: str) -> dict[str, bytes]:
        return {path: data for path, (_, data) in self._read_blobs(commit).items()}

    def _read_blobs(self, commit: str) -> dict[str, tuple[int, bytes]]:
        with self._lock:
            return {
                b.path: (b.mode, b.data_stream.read())
                for b in self._commit(commit).tree.traverse()
                if b.type == "blob"
            }

    def materialize(self, commit: str, dest_dir: str | Path) -> Path:
        """Write the commit's files into dest_dir (created; must be empty if it exists)."""
        dest = Path(dest_dir)
        if dest.exists() and any(dest.iterdir()):
            raise FileExistsError(f"{dest} is not empty; materialize needs an empty directory")
        blobs = self._read_blobs(commit)
        dest.mkdir(parents=True, exist_ok=True)
        for path, (mode, data) in blobs.items():
            target = dest.joinpath(*_check_path(path))
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            if mode & 0o111:
                target.chmod(0o755)
        return dest

    def diff(self, a: str | None, b: str) -> str:
        """Unified diff from commit a (None: the empty tree) to commit b."""
        with self._lock:
            old = self._commit(a).hexsha if a is not None else EMPTY_TREE
            new = self._commit(b).hexsha
            return self._repo.git.diff(
                old, new, "--no-color", "--no-ext-diff", "--no-textconv", strip_newline_in_stdout=False
            )

    # ---- refs -------------------------------------------------------------------------

    def set_ref(self, ref: str, sha: str) -> None:
        """Point ref at sha: write `<ref>.lock`, then rename (atomic; git's protocol)."""
        _check_ref(ref)
        if not _SHA_RE.match(sha):
            raise ValueError(f"invalid sha {sha!r}")
        path = self.path / ref
        with self._lock:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock = path.with_name(path.name + ".lock")
            with open(lock, "wb") as f:  # a stale lock from a killed writer is simply overwritten
                f.write(sha.encode() + b"\n")
            os.replace(lock, path)

    def read_ref(self, ref: str) -> str | None:
        _check_ref(ref)
        loose = self.path / ref
        if loose.is_file():
            return loose.read_text().strip() or None
        packed = self.path / "packed-refs"
        if packed.is_file():
            for line in packed.read_text().splitlines():
                if line[:1] not in ("#", "^") and line.endswith(" " + ref):
                    return line.split(" ", 1)[0]
        return None

    def ref_exists(self, ref: str) -> bool:
        return self.read_ref(ref) is not None

    def delete_ref(self, ref: str) -> None:
        _check_ref(ref)
        with self._lock:
            self._repo.git.update_ref("-d", ref)

    def list_refs(self, prefix: str = NODE_REF_PREFIX) -> dict[str, str]:
        with self._lock:
            out = self._repo.git.for_each_ref("--format=%(objectname) %(refname)", prefix)
        return dict(reversed(line.split(" ", 1)) for line in out.splitlines() if line)

    def list_node_refs(self) -> dict[int, str]:
        """node id -> commit for every refs/dgm/nodes/<id> (non-integer names ignored)."""
        out = {}
        for ref, sha in self.list_refs(NODE_REF_PREFIX).items():
            name = ref[len(NODE_REF_PREFIX):]
            if name.isdigit():
                out[int(name)] = sha
        return out

    def node_ref_ids(self) -> set[int]:
        """Ids of every refs/dgm/nodes/<id>, read from the ref files' names and packed-refs (no git
        process, no ref contents: a listing of 100,000 refs takes milliseconds)."""
        ids: set[int] = set()
        loose = self.path / NODE_REF_PREFIX
        if loose.is_dir():
            with os.scandir(loose) as entries:
                ids.update(int(e.name) for e in entries if e.name.isdigit())
        packed = self.path / "packed-refs"
        if packed.is_file():
            for line in packed.read_text().splitlines():
                ref = line.partition(" ")[2]
                if ref.startswith(NODE_REF_PREFIX) and ref[len(NODE_REF_PREFIX):].isdigit():
                    ids.add(int(ref[len(NODE_REF_PREFIX):]))
        return ids

    def remove_stale_locks(self) -> list[str]:
        """Delete `*.lock` files under refs/ left by a killed writer. Only call while holding the writer lock."""
        removed = []
        with self._lock:
            for lock in sorted((self.path / "refs").rglob("*.lock")):
                lock.unlink(missing_ok=True)
                removed.append(str(lock.relative_to(self.path)))
        return removed
