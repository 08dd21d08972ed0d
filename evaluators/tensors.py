"""Helpers for evaluators that score torch artifacts outside the sandbox (rl_objective, optimizer)."""

from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np

from evaluators.api import CandidateInvalid


def checked_tensors(arrays: dict, want: dict[str, tuple], *, name: str, what: str) -> dict:
    """float32 tensors of exactly the wanted names and shapes; NaN/inf is divergence, not a crash."""
    import torch

    if set(arrays) != set(want):
        raise CandidateInvalid(f"{name} holds {sorted(arrays)}, expected {sorted(want)}")
    out = {}
    for key, shape in want.items():
        a = arrays[key]
        if a.shape != shape or a.dtype.kind != "f":
            raise CandidateInvalid(f"{name}: {key} has shape {a.shape} dtype {a.dtype}, expected {shape} float")
        if not np.isfinite(a).all():
            raise CandidateInvalid(f"diverged: {what} {key} contain NaN or infinity")
        out[key] = torch.from_numpy(a.astype(np.float32))
    return out


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Torch on one thread while the evaluator scores (process-wide: not for concurrent threads)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
