"""``fit``: fit a program's numeric constants with a real optimiser (CMA-ES), no FM call.

Small models choose *what* to compute fairly well and *which numbers* poorly. ``fit`` takes an
admitted program, finds its float constants in the AST of its editable files (not by matching text),
and runs CMA-ES (the ``cmaes`` package's ask/tell) over them: each generation is a batch of
candidate programs evaluated through the campaign's executor, in parallel, by the evaluator
itself. The best valid point becomes the child; every trial is kept on the node. The model
proposes the form, the optimiser fits the constants (LLM-SR, Δ-evolve); the evaluator stays the
only judge.

A program a fit found nothing in (no trial better than its own constants, or no valid trial) is
left to the other operators after ``misses_per_program`` such fits, each with twice the step of
the one before (1 by default: over ten kept efficacy campaigns, 34 fits of a program after a miss
found something twice). The operator learns this from the nodes the loop records (``observe``),
so it survives a resume.

Each constant moves multiplicatively, ``value · exp(z)`` with ``z`` in [-1, 1] (a zero moves
additively), so a radius of 0.3 and a learning rate of 1e-3 are searched on the same footing.
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from archive import NodeStatus
from evaluators import syntax
from orchestrator.config import FitSettings
from orchestrator.events import NodeEvent
from orchestrator.mutation.operators import Operator, Proposal, Sampling
from orchestrator.mutation.parsing import ProposalInvalid, check_python
from orchestrator.mutation.prompts import ProposalContext

#: constants fitted at once (a random subset of them, per proposal) by a fit of few trials; a fit
#: expected to run more fits more of them, one per TRIALS_PER_CONSTANT trials, up to ALL_CONSTANTS.
#: On circle-packing programs of 12 and 24 constants, 256-512 trials over all of them went further
#: than over 8 (bench/bench_fit_budget.py)
MAX_CONSTANTS = 8
TRIALS_PER_CONSTANT = 10
ALL_CONSTANTS = 32
BOUND = 1.0  # z in [-BOUND, BOUND]: a constant moves by at most a factor e


@dataclass(frozen=True)
class Constant:
    """A float literal of an editable file, located by its AST position."""

    path: str
    line: int  # 1-based
    col: int
    end_col: int
    value: float


def constants(files: dict[str, str]) -> list[Constant]:
    """Every float literal of the files' code (not in docstrings), in file order."""
    out = []
    for path in sorted(files):
        if not path.endswith(".py"):
            continue
        try:
            tree = syntax.parse(files[path])
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and type(node.value) is float and math.isfinite(node.value)
                    and node.lineno == node.end_lineno):
                out.append(Constant(path, node.lineno, node.col_offset, node.end_col_offset, node.value))
    return sorted(out, key=lambda c: (c.path, c.line, c.col))


def substitute(files: dict[str, str], chosen: list[Constant], values: list[float]) -> dict[str, str]:
    """The files with each chosen literal replaced by its new value (right to left on a line, so
    the columns of the others stay right)."""
    out = {}
    for path in {c.path for c in chosen}:
        lines = files[path].split("\n")
        for c, v in sorted(zip(chosen, values), key=lambda cv: (cv[0].line, -cv[0].col)):
            if c.path != path:
                continue
            text = lines[c.line - 1]
            # a negative value after a unary minus in the source would read "--": keep it a literal
            literal = format(v, ".6g")
            if not any(ch in literal for ch in ".eEn"):
                literal += ".0"
            if literal.startswith("-"):
                literal = f"({literal})"
            lines[c.line - 1] = text[: c.col] + literal + text[c.end_col:]
        out[path] = "\n".join(lines)
    return out


#: how the error of a fit that found nothing starts (what ``observe`` counts as a miss)
MISSED = ("fit: no trial beat", "fit: none of")


def _digest(texts: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(sorted(texts.items())).encode()).hexdigest()


def _reference(ctx: ProposalContext) -> float | None:
    """The parent's score on the evaluation seed trials run on (its first draw), else its mean."""
    return ctx.first_draw_score if ctx.first_draw_score is not None else ctx.score


def record_json(head: dict[str, Any], trials: list[dict]) -> str:
    """A fit's record as JSON: ``head``'s fields one per line, then ``trials``, one trial per line
    (a fit of 512 trials over 12 constants, indented whole, is ~9,000 lines in `dgm archive show`)."""
    # ends '"trials": []\n}' (a key of head's own by that name is dropped: it would keep its place)
    text = json.dumps({**{k: v for k, v in head.items() if k != "trials"}, "trials": []}, indent=1)
    if not trials:
        return text
    rows = ",\n  ".join(json.dumps(t) for t in trials)
    return f'{text[: text.rindex("[]")]}[\n  {rows}\n ]\n}}'


