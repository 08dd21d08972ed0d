"""FMConfig / Prices validation: unknown keys and bad values are errors that name the field."""

from __future__ import annotations

import random

import pytest
from pydantic import ValidationError

from orchestrator.fm.config import FMConfig, Prices


def error_text(**kw) -> str:
    with pytest.raises(ValidationError) as ei:
        FMConfig(**kw)
    return str(ei.value)


def test_defaults_are_the_offline_embedded_model():
    cfg = FMConfig()
    assert cfg.provider == "embedded"
    assert (cfg.n_parallel, cfg.concurrency, cfg.max_tokens) == (2, 2, 1200)
    assert cfg.temperature == (0.5, 1.0)
    assert cfg.prices.cost(10**6, 10**6) == 0.0


def test_prices_cost_per_million_tokens():
    p = Prices(prompt_per_mtok=3.0, completion_per_mtok=15.0)
    assert p.cost(2_000_000, 100_000) == pytest.approx(6.0 + 1.5)
    with pytest.raises(ValidationError, match=r"completion_per_mtok = -1.0: must be a finite number >= 0"):
        Prices(prompt_per_mtok=1, completion_per_mtok=-1)
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        Prices(prompt=1)


@pytest.mark.parametrize("field, value, message", [
    ("timeout_s", -3, "timeout_s = -3.0: must be > 0"),
    ("timeout_s", 0, "timeout_s = 0.0: must be > 0"),
    ("start_timeout_s", float("nan"), "start_timeout_s = nan: must be > 0"),
    ("backoff_s", -0.5, "backoff_s = -0.5: must be >= 0"),
    ("max_retries", -1, "max_retries = -1: must be >= 0"),
    ("n_ctx", 0, "n_ctx = 0: must be >= 1"),
    ("n_parallel", 0, "n_parallel = 0: must be >= 1"),
    ("max_tokens", -5, "max_tokens = -5: must be >= 1"),
    ("concurrency", 0, "concurrency = 0: must be >= 1"),
    ("n_threads", 0, "n_threads = 0: must be >= 1"),
    ("temperature", (1.0, 0.5), "temperature = [1.0, 0.5]: must satisfy 0 <= low <= high <= 2"),
    ("temperature", (0.1, 3.0), "temperature = [0.1, 3.0]: must satisfy 0 <= low <= high <= 2"),
    ("model", " ", "model = ' ': must not be empty"),
    ("base_url", "localhost:8080", "base_url = 'localhost:8080': must start with http:// or https://"),
])
def test_bad_values_name_the_field_and_value(field, value, message):
    text = error_text(**{field: value})
    assert message in text and field in text


def test_unknown_keys_are_errors():
    text = error_text(timeout=3)
    assert "timeout" in text and "Extra inputs are not permitted" in text


def test_openai_provider_needs_base_url_and_key_variable():
    assert "needs base_url" in error_text(provider="openai", api_key_env="K")
    assert "needs api_key_env" in error_text(provider="openai", base_url="https://api.example.com/v1")
    assert "provider" in error_text(provider="anthropic")
    cfg = FMConfig(provider="openai", base_url="https://api.example.com/v1", api_key_env="K",
                   prices={"prompt_per_mtok": 1.0, "completion_per_mtok": 2.0})
    assert cfg.prices == Prices(prompt_per_mtok=1.0, completion_per_mtok=2.0)


def test_config_round_trips_through_a_dict():
    cfg = FMConfig(temperature=[0.2, 0.4], model_path="/m.gguf")
    assert FMConfig.model_validate(cfg.model_dump()) == cfg


def test_sample_temperature_stays_in_range():
    cfg = FMConfig(temperature=(0.3, 0.6))
    rng = random.Random(0)
    samples = [cfg.sample_temperature(rng) for _ in range(200)]
    assert all(0.3 <= t <= 0.6 for t in samples)
    assert max(samples) - min(samples) > 0.2
    assert FMConfig(temperature=(0.7, 0.7)).sample_temperature(rng) == 0.7
