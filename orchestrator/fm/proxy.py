"""``FMProxy``: the FM on a Unix socket, for agents inside a sandbox.

A self-improving agent runs with no network and no credentials. The orchestrator binds one
proxy socket into its sandbox; the agent speaks the OpenAI protocol to it
(``POST /v1/chat/completions``, ``GET /v1/models``). The proxy

- forwards each request through the orchestrator's ``FMClient`` (which holds the real key and
  does the retries), tagged with the node id this socket serves;
- charges calls, tokens and cost to a ``Budget`` (shareable between proxies) and answers
  HTTP 429 with a JSON error once the budget is spent;
- caps ``max_tokens`` and the requests in flight, draws a fresh seed when the agent gives none,
  ignores the agent's ``model`` and ``Authorization``, and never sees or returns the key.

    budget = Budget(limit_calls=20, limit_tokens=50_000)
    with FMProxy(fm_client, run_dir / "fm.sock", node_id="n42", budget=budget) as proxy:
        ... run the sandbox with run_dir/fm.sock bound in ...
    proxy.totals()  # what node n42 used
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import logging
import os
import random
import socket
import socketserver
import stat
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from .client import Completion, FMClient, FMError, UsageTotals

log = logging.getLogger("dgm.fm.proxy")

MAX_BODY_BYTES = 1 << 20
MAX_SOCKET_PATH = 107  # sockaddr_un.sun_path holds 108 bytes with the NUL
TRANSCRIPT_CALLS = 64  # calls kept in a proxy's transcript
TRANSCRIPT_CHARS = 8000  # characters kept of each request and answer (head and tail)


def _clip(text: str, limit: int = TRANSCRIPT_CHARS) -> str:
    if len(text) <= limit:
        return text
    return text[: limit // 2] + f"\n…[{len(text) - limit} characters cut]…\n" + text[-limit // 2 :]


class Budget:
    """Limits on FM use (None: unlimited), shared by any number of threads and proxies."""

    def __init__(self, limit_calls: int | None = None, limit_tokens: int | None = None,
                 limit_usd: float | None = None) -> None:
        for name, v in (("limit_calls", limit_calls), ("limit_tokens", limit_tokens), ("limit_usd", limit_usd)):
            if v is not None and v < 0:
                raise ValueError(f"{name} = {v}: must be >= 0")
        self.limit_calls, self.limit_tokens, self.limit_usd = limit_calls, limit_tokens, limit_usd
        self.calls = 0
        self.tokens = 0
        self.usd = 0.0
        self._lock = threading.Lock()

    def charge(self, *, calls: int = 0, tokens: int = 0, usd: float = 0.0) -> None:
        with self._lock:
            self.calls += calls
            self.tokens += tokens
            self.usd += usd

    def exhausted(self) -> str | None:
        """Why no further call may start, in words; None while budget is left."""
        with self._lock:
            return self._exhausted()

    def start_call(self) -> str | None:
        """Count one call if budget is left (atomically: two threads cannot both take the last
        call); otherwise return the reason. Tokens and cost are charged when the call ends."""
        with self._lock:
            reason = self._exhausted()
            if reason is None:
                self.calls += 1
            return reason

    def _exhausted(self) -> str | None:
        if self.limit_calls is not None and self.calls >= self.limit_calls:
            return f"FM call budget spent: {self.calls} of {self.limit_calls} calls used"
        if self.limit_tokens is not None and self.tokens >= self.limit_tokens:
            return f"FM token budget spent: {self.tokens:,} of {self.limit_tokens:,} tokens used"
        if self.limit_usd is not None and self.usd >= self.limit_usd:
            return f"FM cost budget spent: ${self.usd:.4f} of ${self.limit_usd:.4f} used"
        return None

    def __repr__(self) -> str:
        return (f"Budget(calls={self.calls}/{self.limit_calls}, tokens={self.tokens}/{self.limit_tokens}, "
                f"usd={self.usd:.4f}/{self.limit_usd})")


class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    block_on_close = False


class FMProxy:
    """An OpenAI-protocol server on a Unix socket, forwarding to ``client`` for one node."""

    def __init__(
        self,
        client: FMClient,
        socket_path: Path | str,
        *,
        node_id: str,
        budget: Budget | None = None,
        max_tokens_cap: int = 1200,
        default_temperature: float = 0.7,
        max_in_flight: int = 2,
        socket_mode: int = 0o666,
        rng: random.Random | None = None,
    ) -> None:
        self.client = client
        self.socket_path = Path(socket_path)
        self.node_id = node_id
        self.budget = budget or Budget()
        self.max_tokens_cap = max_tokens_cap
        self.default_temperature = default_temperature
        self.socket_mode = socket_mode  # the sandbox may run as another uid
        self._rng = rng or random.Random()
        self._in_flight = threading.BoundedSemaphore(max_in_flight)  # more requests wait their turn
        self._lock = threading.Lock()
        self._totals = UsageTotals()
        self._refused = 0
        self._transcript: list[dict] = []  # one entry per call, refused and failed ones included
        self._server: _UnixHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> "FMProxy":
        path = self.socket_path
        if len(os.fsencode(path)) > MAX_SOCKET_PATH:
            raise ValueError(f"FM proxy socket path is {len(os.fsencode(path))} bytes, the limit is "
                             f"{MAX_SOCKET_PATH}: choose a shorter path than {path}")
        if path.exists() or path.is_symlink():
            if not stat.S_ISSOCK(path.lstat().st_mode):
                raise FileExistsError(f"{path} exists and is not a socket; not replacing it")
            path.unlink()  # a stale socket from an earlier run
        path.parent.mkdir(parents=True, exist_ok=True)
        self._server = _UnixHTTPServer(str(path), _make_handler(self))
        os.chmod(path, self.socket_mode)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"fm-proxy-{self.node_id}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self.socket_path.unlink()
        except FileNotFoundError:
            pass

    def __enter__(self) -> "FMProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def totals(self) -> UsageTotals:
        """Calls served through this proxy (refused calls are not in it; see ``refused``)."""
        with self._lock:
            return dataclasses.replace(self._totals)

    def transcript(self) -> list[dict]:
        """Every call through this proxy, in order: the last message sent, the answer (or why
        there was none) and the tokens, each text clipped to ``TRANSCRIPT_CHARS``."""
        with self._lock:
            return [dict(t) for t in self._transcript]

    def _note(self, messages: list, status: int, answer: str, tokens: int = 0) -> None:
        last = messages[-1]["content"] if messages else ""
        with self._lock:
            if len(self._transcript) < TRANSCRIPT_CALLS:
                self._transcript.append({"status": status, "request": _clip(last), "answer": _clip(answer), "tokens": tokens})

    @property
    def refused(self) -> int:
        """Requests answered 429 because the budget was spent."""
        with self._lock:
            return self._refused

    # -- one request ---------------------------------------------------------------------------
    def handle_chat(self, body: Any) -> tuple[int, dict]:
        """(HTTP status, JSON answer) for one chat-completions request body."""
        if not isinstance(body, dict):
            return 400, _error("the request body must be a JSON object", "invalid_request_error")
        messages = body.get("messages")
        if not (isinstance(messages, list) and messages and all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in messages)):
            return 400, _error("messages must be a non-empty list of {role, content} objects "
                               "with string content", "invalid_request_error")
        if body.get("stream"):
            return 400, _error("streaming is not supported by the dgm FM proxy", "invalid_request_error")
        try:
            params = self._params(body)
        except (TypeError, ValueError) as e:
            return 400, _error(str(e), "invalid_request_error")

        reason = self.budget.start_call()
        if reason is not None:
            with self._lock:
                self._refused += 1
            log.info("node %s: FM call refused: %s", self.node_id, reason)
            self._note(messages, 429, f"refused: {reason}")
            return 429, _error(reason, "budget_exhausted", code="budget_exhausted")
        msgs = [{"role": m["role"], "content": m["content"]} for m in messages]
        try:
            with self._in_flight:
                c = self.client.complete(msgs, node_tag=self.node_id, **params)
        except FMError as e:
            with self._lock:
                self._totals._add_failure(e.attempts)
            status = e.status if e.kind == "http" and e.status in (400, 413, 422) else (
                504 if e.kind == "timeout" else 502)
            self._note(messages, status, f"FM error ({e.kind}): {e.message}")
            return status, _error(e.message, f"fm_{e.kind}")
        except Exception as e:  # a bug here must still answer the agent, not drop the connection
            log.exception("node %s: FM proxy failed", self.node_id)
            with self._lock:
                self._totals._add_failure(0)
            return 500, _error(f"internal FM proxy error: {type(e).__name__}", "proxy_error")
        self.budget.charge(tokens=c.prompt_tokens + c.completion_tokens, usd=c.cost_usd)
        with self._lock:
            self._totals._add_success(c)
        self._note(messages, 200, c.text, c.prompt_tokens + c.completion_tokens)
        return 200, _completion_json(c)

    def _params(self, body: dict) -> dict:
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        max_tokens = self.max_tokens_cap if max_tokens is None else _int("max_tokens", max_tokens, 1)
        temperature = body.get("temperature")
        temperature = self.default_temperature if temperature is None else _float("temperature", temperature)
        if not 0 <= temperature <= 2:
            raise ValueError(f"temperature = {temperature}: must be between 0 and 2")
        seed = body.get("seed")
        with self._lock:
            seed = self._rng.randrange(2**31) if seed is None else _int("seed", seed, 0)
        extra = {k: body[k] for k in ("stop", "response_format") if body.get(k) is not None}
        return {"max_tokens": min(max_tokens, self.max_tokens_cap), "temperature": temperature,
                "seed": seed, "extra_body": extra or None}


def _int(name: str, v: Any, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ValueError(f"{name} = {v!r}: must be an integer >= {lo}")
    return v


def _float(name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"{name} = {v!r}: must be a number")
    return float(v)


def _error(message: str, type_: str, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "code": code or type_}}


def _completion_json(c: Completion) -> dict:
    return {
        "id": f"chatcmpl-dgm-{time.time_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": c.model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": c.text},
                     "finish_reason": c.finish_reason or "stop"}],
        "usage": {"prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
                  "total_tokens": c.prompt_tokens + c.completion_tokens},
    }


def _make_handler(proxy: FMProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 60  # a client that stops sending cannot hold a thread for ever

        def address_string(self) -> str:  # Unix sockets have no peer address
            return f"unix:{proxy.socket_path.name}"

        def log_message(self, fmt: str, *args) -> None:
            log.debug("node %s: " + fmt, proxy.node_id, *args)

        def do_GET(self) -> None:
            path = self.path.split("?")[0].rstrip("/")
            if path == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": proxy.client.model, "object": "model",
                                                              "owned_by": "dgm"}]})
            elif path == "/health":
                self._send(200, {"status": "ok", "node": proxy.node_id})
            else:
                self._send(404, _error(f"no route GET {self.path}", "not_found"))

        def do_POST(self) -> None:
            path = self.path.split("?")[0].rstrip("/")
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length < 0 or length > MAX_BODY_BYTES:
                self.close_connection = True
                self._send(413, _error(f"request body must be 0..{MAX_BODY_BYTES} bytes", "invalid_request_error"))
                return
            raw = self.rfile.read(length)
            if path != "/v1/chat/completions":
                self._send(404, _error(f"no route POST {self.path}", "not_found"))
                return
            try:
                body = json.loads(raw)
            except ValueError:
                self._send(400, _error("the request body is not JSON", "invalid_request_error"))
                return
            self._send(*proxy.handle_chat(body))

        def _send(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

    return Handler


class UnixHTTPConnection(http.client.HTTPConnection):
    """``http.client`` over a Unix socket: ``UnixHTTPConnection(path).request("GET", "/health")``."""

    def __init__(self, socket_path: Path | str, timeout: float = 600.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = str(socket_path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        self.sock = sock
