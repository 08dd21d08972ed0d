from pathlib import Path

import pytest

from orchestrator.mutation.operators import summarise
from orchestrator.mutation.parsing import (
    ProposalInvalid,
    apply_edits,
    check_python,
    code_blocks,
    merge_definitions,
    parse_diff,
    parse_rewrite,
)

ROOT = Path(__file__).resolve().parents[1]
SRC = "def f(x):\n    y = x + 1\n    return y\n\n\ndef g():\n    return 2\n"


def test_diff_with_fences_and_chatter():
    answer = """Sure! I will make f double its input.

```python
<<<<<<< SEARCH
    y = x + 1
=======
    y = 2 * x
>>>>>>> REPLACE
```
Hope this helps."""
    assert apply_edits(SRC, parse_diff(answer)) == SRC.replace("x + 1", "2 * x")


def test_diff_multiple_blocks_applied_in_order():
    answer = (
        "<<<<<<< SEARCH\n    return 2\n=======\n    return 3\n>>>>>>> REPLACE\n"
        "<<<<<<< SEARCH\ndef f(x):\n=======\ndef f(x: int):\n>>>>>>> REPLACE"
    )
    out = apply_edits(SRC, parse_diff(answer))
    assert "return 3" in out and "def f(x: int):" in out


def test_diff_tolerates_wrong_indentation():
    answer = "<<<<<<< SEARCH\ny = x + 1\nreturn y\n=======\ny = x - 1\nreturn y * 2\n>>>>>>> REPLACE"
    out = apply_edits(SRC, parse_diff(answer))
    assert "    y = x - 1\n    return y * 2\n" in out
    compile(out, "t.py", "exec")


def test_diff_not_matching_is_invalid_with_reason():
    with pytest.raises(ProposalInvalid, match="does not match the current code"):
        apply_edits(SRC, parse_diff("<<<<<<< SEARCH\nnot there\n=======\nx\n>>>>>>> REPLACE"))


def test_no_blocks():
    with pytest.raises(ProposalInvalid, match="no SEARCH/REPLACE block"):
        parse_diff("I think the code is fine as it is.")


def test_rewrite_takes_longest_fence():
    answer = "Here:\n```bash\npip install x\n```\nand the file:\n```python\nimport numpy as np\n\ndef f():\n    return 1\n```\n"
    assert parse_rewrite(answer) == "import numpy as np\n\ndef f():\n    return 1\n"


def test_rewrite_unterminated_fence_and_bare_code():
    assert parse_rewrite("```python\ndef f():\n    return 1") == "def f():\n    return 1\n"
    assert parse_rewrite("import os\nx = 1") == "import os\nx = 1\n"
    with pytest.raises(ProposalInvalid, match="no code block"):
        parse_rewrite("I cannot help with that.")


def test_check_python():
    check_python("a.py", "x = 1\n")
    check_python("notes.txt", "def (")
    with pytest.raises(ProposalInvalid, match="a.py does not compile"):
        check_python("a.py", "def f(:\n")


def test_a_parameter_used_outside_its_function_is_named_as_such():
    """fewshot seed 3: ``INNER_LR = 1.0 / (0.1 + steps)`` at module level; the repair turn said only
    "defined nowhere", of a name the model could see in adapt's signature."""
    src = "LR = 1.0 / (0.1 + steps)\n\n\ndef adapt(params, steps):\n    return params * LR * steps\n"
    with pytest.raises(ProposalInvalid) as e:
        check_python("inner_loop.py", src)
    assert str(e.value) == ("inner_loop.py uses a name that is defined nowhere: 'steps' (line 1, a parameter "
                            "of adapt: it exists only inside it)")
    with pytest.raises(ProposalInvalid, match=r"'lr' \(line 1\)$"):  # a name no function takes: as before
        check_python("a.py", "x = lr\n\n\ndef f(y):\n    return y\n")


def test_each_undefined_name_is_named_once_at_its_first_use():
    """cp seed 9: ``radii[i] + radii[j]`` was shown as "'radii' (line 29), 'radii' (line 29), …",
    which spent the three names shown on one and hid the others."""
    src = "def f(i, j):\n    s = radii[i] + radii[j]\n    return s + radii[0] + scale\n"
    with pytest.raises(ProposalInvalid) as e:
        check_python("packing.py", src)
    assert str(e.value) == "packing.py uses a name that is defined nowhere: 'radii' (line 2), 'scale' (line 3)"


def test_summarise_skips_code():
    assert summarise("```python\nx=1\n```\nUse a hexagonal grid.") == "Use a hexagonal grid."
    assert summarise("<<<<<<< SEARCH\na\n=======\nb\n>>>>>>> REPLACE") == "(no description)"


