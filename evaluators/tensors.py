"""Helpers for evaluators that score torch artifacts outside the sandbox (rl_objective, optimizer)."""

from __future__ import annotations

import contextlib
import threading
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


# torch's intra-op thread count is process state (a global default that new threads adopt, plus
# each thread's own OpenMP setting), and evaluations score on a thread pool. Saving and restoring
# it per caller interleaves badly: one scorer would restore the count while another still scores
# (its numbers then depend on the thread count) and the last one would leave the process at 1.
# So the callers share one save/restore: the first to enter saves, every one sets 1 for itself,
# the last to leave restores.
_lock = threading.Lock()
_inside = 0
_saved = 0


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Torch on one thread while the evaluator scores, so scores do not depend on the machine's
    core count; safe for concurrent threads (the count is restored when the last one leaves).

    Denormals are flushed in the calling thread, as in every harness, so that evaluator-side numbers
    match the harness's: it is the thread's own CPU state, and a pool thread keeps it for the next
    evaluation it scores (left on, not restored: torch cannot read it back).
    """
    import torch

    global _inside, _saved
    with _lock:
        if _inside == 0:
            _saved = torch.get_num_threads()
        _inside += 1
        torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        with _lock:
            _inside -= 1
            if _inside == 0:
                torch.set_num_threads(_saved)
