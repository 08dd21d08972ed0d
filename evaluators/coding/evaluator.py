"""Coding: a coding agent solves HumanEval problems, calling the model while it is evaluated.

DGM's own setting, offline. The candidate is an agent, ``solve(problem) -> code``; the seed drafts a
solution with the model, runs the docstring's ``>>>`` examples and repairs once or twice. Each stage:

1. **Solve.** For each problem, one sandbox run of the harness next to the agent (the shared recipe,
   ``harness_run``): only the prompt goes in, with the problem's budget; the agent reaches the model
   through a relay socket with a per-problem call and token budget (``relay.py``), in front of the
   evaluation's own FM socket; the run's wall-clock limit is the problem's. The code it returns is
   read back as an artifact.
2. **Grade.** Each solution runs against the problem's hidden tests in a fresh sandbox run whose
   work directory holds no agent (``grade.py``: the tests and the solution in two processes, plain
   data between them). The tests never enter a sandbox the agent runs in, and the HumanEval package
   is hidden in every sandbox.

Score = pass@1 over the stage's public problems, recomputed here from the grading runs; nothing the
agent writes is read as a result. The held-out split (``data.HELDOUT``) is solved and graded only
in the ``full`` stage and reported only as the private metric ``heldout_pass_at_1``: no stage
feedback, public metric or score depends on it.
"""

from __future__ import annotations

import json
import random
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

from pydantic import Field

from evaluators.api import CandidateInvalid, CandidateRun, Evaluator, MetricSpec, Stage, StageOutcome
from evaluators.coding import data
from evaluators.coding.harness import EXIT_IMPORT
from evaluators.coding.relay import ProblemRelay
from evaluators.harness_run import Harness, HarnessOptions
from sandboxes.base import Limits
from sandboxes.fs import remove_tree

HERE = Path(__file__).parent
HARNESS = Harness(HERE / "harness.py")
GRADER = HERE / "grade.py"
SOLUTION = "_dgm_solution.json"
MAX_SOLUTION_BYTES = 256 * 1024
MAX_FAILED_NAMED = 12

#: problems per stage: (public, held-out). ``full`` scores every development problem and, privately,
#: the held-out split.
PLAN: dict[str, tuple[Sequence[int], Sequence[int]]] = {
    "smoke": (data.SMOKE, ()),
    "small": (data.SMALL, ()),
    "full": (data.DEV, data.HELDOUT),
}

TASK = """The agent is a coding agent for Python function-completion problems (HumanEval). The harness
calls `solve(problem)` in coder.py once per problem and grades the code it returns against hidden
unit tests the agent never sees. `problem` holds `task_id`, `prompt` (imports, helper functions, and
the function's signature with its docstring, often with `>>>` examples) and `entry_point` (the
function's name), and `budget`: `calls` (model calls allowed for this problem), `tokens`,
`max_tokens` (per call) and `wall_s` (seconds for the problem; the run is killed after that). The
returned code must define the function; it runs after the prompt's own code, so it may use the
prompt's imports and helpers. The agent calls the model through the Unix socket in the environment
variable DGM_FM_SOCKET (an OpenAI-style chat-completions endpoint; coder_tools.py holds the client)
and may run code itself (e.g. the docstring's examples) in a subprocess. Calls beyond the budget are
refused (HTTP 429). Score: pass@1, the share of problems whose returned code passes all hidden tests.
Everything runs offline with a small model, so clear short prompts and cheap checks pay off."""


class CodingOptions(HarnessOptions):
    """``timeout_s`` bounds a whole stage (every problem of it together)."""

    calls_per_problem: int = Field(3, ge=1, le=20, description="model calls one problem may use (draft + repairs)")
    tokens_per_problem: int = Field(4000, ge=100, description="model tokens (prompt + answer) one problem may use")
    max_tokens: int = Field(512, ge=16, le=4096, description="answer tokens per model call")
    problem_wall_s: float = Field(240.0, gt=0, description="seconds one problem may take (the agent's run is killed after)")
    test_timeout_s: float = Field(10.0, gt=0, description="seconds the hidden tests of one problem may take")


@dataclass
class Attempt:
    """One problem: what the agent returned, what it cost, and what the hidden tests said."""

    problem: data.Problem
    solution: str | None = None
    error: str = ""  # why there is no solution (the agent's failure, a limit)
    calls: int = 0
    tokens: int = 0
    refused: int = 0
    wall_s: float = 0.0
    passed: bool = False
    verdict: str = ""  # the grader's words for a failed solution

    @property
    def why(self) -> str:
        return self.error or self.verdict


