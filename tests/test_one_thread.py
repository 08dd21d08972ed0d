"""evaluators.tensors.one_thread on the evaluation thread pool: scorers that overlap all score on one
torch thread, and the process's count comes back only when the last of them leaves."""

from __future__ import annotations

import threading

import pytest
import torch

from evaluators.tensors import one_thread

DEADLINE_S = 30


def fresh_thread_count() -> int:
    """The count a thread started now gets: torch's process-wide setting."""
    seen = []
    t = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    t.start()
    t.join(DEADLINE_S)
    return seen[0]


@pytest.fixture
def three_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    yield
    torch.set_num_threads(before)


def test_overlapping_scorers_stay_on_one_thread_and_the_last_restores(three_threads):
    entered = [threading.Event(), threading.Event()]
    leave_first, first_left, leave_second = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, int] = {}
    errors: list[BaseException] = []

    def scorer(i: int, leave: threading.Event, left: threading.Event | None):
        try:
            with one_thread():
                seen[f"inside {i}"] = torch.get_num_threads()
                entered[i].set()
                assert leave.wait(DEADLINE_S), "the test never let this scorer leave"
                seen[f"at leaving {i}"] = torch.get_num_threads()
            if left:
                left.set()
        except BaseException as e:  # reported by the main thread
            errors.append(e)
            entered[i].set()

    a = threading.Thread(target=scorer, args=(0, leave_first, first_left))
    b = threading.Thread(target=scorer, args=(1, leave_second, None))
    a.start()
    assert entered[0].wait(DEADLINE_S)
    b.start()
    assert entered[1].wait(DEADLINE_S)
    assert fresh_thread_count() == 1  # both inside
    leave_first.set()
    assert first_left.wait(DEADLINE_S)
    # the first scorer left while the second still scores: the count must not come back yet
    # (restoring per caller set it to 3 here, and the second scorer then restored it to 1)
    assert fresh_thread_count() == 1
    leave_second.set()
    for t in (a, b):
        t.join(DEADLINE_S)
        assert not t.is_alive()
    assert not errors, errors
    assert seen == {"inside 0": 1, "inside 1": 1, "at leaving 0": 1, "at leaving 1": 1}
    assert fresh_thread_count() == 3  # the last one out restored the process's count


def test_scoring_flushes_denormals_as_the_harness_does():
    seen = []

    def scorer():  # in a thread of its own: flushing is per-thread CPU state
        torch.set_flush_denormal(False)
        seen.append((torch.tensor([1e-39]) * 1.0).item())  # a float32 denormal
        with one_thread():
            seen.append((torch.tensor([1e-39]) * 1.0).item())

    t = threading.Thread(target=scorer)
    t.start()
    t.join(DEADLINE_S)
    assert seen[0] != 0.0 and seen[1] == 0.0


def test_a_scorer_that_raises_still_restores(three_threads):
    with pytest.raises(RuntimeError):
        with one_thread():
            raise RuntimeError("scoring failed")
    assert torch.get_num_threads() == 3 and fresh_thread_count() == 3