def test_diff_operator_accepts_a_whole_file_but_not_an_unrelated_fragment():
    from orchestrator.mutation.operators import DiffOperator

    op = DiffOperator()
    whole = "Rewrote it.\n```python\ndef f(x):\n    return 2 * x\n\n\ndef g():\n    return 3\n```"
    assert "return 3" in op.apply(SRC, whole)
    with pytest.raises(ProposalInvalid, match="redefine none"):
        op.apply(SRC, "```python\ndef h(x):\n    return 2 * x\n```")


def test_a_whole_looking_rewrite_that_drops_the_main_guard_is_merged_and_keeps_it():
    from orchestrator.mutation.parsing import whole_or_merged

    guard = 'if __name__ == "__main__":\n    print(f({}))\n'
    src = SRC + "\n\n" + guard.format(1)
    defs = "def f(x):\n    return 2 * x\n\n\ndef g():\n    return 3\n"

    def answer(code: str) -> str:
        return f"All of it.\n```python\n{code}```"

    dropped = whole_or_merged(src, answer(defs))  # every name, but no guard: merged by name
    assert "return 2 * x" in dropped and "return 3" in dropped and guard.format(1) in dropped
    changed = whole_or_merged(src, answer(defs + "\n\n" + guard.format(2)))  # another guard: merged too
    assert guard.format(1) in changed and guard.format(2) not in changed
    same = whole_or_merged(src, answer(defs + "\n\n" + guard.format(1)))  # the whole file, taken as it is
    assert same == defs + "\n\n" + guard.format(1)


MERGE_SRC = '''"""doc"""
import numpy as np

N = 3


def make():
    return np.zeros(N)


@staticmethod
def helper(x):
    return x + 1


def keep():
    return "unchanged"
'''


def test_merge_replaces_functions_by_name_and_adds_imports():
    from orchestrator.mutation.parsing import merge_definitions

    blocks = ["import math\n\ndef make():\n    return np.ones(N) * math.pi", "@staticmethod\ndef helper(x):\n    return x + 2\n\ndef extra():\n    return 1"]
    out = merge_definitions(MERGE_SRC, blocks)
    ns: dict = {}
    exec(compile(out, "m.py", "exec"), ns)
    assert ns["make"]().tolist() == [3.141592653589793] * 3
    assert ns["keep"]() == "unchanged" and ns["extra"]() == 1
    assert out.count("def helper") == 1 and "return x + 2" in out
    assert out.index("import math") < out.index("N = 3")


def test_merge_keeps_a_new_constant_the_new_function_reads():
    """fewshot seed 4, node 4: the answer's block set ``META_LR = 0.001`` above the adapt that read
    it, and lacked the file's ``grad`` import (so it was merged, not taken whole): the merge dropped
    the constant and the child failed as "uses a name defined nowhere: 'META_LR'"."""
    from orchestrator.mutation.parsing import any_edit

    seed = (ROOT / "evaluators" / "fewshot" / "seed" / "inner_loop.py").read_text()
    answer = """Decay the step size:
```python
import torch

INNER_LR = 0.05
DECAY = 0.9  # per step

def adapt(params, support_x, support_y, loss_fn, steps):
    lr = INNER_LR
    for _ in range(steps):
        g = grad(loss_fn)(params, support_x, support_y)
        params = {k: p - lr * g[k] for k, p in params.items()}
        lr = lr * DECAY
    return params

UNUSED = 3
result = adapt(params0, xs, ys, mse, 5)
```"""
    out = any_edit(seed, answer)
    check_python("inner_loop.py", out)  # no name defined nowhere
    assert out.index("DECAY = 0.9  # per step") < out.index("def adapt")
    assert "INNER_LR = 0.01" in out and "INNER_LR = 0.05" not in out  # a restated constant: the parent's
    assert "UNUSED" not in out and "result =" not in out  # read by no definition / a usage example
    assert "from torch.func import grad" in out and "import torch\n" in out
    import torch

    ns: dict = {}
    exec(compile(out, "inner_loop.py", "exec"), ns)
    params = ns["adapt"]({"w": torch.ones(2)}, torch.ones(3, 2), torch.zeros(3),
                         lambda p, x, y: ((x @ p["w"] - y) ** 2).mean(), 2)
    assert params["w"].shape == (2,) and bool((params["w"] < 1).all())
    # an import after a replaced definition: the new constant and import each land in their place
    out = merge_definitions("def f():\n    return 1\n\nimport math\n\ndef g():\n    return math.pi\n",
                            ["import os\nK = 2\n\ndef f():\n    return K + len(os.sep)\n"])
    assert out.index("K = 2") < out.index("def f") < out.index("import math") < out.index("import os") < out.index("def g")
    ns = {}
    exec(compile(out, "m.py", "exec"), ns)
    assert ns["f"]() == 3


