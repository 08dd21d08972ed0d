"""Prompt building. Static text first (system, task) so the server's prompt cache is reused across
calls; the per-parent part (code, its results, archive exemplars, failed attempts) last.

Only public metrics and public feedback ever reach a prompt; private metrics are not even passed in.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from typing import Any, Callable

SYSTEM = (
    "You are an expert Python programmer who improves programs step by step. "
    "You change code carefully, keep every function the evaluator calls, keep the return types, "
    "and never print or fake results: an independent evaluator recomputes everything."
)

DIFF_INSTRUCTIONS = """Propose ONE focused improvement to {target}. First write one sentence saying what you change and why.
Then give one or more SEARCH/REPLACE blocks. The SEARCH part is copied exactly from the current
program; the part after ======= replaces it.{example}"""

TWEAK_INSTRUCTIONS = """Improve {target} by changing ONE or TWO numbers in it (a size, a count, a position, a step, a
threshold) by a small amount; keep everything else. First write one sentence saying which number you
change and why. Then give SEARCH/REPLACE blocks. The SEARCH part is copied exactly from the current
program; the part after ======= replaces it.{example}"""


def edit_example(code: str, seed: int) -> str:
    """A SEARCH/REPLACE example made from a line of the current program with one of its numbers
    changed: copied as it is, it is still a real, applicable edit (a fixed example such as
    `step = 0.1` was copied by the model into edits that matched nothing). Empty when no code
    line holds a number."""
    import random

    lines = [line for line in code.split("\n") if line.strip() and not line.strip().startswith(("#", '"', "'"))
             and re.search(r"(?<![\w.])\d+\.\d+(?![\w.])", line)]
    if not lines:
        return ""
    line = random.Random(seed).choice(lines)
    m = re.search(r"(?<![\w.])(\d+\.\d+)(?![\w.])", line)
    new = format(float(m.group(1)) * 1.1, ".4g")
    if "." not in new and "e" not in new:
        new += ".0"
    changed = line[: m.start(1)] + new + line[m.end(1):]
    return f" For example, to change one number:\n<<<<<<< SEARCH\n{line}\n=======\n{changed}\n>>>>>>> REPLACE"


FUNCTION_INSTRUCTIONS = """Improve the function `{name}` in {target}. First write one sentence saying what you change and why.
Then give the COMPLETE new definition of `{name}` in one ```python code block (add any new helper
function it calls to the same block). Do not repeat the rest of the program: the other functions stay as they are."""

REWRITE_INSTRUCTIONS = """Propose an improved version of {target}. First write one sentence saying what you change and why.
Then give the COMPLETE new {target} in one ```python code block."""


@dataclass(frozen=True)
class Exemplar:
    node_id: int
    score: float
    public_metrics: dict[str, float]
    note: str = ""  # first line of its public feedback


@dataclass(frozen=True)
class Inspiration:
    """A strong program from another lineage: its version of the file being edited."""

    node_id: int
    score: float
    code: str


@dataclass
class ProposalContext:
    """Everything a proposal needs, gathered by the loop (workers never touch the archive)."""

    task: str
    parent_id: int
    files: dict[str, str]  # all of the parent's text files
    editable: list[str]
    target: str  # the file this proposal edits
    score: float | None = None
    #: the parent's score on the evaluation seed of its first draw, the seed trial programs (``fit``)
    #: run on; ``score`` is the mean over all its draws, which a one-draw trial is not comparable to
    first_draw_score: float | None = None
    public_metrics: dict[str, float] = field(default_factory=dict)
    feedback: str = ""
    exemplars: list[Exemplar] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # recent failed children of this parent
    inspirations: list[Inspiration] = field(default_factory=list)  # strong programs of other lineages
    idea: str = ""  # a direction to try, from the evaluator's or the campaign's ideas
    reference: str = ""  # the installed library's documentation of the functions the idea names
    # for operators that run the agent's own code: its whole tree, and its public evaluation record
    # (per-stage public results, feedback, failed attempts; never private metrics)
    tree: dict[str, bytes] = field(default_factory=dict)
    record: dict = field(default_factory=dict)
    # for operators that search by evaluating: changed files (path → text) of a trial program →
    # a Future of its EvaluationResult, evaluated by the campaign's executor like any node
    evaluate: Callable[[dict[str, str]], Any] | None = None
    #: seconds one evaluation of the parent took (per draw): what a trial is expected to cost
    trial_s: float | None = None
    # for the FM operators' execution feedback: the same, running only the evaluation's first stage
    # (does the program run at all?)
    check: Callable[[dict[str, str]], Any] | None = None
    # the node that already holds the parent with these files changed (None: a new program), so an
    # answer that repeats one goes back to the model like any other unusable answer
    known: Callable[[dict[str, str]], int | None] | None = None


def _metrics_line(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k} = {v:.6g}" for k, v in sorted(metrics.items())) or "none"


def _clip(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 15] + " …[truncated]"


def clip_middle(text: str, limit: int) -> str:
    """``text`` cut in the middle: a traceback's first line says where, its last line what broke."""
    text = text.strip()
    if len(text) <= limit:
        return text
    head = limit // 3
    tail = limit - head - 15
    return text[:head] + " …[truncated]… " + text[-tail:]


