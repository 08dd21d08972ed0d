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


def test_diff_operator_accepts_a_whole_file_but_not_a_fragment():
    from orchestrator.mutation.operators import DiffOperator

    op = DiffOperator()
    whole = "Rewrote it.\n```python\ndef f(x):\n    return 2 * x\n\n\ndef g():\n    return 3\n```"
    assert "return 3" in op.apply(SRC, whole)
    with pytest.raises(ProposalInvalid, match=r"lacks \['g'\]"):
        op.apply(SRC, "```python\ndef f(x):\n    return 2 * x\n```")
