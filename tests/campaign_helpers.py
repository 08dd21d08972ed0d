"""Shared pieces for campaign integration tests: scripted FM answers for circle packing, and a
campaign config pointed at a ScriptedFMServer over real HTTP."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Callable

from archive import Archive, Node
from tests.fm_server import Delay, Reply

from evaluators.circle_packing.evaluator import HERE as CP_DIR

SEED_CODE = (CP_DIR / "seed" / "packing.py").read_text()

GRID = '''"""A 5x5 grid plus one small circle in a gap."""
import numpy as np


def construct_packing():
    xs = (np.arange(5) + 0.5) / 5
    centers = [[x, y] for x in xs for y in xs]
    radii = [0.1] * 25
    centers.append([0.2, 0.2])  # the gap between four circles
    radii.append(0.04)
    return np.array(centers), np.array(radii)
'''

CRASH = "def construct_packing():\n    raise RuntimeError('boom in candidate')\n"
LOOP = "def construct_packing():\n    while True:\n        pass\n"
NAN = "import numpy as np\n\ndef construct_packing():\n    return np.full((26, 2), 0.5), np.full(26, float('nan'))\n"
OVERLAP = "import numpy as np\n\ndef construct_packing():\n    return np.full((26, 2), 0.5), np.full(26, 0.1)\n"
# claims a huge sum through its own numbers: the evaluator recomputes and rejects the geometry
CHEAT = "import numpy as np\n\ndef construct_packing():\n    return np.random.rand(26, 2), np.full(26, 10.0)\n"
SYNTAX = "def construct_packing(:\n    return 1\n"


def rewrite(code: str, why: str = "Improve the packing.") -> str:
    return f"{why}\n```python\n{code}```\n"


def distinct_grids(why: str = "Use a 5x5 grid.", delay: float = 0.0, **usage):
    """A ScriptedFMServer responder whose every answer is a new program: the 5x5 grid with its small
    circle a little smaller each time (2.54, 2.5399, ...), so none is skipped as a duplicate."""
    count = itertools.count()

    def respond(request: dict):
        code = GRID.replace("radii.append(0.04)", f"radii.append({0.04 - 1e-4 * next(count):.6f})")
        reply = Reply(rewrite(code, why), **usage)
        return Delay(delay, reply) if delay else reply

    return respond


def config_text(base_url: str, *, iterations: int, operators: str = "{ rewrite = 1.0 }", extra: str = "",
                timeout_s: float = 10, eval_timeout_s: float = 3, workers: int = 2, max_retries: int = 0,
                repairs: int = 0, run_repairs: int = 0, mutation: str = "") -> str:
    """A campaign on circle packing and a scripted model. ``repairs`` and ``run_repairs`` are 0
    unless a test asks: a scripted answer then makes exactly one node. ``mutation``: more lines of
    the [mutation] table."""
    return f"""
[campaign]
name = "test"
iterations = {iterations}

[evaluator]
name = "circle_packing"
options = {{ timeout_s = {eval_timeout_s} }}

[fm]
provider = "openai"
model = "scripted"
base_url = "{base_url}"
api_key_env = "DGM_TEST_KEY"
timeout_s = {timeout_s}
max_retries = {max_retries}
backoff_s = 0.01
concurrency = 2
prices = {{ prompt_per_mtok = 1.0, completion_per_mtok = 2.0 }}

[mutation]
operators = {operators}
repairs = {repairs}
run_repairs = {run_repairs}
{mutation}

[evaluation]
workers = {workers}
{extra}
"""


def write_config(tmp_path: Path, base_url: str, **kw) -> Path:
    path = tmp_path / "campaign.toml"
    path.write_text(config_text(base_url, **kw))
    return path


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    """Poll observable state until ``predicate()`` holds; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)


def archive_nodes(run_dir: Path) -> list[Node]:
    """The run's nodes as a reader sees them now ([] before the archive exists)."""
    if not (Path(run_dir) / "archive.db").exists():
        return []
    with Archive.open(run_dir, readonly=True) as archive:
        return archive.nodes()


def answer_once(run_dir: Path, ready: Callable[[list[Node]], bool], reply, what: str):
    """A ScriptedFMServer responder that answers ``reply`` only once ``ready(nodes)`` holds for the
    run's archive: a test orders the model's answers after observable events, not after a sleep."""

    def respond(request: dict):
        wait_for(lambda: ready(archive_nodes(run_dir)), what)
        return reply

    return respond
