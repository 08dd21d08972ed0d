"""The `self` operator: the parent's own improver, in a sandbox, writes its child through the FM
proxy. Real sandbox (bwrap), real proxy on a Unix socket, scripted model over real HTTP."""

from __future__ import annotations

import ast
import json
import re
import shutil
from pathlib import Path

import pytest

from archive import Archive, NodeStatus
from evaluators.circle_packing.evaluator import HERE as CP_DIR
from orchestrator.campaign import Campaign
from orchestrator.config import ImproverLimits, load_config
from orchestrator.context import public_record
from orchestrator.fm.client import FMClient
from orchestrator.mutation.operators import Sampling
from orchestrator.mutation.prompts import ProposalContext
from orchestrator.mutation.self_improve import SelfImproveOperator
from tests.campaign_helpers import write_config
from tests.fm_server import Reply, ScriptedFMServer

SECRET = "sk-test-secret-self-improve-42"
TEMPLATE_SEED = Path(__file__).resolve().parents[1] / "orchestrator" / "templates" / "plugin" / "seed"
INNER = "centers[1 + i] = [0.5 + 0.3 * np.cos(angle), 0.5 + 0.3 * np.sin(angle)]"


@pytest.fixture(autouse=True)
def key(monkeypatch):
    monkeypatch.setenv("DGM_TEST_KEY", SECRET)


def seed_tree(improver: str | None = None) -> dict[str, bytes]:
    tree = {p.name: p.read_bytes() for p in (CP_DIR / "seed").iterdir() if p.is_file()}
    if improver is not None:
        tree["improve.py"] = improver.encode()
    return tree


def ctx_for(tree: dict[str, bytes], parent_id: int = 0) -> ProposalContext:
    return ProposalContext(task="Pack circles.", parent_id=parent_id, files={"packing.py": tree["packing.py"].decode()},
                           editable=["packing.py"], target="packing.py", tree=tree,
                           record={"task": "Pack circles.", "score": 0.7, "stages": []})


def run_self(srv, tree, limits=None, seed=1, parent_id=0):
    op = SelfImproveOperator(limits or ImproverLimits(wall_s=60, cpu_s=60))
    with FMClient(srv.base_url, "scripted", api_key=SECRET, timeout_s=30, max_retries=0) as fm:
        return op.propose(ctx_for(tree, parent_id), fm, Sampling(0.7, seed, 400))


def test_every_built_in_seed_carries_the_same_seed_improver():
    roots = [*Path(CP_DIR).parent.glob("*/seed"), TEMPLATE_SEED]
    assert len(roots) == 7
    for root in roots:
        assert "self_improve = \"improve.py\"" in (root / "agent.toml").read_text(), root
        for name in ("improve.py", "improver_kit.py"):
            assert (root / name).read_bytes() == (TEMPLATE_SEED / name).read_bytes(), root / name


# The test's own improver, to check what the machinery does with any improver: it asks the model
# which file to write and writes the answer there. Its TAG is in every request it makes.
TAGGED = '''import os, pathlib, improver_kit as kit
TAG = "v1"
agent = pathlib.Path(os.environ["DGM_AGENT"])
answer = kit.ask([{"role": "user", "content": "improver " + TAG + ": " + pathlib.Path(os.environ["DGM_RECORD"]).read_text()}])
path, _, text = answer.partition("\\n")
(agent / path).write_text(text)
print("wrote", path)
'''


def tagged_responder(request):
    prompt = request["messages"][-1]["content"]
    if prompt.startswith("improver v1"):  # rewrite the improver itself: v1 → v2
        return Reply("improve.py\n" + TAGGED.replace('TAG = "v1"', 'TAG = "v2"'), 50, 40)
    code = seed_tree()["packing.py"].decode().replace(INNER, INNER.replace("0.3 *", "0.31 *"))
    return Reply("packing.py\n" + code, 50, 40)


