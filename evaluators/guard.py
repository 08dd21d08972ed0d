"""A static check of an editable component's source before it runs (defence in depth).

The component runs in the same process as the trusted training harness, so it could inspect the
call stack, open the task files or import helpers to train outside its step budget. The sandbox
and the evaluator-side scoring make such tricks useless for forging a score; this check rejects
the obvious ways of trying, with a message the foundation model can act on. It is not a proof of
safety: the evaluator never relies on it.
"""
from __future__ import annotations

import ast

from evaluators import syntax

ALLOWED_MODULES = frozenset({"torch", "math", "typing", "functools", "dataclasses", "collections", "itertools",
                             "operator", "abc", "enum", "__future__"})
DENIED_NAMES = frozenset({"open", "exec", "eval", "compile", "__import__", "globals", "locals", "vars", "breakpoint",
                          "input", "getattr", "setattr", "delattr", "memoryview"})
DENIED_ATTRS = frozenset({"load", "save", "from_file", "fromfile", "hub", "cpp_extension", "library", "ops", "jit",
                          "package", "compile", "system", "popen", "modules", "stack", "currentframe", "storage",
                          "untyped_storage", "data_ptr", "f_back", "f_globals", "f_locals", "gi_frame", "cr_frame",
                          "tb_frame"})


def problems(source: str, filename: str = "<component>", allowed=ALLOWED_MODULES) -> list[str]:
    """Every reason the source is rejected ("file:line: what"), empty when it passes."""
    try:
        tree = syntax.parse(source, filename)
    except SyntaxError as e:
        return [f"{filename}:{e.lineno}: syntax error: {e.msg}"]
    found = []  # (line, column, message), reported in source order
    allowed_text = f"(allowed: {', '.join(sorted(allowed))})"
    for node in ast.walk(tree):
        line, col = getattr(node, "lineno", 0), getattr(node, "col_offset", 0)
        where = f"{filename}:{line}"
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] not in allowed:
                    found.append((line, col, f"{where}: import of {alias.name} is not allowed {allowed_text}"))
        elif isinstance(node, ast.ImportFrom):
            if node.level or (node.module or "").split(".")[0] not in allowed:
                names = ", ".join(a.name for a in node.names)
                module = "." * node.level + (node.module or "")
                found.append((line, col, f"{where}: from {module} import {names} is not allowed {allowed_text}"))
        elif isinstance(node, ast.Name) and node.id in DENIED_NAMES:
            found.append((line, col, f"{where}: {node.id} is not available to the component"))
        elif isinstance(node, ast.Attribute) and (node.attr.startswith("_") or node.attr in DENIED_ATTRS):
            found.append((line, col, f"{where}: attribute .{node.attr} is not available to the component"))
    return [message for _, _, message in sorted(found)]
