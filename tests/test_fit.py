"""The fit operator: float constants found in the AST, CMA-ES over them, trials evaluated by the
campaign's executor, the best point as the child."""

from __future__ import annotations

import json

import pytest

from archive import Archive, NodeStatus
from orchestrator.campaign import Campaign
from orchestrator.config import load_config
from orchestrator.fm.client import FMClient
from orchestrator.mutation.fit import Constant, constants, substitute
from tests.campaign_helpers import write_config
from tests.fm_server import Reply, ScriptedFMServer

SRC = 'def f(x):\n    """Scale by 2.5."""\n    n = 3\n    return 0.5 * x + g(-1.25, 2e-3)\n'


def test_constants_are_the_float_literals_of_the_code_not_the_docstring():
    found = constants({"a.py": SRC, "notes.txt": "0.1"})
    assert [(c.line, c.value) for c in found] == [(4, 0.5), (4, 1.25), (4, 0.002)]
    assert all(isinstance(c, Constant) and c.path == "a.py" for c in found)


def test_substitute_replaces_each_literal_at_its_place():
    found = constants({"a.py": SRC})
    out = substitute({"a.py": SRC}, found, [0.75, 1.5, 0.001])
    assert out["a.py"].split("\n")[3] == "    return 0.75 * x + g(-1.5, 0.001)"
    assert out["a.py"].split("\n")[:3] == SRC.split("\n")[:3]
    whole = substitute({"a.py": SRC}, found[:1], [3.0])["a.py"]
    assert "3.0 * x" in whole and "-1.25" in whole  # a float stays a float; the others are untouched


def one_fit(tmp_path, monkeypatch, fit_settings: str) -> list:
    """A campaign of one fit step on circle packing; its nodes. Asserts that no model was called."""
    monkeypatch.setenv("DGM_TEST_KEY", "k")
    with ScriptedFMServer([], default=Reply("unused")) as srv:
        cfg = load_config(write_config(tmp_path, srv.base_url, iterations=1, operators="{ fit = 1.0 }",
                                       extra=f"[mutation.fit]\n{fit_settings}"))
        with FMClient.from_config(cfg.fm) as fm:
            Campaign(cfg, tmp_path / "run", fm).run()
        assert srv.requests == []  # fit calls no model
    with Archive.open(tmp_path / "run", readonly=True) as archive:
        return archive.nodes()


def test_a_fit_step_evaluates_trials_and_keeps_them_on_the_child(tmp_path, monkeypatch):
    seed, child = one_fit(tmp_path, monkeypatch, "evaluations = 16\nmax_evaluations = 16\n")
    assert child.operator == "fit" and child.fm_model == "" and child.status.finished
    record = json.loads(child.response)
    trials = record["trials"]
    assert len(trials) == 17 and trials[-1].get("parent")  # 16 trials, then the parent's own point
    assert 1 <= len(record["constants"]) <= 8  # a random subset of at most MAX_CONSTANTS literals
    assert 0 < record["evaluating_s"] <= record["wall_s"]  # the optimiser's own share is the difference
    scored = [t["score"] for t in trials[:-1] if t["score"] is not None]
    # the child is the best trial's program: the (deterministic) evaluator gives it that score again
    assert child.status == NodeStatus.ADMITTED and child.score == pytest.approx(max(scored))
    assert child.score > seed.score
    # `dgm report` states the optimiser's own share of the fit's wall time
    from orchestrator.report import build_report, render

    fit = build_report([seed, child])["fit"]
    assert fit["fits"] == 1 and fit["wall_s"] == pytest.approx(record["wall_s"], abs=1e-3) and 0 <= fit["overhead_share"] < 1
    assert fit["trials"] == 16 and f"fit: 1 fit (16 trials), {fit['wall_s']:.1f} s" in render(build_report([seed, child]))


def test_a_fit_with_a_time_budget_starts_no_generation_after_it(tmp_path, monkeypatch):
    child = one_fit(tmp_path, monkeypatch, "evaluations = 8\nseconds = 0.01\nmax_evaluations = 400\n")[1]
    record = json.loads(child.response)
    # `evaluations` (one generation of 8) always run; by then the 0.01 s were spent, so no second one started
    assert record["stopped_by"] == "seconds" and len(record["trials"]) == 8 + 1


def _instant(score):
    """A trial evaluator whose every trial completes at once with ``score(files)``."""
    from concurrent.futures import Future

    from evaluators.pipeline import EvaluationResult, StageResult

    def evaluate(files):
        fut = Future()
        fut.set_result(EvaluationResult(stages=[StageResult("full", True, True, score(files))], selected=1))
        return fut

    return evaluate


