"""The archive's record of one attempt (a node of the tree)."""

from __future__ import annotations

import enum
from typing import Any

from pydantic import BaseModel, Field


def what_broke(text: str) -> str:
    """What broke, in one line: a traceback's last line (the exception), else the first line; ""
    for no text. The one rule for the archive's summaries and the model's repair turns."""
    lines = [line.strip() for line in (text or "").strip().splitlines() if line.strip()]
    if not lines:
        return ""
    return lines[-1] if "Traceback (most recent call last)" in text else lines[0]


class NodeStatus(str, enum.Enum):
    PROPOSED = "proposed"  # code committed, not yet evaluated
    EVALUATING = "evaluating"
    ADMITTED = "admitted"  # evaluated and kept in the tree as a possible parent
    REJECTED = "rejected"  # evaluated and valid, but the admission policy said no
    INVALID = "invalid"  # the proposal or its output was unusable (never a parent)
    FAILED = "failed"  # infrastructure fault: FM error, evaluator error, interrupted

    @property
    def finished(self) -> bool:
        return self not in (NodeStatus.PROPOSED, NodeStatus.EVALUATING)


class Node(BaseModel):
    """One row of the node table. Nodes are never deleted."""

    id: int
    campaign: str
    parent_id: int | None
    status: NodeStatus
    commit: str  # git commit in the run's repository; its git parent is the parent node's commit
    digest: str = ""  # digest of the whole agent tree it was evaluated with (orchestrator.memory.tree_digest)
    operator: str = ""  # "seed", "diff", "rewrite", "self_edit", ...
    created_at: float = 0.0
    updated_at: float = 0.0
    stages: list[dict[str, Any]] = Field(default_factory=list)  # per-stage results, in order
    public_metrics: dict[str, float] = Field(default_factory=dict)
    private_metrics: dict[str, float] = Field(default_factory=dict)  # never shown to the FM
    score: float | None = None  # the mean of `draws` when it was evaluated more than once
    draws: list[float] = Field(default_factory=list)  # the comparable score of each independent evaluation
    # the evaluation seed offset each of `draws` ran on, in order (empty in runs before 2026-12-04:
    # see `seed_offsets`); a re-measurement skips the seed of a draw that failed, so draw k of one
    # node and draw k of another need not share a seed
    draw_seeds: list[int] = Field(default_factory=list)
    # each private metric's value per evaluation, when it was evaluated more than once (the held-out
    # spread between evaluation seeds); private like private_metrics, never shown to the FM
    private_draws: dict[str, list[float]] = Field(default_factory=dict)
    feedback: str = ""  # public feedback for the FM (errors, tracebacks, invalid reasons)
    fm_model: str = ""
    prompt: str = ""
    response: str = ""
    idea: str = ""  # the idea the model's prompt carried ("" when it showed none): its yield is counted
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    timings: dict[str, float] = Field(default_factory=dict)  # fm_s, sandbox_s, eval_s, archive_s, ...
    error: str = ""  # why the node is invalid/failed/rejected, in words

    @property
    def seed_offsets(self) -> list[int]:
        """The evaluation seed offset of each draw: ``draw_seeds``, or 0, 1, ... where the node
        predates it (a campaign's own draws run on consecutive offsets from 0)."""
        return list(self.draw_seeds) if len(self.draw_seeds) == len(self.draws) else list(range(len(self.draws)))

    @property
    def eval_s_per_draw(self) -> float | None:
        """Seconds one evaluation took: ``eval_s`` over the draws (None: not recorded). What a trial
        of this program costs, so fit can size its search to its time budget."""
        spent = self.timings.get("eval_s")
        return spent / max(1, len(self.draws)) if spent else None

    @property
    def error_line(self) -> str:
        """``error`` in one line. A crash's error starts "stage full: exit code 1" and ends with the
        traceback's exception, which is what broke: for a crash that line, after the stage."""
        broke = what_broke(self.error)
        first = broke and self.error.strip().splitlines()[0].strip()
        if broke == first or not first.startswith("stage "):
            return broke
        return first.split(":", 1)[0] + ": " + broke

    @property
    def final_feedback(self) -> str:
        """The public words of the deepest stage it ran (its reason if that stage found it
        invalid), else the first line of ``feedback``: the line a summary or a prompt shows."""
        for stage in reversed(self.stages):
            text = (stage.get("feedback") if stage.get("valid", True) else stage.get("error")) or ""
            if text.strip():
                return f"[{stage.get('stage', '?')}] {text.strip()}"
        return self.feedback.split("\n")[0]
