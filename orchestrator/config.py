"""The campaign config: one TOML file, validated by pydantic. Unknown keys and bad values are errors
that name the file, the field and the value (``campaign.toml: [fm].timeout_s = -3: must be > 0``).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from orchestrator.budget import BudgetLimits
from orchestrator.fm.config import FMConfig


#: the default operator mix of ``[mutation] operators`` (``dgm init`` writes it from here too)
DEFAULT_WEIGHTS: dict[str, float] = {"diff": 0.35, "tweak": 0.2, "function": 0.1, "rewrite": 0.1, "fit": 0.25}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CampaignSection(_Section):
    name: str = "campaign"
    iterations: int = Field(30, ge=0, description="total child attempts (the seed excluded); resume continues to this")
    random_seed: int = 0
    seed_agent: Path | None = None  # default: the evaluator's own seed agent


class EvaluatorSection(_Section):
    name: str
    options: dict[str, Any] = Field(default_factory=dict)
    stages: list[str] | None = None  # run only these stages (default: all)


class ImproverLimits(_Section):
    """Limits on one run of an agent's own improver (the ``self`` operator)."""

    wall_s: float = Field(900, gt=0, description="wall-clock seconds per attempt")
    cpu_s: int = Field(900, gt=0, description="CPU seconds per attempt, the whole sandbox")
    memory_mb: int = Field(2048, gt=0)
    calls: int = Field(6, gt=0, description="FM calls per attempt; further calls are refused (HTTP 429)")
    tokens: int = Field(30_000, gt=0, description="FM tokens per attempt; calls beyond are refused")


class FitSettings(_Section):
    """The ``fit`` operator: CMA-ES over a program's float constants."""

    evaluations: int = Field(16, ge=2, le=10_000, description="trial programs evaluated per fit, at least")
    # 0.05 ≈ steps of 1-10 %; on the circle-packing seed 0.3 found nothing better in three
    # fits of 16 trials, 0.05 found better points in two of three
    sigma: float = Field(0.05, gt=0, le=1, description="initial step, in log-scale units of each constant")
    # a trial costs 0.2 s on circle packing and 10-25 s on a learning suite, and an FM proposal
    # 30-230 s on 2 cores: a fit keeps trying new points for about one FM call's time where trials
    # are cheap (circle packing: a few hundred, over all its constants), and stops at `evaluations`
    # where they are not (16 learning-suite trials already take longer). None: exactly `evaluations`
    seconds: float | None = Field(60.0, gt=0, description="wall seconds per fit: after `evaluations` trials, new generations start until this")
    max_evaluations: int = Field(512, ge=2, le=100_000, description="trial programs per fit, at most (with `seconds`)")
    # on circle packing (100 iterations) 29 of 32 fits found nothing: fit goes to the best program,
    # which was mostly a fit's own point already. A program fitted in vain is fitted again with
    # twice the step, and left to the other operators after this many fits that found nothing
    misses_per_program: int = Field(1, ge=1, le=100, description="fits that found nothing before fit leaves a program alone")


class MutationSection(_Section):
    operators: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_WEIGHTS)
    )
    exemplars: int = Field(2, ge=0, le=10)
    # the code of strong programs from other lineages, shown in FM prompts (FunSearch, ShinkaEvolve)
    inspirations: int = Field(1, ge=0, le=5)
    inspiration_chars: int = Field(3000, ge=0, description="longest program shown as an inspiration")
    failures_shown: int = Field(2, ge=0, le=10)
    rewrite_below_lines: int = Field(30, ge=0, description="diff asks for the whole file when it is shorter")
    # an unusable answer (no edit, no match, does not compile, undefined name, no change) goes back
    # to the model with the reason this many times, within the same attempt
    repairs: int = Field(1, ge=0, le=5, description="follow-up turns after an unusable FM answer")
    # a usable answer is first run through the evaluation's first stage; if its program crashes
    # there, the error goes back to the model this many times, within the same attempt (0: no check)
    run_repairs: int = Field(1, ge=0, le=5, description="fix requests (each a new conversation) after an answer whose program crashed")
    # one idea per prompt, drawn from the evaluator's ideas plus these, with this probability
    ideas: list[str] = Field(default_factory=list)
    idea_share: float = Field(0.5, ge=0, le=1)
    # which idea a prompt carries: "uniform" (each alike), or "yield" (Thompson sampling on the share
    # of each idea's children that beat their parent, so ideas that pay are shown more often)
    idea_choice: Literal["uniform", "yield"] = "uniform"
    # the installed library's documentation (signature, parameters) of a function an idea names
    # (scipy.optimize.linprog), in that prompt, and of the library call a crash was raised in, in
    # the fix request
    library_docs: bool = True
    improver: ImproverLimits = Field(default_factory=ImproverLimits)
    fit: FitSettings = Field(default_factory=FitSettings)

    @field_validator("operators")
    @classmethod
    def _weights(cls, v: dict[str, float]) -> dict[str, float]:
        if not v:
            raise ValueError("must name at least one operator")
        for name, w in v.items():
            if w < 0:
                raise ValueError(f"weight of {name!r} is {w}: must be >= 0")
        if sum(v.values()) <= 0:
            raise ValueError("operator weights must not all be zero")
        return v