def test_cheap_trials_run_on_to_the_time_budget_over_more_constants():
    """Where trials are cheap (the parent's evaluation took 0.1 s) a fit keeps going past
    `evaluations` while under `seconds`, up to `max_evaluations`, and searches over all of a
    12-constant program at once; where they are slow it runs `evaluations` over a subset of 8."""
    from orchestrator.mutation.fit import FitOperator
    from orchestrator.mutation.operators import Sampling
    from orchestrator.mutation.prompts import ProposalContext

    program = {"a.py": "".join(f"C{i} = {0.1 * (i + 1):.1f}\n" for i in range(12))}
    target = {f"C{i}": 0.1 * (i + 1) * 1.3 for i in range(12)}  # the best point: every constant 30 % larger

    def score(files):
        ns = {}
        exec(files["a.py"], ns)
        return -sum((ns[k] - v) ** 2 for k, v in target.items())

    op = FitOperator(evaluations=16, sigma=0.05, seconds=60.0, max_evaluations=200)
    cheap = ProposalContext(task="T", parent_id=0, files=program, editable=["a.py"], target="a.py",
                            score=score(program), evaluate=_instant(score), trial_s=0.1)
    response = op.propose(cheap, None, Sampling(0.7, 1, 100)).response
    record = json.loads(response)
    assert record["expected_trials"] == 200 and len(record["constants"]) == 12
    assert len(response.splitlines()) < 201 + 30  # one line a trial, so `dgm archive show` stays readable
    assert record["stopped_by"] == "max_evaluations" and len(record["trials"]) == 200 + 1
    slow = ProposalContext(task="T", parent_id=0, files=program, editable=["a.py"], target="a.py",
                           score=score(program), evaluate=_instant(score), trial_s=20.0)
    record = json.loads(op.propose(slow, None, Sampling(0.7, 1, 100)).response)
    assert record["expected_trials"] == 16 and len(record["constants"]) == 8
    # the time budget is wall time: instant trials finish long before 60 s, so this one ran on too
    assert record["stopped_by"] == "max_evaluations"
    # without a time budget a fit runs exactly `evaluations`
    exact = FitOperator(evaluations=16, sigma=0.05, seconds=None)
    record = json.loads(exact.propose(cheap, None, Sampling(0.7, 1, 100)).response)
    assert record["stopped_by"] == "evaluations" and len(record["trials"]) == 16 + 1 and record["expected_trials"] == 16


def test_a_program_fitted_in_vain_is_fitted_wider_then_left_to_the_other_operators():
    """A fit that finds nothing is a miss for its parent's program (learned from the recorded node,
    as on resume); the next fit of that program doubles the step, and after ``misses_per_program``
    misses fit no longer works from it. Another program is not affected."""
    from concurrent.futures import Future

    from archive import Node
    from evaluators.pipeline import EvaluationResult, StageResult
    from orchestrator.events import NodeEvent
    from orchestrator.mutation.fit import FitOperator
    from orchestrator.mutation.operators import Sampling
    from orchestrator.mutation.prompts import ProposalContext

    def worse(files):  # every trial scores below the parent: the fit finds nothing
        fut = Future()
        fut.set_result(EvaluationResult(stages=[StageResult("full", True, True, 0.1)], selected=1))
        return fut

    program, other = {"a.py": "X = 0.5\nY = 2.0\n"}, {"a.py": "X = 0.25\n"}
    op = FitOperator(evaluations=4, sigma=0.05, seconds=None, misses_per_program=2)
    parent = Node(id=0, campaign="c", parent_id=None, status=NodeStatus.ADMITTED, commit="x", score=0.9)
    sigmas = []
    for i in range(2):
        assert op.can_work_from(program)
        ctx = ProposalContext(task="T", parent_id=0, files=program, editable=["a.py"], target="a.py",
                              score=0.9, evaluate=worse)
        proposal = op.propose(ctx, None, Sampling(0.7, i, 100))
        sigmas.append(json.loads(proposal.response)["sigma"])
        node = Node(id=i + 1, campaign="c", parent_id=0, status=NodeStatus.INVALID, commit="x", operator="fit",
                    error=proposal.error)
        op.observe(NodeEvent(node, parent, lambda node_id: program, lambda node_id: {}))
    assert sigmas == [0.05, 0.1] and "no trial beat" in proposal.error
    assert not op.can_work_from(program) and op.can_work_from(other)
    # by default one miss is enough: 34 refits after a miss in ten kept campaigns found something twice
    from orchestrator.config import MutationSection

    assert MutationSection().fit.misses_per_program == 1
    default = FitOperator()
    default.observe(NodeEvent(node, parent, lambda node_id: program, lambda node_id: {}))
    assert not default.can_work_from(program) and default.can_work_from(other)


