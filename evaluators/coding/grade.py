"""Runs one problem's hidden tests on one solution, in a fresh sandbox work directory that holds no
agent (copied there as ``_dgm_grade.py``; standard library only). Two processes, so that the
solution never shares a process with the tests:

- the grader (this file, started by the evaluator): reads ``_dgm_grade.json`` (the prompt, the
  hidden test, the entry point, a nonce) and deletes it, makes itself non-dumpable (no other
  process of the sandbox's uid can read its memory or its file descriptors), runs the prompt's own
  code (its helper functions) and the test's ``check`` in its own namespace, and starts
- the solution's process (this file with ``--serve``): runs the prompt, then the solution, then
  answers calls of the entry point. Arguments and results cross a pipe as plain data (numbers,
  strings, lists, tuples, dicts, sets, None), rebuilt by the grader, so an object that claims to
  equal everything, a patched builtin or an exit in the solution passes no test.

The grader prints ``PASSED <nonce>`` when ``check`` returned, else ``FAILED <reason>`` (the reason
never quotes the tests: a wrong answer, the name of an exception raised on a hidden input, a
timeout, or the solution's load error, which is about the solution alone).
"""
import json
import os
import select
import subprocess
import sys
import time

CONFIG = "_dgm_grade.json"
MAX_LINE = 4 << 20  # bytes of one answer of the solution's process


# -- plain data across the pipe ---------------------------------------------------------------
def encode(v, depth=0):
    if depth > 50:
        raise TypeError("a value nested more than 50 deep")
    t = type(v)
    if v is None:
        return ["n"]
    if t is bool:
        return ["b", v]
    if t is int:
        return ["i", str(v)]
    if t is float:
        return ["f", repr(v)]
    if t is complex:
        return ["c", repr(v.real), repr(v.imag)]
    if t is str:
        return ["s", v]
    if t in (list, tuple, set, frozenset):
        return [{list: "l", tuple: "t", set: "S", frozenset: "F"}[t], [encode(x, depth + 1) for x in v]]
    if t is dict:
        return ["d", [[encode(k, depth + 1), encode(x, depth + 1)] for k, x in v.items()]]
    item = getattr(v, "item", None) if t.__module__ == "numpy" else None  # numpy scalars and arrays
    if item is not None:
        return encode(v.tolist() if hasattr(v, "tolist") else item(), depth)
    raise TypeError(f"returns a {t.__name__}, not plain data")


def decode(e, depth=0):
    if depth > 50 or not isinstance(e, list) or not e or not isinstance(e[0], str):
        raise ValueError("malformed value")
    tag = e[0]
    if tag == "n":
        return None
    if tag == "b" and isinstance(e[1], bool):
        return bool(e[1])
    if tag == "i" and isinstance(e[1], str) and len(e[1]) < 5000:
        return int(e[1])
    if tag == "f" and isinstance(e[1], str):
        return float(e[1])
    if tag == "c":
        return complex(float(e[1]), float(e[2]))
    if tag == "s" and isinstance(e[1], str):
        return str(e[1])
    if tag in ("l", "t", "S", "F") and isinstance(e[1], list):
        items = [decode(x, depth + 1) for x in e[1]]
        return {"l": list, "t": tuple, "S": set, "F": frozenset}[tag](items)
    if tag == "d" and isinstance(e[1], list):
        return {decode(k, depth + 1): decode(x, depth + 1) for k, x in e[1]}
    raise ValueError("malformed value")


# -- the grader --------------------------------------------------------------------------------
class Stop(Exception):
    """The grading ends with this reason (the solution's fault)."""


