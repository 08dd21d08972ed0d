"""The coding agent's tools: talk to the model, read the docstring's examples, run them, and pull
the code out of an answer. Standard library only: the agent runs in a sandbox with no network and
reaches the model through one Unix socket (``DGM_FM_SOCKET``, an OpenAI-style endpoint)."""

import ast
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import tempfile

FENCE_RE = re.compile(r"```[ \t]*(?:python|py|Python)?[^\n]*\n(.*?)(?:\n```|\Z)", re.DOTALL)


class ModelUnavailable(Exception):
    """No answer: no model socket, the problem's budget is spent (HTTP 429), or the call failed."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


def chat(messages, *, max_tokens=512, temperature=0.2, timeout=240.0):
    """One chat completion through the sandbox's model socket; the answer's text."""
    path = os.environ.get("DGM_FM_SOCKET")
    if not path:
        raise ModelUnavailable("no model socket (DGM_FM_SOCKET is not set)")
    body = {"messages": messages, "max_tokens": max_tokens, "temperature": temperature}
    conn = _UnixConnection(path, timeout)
    try:
        conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = json.loads(resp.read() or b"{}")
    except (OSError, ValueError) as e:
        raise ModelUnavailable(f"model call failed: {type(e).__name__}: {e}") from None
    finally:
        conn.close()
    if resp.status != 200:
        raise ModelUnavailable(f"model call answered {resp.status}: {data.get('error', {}).get('message', '')}")
    return data["choices"][0]["message"]["content"] or ""


def doctest_examples(prompt):
    """``(expression, expected output)`` pairs from the ``>>>`` lines of the prompt's docstring."""
    lines = prompt.splitlines()
    found = []
    for i, line in enumerate(lines):
        text = line.strip()
        if not text.startswith(">>>"):
            continue
        expr = text[3:].strip()
        following = lines[i + 1].strip() if i + 1 < len(lines) else ""
        if expr and following and not following.startswith(">>>") and '"""' not in following and "'''" not in following:
            found.append((expr, following))
    return found


def extract_code(answer, problem):
    """The code of the answer: its code block defining the entry point (top-level imports,
    functions, classes and assignments only), or the prompt completed by a bare body."""
    blocks = FENCE_RE.findall(answer) or [answer]
    name = problem["entry_point"]
    block = next((b for b in blocks if re.search(rf"^\s*def {re.escape(name)}\s*\(", b, re.M)), max(blocks, key=len))
    try:
        tree = ast.parse(block)
    except SyntaxError:
        return block if f"def {name}" in block else problem["prompt"] + block
    keep = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Assign, ast.AnnAssign)
    tree.body = [node for node in tree.body if isinstance(node, keep)]
    if not any(isinstance(n, ast.FunctionDef) and n.name == name for n in tree.body):
        return problem["prompt"] + block  # a body alone: it completes the prompt's signature
    return ast.unparse(tree) + "\n"


CHECK = r'''
import json, math, sys
data = json.load(open(sys.argv[1]))
ns = {"__name__": "solution"}
failures = []
try:
    exec(compile(data["prompt"], "prompt.py", "exec"), ns)
    exec(compile(data["code"], "solution.py", "exec"), ns)
    if not callable(ns.get(data["entry_point"])):
        raise NameError("the code defines no function " + data["entry_point"])
except BaseException as e:
    failures.append(f"the code does not run: {type(e).__name__}: {e}")
else:
    for expr, expected in data["examples"]:
        try:
            got = eval(expr, ns)
        except BaseException as e:
            failures.append(f"{expr} raised {type(e).__name__}: {e} (expected {expected})")
            continue
        try:
            want = eval(expected, ns)
            same = got == want or (isinstance(got, float) and isinstance(want, (int, float)) and math.isclose(got, want, rel_tol=1e-6))
        except BaseException:
            same = False
        if not (same or repr(got) == expected or str(got) == expected):
            failures.append(f"{expr} returned {got!r}, expected {expected}")
print("\n@@FAILURES@@" + json.dumps([f[:300] for f in failures]))
'''


def run_examples(code, problem, examples, timeout=10.0):
    """The examples that fail on ``code`` (and why), run in a fresh Python process; [] when all pass."""
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data.json")
        with open(data, "w") as f:
            json.dump({"prompt": problem["prompt"], "code": code, "entry_point": problem["entry_point"],
                       "examples": examples}, f)
        script = os.path.join(tmp, "check.py")
        with open(script, "w") as f:
            f.write(CHECK)
        try:
            done = subprocess.run([sys.executable, "-I", script, data], capture_output=True, text=True,
                                  timeout=timeout, cwd=tmp)
        except subprocess.TimeoutExpired:
            return [f"the examples did not finish within {timeout:.0f} s (an endless loop?)"]
    marker = done.stdout.rfind("@@FAILURES@@")
    if marker < 0:
        tail = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
        return [f"the code crashed: {tail[0][:200]}"]
    return json.loads(done.stdout[marker + len("@@FAILURES@@"):])