def test_a_program_is_fitted_once_at_a_time():
    """With proposals in flight, a second fit of the best program used to start before the first
    one's miss was recorded (so at the same step, and missed alike). While a fit of a program is in
    flight, fit works from other programs; once its node is judged (once, whatever follows), the
    program is free again, and a miss counts. A child still being evaluated keeps it busy."""
    from archive import Node
    from orchestrator.events import NodeEvent
    from orchestrator.mutation.fit import MISSED, FitOperator
    from orchestrator.mutation.prompts import ProposalContext

    program, other = {"a.py": "X = 0.5\n"}, {"a.py": "X = 0.25\n"}
    op = FitOperator(misses_per_program=3)
    parent = Node(id=0, campaign="c", parent_id=None, status=NodeStatus.ADMITTED, commit="x", score=0.9)
    op.started(ProposalContext(task="T", parent_id=0, files=program, editable=["a.py"], target="a.py", score=0.9))
    assert not op.can_work_from(program) and op.can_work_from(other)

    def record(status, error=""):
        node = Node(id=1, campaign="c", parent_id=0, status=status, commit="x", operator="fit", error=error)
        op.observe(NodeEvent(node, parent, lambda node_id: program, lambda node_id: {}))

    for status in (NodeStatus.PROPOSED, NodeStatus.EVALUATING):  # a child that beat it, not yet judged
        record(status)
        assert not op.can_work_from(program)
    record(NodeStatus.INVALID, MISSED[0] + " the parent's own constants")
    assert op.can_work_from(program) and op.misses == {next(iter(op.fitting)): 1}
    record(NodeStatus.INVALID, MISSED[0])  # the same node read again: neither freed twice nor missed twice
    assert list(op.fitting.values()) == [0] and list(op.misses.values()) == [1]


@pytest.mark.parametrize("draws, becomes_a_child", [
    ([0.9, 0.5, 0.5], False),  # mean 0.63, but 0.9 on the trials' seed: a trial at 0.8 is worse
    ([0.7, 1.0, 1.0], True),  # mean 0.9, but 0.7 on the trials' seed: a trial at 0.8 is better
])
def test_trials_are_held_against_the_parents_score_on_their_own_evaluation_seed(draws, becomes_a_child):
    """Trials run on the evaluation seed of the parent's first draw. Held against the parent's mean
    over its draws, fit took any perturbation when that seed was easy (optimizer seed 1: 14 of 14
    fits "beat" a parent whose first draw was 1.10 and mean 0.87) and none when it was hard
    (optimizer seed 2: 10 of 11 fits found nothing)."""
    from concurrent.futures import Future
    from types import SimpleNamespace

    from orchestrator.mutation.fit import FitOperator
    from orchestrator.mutation.operators import Sampling
    from orchestrator.mutation.prompts import ProposalContext

    def evaluate(files):
        fut = Future()
        fut.set_result(SimpleNamespace(complete=True, score=0.8, error=""))
        return fut

    src = "def g(a, b):\n    return a + b\n\n\n" + SRC
    ctx = ProposalContext(task="T", parent_id=1, files={"a.py": src}, editable=["a.py"], target="a.py",
                          score=sum(draws) / 3, first_draw_score=draws[0], evaluate=evaluate)
    proposal = FitOperator(evaluations=8, seconds=None).propose(ctx, None, Sampling(0.7, 0, 100))
    assert proposal.valid == becomes_a_child, proposal.error
    assert json.loads(proposal.response)["trials"][-1]["score"] == draws[0]  # the bar, kept with the trials


@pytest.mark.parametrize("head", [{}, {"constants": ["a.py:1:4 = 0.5"], "sigma": 0.05},
                                  {"trials": [], "misses": []}])  # head's own "trials" gives way to the list
@pytest.mark.parametrize("trials", [[], [{"values": [0.5], "score": None, "error": "x"}],
                                    [{"values": [0.5, 1.0], "score": 0.7}, {"values": [0.4, 1.0], "score": 0.6, "parent": True}]])
def test_a_fit_record_is_json_with_one_line_per_trial(head, trials):
    from orchestrator.mutation.fit import record_json

    text = record_json(head, trials)
    assert json.loads(text) == {**{k: v for k, v in head.items() if k != "trials"}, "trials": trials}
    assert sum(1 for line in text.splitlines() if line.lstrip().startswith('{"values"')) == len(trials)


def test_a_bare_fit_operator_fits_as_a_campaign_does():
    """``FitOperator()`` and a campaign's ``[mutation.fit]`` defaults are one source: they once
    differed (the bare one had no time budget), so a bench or test built bare measured another fit."""
    from types import SimpleNamespace

    from orchestrator.config import MutationSection
    from orchestrator.mutation.fit import FitOperator

    bare = FitOperator()
    campaign = FitOperator.from_config(SimpleNamespace(mutation=MutationSection()))
    assert vars(bare) == vars(campaign) and bare.seconds == 60.0


def test_a_trial_costs_the_parents_evaluation_time_per_draw():
    """fit sizes its search by what one evaluation of the parent took (``Node.eval_s_per_draw``,
    which ``ProposalContext.trial_s`` carries): its evaluation time over its draws."""
    from archive import Node

    node = Node(id=0, campaign="c", parent_id=None, status=NodeStatus.ADMITTED, commit="x",
                draws=[0.7, 0.71], timings={"eval_s": 3.0})
    assert node.eval_s_per_draw == 1.5
    assert Node(id=1, campaign="c", parent_id=None, status=NodeStatus.ADMITTED, commit="x").eval_s_per_draw is None