def test_a_child_whose_improver_was_edited_makes_its_children_differently():
    with ScriptedFMServer([], responder=tagged_responder) as srv:
        first = run_self(srv, seed_tree(TAGGED))
        assert first.valid, first.error
        assert set(first.files) == {"improve.py"} and 'TAG = "v2"' in first.files["improve.py"]
        second = run_self(srv, first.tree, parent_id=1)  # the child's own (edited) improver runs now
        assert second.valid, second.error
        prompts = [r["messages"][-1]["content"] for r in srv.requests]
    assert prompts[0].startswith("improver v1") and prompts[1].startswith("improver v2")
    assert set(second.files) == {"packing.py"} and "0.31 *" in second.files["packing.py"]
    assert second.tree["improve.py"] == first.tree["improve.py"]  # the improvement is inherited
    calls = json.loads(second.prompt)
    assert len(calls) == 1 and calls[0]["status"] == 200 and calls[0]["tokens"] == 90
    assert second.completion.calls == 1 and second.completion.prompt_tokens == 50


SNOOP = '''import os, pathlib
agent = pathlib.Path(os.environ["DGM_AGENT"])
seen = [repr(dict(os.environ))]
for p in pathlib.Path("/proc").glob("[0-9]*/environ"):
    try:
        seen.append(p.read_bytes().decode(errors="replace"))
    except OSError:
        pass
for p in ("/proc/1/cmdline", "/etc/environment", os.path.expanduser("~/.bashrc")):
    try:
        seen.append(pathlib.Path(p).read_text(errors="replace"))
    except OSError:
        pass
(agent / "seen.txt").write_text("\\n".join(seen))
src = (agent / "packing.py").read_text()
(agent / "packing.py").write_text(src.replace("0.3 *", "0.29 *"))
'''


def test_no_secret_is_readable_inside_the_improver_sandbox():
    with ScriptedFMServer([], default=Reply("unused")) as srv:
        p = run_self(srv, seed_tree(SNOOP))
    assert p.valid, p.error
    seen = p.tree["seen.txt"].decode()
    assert "DGM_FM_SOCKET" in seen  # the snoop did run and read its environment
    assert SECRET not in seen and "DGM_TEST_KEY" not in seen


def test_a_runaway_improver_is_stopped_and_recorded():
    loop = "while True:\n    pass\n"
    with ScriptedFMServer([], default=Reply("unused")) as srv:
        p = run_self(srv, seed_tree(loop), ImproverLimits(wall_s=3, cpu_s=60))
    assert not p.valid and "the improver killed" in p.error and "wall-clock" in p.error


def test_calls_beyond_the_attempts_budget_are_refused_and_kept_in_the_transcript():
    greedy = (
        "import improver_kit as kit\n"
        "for i in range(5):\n"
        "    kit.ask([{'role': 'user', 'content': f'call {i}'}])\n"
    )
    with ScriptedFMServer([], default=Reply("ok", 10, 5)) as srv:
        p = run_self(srv, seed_tree(greedy), ImproverLimits(wall_s=60, cpu_s=60, calls=2))
        served = len(srv.requests)
    assert served == 2  # the third call never reached the model
    assert not p.valid and "BudgetSpent" in p.error
    calls = json.loads(p.prompt)
    assert [c["status"] for c in calls] == [200, 200, 429] and "refused" in calls[2]["answer"]
    assert p.completion.calls == 2 and p.completion.refused == 1


def test_an_unchanged_tree_a_broken_manifest_and_a_crash_are_invalid_with_the_reason():
    with ScriptedFMServer([], default=Reply("unused")) as srv:
        unchanged = run_self(srv, seed_tree("print('nothing to do')\n"))
        broken = run_self(srv, seed_tree(
            "import os, pathlib\n(pathlib.Path(os.environ['DGM_AGENT']) / 'agent.toml').write_text('[agent]\\n')\n"))
        crash = run_self(srv, seed_tree("raise RuntimeError('improver bug')\n"))
        silent = run_self(srv, seed_tree("def main():\n    print('never runs')\n"))  # lost its main guard
    assert unchanged.error == "the improver left the tree unchanged"
    assert silent.error.startswith("the improver left the tree unchanged without a model call or any output")
    assert broken.error.startswith("the improver broke the manifest")
    assert "exit code 1" in crash.error and "improver bug" in crash.error and "improver bug" in crash.response


def answer_for_the_file_asked(request):
    """What a model might answer the seed improver: a change to whichever file it shows."""
    prompt = request["messages"][-1]["content"]
    if "## Current file: packing.py" in prompt:
        smaller = INNER.replace("0.3 *", "0.29 *")
        return Reply(f"Shrink the inner ring a little.\n<<<<<<< SEARCH\n{INNER}\n=======\n{smaller}\n>>>>>>> REPLACE", 120, 30)
    path = prompt.split("## Current file: ")[1].split(" ")[0]
    return Reply(f"Try one more time.\n<<<<<<< SEARCH\nTRIES = 2\n=======\nTRIES = 3\n>>>>>>> REPLACE", 120, 30) if path == "improve.py" \
        else Reply("Nothing to change in the kit.", 120, 5)