def test_merge_needs_a_known_function():
    from orchestrator.mutation.parsing import merge_definitions

    with pytest.raises(ProposalInvalid, match="redefine none"):
        merge_definitions(MERGE_SRC, ["def other():\n    return 1"])
    with pytest.raises(ProposalInvalid, match="does not compile"):
        merge_definitions(MERGE_SRC, ["def make(:\n"])


def test_diff_answer_with_function_blocks_is_merged():
    from orchestrator.mutation.operators import DiffOperator, RewriteOperator

    answer = "Better make.\n```python\ndef make():\n    return np.ones(N)\n```\nand\n```python\ndef keep():\n    return 'kept'\n```"
    for op in (DiffOperator(), RewriteOperator()):
        out = op.apply(MERGE_SRC, answer)
        assert "np.ones(N)" in out and "'kept'" in out and "def helper" in out


def test_original_replace_comment_pairs_are_line_edits():
    answer = "Tweak it.\n```python\n# Original: y = x + 1\n# Replace with: y = x + 2\n```\n```python\n# Original: return 2\n# Replace with: return 5\n```"
    out = apply_edits(SRC, parse_diff(answer))
    assert "    y = x + 2\n" in out and "    return 5\n" in out


def test_a_block_without_the_imports_is_merged_not_taken_as_the_file():
    from orchestrator.mutation.operators import DiffOperator

    answer = "Hex grid.\n```python\ndef make():\n    return np.ones(N)\n\n\n@staticmethod\ndef helper(x):\n    return x\n\n\ndef keep():\n    return 1\n```"
    out = DiffOperator().apply(MERGE_SRC, answer)
    assert out.startswith('"""doc"""\nimport numpy as np\n\nN = 3\n')  # kept from the parent
    ns: dict = {}
    exec(compile(out, "m.py", "exec"), ns)
    assert ns["make"]().tolist() == [1.0, 1.0, 1.0]


def test_before_and_after_blocks_are_a_search_replace_pair():
    from orchestrator.mutation.operators import DiffOperator

    answer = "Change f.\n```python\ny = x + 1\nreturn y\n```\nbecomes\n```python\ny = x * 3\nreturn y\n```"
    out = DiffOperator().apply(SRC, answer)
    assert "    y = x * 3\n    return y\n" in out and "def g():" in out


def test_block_pairs_ignore_answers_of_another_shape():
    from orchestrator.mutation.parsing import block_pairs

    assert block_pairs(SRC, "```python\nnot in the code\n```\n```python\nx\n```") is None
    assert block_pairs(SRC, "```python\ny = x + 1\n```") is None  # odd number of blocks


def test_tweak_operator_uses_its_own_instructions_and_diff_parsing():
    from orchestrator.mutation import BUILTIN
    from orchestrator.mutation.operators import TweakOperator
    from orchestrator.mutation.prompts import ProposalContext, build_messages

    assert BUILTIN["tweak"] is TweakOperator
    ctx = ProposalContext(task="T", parent_id=0, files={"a.py": SRC}, editable=["a.py"], target="a.py")
    prompt = build_messages(ctx, TweakOperator.instructions)[-1]["content"]
    assert "changing ONE or TWO numbers in it" in prompt
    out = TweakOperator().apply(SRC, "Use 2.\n<<<<<<< SEARCH\n    return 2\n=======\n    return 3\n>>>>>>> REPLACE")
    assert "return 3" in out


def test_indented_function_blocks_are_dedented_before_merging():
    from orchestrator.mutation.parsing import merge_definitions

    out = merge_definitions(MERGE_SRC, ["    def keep():\n        return 'dedented'"])
    assert "def keep():\n    return 'dedented'" in out


class _OneAnswerFM:
    """Records the first prompt and answers every call with a fixed text (the operator's FM seam,
    without HTTP); ``calls`` counts them (an unusable answer gets a repair turn)."""

    def __init__(self, answer: str):
        self.answer, self.messages, self.calls = answer, None, 0

    def complete(self, messages, **_):
        from orchestrator.fm.client import Completion

        self.calls += 1
        self.messages = self.messages or messages
        return Completion(self.answer, "m", 1, 1, 0.0, 0.0, 1, "stop")


