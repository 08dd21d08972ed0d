"""The evaluator API: what a benchmark suite declares and the one method it implements.

An evaluator is trusted code. For each stage it prepares the candidate's work directory, runs the
candidate there through the sandbox (``run.execute``), and computes the metrics itself from the
artifacts the candidate produced. A candidate never reports its own score.

A plugin is an ordinary package exposing a subclass of :class:`Evaluator` in the entry-point
group ``dgm.evaluators``; see docs/evaluators.md.
"""

from __future__ import annotations

import abc
import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from sandboxes.base import Limits, RunResult, Sandbox


class CandidateInvalid(Exception):
    """Raised by an evaluator when the candidate's output is unusable (crash, NaN, wrong shape, ...).

    The message is shown to the foundation model as feedback, so it must not leak private data.
    """


@dataclass(frozen=True)
class MetricSpec:
    """A metric an evaluator reports. A public value outside ``[low, high]`` or non-finite makes a
    node invalid; a private one is held at the worst end of the range instead (an error naming it
    would carry held-out numbers into the public channel)."""

    name: str
    low: float = -math.inf
    high: float = math.inf
    public: bool = True  # public metrics are shown to the FM; private ones never are
    higher_is_better: bool = True
    description: str = ""


@dataclass(frozen=True)
class Stage:
    """One evaluation stage. ``gate`` maps metric names to the minimum value needed to go on."""

    name: str
    limits: Limits = field(default_factory=Limits)
    gate: Mapping[str, float] = field(default_factory=dict)
    description: str = ""


@dataclass
class StageOutcome:
    """What :meth:`Evaluator.run_stage` returns for a candidate that produced usable output."""

    score: float
    metrics: dict[str, float]
    feedback: str = ""  # public text for the FM: what went well or badly


