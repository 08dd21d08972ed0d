import pytest

from orchestrator.mutation.operators import summarise
from orchestrator.mutation.parsing import ProposalInvalid, apply_edits, check_python, parse_diff, parse_rewrite

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
    from orchestrator.mutation.operators import BUILTIN, TweakOperator
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