def _import_cmaes() -> None:
    try:
        import cmaes  # noqa: F401
    except ImportError:
        pass  # the first fit says so


def _moved(value: float, z: float) -> float:
    return value * math.exp(z) if value != 0.0 else z * 0.1


# a bare FitOperator() fits as a campaign's `[mutation.fit]` defaults do: one source for both
_DEFAULTS = FitSettings()


class FitOperator(Operator):
    """CMA-ES over a parent's float constants, each generation evaluated by the executor."""

    name = "fit"
    max_calls = 0

    def __init__(self, evaluations: int = _DEFAULTS.evaluations, sigma: float = _DEFAULTS.sigma,
                 seconds: float | None = _DEFAULTS.seconds, misses_per_program: int = _DEFAULTS.misses_per_program,
                 max_evaluations: int = _DEFAULTS.max_evaluations) -> None:
        # at least `evaluations` trials; with `seconds`, more while under that time, up to `max_evaluations`
        self.evaluations, self.sigma, self.seconds = evaluations, sigma, seconds
        self.max_evaluations = max(evaluations, max_evaluations)
        self.misses_per_program = misses_per_program
        self.misses: dict[str, int] = {}  # program (editable texts' digest) → fits that found nothing
        # program → fits of it in flight: a second fit of the same program would start before the
        # first one's miss widened its step (seen: two fits of one parent, both missed alike)
        self.fitting: dict[str, int] = {}
        self._fit_nodes: set[int] = set()  # fit nodes already judged (each attempt ends once)

    @classmethod
    def from_config(cls, cfg: Any) -> "FitOperator":
        f = cfg.mutation.fit
        # `import cmaes` takes 1.2-2.3 s here (it imports scipy.stats): the first fit of a process
        # paid it, 3-8 % of all fit time on circle packing (4 s fits). Imported beside the seed's
        # evaluation instead, and only when fit is drawn at all (a weight of 0 builds it too).
        if cfg.mutation.operators.get(cls.name, 0) > 0:
            threading.Thread(target=_import_cmaes, name="dgm-import-cmaes", daemon=True).start()
        return cls(**f.model_dump())  # FitSettings' fields are __init__'s parameters, by name

    def observe(self, event: NodeEvent) -> None:
        n = event.node
        # a fit's child is judged (admitted, invalid, ...) once: until then its program counts as
        # being fitted, so the next fit does not start again from the program it came from while
        # the child that beat it is still being evaluated (seen: 3 of 7 fits of 60 s on circle
        # packing started in that 0.4 s window; two found nothing, one the run's best: it was a
        # race on timing, now the policy decides)
        if n.operator != self.name or n.id in self._fit_nodes or not n.status.finished:
            return
        self._fit_nodes.add(n.id)
        texts = event.parent_texts
        if texts is None:
            return
        key = _digest(texts)
        if self.fitting.get(key, 0) > 0:
            self.fitting[key] -= 1
        if n.status == NodeStatus.INVALID and n.error.startswith(MISSED):
            self.misses[key] = self.misses.get(key, 0) + 1

    def started(self, ctx: ProposalContext) -> None:
        key = _digest(ctx.files)
        self.fitting[key] = self.fitting.get(key, 0) + 1

    def can_work_from(self, texts: dict[str, str]) -> bool:
        if not constants(texts):
            return False
        # hash the program only once some program has missed or is being fitted (a selective draw
        # asks per parent); one fit of a program at a time, so a miss widens the next one's step
        if not self.misses and not any(self.fitting.values()):
            return True
        key = _digest(texts)
        return self.misses.get(key, 0) < self.misses_per_program and not self.fitting.get(key, 0)

    selective = True

    def propose(self, ctx: ProposalContext, fm: Any, sampling: Sampling) -> Proposal:
        proposal = Proposal(self.name, ctx.target, None)
        found = constants(ctx.files)
        if not found:
            proposal.error = "fit: the program has no float constant to fit"
            return proposal
        if ctx.evaluate is None:
            proposal.error = "fit: this campaign cannot evaluate trial programs"
            return proposal
        started = time.perf_counter()
        rng = random.Random(sampling.seed)
        expected = self.expected_trials(ctx.trial_s)
        chosen = sorted(rng.sample(found, min(len(found), self.constants_for(expected))), key=lambda c: (c.path, c.line, c.col))
        sigma = min(BOUND, self.sigma * 2 ** self.misses.get(_digest(ctx.files), 0))  # wider after a miss
        trials, waited, stopped = self._search(ctx, chosen, ctx.evaluate, sampling.seed, started, sigma)
        # the optimiser's own cost is everything but waiting on evaluations (kept to check it stays small)
        proposal.response = record_json({"constants": [f"{c.path}:{c.line}:{c.col} = {c.value:g}" for c in chosen],
                                         "sigma": sigma, "expected_trials": expected, "wall_s": round(time.perf_counter() - started, 4),
                                         "evaluating_s": round(waited, 4), "stopped_by": stopped}, trials)
        valid = [t for t in trials if t["score"] is not None]
        if not valid:
            proposal.error = f"fit: none of {len(trials)} trial programs was valid ({trials[0]['error'] if trials else ''})"
            return proposal
        best = max(valid, key=lambda t: t["score"])
        if best["values"] == [c.value for c in chosen]:
            proposal.error = "fit: no trial beat the parent's own constants"
            return proposal
        files = substitute(ctx.files, chosen, best["values"])
        try:
            for path, text in files.items():
                check_python(path, text)
        except ProposalInvalid as e:
            proposal.error = f"fit: {e}"
            return proposal
        proposal.files = files
        proposal.target = sorted(files)[0]
        proposal.summary = (f"fit: {len(chosen)} constants by CMA-ES, best of {len(trials)} trials "
                            f"scored {best['score']:.4f}" + (f" (parent {ref:.4f} on the same evaluation seed)" if (ref := _reference(ctx)) is not None else ""))
        return proposal

    def expected_trials(self, trial_s: float | None) -> int:
        """How many trials this fit will likely run: ``evaluations`` without a time budget, else as
        many as ``seconds`` holds at ``trial_s`` each (the parent's own evaluation time), within
        [evaluations, max_evaluations]. Trials run in parallel, so this errs low."""
        if self.seconds is None or not trial_s or trial_s <= 0:
            return self.evaluations
        return int(min(self.max_evaluations, max(self.evaluations, self.seconds / trial_s)))

    @staticmethod
    def constants_for(expected: int) -> int:
        """How many constants a fit of ``expected`` trials searches over at once."""
        return min(ALL_CONSTANTS, max(MAX_CONSTANTS, expected // TRIALS_PER_CONSTANT))

    def _search(self, ctx: ProposalContext, chosen: list[Constant], evaluate: Callable, seed: int,
                started: float, sigma: float) -> tuple[list[dict], float, str]:
        """The trials (the parent's own point last), the seconds spent waiting on evaluations, and
        what ended the search: ``evaluations`` (no time budget), ``seconds`` (the time budget, once
        ``evaluations`` were run; checked between generations) or ``max_evaluations``."""
        from cmaes import CMA

        dim = max(2, len(chosen))  # cmaes needs two dimensions; a lone constant gets an idle partner
        cma = CMA(mean=np.zeros(dim), sigma=sigma, bounds=np.array([[-BOUND, BOUND]] * dim),
                  seed=seed % (2**31), population_size=max(4, min(8, self.evaluations)))
        trials: list[dict] = []
        waited = 0.0
        stopped = "evaluations" if self.seconds is None else "max_evaluations"
        cap = self.evaluations if self.seconds is None else self.max_evaluations
        while len(trials) < cap:
            if (self.seconds is not None and len(trials) >= self.evaluations
                    and time.perf_counter() - started >= self.seconds):
                stopped = "seconds"
                break
            batch = [cma.ask() for _ in range(cma.population_size)]
            points = [[_moved(c.value, float(z)) for c, z in zip(chosen, x)] for x in batch]
            futures = [evaluate(substitute(ctx.files, chosen, values)) for values in points]
            told = []
            for x, values, fut in zip(batch, points, futures):
                t0 = time.perf_counter()
                result = fut.result()
                waited += time.perf_counter() - t0
                score = result.score if result.complete else None
                trials.append({"values": [round(v, 8) for v in values], "score": score,
                               "error": "" if score is not None else result.error[:200]})
                told.append((x, -score if score is not None else 1e6))
            cma.tell(told)
        # the parent's own point, for reference: a trial must beat it to count. Trials run on the
        # evaluation seed of the parent's first draw, so the parent's score on that seed is the bar,
        # not its mean over draws (on optimizer seed 2 the means of raced parents stood 0.03 above
        # their first draws, and 10 of 11 fits found nothing)
        reference = _reference(ctx)
        if reference is not None:
            trials.append({"values": [c.value for c in chosen], "score": reference, "error": "", "parent": True})
        return trials, waited, stopped
