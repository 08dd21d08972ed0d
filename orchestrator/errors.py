"""Exceptions that describe a user's mistake or an unusable input: printed as one line, not a traceback."""

from __future__ import annotations

from archive.archive import NotARunDir
from archive.lock import ArchiveLocked
from evaluators.agent import AgentManifestError
from evaluators.registry import EvaluatorLoadError
from orchestrator.config import ConfigError
from orchestrator.fm.client import FMConfigError, FMError
from sandboxes.base import SandboxError


class CampaignError(RuntimeError):
    """The campaign cannot start or go on (a bad name in its config, an invalid seed agent, ...)."""


USER_ERRORS: tuple[type[BaseException], ...] = (
    NotARunDir,
    ArchiveLocked,
    AgentManifestError,
    EvaluatorLoadError,
    CampaignError,
    ConfigError,
    FMConfigError,
    FMError,
    SandboxError,
    FileExistsError,
)
