"""Mutation operators: turn a parent (as a :class:`ProposalContext`) into a child's files.

An operator is anything with a ``name`` and ``propose(ctx, fm, sampling) -> Proposal``. The FM
operators here edit one file; a self-modifying operator (the parent's own code producing the child,
inside a sandbox) implements the same method, so the loop does not care who wrote the child.
"""

from __future__ import annotations

import abc
import random
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from archive.node import what_broke
from orchestrator.events import NodeEvent
from orchestrator.fm.client import FMError
from orchestrator.mutation.api_reference import call_references
from orchestrator.mutation.parsing import (
    NO_CODE,
    ProposalInvalid,
    add_missing_imports,
    any_edit,
    check_python,
    code_blocks,
    definitions,
    merge_definitions,
    parse_rewrite,
    whole_or_merged,
)
from orchestrator.mutation.prompts import (
    DIFF_INSTRUCTIONS,
    FUNCTION_INSTRUCTIONS,
    REWRITE_INSTRUCTIONS,
    TWEAK_INSTRUCTIONS,
    ProposalContext,
    edit_example,
    fix_request,
    build_messages,
    build_fix_messages,
    crash_site,
    raised_in_a_library,
    clip_middle,
    render,
)


@dataclass(frozen=True)
class Sampling:
    temperature: float
    seed: int
    max_tokens: int
    tokens_left: int | None = None  # what the campaign's token budget has left (None: no limit)
    calls_left: int | None = None  # FM calls this attempt may make within the campaign's budget


@dataclass
class AttemptUsage:
    """The FM use of an attempt of several calls (a repair turn, an improver run), in the shape
    the loop records for one :class:`~orchestrator.fm.client.Completion`."""

    model: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    calls: int = 0
    refused: int = 0

    @classmethod
    def of(cls, completions: list[Any], failed: int = 0) -> "AttemptUsage":
        """The sum of some calls' completions, and ``failed`` calls that returned none."""
        return cls(completions[-1].model, sum(c.prompt_tokens for c in completions),
                   sum(c.completion_tokens for c in completions), sum(c.cost_usd for c in completions),
                   sum(c.latency_s for c in completions), len(completions) + failed)


#: the follow-up turn after an answer that could not be used: execution feedback is what small
#: models improve on, and one more call is cheaper than a new attempt from scratch
REPAIR = """Your answer could not be used: {error}
Answer again, in the form asked above, with that fixed."""

#: why an answer the model did not finish is unusable: it reached the token limit (``finish_reason``
#: "length"), so its code block is cut off and "does not compile" would send the model after a
#: syntax error it did not make. Seen in 2 of 29 FM answers on circle packing (one repeating the
#: same line until the limit) and 2 of 19 on continual.
CUT_OFF = ("it was cut off at the token limit ({tokens} tokens) before its end ({why}). Give only the "
           "code you change, once, with no unchanged code and no explanation")

#: the follow-up turn after an answer that is prose only: the small model often describes its change
#: and stops (5-15 % of FM answers in the efficacy campaigns), and asked "in the form asked above"
#: it wrote the description again; this turn asks for the code part of the request alone
NO_CODE_REPAIR = """Your answer describes a change but holds no code, so nothing could be applied.
Now {request}
Write the code at once, with no sentence before it."""


def code_request(instructions: str, target: str) -> str | None:
    """The part of an operator's closing request that asks for the code ("give ..."), without the
    sentence asked for before it; None when the request has no such part."""
    i = instructions.find("Then give")
    return instructions[i + len("Then "):].replace("{target}", target) if i >= 0 else None


#: each follow-up turn samples this much hotter (to at most 1.0): the small model, asked to fix its
#: answer, often repeats it word for word
REPAIR_HEAT = 0.15

#: why an answer to a crash is unusable when it is the crashed program again
REPEATED = "the answer changes nothing of the program that failed"

#: why an answer is unusable when its program is one the archive already evaluated (or has in
#: flight): 14 of 260 attempts in eight kept efficacy campaigns, each a wasted attempt before it went back
DUPLICATE = "the proposal is the same program as node {node} (up to comments and layout), already evaluated"

#: how much of a crash's error goes back to the model (its first lines say where, its last what)
RUN_ERROR_CHARS = 1500


