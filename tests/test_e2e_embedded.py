"""End to end with the real embedded model (xllamacpp serving Qwen2.5-Coder-1.5B over HTTP):
a real campaign of 3 iterations. Slow (a few minutes on 2 cores); part of `make test`."""

from __future__ import annotations

import pytest

from archive import Archive, NodeStatus
from orchestrator.campaign import Campaign
from orchestrator.cli.init_cmd import write_campaign
from orchestrator.config import load_config
from orchestrator.fm.providers import open_fm

pytestmark = pytest.mark.slow


def test_three_iterations_on_the_embedded_model(tmp_path):
    cfg = load_config(write_campaign(tmp_path / "camp", "circle_packing"))
    cfg.fm.max_tokens = 400  # keep the test short on 2 cores; the demo uses the default
    # one model call per attempt: the repair turns and fix conversations (tested with a scripted
    # model in test_campaign and test_parsing) made this test take 83-144 s, by how many it needed
    cfg.mutation.repairs = cfg.mutation.run_repairs = 0
    with open_fm(cfg.fm) as fm:
        stats = Campaign(cfg, tmp_path / "camp" / "run", fm).run(3)
    assert stats.started == 3 and "reached 3 iterations" in stats.stop_reason
    with Archive.open(tmp_path / "camp" / "run", readonly=True) as archive:
        assert archive.check() == []
        children = archive.nodes()[1:]
    assert len(children) == 3
    answered = [n for n in children if n.operator != "fit"]  # fit (in the default mix) calls no model
    assert answered
    for node in children:
        assert node.status.finished
        if node.status in (NodeStatus.INVALID, NodeStatus.REJECTED, NodeStatus.FAILED):
            assert node.error  # every failure carries its reason in words
    for node in answered:
        assert node.fm_model  # the real model answered (or the failure is recorded)
        if node.status != NodeStatus.FAILED:
            assert node.response and node.completion_tokens > 0 and node.prompt_tokens > 100
    # each call used its own sampling seed: the answers are not all the same
    assert len(answered) == 1 or len({n.response for n in answered}) > 1


def test_one_self_step_on_the_embedded_model(tmp_path):
    """The seed agent's own improver, in the sandbox, asks the real model through the proxy."""
    import json

    cfg = load_config(write_campaign(tmp_path / "camp", "circle_packing"))
    cfg.fm.max_tokens = 400
    cfg.mutation.operators = {"self": 1.0}
    cfg.mutation.improver.calls = 1  # one model call: a second is refused (and recorded)
    with open_fm(cfg.fm) as fm:
        stats = Campaign(cfg, tmp_path / "camp" / "run", fm).run(1)
    assert stats.started == 1
    with Archive.open(tmp_path / "camp" / "run", readonly=True) as archive:
        assert archive.check() == []
        child = archive.nodes()[1]
    assert child.operator == "self" and child.status.finished
    calls = json.loads(child.prompt)  # the improver's transcript: its model calls through the proxy
    assert calls and calls[0]["status"] == 200 and calls[0]["tokens"] > 100
    assert child.prompt_tokens > 100 and child.completion_tokens > 0 and "[exit]" in child.response
    if child.status == NodeStatus.INVALID:
        assert child.error  # e.g. the model's answer did not apply: the reason is recorded