def test_one_self_step_of_a_campaign_with_the_seed_improver(tmp_path):
    with ScriptedFMServer([], responder=answer_for_the_file_asked) as srv:
        cfg = load_config(write_config(tmp_path, srv.base_url, iterations=3, operators="{ self = 1.0 }",
                                       extra="[mutation.improver]\nwall_s = 120\n", timeout_s=60))
        with FMClient.from_config(cfg.fm) as fm:
            Campaign(cfg, tmp_path / "run", fm).run()
    with Archive.open(tmp_path / "run", readonly=True) as archive:
        children = archive.nodes()[1:]
        assert len(children) == 3 and all(n.operator == "self" for n in children)
        valid = [n for n in children if n.status in (NodeStatus.ADMITTED, NodeStatus.REJECTED)]
        assert valid, [n.error for n in children]
        for n in children:
            assert n.fm_model and n.prompt_tokens >= 120 and json.loads(n.prompt)[0]["status"] == 200
            assert "[exit]" in n.response  # the tail of the improver's output
        diff = archive.diff(valid[0].id)
        assert "0.29 *" in diff or "TRIES = 3" in diff
        assert archive.check() == []


def test_the_seed_improver_asks_for_one_definition_and_repairs_a_cut_off_answer_in_the_same_conversation():
    # the seed improver names one definition of a file; a cut-off answer goes back with the reason,
    # and the repaired answer (that definition alone, with a new import) is merged into the file
    def respond(request):
        asked = re.search(r"Propose ONE focused improvement to `(\w+)` in (\S+)\.", request["messages"][1]["content"])
        name = asked.group(1)
        if len(request["messages"]) == 2:
            return Reply(f"Shorter.\n```python\ndef {name}(*args, **kwargs):\n    return [", 300, 1200, "length")
        return Reply(f"Shorter.\n```python\nimport math\n\n\ndef {name}(*args, **kwargs):\n"
                     "    return math.floor(1.5)  # the repaired one\n```", 400, 60)

    with ScriptedFMServer([], responder=respond) as srv:
        p = run_self(srv, seed_tree())
        requests = srv.requests
    assert len(requests) == 2
    first, repair = requests
    assert repair["messages"][:2] == first["messages"]  # the same conversation, continued
    assert "cut off" in repair["messages"][-1]["content"]
    assert p.valid, p.error
    (path, new), = p.files.items()
    name = re.search(r"improvement to `(\w+)` in", first["messages"][1]["content"]).group(1)
    old = seed_tree()[path].decode()
    assert "import math" in new and f"def {name}(*args, **kwargs):\n    return math.floor(1.5)" in new
    assert new.count(f"def {name}(") == 1  # replaced, not added
    # the rest of the file is kept: every other top-level statement is still there, as it was
    kept = [ast.get_source_segment(old, n) for n in ast.parse(old).body if getattr(n, "name", None) != name]
    assert kept and all(segment in new for segment in kept)
    compile(new, path, "exec")


def test_an_answer_that_looks_like_the_whole_improver_but_drops_its_main_guard_is_merged_by_name():
    # seen in the coding campaign: asked for a function of improve.py, the model answered the whole
    # file without its docstring and its `if __name__ == "__main__":` guard. Taken as the file, the
    # child's improver defined main() and never ran it, so each of its children came back unchanged.
    import importlib.util

    spec = importlib.util.spec_from_file_location("kit_under_test", TEMPLATE_SEED / "improver_kit.py")
    kit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kit)
    old = (TEMPLATE_SEED / "improve.py").read_text()
    tree = ast.parse(old)
    guard = next(n for n in tree.body if isinstance(n, ast.If))
    body = [n for n in tree.body[1:] if n is not guard]  # no docstring, no guard
    main = next(n for n in body if getattr(n, "name", None) == "main")
    main.body.insert(0, ast.parse("print('the new main')").body[0])
    answer = "Print first.\n```python\n" + ast.unparse(ast.Module(body=body, type_ignores=[])) + "\n```"
    new = kit.apply_answer(old, answer)
    assert ast.get_source_segment(old, guard) in new and "print('the new main')" in new
    assert new.count("def main(") == 1 and new.startswith('"""')
    # a whole file that keeps the guard is still taken as it is
    whole = ast.unparse(tree).replace("def main() -> int:", "def main() -> int:\n    print('whole')", 1)
    assert kit.apply_answer(old, f"All.\n```python\n{whole}\n```").strip() == whole.strip()