class Remote:
    """The entry point as the tests see it: each call is answered by the solution's process."""

    def __init__(self, proc, deadline):
        self.proc, self.deadline, self.buf = proc, deadline, b""

    def line(self):
        while b"\n" not in self.buf:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise Stop("timed out on the hidden tests")
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if not ready:
                continue
            chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
            if not chunk:
                code = self.proc.wait()
                raise Stop(f"the solution's process ended (exit status {code}) during the hidden tests")
            self.buf += chunk
            if len(self.buf) > MAX_LINE:
                raise Stop("an answer larger than 4 MB")
        line, self.buf = self.buf.split(b"\n", 1)
        try:
            return json.loads(line)
        except ValueError:
            raise Stop("an unreadable answer from the solution's process") from None

    def __call__(self, *args):
        try:
            self.proc.stdin.write(json.dumps(encode(list(args))).encode() + b"\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise Stop("the solution's process ended during the hidden tests") from None
        answer = self.line()
        if not isinstance(answer, dict):
            raise Stop("an unreadable answer from the solution's process")
        if "raised" in answer:
            raise Stop(f"raised {str(answer['raised'])[:60]} on a hidden test")
        if "unplain" in answer:
            raise Stop(f"returned a {str(answer['unplain'])[:60]} on a hidden test, not plain data "
                       "(numbers, strings, lists, tuples, dicts, sets, None)")
        if "ok" not in answer:
            raise Stop("an unreadable answer from the solution's process")
        try:
            return decode(answer["ok"])
        except (ValueError, TypeError, OverflowError, RecursionError):
            raise Stop("returned a value that is not plain data") from None


def non_dumpable():
    """prctl(PR_SET_DUMPABLE, 0): other processes of this uid can no longer ptrace this one or open
    its /proc files (memory, file descriptors)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)
    except Exception:
        pass


def grade():
    with open(CONFIG) as f:
        cfg = json.load(f)
    os.remove(CONFIG)
    non_dumpable()
    deadline = time.monotonic() + float(cfg["timeout_s"])
    proc = subprocess.Popen(
        [sys.executable, "-I", "-B", os.path.abspath(__file__), "--serve", cfg["entry_point"]],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, close_fds=True,
    )
    remote = Remote(proc, deadline)
    try:
        hello = remote.line()
        if not isinstance(hello, dict) or "loaded" not in hello:
            raise Stop("the solution's process did not start")
        if hello["loaded"] is not True:
            raise Stop(f"the solution does not load: {str(hello['loaded'])[:200]}")
        tests = {"__name__": "_dgm_tests"}
        exec(compile(cfg["prompt"], "prompt.py", "exec"), tests)  # the prompt's helpers (poly, encode_cyclic, ...)
        tests[cfg["entry_point"]] = remote  # a test that names the function means the solution's (HumanEval/33)
        exec(compile(cfg["test"], "hidden_test.py", "exec"), tests)
        try:
            tests["check"](remote)
        except AssertionError:
            raise Stop("wrong answer on a hidden test") from None
        except Stop:
            raise
        except Exception as e:  # the tests' own code choked on what the solution returned
            raise Stop(f"{type(e).__name__} in the hidden tests on what the solution returned") from None
    except Stop as why:
        print(f"FAILED {why}", flush=True)
        return 1
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    print(f"PASSED {cfg['nonce']}", flush=True)
    return 0


# -- the solution's process --------------------------------------------------------------------
def serve(entry_point):
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # what the solution prints goes nowhere near the protocol
    inbox = sys.stdin.buffer
    ns = {"__name__": "solution"}
    try:
        with open("prompt.py") as f:
            prompt = f.read()
        with open("solution.py") as f:
            solution = f.read()
        exec(compile(prompt, "prompt.py", "exec"), ns)
        exec(compile(solution, "solution.py", "exec"), ns)
        fn = ns.get(entry_point)
        if not callable(fn):
            raise NameError(f"the solution defines no function {entry_point}")
        loaded = True
    except BaseException as e:  # noqa: BLE001 - anything the solution does at load time
        loaded = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}".rstrip(": ")
    proto.write(json.dumps({"loaded": loaded}) + "\n")
    proto.flush()
    if loaded is not True:
        return 0
    for line in inbox:
        args = decode(json.loads(line))
        try:
            value = fn(*args)
        except BaseException as e:  # noqa: BLE001
            answer = {"raised": type(e).__name__}
        else:
            try:
                answer = {"ok": encode(value)}
            except (TypeError, ValueError, RecursionError):
                answer = {"unplain": type(value).__name__}
        proto.write(json.dumps(answer) + "\n")
        proto.flush()
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--serve":
        sys.exit(serve(sys.argv[2]))
    sys.exit(grade())
