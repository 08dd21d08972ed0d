"""Python syntax trees built one at a time in this process.

CPython 3.11 before 3.11.8 converts between its internal syntax tree and the ``ast`` module's
objects with recursion counters that threads share unguarded (gh-106905): two threads doing it
at once can raise ``SystemError: AST constructor recursion depth mismatch`` on good code. dgm
builds trees on proposal threads (parsing, the undefined-name check, fit, program memory) and on
evaluation workers (the component guard) at the same time, so every build and every compile of
a tree goes through one lock. Walking, dumping and unparsing a tree are plain Python and need none.
A conversion error can also leave the counters off for the next build, with no thread involved
(the same issue), so a build that hits that SystemError is tried once more.
"""

from __future__ import annotations

import ast
import threading

_LOCK = threading.Lock()


def parse(source: str | bytes, filename: str = "<unknown>") -> ast.Module:
    """``ast.parse``, serialised (raises SyntaxError/ValueError as it does)."""
    with _LOCK:
        try:
            return ast.parse(source, filename)
        except SystemError as e:
            if "recursion depth mismatch" not in str(e):
                raise
            return ast.parse(source, filename)


def compile_tree(tree: ast.AST, filename: str) -> None:
    """Compile a parsed module to bytecode (raises what ``compile`` raises), serialised: this is
    where the compiler finds what the parser does not (e.g. ``return`` outside a function)."""
    with _LOCK:
        compile(tree, filename, "exec")