def test_the_public_record_never_holds_private_metrics():
    from archive import Node

    node = Node(id=3, campaign="t", parent_id=0, status=NodeStatus.ADMITTED, commit="c", score=0.5,
                public_metrics={"acc": 0.5}, private_metrics={"hidden_acc": 0.9},
                stages=[{"stage": "small", "valid": True, "passed_gate": True, "score": 0.5, "public": {"acc": 0.5},
                         "private": {"hidden_acc": 0.9}, "feedback": "ok", "error": ""}])
    record = public_record(node, "task", [])
    assert "hidden_acc" not in json.dumps(record) and record["stages"][0]["public"] == {"acc": 0.5}


def test_archive_show_and_diff_present_a_self_step(tmp_path):
    import subprocess
    import sys

    with ScriptedFMServer([], responder=tagged_responder) as srv:
        cfg = load_config(write_config(tmp_path, srv.base_url, iterations=1, operators="{ self = 1.0 }", timeout_s=60))
        cfg.campaign.seed_agent = tmp_path / "seed"
        shutil.copytree(CP_DIR / "seed", cfg.campaign.seed_agent)
        (cfg.campaign.seed_agent / "improve.py").write_text(TAGGED)
        with FMClient.from_config(cfg.fm) as fm:
            Campaign(cfg, tmp_path / "run", fm).run()
    dgm = [sys.executable, "-m", "orchestrator.cli"]
    show = subprocess.run([*dgm, "archive", "show", str(tmp_path / "run"), "1"], capture_output=True, text=True)
    assert "--- improver transcript (model calls) ---" in show.stdout and "improver v1" in show.stdout
    assert "--- improver output ---" in show.stdout and "wrote improve.py" in show.stdout
    diff = subprocess.run([*dgm, "archive", "diff", str(tmp_path / "run"), "1"], capture_output=True, text=True)
    assert '-TAG = "v1"' in diff.stdout and '+TAG = "v2"' in diff.stdout  # the improver's own source changed


def test_the_seed_improver_asks_for_a_real_change_when_an_answer_copies_or_renames_the_definition():
    # the coding campaign's commonest unusable answers: the asked definition sent back unchanged
    # (three times in one conversation), or under a new name that nothing calls
    def respond(request):
        asked = re.search(r"Propose ONE focused improvement to `(\w+)` in (\S+)\.", request["messages"][1]["content"])
        name, path = asked.group(1), asked.group(2)
        old = seed_tree()[path].decode()
        same = ast.get_source_segment(old, next(n for n in ast.parse(old).body if getattr(n, "name", None) == name))
        turn = len(request["messages"]) // 2
        if turn == 1:
            return Reply(f"Better.\n```python\n{same}\n```", 300, 100)
        if turn == 2:
            return Reply(f"Renamed.\n```python\n{same.replace(f'def {name}(', f'def {name}_v2(', 1)}\n```", 300, 100)
        return Reply(f"Changed.\n```python\n{same}\n\n\ndef _helper_added():\n    return 1\n```", 300, 100)

    with ScriptedFMServer([], responder=respond) as srv:
        p = run_self(srv, seed_tree())
        requests = srv.requests
    assert len(requests) == 3
    copied, renamed = requests[1]["messages"][-1]["content"], requests[2]["messages"][-1]["content"]
    name = re.search(r"improvement to `(\w+)` in", requests[0]["messages"][1]["content"]).group(1)
    assert f"The `{name}` you sent is the same as the current one" in copied
    assert f"does not define `{name}`" in renamed
    temps = [r["temperature"] for r in requests]
    assert temps[0] < temps[1] == temps[2]  # a copy is answered by sampling more freely; a rename is not
    assert p.valid, p.error
    (path, new), = p.files.items()
    assert "def _helper_added():" in new and f"def {name}_v2(" not in new