@dataclass
class Proposal:
    operator: str
    target: str
    files: dict[str, str] | None  # changed files → full new text; None when invalid
    error: str = ""  # why invalid (the raw response is kept either way)
    summary: str = ""
    prompt: str = ""
    response: str = ""
    completion: Any = None  # orchestrator.fm.client.Completion (or a sum of several), when an FM was called
    tree: dict[str, bytes] | None = None  # the child's whole tree, when the operator wrote one (``self``)
    #: counts the loop adds to the node's timings: ``checks`` (first-stage runs of answers) and
    #: ``run_repairs`` (answers sent back because their program crashed there)
    counts: dict[str, float] = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        return self.files is not None


class Operator(abc.ABC):
    """Makes a child from a parent.

    The loop draws an operator by weight, picks a parent it ``can_work_from`` (for a ``selective``
    operator only; the others work from any admitted node), builds a :class:`ProposalContext` and
    calls ``propose`` (on the proposal pool, or on the loop's thread when ``inline``). An operator with state
    of its own learns it in ``observe``, which the loop calls for every node it records (and for
    every node read back on resume, in id order), always on the loop's thread.
    """

    name: str
    #: the most FM calls one attempt makes (0: none); budgets count calls in flight by it
    max_calls: int = 1
    #: True for an instant operator: it runs on the loop's thread, so the next draw already knows
    #: its program; the others run on the proposal pool
    inline: bool = False
    #: True when only some parents can be worked from: the loop then asks ``can_work_from``
    selective: bool = False

    @classmethod
    def from_config(cls, cfg: Any) -> "Operator":
        """Build the operator for a campaign (``cfg`` is its CampaignConfig); most need nothing."""
        return cls()

    def observe(self, event: NodeEvent) -> None:
        """Learn from a node the loop recorded (the default learns nothing)."""

    def started(self, ctx: ProposalContext) -> None:
        """An attempt from ``ctx`` is about to be proposed: called on the loop's thread, before the
        next draw (so ``can_work_from`` can already know of it); the default does nothing."""

    def can_work_from(self, texts: dict[str, str]) -> bool:
        """Whether a parent (its editable files) can be worked from; asked only if ``selective``."""
        return True

    @abc.abstractmethod
    def propose(self, ctx: ProposalContext, fm: Any, sampling: Sampling) -> Proposal:
        """Return a proposal; FM transport errors propagate as ``FMError``."""