def _function_proposal(answer: str, seed: int, src: str = SRC):
    from orchestrator.mutation.operators import FunctionOperator, Sampling
    from orchestrator.mutation.prompts import ProposalContext

    fm = _OneAnswerFM(answer)
    ctx = ProposalContext(task="T", parent_id=0, files={"a.py": src}, editable=["a.py"], target="a.py")
    return FunctionOperator().propose(ctx, fm, Sampling(0.7, seed, 100)), fm.messages[-1]["content"]


def test_function_operator_names_one_function_picked_by_the_sampling_seed():
    asked = {_function_proposal("x", seed)[1].split("Improve the function `")[1].split("`")[0] for seed in range(20)}
    assert asked == {"f", "g"}  # both functions get picked across seeds
    _, again = _function_proposal("x", 3)
    assert again == _function_proposal("x", 3)[1]  # and the same seed asks for the same one


def test_function_operator_replaces_only_the_returned_function_and_adds_helpers():
    answer = "Double it.\n```python\ndef f(x):\n    return twice(x)\n\ndef twice(x):\n    return 2 * x\n```"
    proposal, _ = _function_proposal(answer, 0)
    new = proposal.files["a.py"]
    assert "return twice(x)" in new and "def twice(x):" in new and "def g():\n    return 2" in new
    assert "y = x + 1" not in new


def test_function_operator_rejects_an_answer_that_redefines_nothing():
    proposal, _ = _function_proposal("```python\nz = 3\n```", 0)
    assert not proposal.valid and "redefine none" in proposal.error


def test_function_operator_on_a_file_without_functions_asks_for_the_whole_file():
    proposal, prompt = _function_proposal("```python\nX = 2\n```", 0, src="X = 1\n")
    assert "COMPLETE new a.py" in prompt and proposal.files == {"a.py": "X = 2\n"}


RINGS = """import numpy as np


def build():
    for i in range(8):
        c[i] = [0.5 + 0.3 * np.cos(a), 0.5 + 0.3 * np.sin(a)]
    for i in range(17):
        c[9 + i] = [0.5 + 0.45 * np.cos(a), 0.5 + 0.45 * np.sin(a)]
    return c
"""


def test_a_bare_changed_line_replaces_the_parent_line_of_the_same_shape():
    from orchestrator.mutation.parsing import any_edit

    answer = "Grow the inner ring.\n```python\nc[i] = [0.5 + 0.31 * np.cos(a), 0.5 + 0.31 * np.sin(a)]\n```"
    out = any_edit(RINGS, answer)
    assert "        c[i] = [0.5 + 0.31 * np.cos(a), 0.5 + 0.31 * np.sin(a)]\n" in out  # parent's indentation kept
    assert out.count("0.45") == 2 and out.count("0.31") == 2


def test_a_changed_line_goes_to_the_same_shaped_line_sharing_most_numbers():
    from orchestrator.mutation.parsing import line_edits

    # both loops have the shape "for i in range(#):"; both rings "c[# + i] = ..." (the second one only)
    out = line_edits(RINGS, "    for i in range(17):\n        c[9 + i] = [0.5 + 0.44 * np.cos(a), 0.5 + 0.44 * np.sin(a)]")
    assert "c[9 + i] = [0.5 + 0.44" in out and "0.5 + 0.3 *" in out
    assert line_edits(RINGS, "for i in range(10):") is None  # 8 or 17? tied: not guessed
    assert line_edits(RINGS, "for i in range(8):") is None  # nothing changes


def test_a_replace_half_without_a_matching_search_still_applies_its_changed_lines():
    from orchestrator.mutation.parsing import any_edit

    answer = (
        "<<<<<<< SEARCH\n    for j in range(17):  # not the parent's line\n=======\n"
        "    for i in range(17):\n        c[9 + i] = [0.5 + 0.46 * np.cos(a), 0.5 + 0.46 * np.sin(a)]\n>>>>>>> REPLACE"
    )
    assert "0.5 + 0.46 * np.cos(a)" in any_edit(RINGS, answer)


def test_edit_markers_inside_before_after_fences_are_ignored():
    from orchestrator.mutation.parsing import any_edit

    answer = "```\n>>>>>>> SEARCH\n    for i in range(8):\n```\n\n```\n>>>>>>> SEARCH\n    for i in range(9):\n```"
    assert "for i in range(9):\n        c[i]" in any_edit(RINGS, answer)


def test_an_answer_with_no_usable_edit_keeps_the_most_telling_error():
    from orchestrator.mutation.parsing import any_edit

    with pytest.raises(ProposalInvalid, match="does not match the current code"):
        any_edit(RINGS, "<<<<<<< SEARCH\nstep = 0.1\n=======\nstep = 0.05\n>>>>>>> REPLACE")
    with pytest.raises(ProposalInvalid, match="redefine none"):
        any_edit(RINGS, "```python\nstep = 0.05\n```")


