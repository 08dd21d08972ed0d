"""evaluators.syntax: syntax trees built one at a time (CPython 3.11's gh-106905)."""

import ast
import threading
import time

import pytest

from evaluators import syntax


def test_parse_and_compile_behave_like_the_standard_library():
    tree = syntax.parse("def f(x):\n    return x + 1\n", "f.py")
    assert [n.name for n in tree.body] == ["f"]
    with pytest.raises(SyntaxError) as e:
        syntax.parse("def f(:\n", "bad.py")
    assert e.value.filename == "bad.py"
    with pytest.raises(SyntaxError, match="outside function"):
        syntax.compile_tree(syntax.parse("return 1\n"), "r.py")


def test_no_two_threads_build_a_tree_at_once(monkeypatch):
    inside, most = 0, 0
    guard = threading.Lock()
    real = ast.parse

    def slow_parse(source, filename="<unknown>"):
        nonlocal inside, most
        with guard:
            inside += 1
            most = max(most, inside)
        time.sleep(0.01)  # hold the build long enough that an unserialised caller would overlap
        with guard:
            inside -= 1
        return real(source, filename)

    monkeypatch.setattr(ast, "parse", slow_parse)
    threads = [threading.Thread(target=lambda: [syntax.parse("x = 1") for _ in range(5)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most == 1


def test_a_spurious_recursion_depth_error_is_tried_once_more(monkeypatch):
    real, calls = ast.parse, []

    def flaky(source, filename="<unknown>"):
        calls.append(source)
        if len(calls) == 1:
            raise SystemError("AST constructor recursion depth mismatch (before=90, after=65)")
        return real(source, filename)

    monkeypatch.setattr(ast, "parse", flaky)
    assert isinstance(syntax.parse("y = 2"), ast.Module)
    assert len(calls) == 2


def test_other_system_errors_are_not_hidden(monkeypatch):
    def broken(source, filename="<unknown>"):
        raise SystemError("something else")

    monkeypatch.setattr(ast, "parse", broken)
    with pytest.raises(SystemError, match="something else"):
        syntax.parse("z = 3")
