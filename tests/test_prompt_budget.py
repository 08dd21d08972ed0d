"""The embedded model's context must hold what dgm sends it: the longest first prompt a built-in
suite makes, plus an answer, plus a repair turn (the answer and a second answer in the same
conversation). A context too short cuts answers off mid-code: on continual, at 4096 tokens, 7 of 10
first prompts were over 2,900 tokens, so an answer had about 800 tokens left and two rewrites of
the strategy class ended mid-line (continual seed 2)."""

from __future__ import annotations

import pytest

from evaluators import registry
from evaluators.agent import load_manifest
from orchestrator.config import MutationSection
from orchestrator.fm.config import FMConfig
from orchestrator.mutation.api_reference import references
from orchestrator.mutation.operators import FM_OPERATORS, Sampling
from orchestrator.mutation.prompts import Exemplar, Inspiration, ProposalContext, build_messages

#: the fewest characters per token of any one-call prompt in the kept efficacy campaigns (35 prompts:
#: optimizer 2.60-2.96, continual 2.78-3.18, circle packing 3.04-3.36): the estimate is not short
CHARS_PER_TOKEN = 2.6


def _longest_prompt_chars(suite: str, mutation: MutationSection) -> int:
    cls = registry.load_class(suite)
    seed = cls().seed_agent()
    target = load_manifest(seed).editable[0]
    program = (seed / target).read_text()
    public = {m.name: 0.123456 for m in cls.metrics if m.public}
    # the idea that makes the longest prompt, with the library documentation it brings
    idea = max(cls.ideas, key=lambda i: len(i) + len(references(i)), default="")
    ctx = ProposalContext(
        task=cls.task, parent_id=3, files={target: program}, editable=[target], target=target, score=0.876543,
        public_metrics=public, feedback="f" * 600,
        exemplars=[Exemplar(i, 0.9, public, "n" * 160) for i in range(mutation.exemplars)],
        inspirations=[Inspiration(9, 0.95, (program * 10)[: mutation.inspiration_chars])] * mutation.inspirations,
        failures=["x" * 400] * mutation.failures_shown, idea=idea, reference=references(idea),
    )
    longest = 0
    for op_class in FM_OPERATORS.values():
        op = op_class()
        messages = build_messages(ctx, op.instructions_for(ctx, Sampling(0.7, 0, 1200)))
        longest = max(longest, sum(len(m["content"]) for m in messages))
    return longest


@pytest.mark.parametrize("suite", ["circle_packing", "continual", "fewshot", "rl_objective", "optimizer"])
def test_the_default_context_holds_the_longest_prompt_an_answer_and_a_repair_turn(suite):
    fm, mutation = FMConfig(), MutationSection()
    prompt_tokens = _longest_prompt_chars(suite, mutation) / CHARS_PER_TOKEN
    needed = prompt_tokens + (1 + mutation.repairs) * fm.max_tokens + 200  # + the repair request itself
    assert needed <= fm.n_ctx, f"{suite}: about {needed:.0f} tokens needed, the context holds {fm.n_ctx}"
