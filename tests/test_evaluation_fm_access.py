"""Evaluations that use the FM: an evaluator with ``fm_access`` gets a proxy socket for its
candidate, within the campaign's per-evaluation budget, and the calls are the node's. Real sandbox,
real proxy, scripted model over HTTP."""

from __future__ import annotations

import json

from evaluators.api import CandidateInvalid, Evaluator, MetricSpec, Stage, StageOutcome
from orchestrator import executor
from orchestrator.fm.client import FMClient
from sandboxes.base import Limits
from tests.fm_server import Reply, ScriptedFMServer

ASK = '''import http.client, json, os, socket
class C(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX); self.sock.connect(os.environ["DGM_FM_SOCKET"])
answers = []
for i in range({n}):
    c = C("localhost"); c.request("POST", "/v1/chat/completions", json.dumps({{"messages": [{{"role": "user", "content": "ping"}}]}}))
    r = c.getresponse(); body = json.loads(r.read())
    answers.append(body["choices"][0]["message"]["content"] if r.status == 200 else f"refused {{r.status}}")
open("out.json", "w").write(json.dumps(answers))
'''


class Pinger(Evaluator):
    """The candidate asks the model ``calls`` times; the score is the share of answers that are 'pong'."""

    name = "pinger"
    task = "answer pong"
    stages = [Stage("smoke", Limits(wall_s=30, cpu_s=30, memory_mb=512))]
    metrics = [MetricSpec("pongs", 0, 100)]
    fm_access = True
    calls = 1

    def seed_agent(self):
        raise NotImplementedError

    def run_stage(self, stage, run):
        (run.workdir / "ask.py").write_text(ASK.format(n=self.calls))
        result = run.execute([run.python, "-I", "ask.py"], stage.limits)
        if not result.ok:
            raise CandidateInvalid(f"{result.describe()}: {result.stderr[-300:]}")
        answers = json.loads(run.read_artifact("out.json"))
        pongs = sum(a == "pong" for a in answers)
        return StageOutcome(pongs / len(answers), {"pongs": pongs}, feedback=", ".join(answers))


class Blind(Pinger):
    name = "blind"
    fm_access = False


def job(name: str, **kw) -> executor.EvalJob:
    return executor.EvalJob(7, {"agent.toml": b"[agent]\nentry='a.py'\neditable=['a.py']\n", "a.py": b""}, name, **kw)


def test_a_candidate_with_fm_access_calls_the_model_and_the_calls_are_counted():
    with ScriptedFMServer([], default=Reply("pong", 30, 2)) as srv, FMClient(srv.base_url, "m", api_key="k") as fm:
        env = executor.EvaluationEnvironment(fm=fm, evaluators={"pinger": Pinger()})
        result = executor.run_job(job("pinger", fm_calls=5, fm_tokens=1000), env)
        assert len(srv.requests) == 1
    assert result.valid and result.score == 1.0, result.error
    assert result.fm_usage["calls"] == 1 and result.fm_usage["prompt_tokens"] == 30
    assert result.fm_usage["completion_tokens"] == 2 and result.fm_usage["refused"] == 0


def test_calls_past_the_evaluations_budget_are_refused():
    many = Pinger()
    many.calls = 4
    with ScriptedFMServer([], default=Reply("pong", 30, 2)) as srv, FMClient(srv.base_url, "m", api_key="k") as fm:
        env = executor.EvaluationEnvironment(fm=fm, evaluators={"pinger": many})
        result = executor.run_job(job("pinger", fm_calls=2, fm_tokens=1000), env)
        assert len(srv.requests) == 2
    assert result.valid and result.score == 0.5
    assert "refused 429" in result.feedback and result.fm_usage["refused"] == 2


def test_an_evaluator_without_fm_access_gives_its_candidate_no_socket():
    with ScriptedFMServer([], default=Reply("pong")) as srv, FMClient(srv.base_url, "m", api_key="k") as fm:
        env = executor.EvaluationEnvironment(fm=fm, evaluators={"blind": Blind()})
        result = executor.run_job(job("blind", fm_calls=5, fm_tokens=1000), env)
        assert srv.requests == []
    assert not result.valid and "DGM_FM_SOCKET" in result.error and result.fm_usage == {}
