"""Helpers of this agent's improver: talk to the model, build the prompt, apply the answer.

They live in the agent's own tree (not in dgm) so that the agent can improve them too. Standard
library only: the improver runs in a sandbox with no network, and reaches the model through one
Unix socket (``DGM_FM_SOCKET``), an OpenAI-compatible endpoint that holds no key on this side.
"""

from __future__ import annotations

import ast
import http.client
import json
import os
import re
import socket
import textwrap

SEARCH_RE = re.compile(r"<{5,9}\s*SEARCH[^\n]*\n(.*?)\n?={5,9}[^\n]*\n(.*?)\n?>{5,9}\s*REPLACE", re.DOTALL)
FENCE_RE = re.compile(r"```[ \t]*[\w+.-]*[^\n]*\n(.*?)(?:\n```|\Z)", re.DOTALL)


class BudgetSpent(Exception):
    """The model refused further calls: this attempt's budget is used up."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def chat(messages: list[dict], *, temperature: float = 0.7, seed: int | None = None, timeout: float = 900) -> tuple[str, str]:
    """One chat completion through the sandbox's model socket: (text, finish reason)."""
    body = {"messages": messages, "temperature": temperature, "max_tokens": int(os.environ.get("DGM_MAX_TOKENS", "1200"))}
    if seed is not None:
        body["seed"] = seed
    conn = _UnixConnection(os.environ["DGM_FM_SOCKET"], timeout)
    try:
        conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = json.loads(resp.read() or b"{}")
    finally:
        conn.close()
    if resp.status == 429:
        raise BudgetSpent(data.get("error", {}).get("message", "budget spent"))
    if resp.status != 200:
        raise RuntimeError(f"model call failed ({resp.status}): {data.get('error', {}).get('message', data)}")
    choice = data["choices"][0]
    return choice["message"]["content"], choice.get("finish_reason") or ""


def ask(messages: list[dict], **kw) -> str:
    """The text of one chat completion."""
    return chat(messages, **kw)[0]


def pick_function(code: str, rng) -> str | None:
    """A top-level function or class of the file to work on (None if it has none). One definition
    at a time keeps the answer short: a small model asked for a whole file of 100+ lines cuts it
    off or breaks it."""
    try:
        defs = [n for n in ast.parse(code).body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    except SyntaxError:
        return None
    sizable = [n.name for n in defs if n.end_lineno - n.lineno >= 2] or [n.name for n in defs]
    return rng.choice(sizable) if sizable else None


def build_prompt(record: dict, path: str, code: str, *, about_itself: bool, function: str | None = None) -> list[dict]:
    """The request for one change of ``path`` (of its definition ``function``, when one is named),
    with the public results of this agent."""
    parts = [f"## Task\n{record.get('task', '').strip()}"]
    score = record.get("score")
    parts.append(f"## Current file: {path} (agent score {'not scored' if score is None else f'{score:.4f}'})\n```python\n{code.rstrip()}\n```")
    if about_itself:
        parts.append("This file is part of the agent's IMPROVER: the program that asks a model for a change "
                     "to the agent and applies it. Make it better at producing changes that raise the score.")
    lines = [f"- [{s.get('stage')}] {s.get('feedback') if s.get('valid') else s.get('error')}" for s in record.get("stages", [])]
    metrics = ", ".join(f"{k} = {v:.6g}" for k, v in sorted(record.get("public_metrics", {}).items()))
    parts.append("## Its results\n" + (metrics or "no metrics") + ("\n" + "\n".join(lines) if lines else ""))
    failed = record.get("failed_children") or []
    if failed:
        parts.append("## Earlier changes that FAILED (avoid them)\n" + "\n".join(f"- {f[:300]}" for f in failed[:3]))
    if function:
        parts.append(
            f"## Your answer\nPropose ONE focused improvement to `{function}` in {path}. First write one sentence "
            f"saying what you change and why. Then write the complete new `{function}` in ONE ```python code block: "
            "only that definition, with any new helper function or import it needs. Do not repeat the rest of the file."
        )
    else:
        parts.append(
            f"## Your answer\nPropose ONE focused improvement to {path}. First write one sentence saying what you change "
            "and why. Then give SEARCH/REPLACE blocks whose SEARCH part is copied exactly from the current file:\n"
            "<<<<<<< SEARCH\n(lines copied from the file)\n=======\n(their replacement)\n>>>>>>> REPLACE"
        )
    system = ("You are an expert Python programmer who improves programs step by step. Keep every function the "
              "rest of the program calls, keep return types, and never fake results.")
    return [{"role": "system", "content": system}, {"role": "user", "content": "\n\n".join(parts)}]


def repair_request(reason: str, function: str | None = None) -> str:
    """The follow-up when an answer could not be used: the reason, and what to send instead."""
    if "identical" in reason:  # a small model tends to copy the code it was shown: ask for a change
        what = f"`{function}`" if function else "code"
        return (f"The {what} you sent is the same as the current one, so nothing would change. Change what it "
                "does: one focused improvement that can raise the score, in ONE complete code block.")
    return (f"Your answer could not be used: {reason}\n"
            "Answer again with a short, complete code block (only the definition you change) that fixes this.")


def apply_answer(old: str, answer: str, function: str | None = None) -> str:
    """The file's new text from the model's answer (ValueError with a reason if unusable). With
    ``function`` (the definition asked for), a partial answer must define it: one that renamed it
    would add a function nothing calls and leave the old one in place."""
    edits = SEARCH_RE.findall(answer)
    if edits:
        new = old
        for search, replace in edits:
            if search in new:
                new = new.replace(search, replace, 1)
                continue
            stripped = [line.strip() for line in search.splitlines() if line.strip()]
            lines = new.splitlines()
            for i in range(len(lines) - len(stripped) + 1):
                if [line.strip() for line in lines[i:i + len(stripped)]] == stripped:
                    indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
                    body = [indent + r.strip() if r.strip() else r for r in replace.splitlines()]
                    lines[i:i + len(stripped)] = body
                    new = "\n".join(lines) + "\n"
                    break
            else:
                raise ValueError(f"a SEARCH block matches nothing in the file: {search.strip()[:80]!r}")
        return new
    blocks = FENCE_RE.findall(answer)
    if not blocks:
        raise ValueError("no SEARCH/REPLACE block and no code block in the answer")
    block = max(blocks, key=len)
    if _is_whole_file(old, block):
        return block
    if function and function in _names(old) and function not in _names(block):
        raise ValueError(f"the code block does not define `{function}`, the definition to change "
                         "(keep its name: the rest of the program calls it by that name)")
    return _merge(old, block)


def _is_whole_file(old: str, block: str) -> bool:
    """Whether ``block`` is the whole new file: it binds every name the old file binds and keeps its
    other top-level statements (an ``if __name__ == "__main__":`` guard). A block that looks whole
    but drops the guard is merged by name instead: taken as the file, it would leave a program that
    defines ``main`` and never runs it."""
    return _names(old) <= _names(block) and _statements(old) <= _statements(block)


def _statements(source: str) -> set[str]:
    """The file's top-level statements that bind no name (the docstring aside), as syntax trees."""
    try:
        tree = ast.parse(textwrap.dedent(source))
    except SyntaxError:
        return set()
    binding = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom, ast.Assign,
               ast.AnnAssign)
    return {ast.dump(n) for i, n in enumerate(tree.body) if not isinstance(n, binding)
            and not (i == 0 and isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))}


