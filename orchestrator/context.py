"""The proposal context: what a proposal sees of its parent and of the archive (public results and
feedback, the best other programs, this parent's failed children, an idea to try). Only public
metrics and public feedback are read here, so private metrics never reach a prompt."""

from __future__ import annotations

import random
from typing import Callable

from archive import Node
from orchestrator.config import MutationSection
from orchestrator.ledger import Ledger
from orchestrator.mutation.api_reference import references
from orchestrator.mutation.operators import summarise
from orchestrator.mutation.prompts import Exemplar, Inspiration, ProposalContext


class ContextBuilder:
    def __init__(
        self,
        task: str,
        ideas: list[str],
        mutation: MutationSection,
        ledger: Ledger,
        texts_of: Callable[[int], dict[str, str]],
        tree_of: Callable[[int], dict[str, bytes]],
    ) -> None:
        self.task, self.ideas, self.mutation = task, ideas, mutation
        self.ledger, self.texts_of, self.tree_of = ledger, texts_of, tree_of

    def build(self, parent: Node, rng: random.Random) -> ProposalContext:
        texts = self.texts_of(parent.id)
        editable = list(texts)
        failures = self.failures(parent.id)
        target = rng.choice(editable)
        idea = self._idea(rng)
        return ProposalContext(
            task=self.task,
            parent_id=parent.id,
            files=texts,
            editable=editable,
            target=target,
            score=parent.score,
            first_draw_score=parent.draws[0] if parent.draws else parent.score,
            trial_s=parent.eval_s_per_draw,
            public_metrics=dict(parent.public_metrics),
            feedback=parent.feedback,
            exemplars=[
                Exemplar(n.id, n.score, dict(n.public_metrics), n.final_feedback)
                for n in self.ledger.top(self.mutation.exemplars, excluding=parent.id)
            ],
            failures=failures,
            inspirations=self.inspirations(parent, target),
            idea=idea,
            reference=references(idea) if idea and self.mutation.library_docs else "",
            tree=self.tree_of(parent.id),
            record=public_record(parent, self.task, failures),
        )

    def failures(self, parent_id: int) -> list[str]:
        """Answers the model gave for this parent that failed, most recent first, each error once
        (fit's trials and FM outages have no answer and are not shown)."""
        limit = self.mutation.failures_shown
        seen: dict[str, str] = {}
        for n in self.ledger.failed_children(parent_id):
            if len(seen) >= limit:
                break
            if n.error not in seen:
                seen[n.error] = f"{n.operator} change ({summarise(n.response or '', 80)}): {n.error}"
        return list(seen.values())

    def inspirations(self, parent: Node, target: str) -> list[Inspiration]:
        """The best programs of other lineages (branches from the seed other than the parent's, so
        neither its ancestors nor its descendants) whose ``target`` file differs from the parent's
        and fits the size budget. Every node descends from the seed, so the seed gets none."""
        want, limit = self.mutation.inspirations, self.mutation.inspiration_chars
        if want <= 0 or parent.parent_id is None:
            return []
        own, branch = self.texts_of(parent.id).get(target), self.ledger.lineage.get(parent.id)
        out: list[Inspiration] = []
        for node in self.ledger.top(10 * want, excluding=parent.id):
            if len(out) == want:
                break
            if node.parent_id is None or self.ledger.lineage.get(node.id) == branch:
                continue
            code = self.texts_of(node.id).get(target)
            if code and code != own and len(code) <= limit:
                out.append(Inspiration(node.id, node.score, code))
        return out

    def _idea(self, rng: random.Random) -> str:
        if not self.ideas or rng.random() >= self.mutation.idea_share:
            return ""
        if self.mutation.idea_choice == "uniform":
            return rng.choice(self.ideas)
        return max(self.ideas, key=lambda idea: self._idea_draw(idea, rng))

    def _idea_draw(self, idea: str, rng: random.Random) -> float:
        """Thompson sampling: a draw from the Beta posterior of the share of this idea's children that
        beat their parent (a uniform prior, so an idea not yet tried is drawn as often as a paying
        one, and one whose children keep failing fades but is never dropped)."""
        y = self.ledger.ideas.get(idea.strip())
        wins, tries = (y.better_than_parent, y.attempts) if y else (0, 0)
        return rng.betavariate(1 + wins, 1 + tries - wins)


def public_record(node: Node, task: str, failures: list[str]) -> dict:
    """What an agent's own improver may read of its evaluation: the task, the score, public metrics
    and feedback per stage, and its recent failed children. Private metrics are left out here, by
    name, so nothing added to a stage record later leaks by default."""
    stages = [
        {k: s.get(k) for k in ("stage", "valid", "passed_gate", "score", "public", "feedback", "error")}
        for s in node.stages
    ]
    return {
        "task": task, "node": node.id, "score": node.score, "public_metrics": dict(node.public_metrics),
        "feedback": node.feedback, "stages": stages, "failed_children": failures,
    }

