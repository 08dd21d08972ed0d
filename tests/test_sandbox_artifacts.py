"""The evaluator's side of integrity: artifacts are read without following the candidate's links."""

from __future__ import annotations

import os

import pytest

from sandboxes.artifacts import ArtifactError, read_artifact


def test_plain_artifact_is_read(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "preds.npy").write_bytes(b"123")
    assert read_artifact(tmp_path, "out/preds.npy") == b"123"


@pytest.mark.parametrize("setup,match", [
    (lambda wd, secret: os.symlink(secret, wd / "preds.npy"), "symlink"),
    (lambda wd, secret: (os.symlink(secret.parent, wd / "out")), "plain directory"),
    (lambda wd, secret: os.link(secret, wd / "preds.npy"), "singly linked"),
    (lambda wd, secret: os.mkfifo(wd / "preds.npy"), "plain"),
    (lambda wd, secret: None, "not produced"),
])
def test_candidate_tricks_are_refused(tmp_path, setup, match):
    hidden = tmp_path / "evaluator"
    hidden.mkdir()
    secret = hidden / "preds.npy"
    secret.write_text("hidden labels")
    wd = tmp_path / "wd"
    wd.mkdir()
    setup(wd, secret)
    rel = "out/preds.npy" if (wd / "out").exists() else "preds.npy"
    with pytest.raises(ArtifactError, match=match):
        read_artifact(wd, rel)


def test_escaping_paths_and_size_cap(tmp_path):
    (tmp_path / "big").write_bytes(b"x" * 100)
    with pytest.raises(ArtifactError, match="larger"):
        read_artifact(tmp_path, "big", max_bytes=10)
    for bad in ("../x", "/etc/passwd", ""):
        with pytest.raises(ArtifactError):
            read_artifact(tmp_path, bad)