def test_comment_search_replace_blocks_are_read():
    from orchestrator.mutation.parsing import any_edit

    old = "def f():\n    batch = 32\n    lr = 0.1\n    return batch * lr\n"
    fenced = "Raise the learning rate.\n```python\n# SEARCH\n    lr = 0.1\n# REPLACE\n    lr = 0.2\n```\n"
    assert any_edit(old, fenced) == old.replace("lr = 0.1", "lr = 0.2")
    two = "```\n# SEARCH\nbatch = 32\n# REPLACE\nbatch = 64\n# SEARCH\nlr = 0.1\n# REPLACE:\nlr = 0.05\n# END\n```"
    assert any_edit(old, two) == old.replace("32", "64").replace("0.1", "0.05")


def test_the_edit_example_is_a_real_line_of_the_program_with_one_number_changed():
    from orchestrator.mutation.parsing import any_edit
    from orchestrator.mutation.prompts import edit_example

    code = 'def f():\n    """Doc 1.5."""\n    n = 3\n    r = 0.25 * x\n    return r\n'
    example = edit_example(code, seed=1)
    search = example.split("<<<<<<< SEARCH\n")[1].split("\n=======")[0]
    replace = example.split("=======\n")[1].split("\n>>>>>>> REPLACE")[0]
    assert search == "    r = 0.25 * x" and replace == "    r = 0.275 * x"
    assert any_edit(code, example) == code.replace("0.25", "0.275")  # copied as is, it still applies
    assert edit_example("def f():\n    return 1\n", seed=1) == ""  # no number to show: no example


CLASS_SRC = '''import torch


class Strategy:
    def __init__(self, n):
        self.n = n

    def observe(self, x):
        return x + 1

    def predict(self, x):
        return x
'''


def test_a_method_written_on_its_own_replaces_the_method_of_its_class():
    # the small model's habit: the method copied out of its class, "original" then "modified"
    answer = ("```python\n# Original code\ndef observe(self, x):\n    return x + 1\n\n"
              "# Modified code\ndef observe(self, x):\n    y = x * 2\n    return y + 1\n```")
    new = merge_definitions(CLASS_SRC, code_blocks(answer))
    assert "    def observe(self, x):\n        y = x * 2\n        return y + 1\n" in new  # re-indented, the last one counts
    assert new.count("def observe") == 1 and "def predict(self, x):\n        return x" in new
    compile(new, "s.py", "exec")


def test_a_class_with_some_of_its_methods_changes_only_those_and_adds_new_ones():
    answer = ("```python\nclass Strategy:\n    def predict(self, x):\n        return -x\n\n"
              "    def after_task(self, t):\n        pass\n```")
    new = merge_definitions(CLASS_SRC, code_blocks(answer))
    assert "def __init__(self, n):" in new and "return x + 1" in new  # the other methods stay
    assert "    def predict(self, x):\n        return -x" in new
    assert new.rstrip().endswith("    def after_task(self, t):\n        pass")  # added to the class
    ns: dict = {}
    exec(compile(new.replace("import torch", ""), "s.py", "exec"), ns)
    s = ns["Strategy"](3)
    assert s.predict(2) == -2 and s.observe(1) == 2 and hasattr(s, "after_task")


def test_a_whole_class_still_replaces_the_class():
    answer = ("```python\nclass Strategy:\n    def __init__(self, n):\n        self.n = 2 * n\n\n"
              "    def observe(self, x):\n        return x\n\n    def predict(self, x):\n        return x\n```")
    new = merge_definitions(CLASS_SRC, code_blocks(answer))
    assert "self.n = 2 * n" in new and "return x + 1" not in new