@dataclass
class CandidateRun:
    """Handed to :meth:`Evaluator.run_stage`: the candidate's fresh copy and the way to run it."""

    workdir: Path  # a fresh, writable copy of the agent's files; the only place the candidate writes
    sandbox: Sandbox
    python: str  # interpreter to use inside the sandbox
    seed: int  # evaluation seed; never shown to the candidate's author
    device: str = "cpu"  # "cuda" when a GPU was leased for this evaluation
    env: dict[str, str] = field(default_factory=dict)  # extra env for the candidate (e.g. CUDA_VISIBLE_DEVICES)
    runs: list[RunResult] = field(default_factory=list)
    gpu: Any = None  # a sandboxes.gpu.GpuLease when a GPU was leased for this evaluation
    #: host paths that look empty inside the sandbox (default: datasets bundled in packages)
    hide: list[Path] = field(default_factory=lambda: bundled_data_dirs())
    #: the FM proxy's Unix socket, when the evaluator has ``fm_access`` and the campaign serves one:
    #: ``execute`` makes it reachable in the sandbox (read-only directory) as ``DGM_FM_SOCKET``
    fm_socket: Path | None = None

    def execute(self, argv: Sequence[str], limits: Limits, env: Mapping[str, str] | None = None) -> RunResult:
        """Run ``argv`` in the sandbox with ``workdir`` as cwd; the result is also kept in ``runs``."""
        from sandboxes.base import python_ro_paths

        full_env = {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0", **self.env, **(env or {})}
        ro_paths = python_ro_paths()
        if self.fm_socket is not None:
            full_env["DGM_FM_SOCKET"] = str(self.fm_socket)
            ro_paths = [*ro_paths, Path(self.fm_socket).parent]
        result = self.sandbox.run(list(argv), self.workdir, limits, env=full_env, ro_paths=ro_paths, hide=self.hide, gpu=self.gpu)
        self.runs.append(result)
        return result

    def read_artifact(self, relpath: str, max_bytes: int = 256 * 2**20) -> bytes:
        """Bytes of a file the candidate left in ``workdir``, opened without following links.

        Always read candidate output this way: a candidate can leave a symlink to the evaluator's
        hidden data, and the evaluator runs outside the sandbox. Missing or unsafe → CandidateInvalid.
        """
        return safe_read(self.workdir, relpath, max_bytes)

    def run_python(self, script: str, limits: Limits, env: Mapping[str, str] | None = None,
                   args: Sequence[str] = ()) -> RunResult:
        """Run a Python harness file (relative to ``workdir``) with the sandbox's interpreter.

        Isolated mode (``-I``): neither the work directory nor ``PYTHONPATH`` is on ``sys.path``,
        so a harness that imports the candidate's module puts the work directory there itself,
        last (``sys.path.append(os.getcwd())``: a candidate's ``numpy.py`` must not replace numpy).
        """
        return self.execute([self.python, "-I", "-B", script, *args], limits, env)


def bundled_data_dirs() -> list[Path]:
    """Datasets shipped inside installed packages that suites draw test splits from (sklearn's
    digits, wine, ...). The venv is visible (read-only) in the sandbox, so these are hidden."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.origin:
        return []
    data = Path(spec.origin).parent / "datasets" / "data"
    return [data] if data.is_dir() else []


def safe_read(workdir: Path, relpath: str, max_bytes: int = 256 * 2**20) -> bytes:
    """:meth:`CandidateRun.read_artifact` for code that only has the work directory."""
    from sandboxes.artifacts import ArtifactError, read_artifact

    try:
        return read_artifact(Path(workdir), relpath, max_bytes)
    except ArtifactError as e:
        raise CandidateInvalid(str(e)) from None


def load_npz_artifact(workdir: Path, relpath: str, max_bytes: int = 64 << 20) -> dict:
    """Arrays of an .npz the candidate left (no links followed, no unpickling, size-capped)."""
    import io

    import numpy as np

    data = safe_read(workdir, relpath, max_bytes)
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except Exception as e:  # any malformed file is the candidate's problem
        raise CandidateInvalid(f"{relpath} is not a numpy .npz file: {type(e).__name__}") from None


class EvaluatorOptionsError(ValueError):
    """A bad ``[evaluator.options]`` table; the message names the evaluator, the option and the value."""


class EvaluatorOptions(BaseModel):
    """An evaluator's ``[evaluator.options]``: subclass it with typed fields (and validators) and name
    the subclass in :attr:`Evaluator.Options`. Unknown keys are errors; the instance is frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Dict-style reads, for evaluators written when options were a plain dict of what was given.
    def get(self, name: str, default: Any = None) -> Any:
        return getattr(self, name) if name in self.model_fields_set else default

    def __contains__(self, name: object) -> bool:
        return name in self.model_fields_set

    def __getitem__(self, name: str) -> Any:
        if name not in self.model_fields_set:
            raise KeyError(name)
        return getattr(self, name)


def _describe_option_errors(evaluator: str, model: type[EvaluatorOptions], e: ValidationError) -> str:
    """``evaluator 'x': option 'timeout_s' = -3: must be > 0`` (one clause per fault)."""
    known = ", ".join(sorted(model.model_fields)) or "none"
    parts = []
    for err in e.errors():
        name = ".".join(str(x) for x in err["loc"]) or "(options)"
        value = err.get("input")
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown option {name!r} = {value!r}; known: {known}")
        else:
            parts.append(f"option {name!r} = {value!r}: {_plain(err)}")
    return f"evaluator {evaluator!r}: " + "; ".join(parts)


def _plain(err: Mapping[str, Any]) -> str:
    """Pydantic's bound messages in the words the campaign config uses (``must be > 0``)."""
    ctx = err.get("ctx") or {}
    for key, op in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
        if key in ctx:
            bound = ctx[key]
            return f"must be {op} {bound:g}" if isinstance(bound, float) else f"must be {op} {bound}"
    return str(err["msg"]).removeprefix("Value error, ")


@functools.cache
def _legacy_options_model(cls: type) -> type[EvaluatorOptions]:
    """Options of an evaluator that only overrides ``option_names()``: those names, any value."""
    fields: dict[str, Any] = {n: (Any, None) for n in cls.option_names()}
    return create_model(f"{cls.__name__}Options", __base__=EvaluatorOptions, **fields)


class Evaluator(abc.ABC):
    """Base class of every evaluator (built-in suites and plugins)."""

    #: registry name, e.g. ``circle_packing``
    name: ClassVar[str]
    #: task description shown to the FM (static: put it first in the prompt for cache reuse)
    task: ClassVar[str]
    #: the stages in order; a stage runs only if the previous one passed its gate
    stages: ClassVar[Sequence[Stage]]
    #: every metric the evaluator reports
    metrics: ClassVar[Sequence[MetricSpec]]
    #: directions worth trying (domain knowledge, like a researcher's notes); a proposal's prompt
    #: carries one of them, picked at random, with probability ``[mutation] idea_share``
    ideas: ClassVar[Sequence[str]] = ()
    #: the model of ``[evaluator.options]`` (default: no options)
    Options: ClassVar[type[EvaluatorOptions]] = EvaluatorOptions
    #: True: the candidate may call the model while it is evaluated (a coding agent's tool loop).
    #: The campaign then serves an FM proxy for each evaluation, within ``[evaluation] fm_calls`` and
    #: ``fm_tokens``, and charges its calls to the node; ``CandidateRun.fm_socket`` is its socket.
    fm_access: ClassVar[bool] = False

    def __init__(self, **options: Any) -> None:
        """``options`` come from the campaign's ``[evaluator.options]`` table; ``self.options`` is
        the validated :attr:`Options` instance. Raises :class:`EvaluatorOptionsError`."""
        self.options = self.parse_options(options)

    @classmethod
    def options_model(cls) -> type[EvaluatorOptions]:
        """:attr:`Options`, or for an evaluator that only overrides ``option_names()``, those names."""
        if cls.Options is EvaluatorOptions and getattr(cls.option_names, "__func__", None) is not _base_option_names:
            return _legacy_options_model(cls)
        return cls.Options

    @classmethod
    def parse_options(cls, options: Mapping[str, Any]) -> EvaluatorOptions:
        """Validated options; raises :class:`EvaluatorOptionsError`."""
        model = cls.options_model()
        try:
            return model(**options)
        except ValidationError as e:
            raise EvaluatorOptionsError(_describe_option_errors(cls.name, model, e)) from None

    @classmethod
    def option_names(cls) -> Sequence[str]:
        """Names accepted in ``[evaluator.options]`` (the fields of :attr:`Options`)."""
        return tuple(cls.Options.model_fields)

    @abc.abstractmethod
    def seed_agent(self) -> Path:
        """Directory of the seed agent (holds ``agent.toml``)."""

    @abc.abstractmethod
    def run_stage(self, stage: Stage, run: CandidateRun) -> StageOutcome:
        """Run the candidate for ``stage`` and compute its metrics.

        Raise :class:`CandidateInvalid` with a reason when the candidate crashed or produced
        unusable output. Any other exception is treated as a fault of the evaluator itself.
        """

    # Helpers used by the pipeline -------------------------------------------------------------
    @classmethod
    def metric_spec(cls, name: str) -> MetricSpec | None:
        return next((m for m in cls.metrics if m.name == name), None)

    @classmethod
    def public_metric_names(cls) -> list[str]:
        return [m.name for m in cls.metrics if m.public]


_base_option_names = Evaluator.option_names.__func__
