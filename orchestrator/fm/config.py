"""Typed configuration of the foundation model: the ``[fm]`` table of a campaign config."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator


class Prices(BaseModel):
    """USD per million tokens. The embedded model costs nothing."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt_per_mtok: float = 0.0
    completion_per_mtok: float = 0.0

    @field_validator("prompt_per_mtok", "completion_per_mtok")
    @classmethod
    def _non_negative(cls, v: float, info) -> float:
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"{info.field_name} = {v}: must be a finite number >= 0")
        return v

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.prompt_per_mtok + completion_tokens * self.completion_per_mtok) / 1e6


class FMConfig(BaseModel):
    """How to reach the FM and how to call it.

    provider "embedded": a local llama.cpp server (xllamacpp) on the Qwen2.5-Coder-1.5B GGUF,
    assembled from PyPI on first use; no key, no network. provider "openai": any server that
    speaks the OpenAI chat-completions protocol at ``base_url``, key read from ``api_key_env``.
    """

    model_config = ConfigDict(extra="forbid")

    provider: Literal["embedded", "openai"] = "embedded"
    model: str = "qwen2.5-coder-1.5b-instruct"
    base_url: str | None = None
    api_key_env: str | None = None
    timeout_s: float = 300.0
    max_retries: int = 2
    backoff_s: float = 1.0
    prices: Prices = Prices()
    # embedded server only
    model_path: Path | None = None
    # context of one request (prompt + answer); the server holds n_ctx * n_parallel (KV cache about
    # 28 KB a token for the 1.5B model: 0.5 GB at 8192 x 2). 4096 cut answers off: continual's first
    # prompts run to 3,300 tokens, and a repair turn adds the first answer (tests/test_prompt_budget.py)
    n_ctx: int = 8192
    n_parallel: int = 2        # server slots: requests decoded together
    n_threads: int | None = None  # None: all cores
    start_timeout_s: float = 180.0
    # used by the mutation step
    temperature: tuple[float, float] = (0.5, 1.0)  # sampled uniformly per call
    max_tokens: int = 1200
    concurrency: int = 2       # proposals in flight

    @field_validator("timeout_s", "start_timeout_s")
    @classmethod
    def _positive_float(cls, v: float, info) -> float:
        if not math.isfinite(v) or v <= 0:
            raise ValueError(f"{info.field_name} = {v}: must be > 0")
        return v

    @field_validator("backoff_s")
    @classmethod
    def _non_negative_float(cls, v: float, info) -> float:
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"{info.field_name} = {v}: must be >= 0")
        return v

    @field_validator("max_retries")
    @classmethod
    def _non_negative_int(cls, v: int, info) -> int:
        if v < 0:
            raise ValueError(f"{info.field_name} = {v}: must be >= 0")
        return v

    @field_validator("n_ctx", "n_parallel", "max_tokens", "concurrency")
    @classmethod
    def _positive_int(cls, v: int, info) -> int:
        if v < 1:
            raise ValueError(f"{info.field_name} = {v}: must be >= 1")
        return v

    @field_validator("n_threads")
    @classmethod
    def _threads(cls, v: int | None, info) -> int | None:
        if v is not None and v < 1:
            raise ValueError(f"{info.field_name} = {v}: must be >= 1 (or left out for all cores)")
        return v

    @field_validator("temperature")
    @classmethod
    def _temperature(cls, v: tuple[float, float], info) -> tuple[float, float]:
        lo, hi = v
        if not (0 <= lo <= hi <= 2):
            raise ValueError(f"{info.field_name} = [{lo}, {hi}]: must satisfy 0 <= low <= high <= 2")
        return v

    @field_validator("model", "api_key_env")
    @classmethod
    def _non_empty(cls, v: str | None, info) -> str | None:
        if v is not None and not v.strip():
            raise ValueError(f"{info.field_name} = {v!r}: must not be empty")
        return v

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str | None, info) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError(f"{info.field_name} = {v!r}: must start with http:// or https://")
        return v

    @model_validator(mode="after")
    def _provider_needs(self) -> "FMConfig":
        if self.provider == "openai":
            if not self.base_url:
                raise ValueError("provider = 'openai' needs base_url (e.g. 'https://api.openai.com/v1')")
            if not self.api_key_env:
                raise ValueError("provider = 'openai' needs api_key_env, the name of the "
                                 "environment variable that holds the API key (e.g. 'OPENAI_API_KEY')")
        return self

    def sample_temperature(self, rng: random.Random) -> float:
        lo, hi = self.temperature
        return rng.uniform(lo, hi)