class FMOperator(Operator):
    """Ask the FM for an edit of ``ctx.target`` and parse it into the file's new text.

    Execution feedback, within one attempt (small models improve on it; one more call is cheaper
    than a new attempt from scratch):

    - an answer that cannot be used (no edit found, a SEARCH part that matches nothing, code that
      does not compile or names something undefined, no change) goes back with the reason, up to
      ``repairs`` times (``[mutation] repairs``);
    - a usable answer is run through the evaluation's first stage when the loop gives a check
      (``ctx.check``); if its program crashes there, a new conversation shows that program and its
      error and asks for a fix, which edits the crashed program, up to ``run_repairs`` times
      (``[mutation] run_repairs``).
    """

    instructions: str
    repairs: int = 1
    run_repairs: int = 0
    library_docs: bool = True  # the fix request shows the documentation of the library call that crashed

    @property
    def max_calls(self) -> int:  # type: ignore[override]
        return 1 + self.repairs + self.run_repairs

    @classmethod
    def from_config(cls, cfg: Any) -> "FMOperator":
        op = cls()
        op.repairs, op.run_repairs, op.library_docs = cfg.mutation.repairs, cfg.mutation.run_repairs, cfg.mutation.library_docs
        return op

    def instructions_for(self, ctx: ProposalContext, sampling: Sampling) -> str:
        """The closing request of the prompt; ``{target}`` is filled in by the prompt builder."""
        return self.instructions

    def propose(self, ctx: ProposalContext, fm: Any, sampling: Sampling) -> Proposal:
        instructions = self.instructions_for(ctx, sampling)
        messages = build_messages(ctx, instructions)
        earlier: list[dict[str, str]] = []  # the attempt's finished conversations, for the record
        parent = base = ctx.files[ctx.target]  # base: what the next answer edits (after a crash, the crashed program)
        apply = self.apply  # how an answer becomes the file (an answer to a fix request: any edit shape)
        completions: list[Any] = []
        failed = 0
        repairs, run_repairs, counts = self.repairs, self.run_repairs if ctx.check else 0, {}
        crash = None
        calls = 1 + repairs + run_repairs if sampling.calls_left is None else min(1 + repairs + run_repairs, sampling.calls_left)
        while True:
            try:
                completion = fm.complete(
                    messages, seed=sampling.seed + len(completions),
                    temperature=min(max(1.0, sampling.temperature), sampling.temperature + REPAIR_HEAT * len(completions)),
                    max_tokens=sampling.max_tokens, node_tag=f"parent-{ctx.parent_id}",
                )
            except FMError:
                if not completions:
                    raise  # the attempt failed; the loop records it
                messages, failed = messages[:-2], 1  # a repair call that failed (too long for the
                break  # context, a timeout): the previous answer's verdict stands
            completions.append(completion)
            last_crash = crash
            try:
                new, error, crash = self.checked(base, completion.text, ctx.target, parent, apply), "", None
                twin = ctx.known({ctx.target: new}) if ctx.known else None
                if twin is not None:
                    raise ProposalInvalid(DUPLICATE.format(node=twin))
            except ProposalInvalid as e:
                new, error, crash = None, str(e), None
                if getattr(completion, "finish_reason", None) == "length":
                    error = CUT_OFF.format(tokens=sampling.max_tokens, why=error)
            if last_crash is not None and error == REPEATED:
                # asked to fix its crash, the model gave the same program again: a further turn
                # repeats it too (seen 3 times in 3 on fewshot), so the crash is the verdict
                error = (f"stage {last_crash[0]}: {_last_line(last_crash[1])} (asked to fix it, the model "
                         "answered the same program)")
                break
            if new is not None and run_repairs and len(completions) < calls:
                crash = self._crash(ctx, new, counts)
            spent = sum(c.prompt_tokens + c.completion_tokens for c in completions)
            if (new is not None and crash is None) or len(completions) >= calls or (
                    sampling.tokens_left is not None and spent >= sampling.tokens_left):
                break
            if crash is not None:
                # the crashed program goes to a new conversation, as the program to fix
                run_repairs, base = run_repairs - 1, new
                counts["run_repairs"] = counts.get("run_repairs", 0) + 1
                earlier += messages + [{"role": "assistant", "content": completion.text}]
                error_text = clip_middle(crash[1], RUN_ERROR_CHARS)
                site = crash_site(error_text, ctx.target, new)
                instructions = fix_request(ctx.target, site)
                # the library's documentation when the error came from inside the library call
                reference = (call_references(new, site[1])
                             if site and self.library_docs and raised_in_a_library(error_text, ctx.target) else "")
                apply, messages = any_edit, build_fix_messages(ctx, new, crash[0], _last_line(crash[1]), error_text, site, reference)
                continue
            if not repairs:
                break
            repairs -= 1
            request = code_request(instructions, ctx.target) if error == NO_CODE else None
            follow_up = NO_CODE_REPAIR.format(request=request) if request else REPAIR.format(error=error)
            messages = messages + [{"role": "assistant", "content": completion.text},
                                   {"role": "user", "content": follow_up}]
        proposal = Proposal(self.name, ctx.target, None, prompt=render(earlier + messages), response=completion.text,
                            completion=completion if len(completions) + failed == 1 else AttemptUsage.of(completions, failed),
                            counts=counts)
        proposal.summary = summarise(completion.text)
        if new is None:
            proposal.error = error
        else:
            proposal.files = {ctx.target: new}
        return proposal

    @staticmethod
    def _crash(ctx: ProposalContext, new: str, counts: dict[str, float]) -> tuple[str, str] | None:
        """(stage, error) when the program with ``new`` crashes in the evaluation's first stage;
        None when it runs (its score is the evaluation's business), or when the check itself
        could not run (a broken evaluator or sandbox is never the model's to fix)."""
        counts["checks"] = counts.get("checks", 0) + 1
        try:
            result = ctx.check({ctx.target: new}).result()
        except Exception:
            return None
        if result.evaluator_error or not result.stages or result.stages[0].valid:
            return None
        stage = result.stages[0]
        return stage.stage, stage.error or "the program produced no usable output"

    def checked(self, old: str, answer: str, target: str, parent: str | None = None,
                apply: Callable[[str, str], str] | None = None) -> str:
        """The file's new text from ``answer`` applied to ``old`` (by ``apply``, default the operator's
        own ``apply``); ProposalInvalid says why there is none. ``parent``: the parent's text, when
        ``old`` is an earlier answer's program."""
        new = (apply or self.apply)(old, answer)
        if new.strip() == (parent if parent is not None else old).strip():
            raise ProposalInvalid("the proposal is identical to the parent")
        if parent is not None and new.strip() == old.strip():
            raise ProposalInvalid(REPEATED)
        new, _ = add_missing_imports(target, new)
        check_python(target, new)
        return new

    @abc.abstractmethod
    def apply(self, old: str, answer: str) -> str: ...


