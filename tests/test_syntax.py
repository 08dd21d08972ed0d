"""evaluators.syntax: syntax trees built one at a time (CPython 3.11's gh-106905)."""

import ast
import threading

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
    # each build waits (with a deadline) for a second build to be inside at the same time: unserialised
    # builds meet there; serialised ones never do, and each wait runs out instead
    meet = threading.Barrier(2)
    met, real = [], ast.parse

    def meeting_parse(source, *args, **kwargs):
        try:
            meet.wait(timeout=0.5)
            met.append(True)
        except threading.BrokenBarrierError:
            meet.reset()
        return real(source, *args, **kwargs)

    monkeypatch.setattr(ast, "parse", meeting_parse)
    threads = [threading.Thread(target=syntax.parse, args=("x = 1",)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    monkeypatch.undo()
    assert met == []


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