def _names(source: str) -> set[str]:
    """Every name the file binds at its top level (definitions, imports, assignments): a block that
    binds all of the old file's is the whole new file, anything less is merged by name."""
    try:
        tree = ast.parse(textwrap.dedent(source))
    except SyntaxError:
        return set()
    names = set()
    for n in tree.body:
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(n.name)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in n.names)
        elif isinstance(n, (ast.Assign, ast.AnnAssign)):
            targets = n.targets if isinstance(n, ast.Assign) else [n.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def _merge(old: str, block: str) -> str:
    """Replace the old file's definitions that ``block`` redefines, by name; its new definitions go
    at the end and its new imports after the file's own."""
    block = textwrap.dedent(block)
    try:
        body = ast.parse(block).body
    except SyntaxError as e:
        raise ValueError(f"the code block does not parse: {e}") from None
    new_defs = {n.name: n for n in body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    if not new_defs:
        raise ValueError("the code block is not the whole file and defines no function")
    lines, src = old.splitlines(), block.splitlines()
    old_body = ast.parse(old).body
    for node in sorted(old_body, key=lambda n: -n.lineno):
        if getattr(node, "name", None) in new_defs:
            d = new_defs.pop(node.name)
            start = min([node.lineno] + [x.lineno for x in node.decorator_list]) - 1
            dstart = min([d.lineno] + [x.lineno for x in d.decorator_list]) - 1
            lines[start:node.end_lineno] = src[dstart:d.end_lineno]
    for d in new_defs.values():  # new helpers go at the end
        dstart = min([d.lineno] + [x.lineno for x in d.decorator_list]) - 1
        lines += ["", ""] + src[dstart:d.end_lineno]
    have = {line.strip() for line in old.splitlines()}
    imports = [line for n in body if isinstance(n, (ast.Import, ast.ImportFrom))
               for line in src[n.lineno - 1:n.end_lineno] if line.strip() not in have]
    if imports:  # after the file's last top-level import (or at the top)
        at = max((n.end_lineno for n in old_body if isinstance(n, (ast.Import, ast.ImportFrom))), default=0)
        lines[at:at] = imports
    return "\n".join(lines) + "\n"