def build_messages(ctx: ProposalContext, instructions: str) -> list[dict[str, str]]:
    parts = [f"## Task\n{ctx.task.strip()}"]
    score = "not scored" if ctx.score is None else f"score {ctx.score:.4f}"
    parts.append(f"## Current program: {ctx.target} ({score})\n```python\n{ctx.files[ctx.target].rstrip()}\n```")
    others = [p for p in ctx.editable if p != ctx.target]
    if others:
        parts.append("Other editable files (unchanged by this edit): " + ", ".join(others))
    parts.append(f"## Its results\n{_metrics_line(ctx.public_metrics)}\n{_clip(ctx.feedback, 600)}".rstrip())
    if ctx.exemplars:
        lines = [
            f"- node {e.node_id}: score {e.score:.4f} ({_metrics_line(e.public_metrics)}){': ' + _clip(e.note, 160) if e.note else ''}"
            for e in ctx.exemplars
        ]
        parts.append("## Other programs in the archive\n" + "\n".join(lines))
    for insp in ctx.inspirations:
        parts.append(f"## A strong program from another lineage: node {insp.node_id} (score {insp.score:.4f}), "
                     f"its {ctx.target}\n```python\n{insp.code.rstrip()}\n```")
    if ctx.failures:
        lines = [f"- {clip_middle(f, 400)}" for f in ctx.failures]
        parts.append("## Earlier changes to this program that FAILED (avoid repeating them)\n" + "\n".join(lines))
    if ctx.idea:
        parts.append(f"## An idea you may try\n{ctx.idea.strip()}")
    if ctx.reference:
        parts.append(f"## From the installed library's documentation\n{ctx.reference.strip()}")
    parts.append("## Your answer\n" + instructions.replace("{target}", ctx.target))
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "\n\n".join(parts)}]


#: the request that closes a fix conversation (see ``build_fix_messages``); ``{what}``: the function
#: the error is raised in, when the traceback names one of the program's, else "each function you change"
FIX_INSTRUCTIONS = """Fix the cause of that error in {target}; keep everything else the program does. First write one
sentence naming the cause. Then give the COMPLETE corrected definition of {what} in one
```python code block (the whole {target} if the fix spans it)."""

_FRAME_RE = re.compile(r'File "(?P<path>[^"]+)", line (?P<line>\d+), in (?P<name>[\w<>]+)')


def crash_site(error: str, target: str, program: str) -> tuple[str, int, str] | None:
    """Where in ``program`` (the file ``target``) a traceback says the error was raised: the last
    frame in that file, as (function, line number, that line's code); None when no frame is in a
    function of it.

    A frame counts when its path ends with ``target`` *and* ``program`` defines a function of the
    frame's name around the frame's line: a library file of the same name (torch's
    ``optim/optimizer.py``, say) in the same traceback is not mistaken for the edited one."""
    spans = _function_spans(program)
    frames = [m for m in _FRAME_RE.finditer(error)
              if _in_file(m["path"], target)
              and any(a <= int(m["line"]) <= b for a, b in spans.get(m["name"], ()))]
    if not frames:
        return None
    lines, line = program.splitlines(), int(frames[-1]["line"])
    return frames[-1]["name"], line, lines[line - 1].strip() if 0 < line <= len(lines) else ""