class DiffOperator(FMOperator):
    name = "diff"
    instructions = DIFF_INSTRUCTIONS
    #: files this short are asked for whole (small models rewrite a short file more reliably than
    #: they copy a SEARCH part exactly); ``[mutation] rewrite_below_lines``
    rewrite_below_lines = 30

    @classmethod
    def from_config(cls, cfg: Any) -> "DiffOperator":
        op = super().from_config(cfg)
        op.rewrite_below_lines = cfg.mutation.rewrite_below_lines
        return op

    def instructions_for(self, ctx: ProposalContext, sampling: Sampling) -> str:
        code = ctx.files[ctx.target]
        if code.count("\n") < self.rewrite_below_lines:
            return REWRITE_INSTRUCTIONS
        return self.instructions.replace("{example}", edit_example(code, sampling.seed))

    def apply(self, old: str, answer: str) -> str:
        # models asked for a diff often answer with before/after blocks, the whole file, a few
        # rewritten functions or just the changed lines: any_edit takes each shape
        return any_edit(old, answer)


class TweakOperator(DiffOperator):
    """A diff limited to one or two numbers: cheap local search that small models do reliably."""

    name = "tweak"
    instructions = TWEAK_INSTRUCTIONS
    rewrite_below_lines = 0  # a tweak is never a rewrite

    # FMOperator's settings, not DiffOperator's: [mutation] rewrite_below_lines never applies to a tweak
    from_config = classmethod(FMOperator.from_config.__func__)  # type: ignore[attr-defined]


class RewriteOperator(FMOperator):
    name = "rewrite"
    instructions = REWRITE_INSTRUCTIONS

    def apply(self, old: str, answer: str) -> str:
        # a "complete file" that lacks some of the program's functions is merged, not trusted
        return whole_or_merged(old, answer)


class FunctionOperator(FMOperator):
    """Rewrite ONE top-level function (or class) of the file, picked at random per proposal.

    Writing one whole function is the task small code models are trained on, and the answer is a
    fraction of a file (fewer tokens, fewer ways to break the rest of the program). The new
    definition replaces the old one by name; new helper functions in the answer are added.
    """

    name = "function"
    instructions = FUNCTION_INSTRUCTIONS

    def instructions_for(self, ctx: ProposalContext, sampling: Sampling) -> str:
        names = definitions(ctx.files[ctx.target])
        if not names:  # a file without functions: nothing to pick, ask for the whole file instead
            return REWRITE_INSTRUCTIONS
        # drawn from the per-call sampling seed; the prompt, naming the function, is kept on the node
        return self.instructions.replace("{name}", random.Random(sampling.seed).choice(names))

    def apply(self, old: str, answer: str) -> str:
        if not definitions(old):
            return whole_or_merged(old, answer)
        blocks = code_blocks(answer) or [parse_rewrite(answer)]
        return merge_definitions(old, blocks)


FM_OPERATORS: dict[str, type[Operator]] = {
    "diff": DiffOperator,
    "tweak": TweakOperator,
    "rewrite": RewriteOperator,
    "function": FunctionOperator,
}


def _last_line(error: str) -> str:
    """What broke (``what_broke``), or "(no message)" to show the model for an empty error."""
    return what_broke(error) or "(no message)"


def summarise(answer: str, limit: int = 120) -> str:
    """First sentence of prose in the answer (outside code and edit blocks): the commit message."""
    prose = re.sub(r"```.*?(```|\Z)", "", answer, flags=re.DOTALL)
    prose = re.sub(r"<{5,}.*?(>{5,}\s*REPLACE|\Z)", "", prose, flags=re.DOTALL)
    for line in prose.splitlines():
        line = line.strip(" #*-\t")
        if len(line) > 3:
            return line[:limit]
    return "(no description)"