def test_a_check_that_cannot_run_or_a_broken_evaluator_is_never_sent_to_the_model():
    from concurrent.futures import Future

    from evaluators.pipeline import EvaluationResult, StageResult
    from orchestrator.mutation.operators import RewriteOperator, Sampling
    from orchestrator.mutation.prompts import ProposalContext

    def check_giving(result=None, error=None):
        def check(files):
            fut = Future()
            fut.set_exception(error) if error else fut.set_result(result)
            return fut
        return check

    crashed = EvaluationResult(stages=[StageResult("smoke", False, False, None, error="ZeroDivisionError: boom")])
    broken = EvaluationResult(stages=[StageResult("smoke", False, False, None, error="evaluator tampered")],
                              evaluator_error="evaluator files changed during evaluation")
    answer = "Double it.\n```python\ndef f(x):\n    return 2 * x\n\ndef g():\n    return 2\n```"
    for check, calls in ((check_giving(error=RuntimeError("sandbox down")), 1), (check_giving(broken), 1),
                         (check_giving(crashed), 2)):
        fm = _OneAnswerFM(answer)
        ctx = ProposalContext(task="T", parent_id=0, files={"a.py": SRC}, editable=["a.py"], target="a.py", check=check)
        op = RewriteOperator()
        op.repairs, op.run_repairs = 1, 1
        proposal = op.propose(ctx, fm, Sampling(0.7, 0, 100))
        assert fm.calls == calls and proposal.counts["checks"] == 1
        # a crash sends the same answer back once; that repeat ends the attempt (no third call),
        # with the crash as the reason
        assert proposal.valid == (calls == 1)
        if calls == 2:
            assert proposal.error == ("stage smoke: ZeroDivisionError: boom (asked to fix it, the model answered "
                                      "the same program)")


class _ScriptedFM:
    """Answers the operator's calls with ``answers`` in turn (a text, or (text, finish_reason)) and
    keeps every conversation it got."""

    def __init__(self, *answers: str | tuple[str, str]):
        self.answers, self.conversations = list(answers), []

    def complete(self, messages, **_):
        from orchestrator.fm.client import Completion

        self.conversations.append(messages)
        answer = self.answers[len(self.conversations) - 1]
        text, finish = answer if isinstance(answer, tuple) else (answer, "stop")
        return Completion(text, "m", 1, 1, 0.0, 0.0, 1, finish)


def test_a_prose_only_answer_is_asked_for_the_code_part_of_the_request_alone():
    # the embedded model often describes its change and stops; the repair asks for just the code,
    # in the form of the operator's own request (the function it named, SEARCH/REPLACE for a tweak)
    from orchestrator.mutation.operators import FunctionOperator, Sampling, TweakOperator
    from orchestrator.mutation.prompts import ProposalContext

    prose = "I change the function to return twice its input, which scores better."
    for op, code in ((FunctionOperator(), "```python\ndef f(x):\n    return 2 * x\n```"),
                     (TweakOperator(), "<<<<<<< SEARCH\n    return 2\n=======\n    return 3\n>>>>>>> REPLACE")):
        fm = _ScriptedFM(prose, code)
        op.repairs = 1
        ctx = ProposalContext(task="T", parent_id=0, files={"a.py": SRC}, editable=["a.py"], target="a.py")
        proposal = op.propose(ctx, fm, Sampling(0.7, 3, 100))
        assert proposal.valid, proposal.error
        first, repair = fm.conversations
        assert repair[:-2] == first and repair[-2]["content"] == prose
        follow_up = repair[-1]["content"]
        assert follow_up.startswith("Your answer describes a change but holds no code")
        assert "First write" not in follow_up and "{target}" not in follow_up
        if isinstance(op, FunctionOperator):
            asked = first[-1]["content"].split("Improve the function `")[1].split("`")[0]
            assert f"Now give the COMPLETE new definition of `{asked}`" in follow_up
        else:
            assert "Now give SEARCH/REPLACE blocks" in follow_up


def test_an_answer_cut_off_at_the_token_limit_is_told_so_not_sent_after_a_syntax_error():
    """The model that ran out of tokens did not write a syntax error: it wrote too much. The
    follow-up says so, and asks for the changed code only."""
    from orchestrator.mutation.operators import FunctionOperator, Sampling
    from orchestrator.mutation.prompts import ProposalContext

    cut = ("I will grow each value.\n```python\ndef f(x):\n    y = [x,\n" + "         x,\n" * 40, "length")
    fm = _ScriptedFM(cut, "```python\ndef f(x):\n    return 2 * x\n```")
    op = FunctionOperator()
    op.repairs = 1
    ctx = ProposalContext(task="T", parent_id=0, files={"a.py": SRC}, editable=["a.py"], target="a.py")
    assert op.propose(ctx, fm, Sampling(0.7, 0, 1200)).valid
    follow_up = fm.conversations[1][-1]["content"]
    assert follow_up.startswith("Your answer could not be used: it was cut off at the token limit (1200 tokens)")
    assert "Give only the code you change" in follow_up and "was never closed" in follow_up  # the parser's reason too
    # the same unusable answer that the model did finish keeps the parser's reason alone
    fm = _ScriptedFM(cut[0], "```python\ndef f(x):\n    return 2 * x\n```")
    assert op.propose(ctx, fm, Sampling(0.7, 0, 1200)).valid
    assert "cut off" not in fm.conversations[1][-1]["content"]