class CodingEvaluator(Evaluator):
    name = "coding"
    task = TASK
    fm_access = True
    ideas = (
        "Extract more kinds of examples from the docstring (lines like `f(x) == y`, `f(x) ➞ y`, "
        "`f(x) should return y`, 'For example: ... => ...') so that more drafts are checked before they are returned.",
        "When an example fails, show the model the call, the expected and the actual result, and ask for the whole corrected function.",
        "Ask the model for the function only, in one code block, with a low temperature for the first draft.",
        "If every repair still fails the examples, return the draft that passed the most examples rather than the last one.",
        "Check cheap properties before returning: the code parses, defines the entry point, and does not print or read input.",
        "Write the examples' expected values into the prompt as a short test list, so the model sees what must hold.",
    )
    stages = (
        Stage("smoke", Limits(wall_s=900, cpu_s=120, memory_mb=1024, pids=64, file_mb=16), gate={"pass_at_1": 0.5},
              description="4 easy development problems: the agent runs, reaches the model and solves some"),
        Stage("small", Limits(wall_s=2400, cpu_s=120, memory_mb=1024, pids=64, file_mb=16), gate={"pass_at_1": 0.25},
              description="12 development problems (the campaign's ranking stage on CPU)"),
        Stage("full", Limits(wall_s=20000, cpu_s=120, memory_mb=1024, pids=64, file_mb=16),
              description="all 124 development problems, and the 40 held-out ones scored privately"),
    )
    metrics = (
        MetricSpec("pass_at_1", 0.0, 1.0, description="share of the stage's problems whose code passes every hidden test"),
        MetricSpec("solved", 0.0, data.N_PROBLEMS, description="problems solved"),
        MetricSpec("answered", 0.0, 1.0, description="share of problems for which the agent returned code in time"),
        MetricSpec("fm_calls_per_problem", 0.0, 1000.0, higher_is_better=False, description="model calls per problem"),
        MetricSpec("fm_tokens_per_problem", 0.0, 1e7, higher_is_better=False, description="model tokens per problem"),
        MetricSpec("wall_s_per_problem", 0.0, 1e5, higher_is_better=False, description="seconds per problem"),
        MetricSpec("heldout_pass_at_1", 0.0, 1.0, public=False, description="pass@1 on the held-out split (full stage only)"),
        MetricSpec("heldout_solved", 0.0, data.N_PROBLEMS, public=False, description="held-out problems solved"),
    )
    Options = CodingOptions

    def __init__(self, **options) -> None:
        super().__init__(**options)
        data.problems()  # fail early, with the install hint, when the data is missing
        self.plan = {k: (tuple(v[0]), tuple(v[1])) for k, v in PLAN.items()}

    def seed_agent(self) -> Path:
        return HERE / "seed"

    # -- one stage ------------------------------------------------------------------------------
    def run_stage(self, stage: Stage, run: CandidateRun) -> StageOutcome:
        public, heldout = self.plan.get(stage.name, ((), ()))
        order = [*public, *heldout]
        random.Random(f"coding/{stage.name}").shuffle(order)  # the agent cannot tell a held-out problem by its place
        attempts = {a.problem.index: a for a in self.solve_and_grade(stage, run, data.select(order))}
        pub = [attempts[i] for i in public]
        hid = [attempts[i] for i in heldout]
        metrics = summarise(pub)
        if hid:
            metrics["heldout_solved"] = float(sum(a.passed for a in hid))
            metrics["heldout_pass_at_1"] = metrics["heldout_solved"] / len(hid)
        words = feedback(pub, metrics)
        if run.fm_socket is None:  # e.g. `dgm eval`, which serves no model
            words = "no model was served to this evaluation: every model call was answered 503; " + words
        return StageOutcome(score=metrics["pass_at_1"], metrics=metrics, feedback=words)

    def solve_and_grade(self, stage: Stage, run: CandidateRun, problems: Sequence[data.Problem]) -> list[Attempt]:
        """Solve every problem with the agent (one sandbox run each), then grade every solution."""
        run.hide = [*run.hide, *data.hidden_dirs()]
        attempts = self.solve(stage, run, problems)
        for a in attempts:
            if a.solution is not None:
                a.passed, a.verdict = self.grade(run, a.problem, a.solution)
        return attempts

    def solve(self, stage: Stage, run: CandidateRun, problems: Sequence[data.Problem]) -> list[Attempt]:
        o = self.options
        total = o.limits(stage)
        deadline = time.monotonic() + total.wall_s
        upstream = run.fm_socket
        attempts: list[Attempt] = []
        with ProblemRelay(upstream) as relay:
            run.fm_socket = relay.path  # the sandbox sees the relay only, never the evaluation's socket
            try:
                for p in problems:
                    attempts.append(self._solve_one(stage, run, relay, p, total, deadline))
            finally:
                run.fm_socket = upstream
        return attempts

    def _solve_one(self, stage: Stage, run: CandidateRun, relay: ProblemRelay, p: data.Problem,
                   total: Limits, deadline: float) -> Attempt:
        o = self.options
        attempt = Attempt(p)
        left = deadline - time.monotonic()
        if left < 1:
            attempt.error = "not attempted: the stage's time limit was spent"
            return attempt
        wall = min(o.problem_wall_s, left)
        budget = {"calls": o.calls_per_problem, "tokens": o.tokens_per_problem, "max_tokens": o.max_tokens,
                  "wall_s": round(wall, 1)}
        usage = relay.open_problem(o.calls_per_problem, o.tokens_per_problem, o.max_tokens)
        _remove(run.workdir / SOLUTION)
        one = replace(stage, limits=replace(total, wall_s=wall))
        t0 = time.monotonic()
        try:
            HARNESS.run(run, one, HarnessOptions(), lambda workdir: {"problem": p.public(), "budget": budget, "out": SOLUTION})
            result = None
        except CandidateInvalid as e:
            result = run.runs[-1] if run.runs else None
            if result is None or (result.limit_hit is None and result.returncode == EXIT_IMPORT):
                raise CandidateInvalid(f"the agent does not import: {e}") from None
            attempt.error = f"stopped: {result.describe()}"
        attempt.wall_s = time.monotonic() - t0
        attempt.calls, attempt.tokens, attempt.refused = usage.calls, usage.tokens, usage.refused
        if result is not None:
            return attempt
        try:
            out = json.loads(run.read_artifact(SOLUTION, MAX_SOLUTION_BYTES))
        except (CandidateInvalid, ValueError):
            attempt.error = "the harness wrote no usable solution"
            return attempt
        solution = out.get("solution") if isinstance(out, dict) else None
        if isinstance(solution, str) and solution.strip():
            attempt.solution = solution
        else:
            attempt.error = str(out.get("error") or "solve() returned no code")[:300] if isinstance(out, dict) else "no code"
        return attempt

    def grade(self, run: CandidateRun, p: data.Problem, solution: str) -> tuple[bool, str]:
        """(passed, why not): the hidden tests on ``solution``, in a fresh sandbox run with no agent."""
        o = self.options
        where = Path(tempfile.mkdtemp(prefix="grade-", dir=run.workdir.parent))
        try:
            nonce = secrets.token_hex(16)
            (where / "prompt.py").write_text(p.prompt)
            (where / "solution.py").write_text(solution)
            shutil.copy(GRADER, where / "_dgm_grade.py")
            (where / "_dgm_grade.json").write_text(json.dumps({
                "prompt": p.prompt, "test": p.test, "entry_point": p.entry_point, "nonce": nonce,
                "timeout_s": o.test_timeout_s}))
            grading = CandidateRun(workdir=where, sandbox=run.sandbox, python=run.python, seed=run.seed,
                                   hide=list(run.hide))
            limits = Limits(wall_s=o.test_timeout_s + 15, cpu_s=int(o.test_timeout_s) + 15, memory_mb=1024,
                            pids=16, file_mb=16)
            result = grading.run_python("_dgm_grade.py", limits)
            run.runs.append(result)  # counted in the stage's sandbox time
        finally:
            remove_tree(where)  # also releases the disk-quota mount the sandbox put on it
        lines = result.stdout.splitlines()
        if result.ok and f"PASSED {nonce}" in lines:
            return True, ""
        failed = next((ln[len("FAILED "):] for ln in lines if ln.startswith("FAILED ")), "")
        return False, failed or f"the tests did not finish: {result.describe()}"


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except IsADirectoryError:
        remove_tree(path)


