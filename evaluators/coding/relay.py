"""The model, per problem: a relay on a Unix socket of its own between the agent's sandbox and the
evaluation's FM socket (``CandidateRun.fm_socket``, the campaign's proxy, which holds the
evaluation's whole budget and charges the node).

The evaluator binds only the relay's directory into the sandbox, so the agent never reaches the
upstream socket itself. Each problem is one budget (``open_problem``): calls and tokens beyond it
are answered HTTP 429 like the proxy's own refusals, and ``max_tokens`` is capped per call. The
relay only counts and forwards; it holds no key and sees none.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import socketserver
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from sandboxes import scratch

MAX_BODY = 1 << 20


@dataclass
class Usage:
    """One problem's use of the model through the relay."""

    calls_limit: int
    tokens_limit: int
    calls: int = 0
    tokens: int = 0
    refused: int = 0
    failed: int = 0

    def exhausted(self) -> str | None:
        if self.calls >= self.calls_limit:
            return f"the problem's model budget is spent: {self.calls} of {self.calls_limit} calls used"
        if self.tokens >= self.tokens_limit:
            return f"the problem's model budget is spent: {self.tokens} of {self.tokens_limit} tokens used"
        return None


class _Unix(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    block_on_close = False


class ProblemRelay:
    """``with ProblemRelay(upstream) as relay: relay.open_problem(calls, tokens, cap); ... relay.usage``.

    ``upstream`` None: no model is served to this evaluation; every call is answered 503.
    """

    def __init__(self, upstream: Path | None, *, timeout_s: float = 900.0) -> None:
        self.upstream = str(upstream) if upstream is not None else None
        self.timeout_s = timeout_s
        self.dir = scratch.mkdtemp("cr-")  # short: sun_path holds 107 bytes
        os.chmod(self.dir, 0o755)  # the sandbox's unprivileged uid connects
        self.path = self.dir / "fm.sock"
        self._lock = threading.Lock()
        self.usage = Usage(0, 0)
        self.max_tokens = 512
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def open_problem(self, calls: int, tokens: int, max_tokens: int) -> Usage:
        """Start a new problem's budget; calls still in flight keep charging the old one."""
        with self._lock:
            self.usage = Usage(calls, tokens)
            self.max_tokens = max_tokens
            return self.usage

    def __enter__(self) -> "ProblemRelay":
        self._server = _Server(str(self.path), _handler(self))
        os.chmod(self.path, 0o666)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="coding-relay", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def chat(self, body: dict) -> tuple[int, dict]:
        with self._lock:
            usage, cap = self.usage, self.max_tokens
            reason = usage.exhausted()
            if reason:
                usage.refused += 1
            else:
                usage.calls += 1
        if reason:
            return 429, _error(reason, "budget_exhausted")
        if self.upstream is None:
            with self._lock:
                usage.failed += 1
            return 503, _error("no model is served to this evaluation", "no_model")
        requested = body.get("max_tokens", body.get("max_completion_tokens"))
        left = max(1, usage.tokens_limit - usage.tokens)
        body = {**body, "max_tokens": min(cap, left, requested if isinstance(requested, int) and requested > 0 else cap)}
        body.pop("max_completion_tokens", None)
        conn = _Unix(self.upstream, self.timeout_s)
        try:
            conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
            resp = conn.getresponse()
            status, raw = resp.status, resp.read()
        except OSError as e:
            with self._lock:
                usage.failed += 1
            return 502, _error(f"the model could not be reached: {type(e).__name__}", "fm_unreachable")
        finally:
            conn.close()
        try:
            answer = json.loads(raw or b"{}")
        except ValueError:
            answer = _error("unreadable answer from the model", "fm_error")
        if status == 200:
            tokens = (answer.get("usage") or {}).get("total_tokens") or 0
            with self._lock:
                usage.tokens += int(tokens) if isinstance(tokens, int) else 0
        else:
            with self._lock:
                usage.failed += 1
        return status, answer


def _error(message: str, kind: str) -> dict:
    return {"error": {"message": message, "type": kind, "code": kind}}


def _handler(relay: ProblemRelay) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 60

        def address_string(self) -> str:
            return "unix:relay"

        def log_message(self, *args) -> None:
            pass

        def do_POST(self) -> None:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if not 0 <= length <= MAX_BODY:
                self.close_connection = True
                return self._send(413, _error("request body too large", "invalid_request_error"))
            raw = self.rfile.read(length)
            if self.path.split("?")[0].rstrip("/") != "/v1/chat/completions":
                return self._send(404, _error(f"no route POST {self.path}", "not_found"))
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            if not isinstance(body, dict):
                return self._send(400, _error("the request body must be a JSON object", "invalid_request_error"))
            self._send(*relay.chat(body))

        def _send(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

    return Handler
