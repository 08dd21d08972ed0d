"""Whole campaigns against a scripted OpenAI-protocol server over real HTTP, with the real archive
(SQLite + git), the real circle-packing evaluator and the default sandbox."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from archive import Archive, NodeStatus
from orchestrator.campaign import Campaign, CampaignError
from orchestrator.cli import cli
from orchestrator.cli.archive_cmds import _summary
from evaluators.circle_packing.evaluator import CirclePackingEvaluator
from orchestrator.config import load_config
from orchestrator.report import build_report, render as render_report, yield_words
from orchestrator.fm.client import FMClient
from orchestrator.mutation.prompts import NEW_CONVERSATION
from tests.campaign_helpers import (
    CHEAT, CRASH, GRID, LOOP, NAN, OVERLAP, SEED_CODE, SYNTAX, answer_once, archive_nodes, rewrite, wait_for, write_config,
)
from tests.fm_server import Delay, Garbage, Reply, ScriptedFMServer, Stall, Status


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("DGM_TEST_KEY", "sk-test-secret-123")


def run_campaign(tmp_path, server, **kw):
    cfg = load_config(write_config(tmp_path, server.base_url, **kw))
    with FMClient.from_config(cfg.fm) as fm:
        return Campaign(cfg, tmp_path / "run", fm).run()


def by_response(archive: Archive) -> dict[str, list]:
    out: dict[str, list] = {}
    for n in archive.nodes():
        out.setdefault(n.response, []).append(n)
    return out


def test_campaign_records_every_kind_of_child(tmp_path):
    answers = {
        "good": rewrite(GRID, "Use a 5x5 grid."),
        "crash": rewrite(CRASH),
        "loop": rewrite(LOOP),
        "nan": rewrite(NAN),
        "overlap": rewrite(OVERLAP),
        "cheat": rewrite(CHEAT),
        "syntax": rewrite(SYNTAX),
        "chatter": "I am not sure what to change here.",
    }
    script = [Reply(a, prompt_tokens=100, completion_tokens=50) for a in answers.values()]
    with ScriptedFMServer(script, default=Reply(rewrite(GRID, "Use a 5x5 grid."))) as srv:
        stats = run_campaign(tmp_path, srv, iterations=len(answers))
        requests = list(srv.requests)
    assert stats.started == len(answers)
    assert "reached 8 iterations" in stats.stop_reason

    with Archive.open(tmp_path / "run", readonly=True) as archive:
        assert archive.check() == []
        nodes = archive.nodes()
        assert len(nodes) == len(answers) + 1
        seed = archive.get(0)
        assert seed.status == NodeStatus.ADMITTED and seed.score == pytest.approx(1.8365015544609251 / 2.635)
        got = by_response(archive)
        status = {k: got[a][0].status for k, a in answers.items()}
        error = {k: got[a][0].error for k, a in answers.items()}

        assert status["good"] == NodeStatus.ADMITTED
        good = got[answers["good"]][0]
        assert good.score == pytest.approx(2.54 / 2.635)
        assert good.public_metrics == {"sum_radii": pytest.approx(2.54), "valid": 1.0}
        assert "max_violation" in good.private_metrics
        assert good.prompt_tokens == 100 and good.completion_tokens == 50
        assert good.cost_usd == pytest.approx((100 * 1.0 + 50 * 2.0) / 1e6)
        assert "+    xs = (np.arange(5) + 0.5) / 5" in archive.diff(good.id)
        assert [n.id for n in archive.lineage(good.id)] == [0, good.id]

        assert status["crash"] == NodeStatus.INVALID and "boom in candidate" in error["crash"]
        assert status["loop"] == NodeStatus.INVALID and "wall-clock" in error["loop"]
        assert status["nan"] == NodeStatus.INVALID and "NaN" in error["nan"]
        assert status["overlap"] == NodeStatus.INVALID and "overlap" in error["overlap"]
        assert status["cheat"] == NodeStatus.INVALID and "out of the square" in error["cheat"]
        assert status["syntax"] == NodeStatus.INVALID and "does not compile" in error["syntax"]
        assert status["chatter"] == NodeStatus.INVALID and "no code block" in error["chatter"]
        # the invalid answer is kept verbatim
        assert got[answers["chatter"]][0].response == answers["chatter"]
        # every node is a commit whose git parent is its parent's commit (check() verified it)

    # invalid nodes are never parents: only the seed and the admitted grid appear as parents
    parents = {n.parent_id for n in nodes if n.parent_id is not None}
    assert parents <= {0, good.id}
    # every call got its own sampling seed, temperatures vary within [0.5, 1.0]
    seeds = [r["seed"] for r in requests]
    assert len(set(seeds)) == len(seeds)
    assert all(0.5 <= r["temperature"] <= 1.0 for r in requests)
    # private metrics never reach a prompt; the API key never reaches the archive
    for r in requests:
        text = json.dumps(r["messages"])
        assert "max_violation" not in text
    db = (tmp_path / "run" / "archive.db").read_bytes()
    assert b"sk-test-secret-123" not in db


def test_unchanged_proposal_is_invalid_without_evaluation(tmp_path):
    def echo_parent(request):  # answers with exactly the code shown in the prompt
        prompt = request["messages"][-1]["content"]
        code = prompt.split("```python\n", 1)[1].split("\n```", 1)[0]
        return Reply(rewrite(code + "\n"))

    with ScriptedFMServer([], responder=echo_parent) as srv:
        run_campaign(tmp_path, srv, iterations=2)
    with Archive.open(tmp_path / "run", readonly=True) as archive:
        children = archive.nodes()[1:]
        assert [n.status for n in children] == [NodeStatus.INVALID] * 2
        assert all("identical to the parent" in n.error and n.stages == [] for n in children)
        assert archive.check() == []


def test_failures_are_fed_back_to_the_same_lineage(tmp_path):
    script = [Reply(rewrite(CRASH)), Reply(rewrite(OVERLAP))]
    # later answers wait until the two failures have been evaluated, so the last prompts show them
    evaluated_failures = answer_once(
        tmp_path / "run", lambda nodes: sum(n.status == NodeStatus.INVALID and bool(n.stages) for n in nodes) >= 2,
        Reply("no idea"), "the two failures to be evaluated",
    )
    with ScriptedFMServer(script, responder=evaluated_failures) as srv:
        run_campaign(tmp_path, srv, iterations=6, operators="{ rewrite = 1.0 }\nfailures_shown = 3", timeout_s=120,
                     extra="[selection]\nmethod = \"best\"\n")
        prompts = [r["messages"][-1]["content"] for r in srv.requests]
    last = prompts[-1]
    assert "FAILED" in last
    assert "boom in candidate" in last
    assert "overlap" in last
    assert last.count("no code block found") == 1  # the same error is shown once
    # static part first: every prompt starts with the same task text
    assert all(p.startswith("## Task\nPack 26 circles") for p in prompts)


def test_fm_timeouts_errors_and_garbage_become_failed_nodes(tmp_path):
    script = [
        Delay(5, then=Reply(rewrite(GRID))),
        Status(500, {"error": "overloaded"}),
        Garbage(b"{not json"),
        Reply(rewrite(GRID)),
    ]
    with ScriptedFMServer(script, default=Reply(rewrite(GRID))) as srv:
        stats = run_campaign(tmp_path, srv, iterations=4, timeout_s=1, workers=1)
    with Archive.open(tmp_path / "run", readonly=True) as archive:
        assert archive.check() == []
        children = [n for n in archive.nodes() if n.id != 0]
    kinds = sorted(n.error.split("(")[1].split(")")[0] for n in children if n.status == NodeStatus.FAILED)
    assert kinds == ["garbage", "http", "timeout"]
    assert sum(n.status == NodeStatus.ADMITTED for n in children) == 1
    assert stats.started == 4


def test_an_answer_that_stalls_mid_body_is_a_timeout_and_the_campaign_resumes(tmp_path):
    # the server sends the headers and 40 bytes of a good answer, then nothing: the read deadline
    # ([fm] timeout_s) ends the attempt, which is recorded; the next answer is admitted
    with ScriptedFMServer([Stall(Reply(rewrite(GRID)))], default=Reply(rewrite(GRID))) as srv:
        stats = run_campaign(tmp_path, srv, iterations=2, timeout_s=1, workers=1)
        assert stats.stop_reason == "reached 2 iterations"
        with Archive.open(tmp_path / "run", readonly=True) as archive:
            children = archive.nodes()[1:]
            assert archive.check() == []
        failed = [n for n in children if n.status == NodeStatus.FAILED]
        assert len(failed) == 1 and "FM call failed (timeout)" in failed[0].error
        assert [n.status for n in children if n is not failed[0]] == [NodeStatus.ADMITTED]
        run_campaign(tmp_path, srv, iterations=3, timeout_s=1, workers=1)  # and it resumes past it
    with Archive.open(tmp_path / "run", readonly=True) as archive:
        assert archive.count() == 4 and archive.check() == []


UNDEFINED = GRID.replace("radii.append(0.04)", "radii.append(small_radius)")


def test_an_unusable_answer_goes_back_with_the_reason_and_the_repair_is_the_child(tmp_path):
    script = [Reply(rewrite(UNDEFINED), 100, 30), Reply(rewrite(GRID, "Fixed."), 200, 40)]
    with ScriptedFMServer(script, default=Reply("no idea", 10, 5)) as srv:
        run_campaign(tmp_path, srv, iterations=1, workers=1, repairs=1)
        requests = srv.requests
    assert len(requests) == 2
    first, repair = requests
    assert repair["messages"][:-2] == first["messages"]  # the same conversation, continued
    assert repair["messages"][-2] == {"role": "assistant", "content": rewrite(UNDEFINED)}
    assert repair["messages"][-1]["content"].startswith(
        "Your answer could not be used: packing.py uses a name that is defined nowhere: 'small_radius' (line ")
    with Archive.open(tmp_path / "run", readonly=True) as archive:
        child = archive.get(1)
        assert child.status == NodeStatus.ADMITTED and child.response == rewrite(GRID, "Fixed.")
        assert "Your answer could not be used" in child.prompt  # the whole conversation is kept
        assert child.timings["fm_calls"] == 2.0 and (child.prompt_tokens, child.completion_tokens) == (300, 70)
        assert _summary(archive)["fm_calls"] == 2


def one_answer_child(tmp_path, answer: str, **kw):
    """Node 1 of a one-step campaign whose model gave ``answer`` and was called exactly once."""
    with ScriptedFMServer([Reply(answer)], default=Reply(rewrite(GRID))) as srv:
        run_campaign(tmp_path, srv, iterations=1, workers=1, **kw)
        assert len(srv.requests) == 1
    with Archive.open(tmp_path / "run", readonly=True) as archive:
        return archive.get(1)


def test_without_repairs_the_unusable_answer_is_the_invalid_child(tmp_path):
    child = one_answer_child(tmp_path, rewrite(UNDEFINED), repairs=0)
    assert child.status == NodeStatus.INVALID and "defined nowhere: 'small_radius'" in child.error


def test_the_live_line_of_an_invalid_proposal_marks_a_reason_it_cuts(tmp_path):
    long_name = "radius_of_the_small_circles_in_the_corners_of_the_square_" * 2
    events: list[str] = []
    with ScriptedFMServer([Reply(rewrite(UNDEFINED.replace("small_radius", long_name)))], default=Reply(rewrite(GRID))) as srv:
        cfg = load_config(write_config(tmp_path, srv.base_url, iterations=1, workers=1, repairs=0))
        with FMClient.from_config(cfg.fm) as fm:
            Campaign(cfg, tmp_path / "run", fm, on_update=lambda s: events.append(s.last_event)).run()
    with Archive.open(tmp_path / "run", readonly=True) as archive:
        error = archive.get(1).error
    assert long_name in error and len(error) > 90
    (line,) = {e for e in events if e.startswith("node 1: invalid proposal (")}  # repeated by later updates
    assert line.endswith(" …)") and error.startswith(line[len("node 1: invalid proposal ("):-len(" …)")])


def test_a_program_that_crashes_goes_to_a_new_conversation_with_its_error_and_the_fix_edits_it(tmp_path):
    # the first answer compiles but crashes when run; the check (the evaluation's first stage, in
    # the sandbox) finds it; a new conversation shows the crashed program (not the parent, not the
    # first answer) with its traceback; the fix is a SEARCH/REPLACE on that program, and is the child
    crashed = GRID.replace("radii.append(0.04)", "radii.append(0.04)\n    raise RuntimeError('boom in candidate')")
    fix = "Remove the raise.\n<<<<<<< SEARCH\n    raise RuntimeError('boom in candidate')\n=======\n>>>>>>> REPLACE\n"
    script = [Reply(rewrite(crashed), 100, 30), Reply(fix, 200, 40)]
    with ScriptedFMServer(script, default=Reply("no idea", 10, 5)) as srv:
        run_campaign(tmp_path, srv, iterations=1, workers=1, run_repairs=1, operators="{ diff = 1.0 }")
        requests = srv.requests
    assert len(requests) == 2
    first, repair = requests
    assert [m["role"] for m in repair["messages"]] == ["system", "user"]  # nothing of the first answer to copy
    said = repair["messages"][-1]["content"]
    assert said.startswith("## Task\n") and first["messages"][-1]["content"].split("\n\n## ")[0] in said
    shown = said.split("## A program that crashes: packing.py\n```python\n")[1].split("\n```\n")[0]
    assert "radii.append(0.04)\n    raise RuntimeError('boom in candidate')" in shown  # the answer applied
    assert ": RuntimeError: boom in candidate\nIt is raised in `construct_packing`" in said  # what broke first, where,
    assert "\nThe whole error:\n" in said  # then the traceback
    assert "Traceback (most recent call last)" in said
    assert said.rstrip().endswith("(the whole packing.py if the fix spans it).")
    # the request names the function the traceback says the error is raised in, and its line
    line = shown.splitlines().index("    raise RuntimeError('boom in candidate')") + 1
    assert f"It is raised in `construct_packing`, line {line} of packing.py: `raise RuntimeError('boom in candidate')`." in said
    assert "definition of `construct_packing` (and of any other function you change)" in said
    assert repair["temperature"] == pytest.approx(min(1.0, first["temperature"] + 0.15))  # a repeat is less likely
    with Archive.open(tmp_path / "run", readonly=True) as archive:
        child = archive.get(1)
        assert child.status == NodeStatus.ADMITTED and child.response == fix
        assert child.prompt.count("[system]") == 2 and "## A program that crashes" in child.prompt  # both kept
        # and a reader sees where the fix conversation starts
        first, second = child.prompt.split(NEW_CONVERSATION)
        assert "[system]" in first and second.lstrip().startswith("[system]") and "## A program that crashes" in second
        assert "boom" not in archive.read_files(child.id)["packing.py"].decode()
        assert child.timings["checks"] == 1 and child.timings["run_repairs"] == 1
        assert child.timings["fm_calls"] == 2.0 and (child.prompt_tokens, child.completion_tokens) == (300, 70)
        report = build_report(archive.nodes())
    assert report["run_repairs"] == {"checked": 1, "sent_back": 1, "valid_after": 1}
    assert "1 crashed and went back to the model, 1 of those became valid children" in render_report(report)


def test_each_child_records_the_idea_its_prompt_carried_and_the_report_counts_its_yield(tmp_path):
    idea = "Place the circles on a grid of rows."
    with ScriptedFMServer([], default=Reply(rewrite(GRID))) as srv:
        run_campaign(tmp_path, srv, iterations=2, workers=1,
                     mutation=f'ideas = ["{idea}"]\nidea_share = 1.0')
    with Archive.open(tmp_path / "run", readonly=True) as archive:
        nodes = archive.nodes()
    children = [n for n in nodes if n.parent_id is not None]
    ideas = {*CirclePackingEvaluator.ideas, idea}
    assert len(children) == 2 and all(n.idea in ideas and n.idea in n.prompt for n in children)
    report = build_report(nodes)
    assert sum(y["attempts"] for y in report["ideas"].values()) == 2
    assert sum(y["valid"] for y in report["ideas"].values()) == sum(n.status == NodeStatus.ADMITTED for n in children)
    text = render_report(report)
    assert "ideas (the prompts that carried each):" in text
    for idea_text, y in report["ideas"].items():  # "1 attempt", "2 attempts"
        assert f"  {yield_words(y)}: {' '.join(idea_text.split()[:5])}" in text  # long ideas are cut short
        assert yield_words(y).startswith(f"{y['attempts']} attempt{'' if y['attempts'] == 1 else 's'}, ")
    status = CliRunner().invoke(cli, ["status", str(tmp_path / "run")]).output  # dgm status lists them too
    assert all(f"{yield_words(y)}: {' '.join(i.split()[:5])}" in status for i, y in report["ideas"].items())


def test_a_prompt_without_an_idea_credits_none(tmp_path):
    child = one_answer_child(tmp_path, rewrite(GRID), mutation="idea_share = 0.0")
    assert child.idea == "" and "An idea you may try" not in child.prompt
    with Archive.open(tmp_path / "run", readonly=True) as archive:
        assert build_report(archive.nodes())["ideas"] == {}


def test_a_program_that_runs_is_checked_once_and_is_the_child(tmp_path):
    child = one_answer_child(tmp_path, rewrite(GRID), run_repairs=1)
    assert child.status == NodeStatus.ADMITTED and child.timings["checks"] == 1 and "run_repairs" not in child.timings


def test_without_run_repairs_a_crashing_program_is_the_invalid_child_and_no_check_runs(tmp_path):
    child = one_answer_child(tmp_path, rewrite(CRASH), run_repairs=0)
    assert child.status == NodeStatus.INVALID and "boom in candidate" in child.error and "checks" not in child.timings


def test_repairs_never_take_the_calls_past_the_budget(tmp_path):
    # every answer is unusable, so each attempt would make two calls; the budget allows 5
    with ScriptedFMServer([], default=Reply(rewrite(UNDEFINED), 10, 10)) as srv:
        stats = run_campaign(tmp_path, srv, iterations=10, repairs=1, extra="[budget]\nmax_fm_calls = 5\n")
        calls = len(srv.requests)
    assert calls == 5 and "max_fm_calls = 5" in stats.stop_reason
    with Archive.open(tmp_path / "run", readonly=True) as archive:
        assert _summary(archive)["fm_calls"] == 5


def test_budget_stops_new_proposals_and_says_why(tmp_path):
    with ScriptedFMServer([], default=Reply(rewrite(GRID), prompt_tokens=10, completion_tokens=10)) as srv:
        stats = run_campaign(tmp_path, srv, iterations=10, extra="[budget]\nmax_fm_calls = 3\n")
        calls = len(srv.requests)
    assert "max_fm_calls = 3" in stats.stop_reason
    assert calls == 3
    with Archive.open(tmp_path / "run", readonly=True) as archive:
        assert archive.count() == 4


def test_resume_continues_to_the_target_without_duplicates(tmp_path):
    with ScriptedFMServer([], default=Reply(rewrite(GRID))) as srv:
        run_campaign(tmp_path, srv, iterations=3)
        stats = run_campaign(tmp_path, srv, iterations=5)
        assert len(srv.requests) == 5
    assert stats.started == 5
    with Archive.open(tmp_path / "run", readonly=True) as archive:
        nodes = archive.nodes()
        assert [n.id for n in nodes] == [0, 1, 2, 3, 4, 5]
        assert sum(n.parent_id is None for n in nodes) == 1  # the seed is not re-added
        assert archive.check() == []


def test_invalid_seed_stops_the_campaign_with_the_reason(tmp_path):
    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "agent.toml").write_text('[agent]\nentry = "packing.py"\neditable = ["packing.py"]\n')
    (seed / "packing.py").write_text(CRASH)
    with ScriptedFMServer([], default=Reply("x")) as srv:
        cfg_path = write_config(tmp_path, srv.base_url, iterations=2)
        cfg_path.write_text(cfg_path.read_text().replace('name = "test"', 'name = "test"\nseed_agent = "seed"'))
        cfg = load_config(cfg_path)
        with FMClient.from_config(cfg.fm) as fm, pytest.raises(CampaignError, match="(?s)seed agent is invalid.*boom in candidate"):
            Campaign(cfg, tmp_path / "run", fm).run()
        assert srv.requests == []
    with Archive.open(tmp_path / "run", readonly=True) as archive:
        assert archive.get(0).status == NodeStatus.INVALID  # recorded, not lost


def test_ideas_reach_prompts_at_the_configured_share(tmp_path):
    # 16 draws from 2 campaign ideas among 9: every one of them missing the campaign's is (7/9)^16 < 2 %
    (tmp_path / "all").mkdir(), (tmp_path / "none").mkdir()
    ideas = 'ideas = ["IDEA-ONE: rotate a ring", "IDEA-TWO: use a grid"]\nidea_share = 1.0'
    with ScriptedFMServer([], default=Reply("no idea")) as srv:
        run_campaign(tmp_path / "all", srv, iterations=16, operators="{ rewrite = 1.0 }\n" + ideas)
        prompts = [r["messages"][-1]["content"] for r in srv.requests]
    assert all("## An idea you may try\n" in p for p in prompts)
    shown = {p.split("## An idea you may try\n")[1].split("\n")[0] for p in prompts}
    assert shown <= {"IDEA-ONE: rotate a ring", "IDEA-TWO: use a grid", *CirclePackingEvaluator.ideas}
    assert shown & {"IDEA-ONE: rotate a ring", "IDEA-TWO: use a grid"}  # the campaign's own are drawn too
    with ScriptedFMServer([], default=Reply("no idea")) as srv:
        run_campaign(tmp_path / "none", srv, iterations=4, operators="{ rewrite = 1.0 }\n" + ideas.replace("1.0", "0.0"))
        assert not any("An idea" in r["messages"][-1]["content"] for r in srv.requests)


def test_fit_climbs_from_the_best_program_and_never_calls_the_model(tmp_path):
    # one model answer (a smaller inner ring, below the seed), then fit alone: every gain comes
    # from CMA-ES over the program's constants, each fit starting from the best program so far
    inner = "centers[1 + i] = [0.5 + 0.3 * np.cos(angle), 0.5 + 0.3 * np.sin(angle)]"
    smaller = inner.replace("0.3 *", "0.25 *")
    script = [Reply(f"Shrink the inner ring.\n<<<<<<< SEARCH\n{inner}\n=======\n{smaller}\n>>>>>>> REPLACE", 100, 30)]
    with ScriptedFMServer(script, default=Reply("no idea", 100, 5)) as srv:
        run_campaign(tmp_path, srv, iterations=5, workers=2, operators="{ diff = 0.2, fit = 0.8 }",
                     extra="[mutation.fit]\nevaluations = 8\nmax_evaluations = 8\n", timeout_s=120)
        fm_calls = len(srv.requests)
    with Archive.open(tmp_path / "run", readonly=True) as archive:
        nodes = archive.nodes()
        seed = nodes[0]
        fitted = [n for n in nodes if n.operator == "fit"]
        assert fitted and fm_calls == len(nodes) - 1 - len(fitted)  # fit never calls the model
        for n in fitted:
            assert n.fm_model == "" and n.prompt_tokens == n.completion_tokens == 0
            trials = json.loads(n.response)["trials"]
            assert len(trials) == 9 and trials[-1]["parent"]  # 8 trials, then the parent's own point
            # a hill climb from the best program ([selection] per_operator), never from the weaker diff child
            assert archive.get(n.parent_id).score >= seed.score
            if n.status == NodeStatus.ADMITTED:
                code, before = (archive.read_files(i)["packing.py"].decode() for i in (n.id, n.parent_id))
                assert code != before and n.score == pytest.approx(max(t["score"] for t in trials[:-1] if t["score"]))
        assert max(n.score or 0 for n in nodes) > seed.score  # the seed's own constants are beaten
        assert archive.check() == []
        summary = _summary(archive)  # what `dgm status` shows
        assert summary["fm_calls"] == fm_calls
        assert summary["operators"]["fit"]["attempts"] == len(fitted)


def test_a_program_the_archive_holds_is_not_evaluated_again(tmp_path):
    with ScriptedFMServer([Reply(rewrite(GRID), 100, 30), Reply(rewrite(GRID, "Same grid."), 100, 30)]) as srv:
        run_campaign(tmp_path, srv, iterations=2, workers=1)  # both proposals start from the seed
    with Archive.open(tmp_path / "run", readonly=True) as archive:
        first, second = sorted(archive.nodes()[1:], key=lambda n: bool(n.stages), reverse=True)
    assert first.status == NodeStatus.ADMITTED and first.stages
    assert second.status == NodeStatus.INVALID and second.stages == []  # no evaluation spent
    assert second.error == f"the proposal is the same program as node {first.id} (up to comments and layout), already evaluated"
    assert second.response  # the answer is kept
    # a resume remembers what was evaluated: the grid (the best, so the parent) rewritten back into the seed
    with ScriptedFMServer([Reply(rewrite(SEED_CODE, "Back to rings."), 100, 30)]) as srv:
        run_campaign(tmp_path, srv, iterations=3, workers=1, extra='[selection]\nmethod = "best"\n')
    with Archive.open(tmp_path / "run", readonly=True) as archive:
        third = archive.get(3)
    assert third.parent_id == first.id and third.status == NodeStatus.INVALID
    assert third.error == "the proposal is the same program as node 0 (up to comments and layout), already evaluated"


def test_an_answer_that_repeats_an_evaluated_program_goes_back_to_the_model(tmp_path):
    """Repeating a program the archive holds was a wasted attempt (14 of 260 in eight efficacy
    campaigns); with repairs it is an unusable answer like the others, and the reply is the child."""
    other = GRID.replace("radii.append(0.04)", "radii.append(0.039)")
    assert other != GRID

    def respond(request: dict):
        if request["messages"][-1]["content"].startswith("Your answer could not be used"):
            return Reply(rewrite(other, "Smaller circles."), 100, 30)
        # the grid again, once the first attempt's grid is in the archive
        wait_for(lambda: len(nodes := archive_nodes(tmp_path / "run")) > 1 and nodes[1].status.finished, "node 1")
        return Reply(rewrite(GRID, "Same grid."), 100, 30)

    with ScriptedFMServer([Reply(rewrite(GRID), 100, 30)], responder=respond) as srv:
        run_campaign(tmp_path, srv, iterations=2, workers=1, repairs=1, timeout_s=60)
        assert len(srv.requests) == 3
    with Archive.open(tmp_path / "run", readonly=True) as archive:
        first, second = archive.get(1), archive.get(2)
        assert first.status == NodeStatus.ADMITTED and "Same grid." not in first.response
        assert second.status == NodeStatus.ADMITTED and second.response == rewrite(other, "Smaller circles.")
        assert "Your answer could not be used: the proposal is the same program as node 1 " in second.prompt
        assert "radii.append(0.039)" in archive.read_files(2)["packing.py"].decode()
        assert second.timings["fm_calls"] == 2.0


def test_the_retired_refine_operator_is_refused_with_its_replacement(tmp_path):
    cfg = load_config(write_config(tmp_path, "http://127.0.0.1:9/v1", iterations=3, operators="{ refine = 1.0, diff = 0 }"))
    with pytest.raises(CampaignError, match=r"\[mutation\].operators.refine = 'refine': this operator was replaced by fit "):
        Campaign(cfg, tmp_path / "run", fm=None)


def test_a_campaign_selects_parents_by_clade_metaproductivity(tmp_path):
    from tests.campaign_helpers import distinct_grids

    with ScriptedFMServer([], responder=distinct_grids()) as srv:
        stats = run_campaign(tmp_path, srv, iterations=5, extra='[selection]\nmethod = "cmp"\n')
    assert stats.stop_reason == "reached 5 iterations"
    with Archive.open(tmp_path / "run", readonly=True) as archive:
        nodes = archive.nodes()
        assert len(nodes) == 6 and all(archive.get(n.parent_id).status == NodeStatus.ADMITTED for n in nodes[1:])


DISK_HOG = SEED_CODE.replace(
    "def construct_packing():",
    "def construct_packing():\n    for i in range(10):  # 8 MiB files, under the per-file cap\n"
    "        with open(f'hog{i}.bin', 'wb') as f:\n            f.write(b'x' * (8 << 20))\n",
    1,
)
DEEP_TREE = SEED_CODE.replace(
    "def construct_packing():",
    "def construct_packing():\n    import os\n    here = os.getcwd()\n    for _ in range(10000):\n"
    "        os.mkdir('d')\n        os.chdir('d')\n    os.chdir(here)\n",
    1,
).replace("0.3 *", "0.31 *")


def test_a_disk_hog_is_invalid_with_the_quota_and_a_deep_tree_is_cleaned_up(tmp_path):
    from sandboxes import scratch

    before = set(scratch.root().iterdir())
    with ScriptedFMServer([Reply(rewrite(DISK_HOG)), Reply(rewrite(DEEP_TREE))]) as srv:
        # a generous evaluation deadline: 10,000 mkdirs on a loaded 2-core machine take seconds
        stats = run_campaign(tmp_path, srv, iterations=2, workers=1, eval_timeout_s=60,
                             extra="[sandbox]\ndisk = 60000000\ninodes = 20000\n")
    assert stats.stop_reason == "reached 2 iterations"
    with Archive.open(tmp_path / "run", readonly=True) as archive:
        seed, *children = archive.nodes()
    # two proposals are in flight at once: which answer became node 1 is not fixed, so by content
    hog, deep = sorted(children, key=lambda n: "hog" not in n.response)
    assert hog.status == NodeStatus.INVALID and "disk quota" in hog.error
    assert deep.status in (NodeStatus.ADMITTED, NodeStatus.REJECTED), deep.error  # its tree is removed, not fatal
    left = set(scratch.root().iterdir()) - before
    assert not left, f"left on the host: {sorted(p.name for p in left)}"  # no stage directory is left