def summarise(attempts: Sequence[Attempt]) -> dict[str, float]:
    n = max(len(attempts), 1)
    solved = sum(a.passed for a in attempts)
    return {
        "pass_at_1": solved / n,
        "solved": float(solved),
        "answered": sum(a.solution is not None for a in attempts) / n,
        "fm_calls_per_problem": sum(a.calls for a in attempts) / n,
        "fm_tokens_per_problem": sum(a.tokens for a in attempts) / n,
        "wall_s_per_problem": sum(a.wall_s for a in attempts) / n,
    }


def feedback(attempts: Sequence[Attempt], metrics: dict[str, float]) -> str:
    """Public words: the score, the cost, and the failed problems (public ones only) with why."""
    n = len(attempts)
    words = [f"pass@1 {int(metrics['solved'])}/{n} = {metrics['pass_at_1']:.3f}; per problem "
             f"{metrics['fm_calls_per_problem']:.1f} model calls, {metrics['fm_tokens_per_problem']:.0f} tokens, "
             f"{metrics['wall_s_per_problem']:.0f} s"]
    refused = sum(a.refused for a in attempts)
    if refused:
        words.append(f"{refused} model calls refused (over the problem's budget)")
    failed = [a for a in attempts if not a.passed]
    if failed:
        named = "; ".join(f"{a.problem.task_id} {a.problem.entry_point}: {a.why.splitlines()[0][:160]}"
                          for a in failed[:MAX_FAILED_NAMED])
        more = f"; and {len(failed) - MAX_FAILED_NAMED} more" if len(failed) > MAX_FAILED_NAMED else ""
        words.append(f"failed: {named}{more}")
    return "; ".join(words)