def test_other_unusable_answers_keep_the_generic_repair_turn():
    from orchestrator.mutation.operators import FunctionOperator, Sampling
    from orchestrator.mutation.prompts import ProposalContext

    fm = _ScriptedFM("```python\nz = 3\n```", "```python\ndef f(x):\n    return 2 * x\n```")
    op = FunctionOperator()
    op.repairs = 1
    ctx = ProposalContext(task="T", parent_id=0, files={"a.py": SRC}, editable=["a.py"], target="a.py")
    assert op.propose(ctx, fm, Sampling(0.7, 0, 100)).valid
    assert fm.conversations[1][-1]["content"].startswith("Your answer could not be used: the code blocks redefine none")


def test_a_fix_request_takes_any_edit_shape_whatever_the_operator_asked_first():
    # a function operator's answer crashes; the fix conversation takes any edit shape, and the fix (a
    # SEARCH/REPLACE, which the function operator's own parser does not read) edits the crashed
    # program, not the parent
    from concurrent.futures import Future

    from evaluators.pipeline import EvaluationResult, StageResult
    from orchestrator.mutation.operators import FunctionOperator, Sampling
    from orchestrator.mutation.prompts import ProposalContext

    results = iter([EvaluationResult(stages=[StageResult("smoke", False, False, None, error="ZeroDivisionError: boom")]),
                    EvaluationResult(stages=[StageResult("smoke", True, True, 1.0)])])

    def check(files):
        fut = Future()
        fut.set_result(next(results))
        return fut

    first = "Raise g.\n```python\ndef g():\n    return 2 / 0\n```"
    fix = "g divides by zero.\n<<<<<<< SEARCH\n    return 2 / 0\n=======\n    return 3\n>>>>>>> REPLACE"
    fm = _ScriptedFM(first, fix)
    op = FunctionOperator()
    op.repairs, op.run_repairs = 1, 1
    ctx = ProposalContext(task="T", parent_id=0, files={"a.py": SRC}, editable=["a.py"], target="a.py", check=check)
    proposal = op.propose(ctx, fm, Sampling(0.7, 0, 100))
    assert len(fm.conversations) == 2 and len(fm.conversations[1]) == 2
    assert "return 2 / 0" in fm.conversations[1][1]["content"]  # the crashed program is the one shown
    assert proposal.valid and proposal.files["a.py"] == SRC.replace("return 2", "return 3")
    assert proposal.counts == {"checks": 1, "run_repairs": 1}  # the last answer is left to the evaluation


def test_a_fix_request_shows_the_documentation_of_the_library_call_that_crashed():
    from concurrent.futures import Future

    from evaluators.pipeline import EvaluationResult, StageResult
    from orchestrator.mutation.operators import RewriteOperator, Sampling
    from orchestrator.mutation.prompts import ProposalContext

    program = "import numpy as np\n\n\ndef g():\n    return np.concatenate(np.zeros((2, 2)), np.ones(2))\n"
    own_line = ('Traceback (most recent call last):\n  File "/tmp/x/a.py", line 5, in g\n'
                '    return np.concatenate(np.zeros((2, 2)), np.ones(2))\nTypeError: only integer scalar arrays')
    # raised inside the library the line calls: its frames come after the program's
    in_library = own_line.replace("\nTypeError", '\n  File "/venv/site-packages/numpy/_core/x.py", line 9, in f\nTypeError')

    for docs, error, shown in ((True, in_library, True), (False, in_library, False), (True, own_line, False)):
        def check(files, error=error):
            fut = Future()
            fut.set_result(EvaluationResult(stages=[StageResult("smoke", False, False, None, error=error)]))
            return fut

        fm = _ScriptedFM(f"Use numpy.\n```python\n{program}```", "Still broken.")
        op = RewriteOperator()
        op.repairs, op.run_repairs, op.library_docs = 0, 1, docs
        parent = "import numpy as np\n\n\ndef g():\n    return 0\n"
        ctx = ProposalContext(task="T", parent_id=0, files={"a.py": parent}, editable=["a.py"], target="a.py", check=check)
        op.propose(ctx, fm, Sampling(0.7, 0, 100))
        fix = fm.conversations[1][1]["content"]
        assert ("`numpy.concatenate(" in fix) == shown
        assert ("## From the installed library's documentation, for the call on that line" in fix) == shown


