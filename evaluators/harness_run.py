"""Runs a suite's harness next to the candidate: the one recipe every built-in suite follows.

static guard (optional) → the suite writes its inputs and says its config → the harness and the
shared runtime (``harness_runtime.py``) are copied into the work directory → the runtime starts the
harness in the sandbox → a failed run becomes :class:`CandidateInvalid` with the harness's own
reason (a broken budget from ``report.json``, a ``diverged:`` line) or the sandbox's words and the
stderr tail. On success the suite reads the artifacts back itself: it alone knows their shapes
(``load_npz_artifact``, ``tensors.checked_tensors``).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping

from pydantic import Field

from evaluators import guard
from evaluators.agent import load_manifest
from evaluators.api import CandidateInvalid, CandidateRun, EvaluatorOptions, Stage, safe_read
from evaluators.harness_runtime import EXIT_VIOLATION, REPORT
from sandboxes.base import Limits, RunResult

RUNTIME = Path(__file__).with_name("harness_runtime.py")
#: names in the work directory (a candidate's file of the same name is overwritten)
HARNESS, RUNTIME_NAME, CONFIG = "_dgm_harness.py", "_dgm_runtime.py", "_dgm_config.json"
MAX_REPORT_BYTES = 8 << 20


class HarnessOptions(EvaluatorOptions):
    """Options every built-in suite takes."""

    timeout_s: float | None = Field(None, gt=0, description="wall-clock limit of every stage, instead of the stage's own")

    def limits(self, stage: Stage) -> Limits:
        return stage.limits if self.timeout_s is None else replace(stage.limits, wall_s=float(self.timeout_s))


class GuardedHarnessOptions(HarnessOptions):
    """Options of suites whose candidate is one component run inside the trusted harness."""

    static_guard: bool = True  # reject imports and attributes outside the component's business before running


@dataclass(frozen=True)
class Harness:
    """A suite's harness: ``script`` defines ``main(config) -> exit status`` and runs in the sandbox."""

    script: Path
    #: more trusted files the harness imports, by their name in the work directory
    support: Mapping[str, Path] = field(default_factory=dict)
    #: extra words for a crash, given the run and its stderr tail (e.g. how to satisfy vmap)
    hint: Callable[[RunResult, str], str] | None = None

    def run(self, run: CandidateRun, stage: Stage, options: HarnessOptions,
            inputs: Callable[[Path], Mapping[str, Any]], *, static_guard: bool = False) -> dict:
        """Run the harness for ``stage``; return its report (``{}`` when it wrote none).

        ``inputs(workdir)`` writes the suite's inputs and returns its part of the config; the config
        also carries the candidate's ``entry`` and ``device``. Raises CandidateInvalid.
        """
        entry = load_manifest(run.workdir).entry
        if static_guard:
            found = guard.problems((run.workdir / entry).read_text(errors="replace"), entry)
            if found:
                raise CandidateInvalid("rejected before running: " + "; ".join(found[:5]))
        config = {"entry": entry, "device": run.device, **inputs(run.workdir)}
        for name, source in {HARNESS: self.script, RUNTIME_NAME: RUNTIME, **self.support}.items():
            shutil.copy(source, run.workdir / name)
        (run.workdir / CONFIG).write_text(json.dumps(config))
        result = run.run_python(RUNTIME_NAME, options.limits(stage), args=[CONFIG])
        report = read_report(run.workdir)
        if not result.ok:
            raise CandidateInvalid(failure_reason(result, report, self.hint))
        return report


def failure_reason(result: RunResult, report: Mapping[str, Any],
                   hint: Callable[[RunResult, str], str] | None = None) -> str:
    """Why a harness run failed, in words the FM can act on."""
    if result.returncode == EXIT_VIOLATION and result.limit_hit is None and report.get("violation"):
        return str(report["violation"])[:1000]
    tail = result.stderr.strip()[-1500:]
    diverged = next((ln for ln in tail.splitlines() if ln.startswith("diverged:")), None)
    if diverged:
        return diverged
    extra = hint(result, tail) if hint else ""
    return result.describe() + extra + (f"\n{tail}" if tail else "")


def read_report(workdir: Path) -> dict:
    """The JSON report the harness left, read without following links; ``{}`` when unusable."""
    try:
        data = json.loads(safe_read(workdir, REPORT, MAX_REPORT_BYTES))
    except (CandidateInvalid, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
