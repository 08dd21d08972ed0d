"""Campaign budgets: when to stop making new proposals, and why (in words)."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field


class BudgetLimits(BaseModel):
    """``None`` means unlimited. Checked before every new proposal; work in flight finishes."""

    model_config = ConfigDict(extra="forbid")

    max_fm_calls: int | None = Field(None, gt=0)
    max_tokens: int | None = Field(None, gt=0)
    max_usd: float | None = Field(None, gt=0)
    max_wall_s: float | None = Field(None, gt=0)
    max_gpu_s: float | None = Field(None, gt=0, description="GPU-seconds evaluations may hold (a shared GPU counts its share)")


@dataclass(frozen=True)
class Usage:
    fm_calls: int = 0
    tokens: int = 0
    usd: float = 0.0
    wall_s: float = 0.0
    gpu_s: float = 0.0


def exhausted(usage: Usage, limits: BudgetLimits) -> str | None:
    """The first budget that is used up, as a sentence; None while all have room."""
    checks = (
        ("max_fm_calls", usage.fm_calls, "FM calls"),
        ("max_tokens", usage.tokens, "tokens"),
        ("max_usd", usage.usd, "USD"),
        ("max_wall_s", usage.wall_s, "seconds of wall-clock"),
        ("max_gpu_s", usage.gpu_s, "GPU-seconds"),
    )
    for field, used, unit in checks:
        limit = getattr(limits, field)
        if limit is not None and used >= limit:
            shown = f"{used:.4f}" if isinstance(used, float) else str(used)
            return f"budget reached: {shown} {unit} used of [budget].{field} = {limit}"
    return None