class SelectionSection(_Section):
    method: str = "score_child_prop"
    # operators that pick their parent their own way: fit tunes the constants of the best
    # program (a hill climb), not of whatever the exploring policy draws
    per_operator: dict[str, str] = Field(default_factory=lambda: {"fit": "best"})


class AdmissionSection(_Section):
    policy: str = "keep_all_valid"
    leeway: float = Field(0.1, ge=0)
    reference: Literal["seed", "parent"] = "seed"
    # seeing through noise: the seed is evaluated up to `noise_evals` times (on new evaluation seeds)
    # to measure the score's spread; a child that could become the best is raced (evaluated
    # `race` times in all) before its verdict; best, keep_better and selection rank by the lower
    # confidence bound mean - confidence * spread / sqrt(evaluations)
    noise_evals: int = Field(3, ge=1, le=20)
    race: int = Field(3, ge=1, le=20)
    confidence: float = Field(2.0, ge=0)


class EvaluationSection(_Section):
    workers: int = Field(2, ge=1, le=64)
    use_gpu: bool = True  # lease one GPU per evaluation when the machine has any
    evals_per_gpu: int = Field(1, ge=1, le=64)
    # for evaluators whose candidates call the model while evaluated (fm_access): per evaluation
    # 1000: the coding suite's full stage (164 problems, up to 3 calls each) fits
    fm_calls: int = Field(1000, gt=0, description="FM calls one evaluation may make; more are refused")
    fm_tokens: int = Field(1_000_000, gt=0, description="FM tokens one evaluation may use; calls beyond are refused")
    # where evaluations run: threads on this machine, or Ray tasks (docs/ray.md)
    backend: Literal["local", "ray"] = "local"
    address: str | None = None  # ray: a running cluster ("ray://head:10001", "auto"); none: a local one on loopback
    cpus: int | None = Field(None, ge=1, description="ray, local cluster only: its CPUs (default: the machine's)")
    cpus_per_eval: float = Field(1.0, gt=0, description="ray: CPUs one evaluation reserves")
    retries: int = Field(1, ge=0, le=10, description="ray: re-runs of an evaluation whose worker or node died")


class SandboxSection(_Section):
    backend: str = "auto"  # auto | bwrap | docker | process
    trusted: bool = False  # must be true to allow the unisolated 'process' backend
    # per work directory (a loop-mounted ext4 image on bwrap and docker): past it the candidate's
    # writes fail (ENOSPC) and the node is invalid with "disk quota"; null turns the quota off
    disk: int | None = Field(4 << 30, gt=0, description="bytes a candidate may write in its work directory")
    inodes: int = Field(200_000, gt=0, description="files and directories a candidate may create")


class CampaignConfig(_Section):
    campaign: CampaignSection = Field(default_factory=CampaignSection)
    evaluator: EvaluatorSection
    fm: FMConfig = Field(default_factory=FMConfig)
    mutation: MutationSection = Field(default_factory=MutationSection)
    selection: SelectionSection = Field(default_factory=SelectionSection)
    admission: AdmissionSection = Field(default_factory=AdmissionSection)
    evaluation: EvaluationSection = Field(default_factory=EvaluationSection)
    sandbox: SandboxSection = Field(default_factory=SandboxSection)
    budget: BudgetLimits = Field(default_factory=BudgetLimits)

    # where relative paths are resolved; set by load_config
    base_dir: Path = Field(default=Path("."), exclude=True)


class ConfigError(ValueError):
    pass


def load_config(path: Path) -> CampaignConfig:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    return parse_config(data, source=str(path), base_dir=path.resolve().parent)


def parse_config(data: dict[str, Any], *, source: str = "config", base_dir: Path = Path(".")) -> CampaignConfig:
    try:
        cfg = CampaignConfig(**data)
    except ValidationError as e:
        raise ConfigError("\n".join(f"{source}: {line}" for line in describe(e, data))) from None
    cfg.base_dir = base_dir
    if cfg.campaign.seed_agent is not None and not cfg.campaign.seed_agent.is_absolute():
        cfg.campaign.seed_agent = (base_dir / cfg.campaign.seed_agent).resolve()
    return cfg


def describe(e: ValidationError, data: dict[str, Any]) -> list[str]:
    """Pydantic errors as ``[section].field = value: message`` lines."""
    lines = []
    for err in e.errors():
        loc = [str(x) for x in err["loc"]]
        if len(loc) >= 2:
            where = f"[{loc[0]}].{'.'.join(loc[1:])}"
        elif loc:
            where = f"[{loc[0]}]"
        else:
            where = "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            lines.append(f"{where}: unknown key")
        elif err["type"] == "missing":
            lines.append(f"{where}: required but missing")
        else:
            lines.append(f"{where} = {err.get('input')!r}: {msg}")
    return lines