def raised_in_a_library(error: str, target: str) -> bool:
    """Whether a traceback's last frame is outside the edited file ``target``: the error was raised
    inside code the program called (a library's checks of its arguments), so how the program
    called it is the likely cause. An error of the program's own line (an index out of range) has
    its last frame there; so has one raised by compiled code, which leaves no frame of its own."""
    frames = list(_FRAME_RE.finditer(error))
    if not frames:
        return False
    return not _in_file(frames[-1]["path"], target)


def _in_file(path: str, target: str) -> bool:
    """Whether a traceback frame's ``path`` is the edited file ``target``: matched by its whole
    relative path, so ``pkg/optimizer.py`` is not ``other/optimizer.py`` or torch's own."""
    return ("/" + path.replace("\\", "/").lstrip("/")).endswith("/" + target.replace("\\", "/").lstrip("/"))


def _function_spans(program: str) -> dict[str, list[tuple[int, int]]]:
    """Each function name of ``program`` → the line spans of its definitions (empty when it does not parse)."""
    try:
        tree = ast.parse(program)
    except (SyntaxError, ValueError):
        return {}
    spans: dict[str, list[tuple[int, int]]] = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            spans.setdefault(node.name, []).append((node.lineno, node.end_lineno or node.lineno))
    return spans


def fix_request(target: str, site: tuple[str, int, str] | None) -> str:
    """The closing request of a fix conversation: the corrected function the error is raised in."""
    what = f"`{site[0]}` (and of any other function you change)" if site else "each function you change"
    return FIX_INSTRUCTIONS.replace("{what}", what).replace("{target}", target)


def build_fix_messages(ctx: ProposalContext, program: str, stage: str, what: str, error: str,
                       site: tuple[str, int, str] | None, reference: str = "") -> list[dict[str, str]]:
    """A new conversation about a program that crashed: the task, that program and its error, and
    a request to fix it that names the function the error is raised in. The small model, asked in
    the same conversation as a follow-up, answered the crashed program again or kept its cause (0 of
    15 crashes fixed in the efficacy campaigns); shown the program as the one to fix, it meets the
    task it was trained on (a bug and its traceback), without its earlier answer to copy. Not told
    where, it rewrote a function the error did not pass through (circle packing, seed 3)."""
    where = ""  # ``reference``: the documentation of the library call on the crash's line, if any
    if site:  # ``crash_site(error, ctx.target, program)``, found once by the caller
        where = f"\nIt is raised in `{site[0]}`, line {site[1]} of {ctx.target}" + (f": `{site[2]}`" if site[2] else "") + "."
    request = fix_request(ctx.target, site)
    parts = [f"## Task\n{ctx.task.strip()}",
             f"## A program that crashes: {ctx.target}\n```python\n{program.rstrip()}\n```",
             f"## How it failed\nAt stage {stage}: {what}{where}\nThe whole error:\n{error.strip()}",
             *([f"## From the installed library's documentation, for the call on that line\n{reference.strip()}"] if reference else []),
             "## Your answer\n" + request]
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "\n\n".join(parts)}]


#: put before each conversation after the first in a rendered prompt (an attempt's fix request
#: starts a new conversation, and the record keeps both)
NEW_CONVERSATION = "======== a new conversation ========"


def render(messages: list[dict[str, str]]) -> str:
    """The prompt as one text, for the archive: a system message after the first starts a new
    conversation and is marked so, so a reader (``dgm archive show``, the UI) sees where it begins."""
    return "\n\n".join((f"{NEW_CONVERSATION}\n\n" if i and m["role"] == "system" else "") + f"[{m['role']}]\n{m['content']}"
                       for i, m in enumerate(messages))