def test_the_crash_site_is_the_last_frame_of_the_traceback_in_the_edited_file():
    from orchestrator.mutation.prompts import crash_site

    program = "import numpy as np\n\n\ndef build():\n    return helper()\n\n\ndef helper():\n    return np.zeros(2)[5]\n"
    error = ('Traceback (most recent call last):\n  File "/tmp/x/_dgm_harness.py", line 14, in main\n    build()\n'
             '  File "/tmp/x/packing.py", line 5, in build\n    return helper()\n'
             '  File "/tmp/x/packing.py", line 9, in helper\n    return np.zeros(2)[5]\n'
             '  File "/usr/lib/numpy/core.py", line 3, in __getitem__\n'
             'IndexError: index 5 is out of bounds for axis 0 with size 2')
    assert crash_site(error, "packing.py", program) == ("helper", 9, "return np.zeros(2)[5]")
    assert crash_site(error, "other.py", program) is None  # no frame in the edited file
    assert crash_site("ValueError: bad shape", "packing.py", program) is None  # no traceback at all
    module_level = 'Traceback (most recent call last):\n  File "/tmp/x/packing.py", line 1, in <module>\nNameError: x'
    assert crash_site(module_level, "packing.py", program) is None  # not in a function: nothing to name


def test_a_library_file_of_the_same_name_is_not_taken_for_the_edited_file():
    """torch has its own ``optim/optimizer.py``: a frame there, after the program's own, must not
    point the fix request at a line of the program that the error never passed through."""
    from orchestrator.mutation.prompts import crash_site

    program = "import torch\n\n\ndef step(opt):\n    opt.step()\n    return opt\n"
    error = ('Traceback (most recent call last):\n  File "/tmp/x/_dgm_harness.py", line 14, in main\n    run()\n'
             '  File "/tmp/x/optimizer.py", line 5, in step\n    opt.step()\n'
             '  File "/usr/lib/python3/site-packages/torch/optim/optimizer.py", line 3, in step\n    raise err\n'
             'RuntimeError: boom')
    assert crash_site(error, "optimizer.py", program) == ("step", 5, "opt.step()")
    # a nested target is matched by its whole relative path, not by its base name
    assert crash_site(error.replace("/tmp/x/optimizer.py", "/tmp/x/pkg/optimizer.py"), "pkg/optimizer.py", program) == ("step", 5, "opt.step()")
    assert crash_site(error.replace("/tmp/x/optimizer.py", "/tmp/x/other/optimizer.py"), "pkg/optimizer.py", program) is None


def test_a_forgotten_import_of_a_conventional_module_name_is_added():
    from orchestrator.mutation.parsing import add_missing_imports, check_python

    src = ('"""Inner loop."""\nfrom __future__ import annotations\nfrom torch import nn, optim\n\n\n'
           'def adapt(p):\n    return torch.zeros(2) + np.ones(2) * math.pi\n')
    new, added = add_missing_imports("inner_loop.py", src)
    assert added == ["import torch", "import numpy as np", "import math"]
    lines = new.split("\n")
    assert lines[:5] == ['"""Inner loop."""', "from __future__ import annotations", "import torch", "import numpy as np", "import math"]
    check_python("inner_loop.py", new)  # no undefined name is left
    # a name that is no module's conventional name stays undefined: it is the model's to fix
    src2 = "def adapt(p):\n    return DECAY * torch.ones(1)\n"
    new2, added2 = add_missing_imports("a.py", src2)
    assert added2 == ["import torch"] and new2.startswith("import torch\n")
    with pytest.raises(ProposalInvalid, match="'DECAY'"):
        check_python("a.py", new2)
    # nothing to add, code that does not parse, and files other than Python come back as they were
    for path, text in (("a.py", "import torch\nx = torch.ones(1)\n"), ("a.py", "def f(:\n"), ("a.txt", "np.x")):
        assert add_missing_imports(path, text) == (text, [])


def test_an_answer_that_uses_torch_without_importing_it_is_usable():
    from orchestrator.mutation.operators import FunctionOperator, Sampling
    from orchestrator.mutation.prompts import ProposalContext

    src = "from torch.func import grad\n\nLR = 0.01\n\n\ndef adapt(params):\n    return params\n"
    answer = "```python\nfrom torch import nn, optim\n\ndef adapt(params):\n    return {k: torch.clamp(v, -1, 1) for k, v in params.items()}\n```"
    fm = _ScriptedFM(answer)
    op = FunctionOperator()
    op.repairs = 0
    ctx = ProposalContext(task="T", parent_id=0, files={"inner_loop.py": src}, editable=["inner_loop.py"], target="inner_loop.py")
    proposal = op.propose(ctx, fm, Sampling(0.7, 0, 100))
    assert proposal.valid, proposal.error
    assert proposal.files["inner_loop.py"].startswith("import torch\n") and "torch.clamp" in proposal.files["inner_loop.py"]
