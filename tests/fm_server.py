"""A scripted OpenAI-protocol server for integration tests, over real HTTP.

    with ScriptedFMServer([Status(500), Reply("hello", prompt_tokens=7, completion_tokens=2)]) as srv:
        client = FMClient(srv.base_url, "m", api_key="k")
        ...
        assert srv.requests[1]["seed"] == 3

Each ``POST /v1/chat/completions`` consumes the next step of ``script``; when the script is used
up, ``responder(request_json)`` decides (if given), else ``default``. ``GET /v1/models`` and
``GET /health`` answer at once and consume nothing.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterable, Union


@dataclass
class Reply:
    """A well-formed chat completion. Token counts of None leave ``usage`` out of the body."""

    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str = "stop"


@dataclass
class Delay:
    """Wait ``seconds`` (cut short when the server shuts down), then answer with ``then``."""

    seconds: float
    then: "Step" = field(default_factory=lambda: Reply("late"))


@dataclass
class Status:
    """An HTTP error status; a dict body is sent as JSON."""

    code: int
    body: Union[str, dict] = ""
    headers: dict = field(default_factory=dict)


@dataclass
class Stall:
    """A 200 answer that stops mid-body: the headers and the first ``sent`` bytes of ``then``'s
    JSON go out, then nothing more until the server shuts down (a stream that stalls)."""

    then: "Reply" = field(default_factory=lambda: Reply("stalled"))
    sent: int = 40


@dataclass
class Trickle:
    """A 200 answer whose body comes one byte every ``every`` seconds: each read gets something
    in time, so only a deadline for the whole call ends it."""

    then: "Reply" = field(default_factory=lambda: Reply("trickled"))
    every: float = 0.1


@dataclass
class Garbage:
    """Raw bytes with status 200 (invalid JSON, a body without choices, ...)."""

    raw: bytes
    content_type: str = "application/json"


Step = Union[Reply, Delay, Status, Garbage, Stall, Trickle]


class ScriptedFMServer:
    """``ThreadingHTTPServer`` on 127.0.0.1 (free port) speaking enough of the OpenAI protocol."""

    def __init__(
        self,
        script: Iterable[Step] = (),
        *,
        responder: Callable[[dict], Step] | None = None,
        default: Step | None = None,
        model: str = "scripted-model",
        port: int = 0,
    ) -> None:
        self.model = model
        self.default = default if default is not None else Reply("ok", 10, 2)
        self.responder = responder
        self.requests: list[dict] = []          # JSON bodies of chat requests, in arrival order
        self.request_headers: list[dict] = []   # their headers (lower-case names)
        self._script = list(script)
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._ids = itertools.count(1)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def push(self, *steps: Step) -> None:
        """Append steps to the script."""
        with self._lock:
            self._script.extend(steps)

    def start(self) -> "ScriptedFMServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="scripted-fm", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._closing.set()  # releases handlers sleeping in a Delay
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> "ScriptedFMServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- used by the handler -------------------------------------------------------------------
    def _next_step(self, body: dict) -> Step:
        with self._lock:
            self.requests.append(body)
            if self._script:
                return self._script.pop(0)
        return self.responder(body) if self.responder else self.default

    def _completion_json(self, reply: Reply) -> dict:
        out = {
            "id": f"chatcmpl-{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": reply.text},
                "finish_reason": reply.finish_reason,
            }],
        }
        if reply.prompt_tokens is not None or reply.completion_tokens is not None:
            p, c = reply.prompt_tokens or 0, reply.completion_tokens or 0
            out["usage"] = {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}
        return out


def _make_handler(server: ScriptedFMServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # keep test output quiet
            pass

        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": server.model, "object": "model"}]})
            elif self.path == "/health":
                self._send(200, {"status": "ok"})
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._send(404, {"error": {"message": f"no route {self.path}"}})
                return
            try:
                body = json.loads(raw)
            except ValueError:
                self._send(400, {"error": {"message": "request body is not JSON"}})
                return
            with server._lock:
                server.request_headers.append({k.lower(): v for k, v in self.headers.items()})
            self._play(server._next_step(body))

        def _play(self, step: Step) -> None:
            while isinstance(step, Delay):
                if server._closing.wait(step.seconds):
                    self.close_connection = True
                    return
                step = step.then
            if isinstance(step, Reply):
                self._send(200, server._completion_json(step))
            elif isinstance(step, Status):
                self._send(step.code, step.body, step.headers)
            elif isinstance(step, Garbage):
                self._send_bytes(200, step.raw, step.content_type, {})
            elif isinstance(step, Stall):
                data = self._start_body(step.then)
                self.wfile.write(data[: step.sent])
                self.wfile.flush()
                server._closing.wait()  # never the rest: the client's read deadline must fire
                self.close_connection = True
            elif isinstance(step, Trickle):
                data = self._start_body(step.then)
                try:
                    for i in range(len(data)):
                        self.wfile.write(data[i : i + 1])
                        self.wfile.flush()
                        if server._closing.wait(step.every):
                            break
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (its deadline)
                    pass
                self.close_connection = True
            else:
                raise TypeError(f"unknown step {step!r}")

        def _start_body(self, reply: "Reply") -> bytes:
            """Send a 200's headers for ``reply``'s completion; return its body, not yet sent."""
            data = json.dumps(server._completion_json(reply)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            return data

        def _send(self, code: int, body, headers: dict | None = None) -> None:
            if isinstance(body, (dict, list)):
                data, ctype = json.dumps(body).encode(), "application/json"
            else:
                data, ctype = str(body).encode(), "text/plain"
            self._send_bytes(code, data, ctype, headers or {})

        def _send_bytes(self, code: int, data: bytes, ctype: str, headers: dict) -> None:
            try:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, str(v))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                self.close_connection = True

    return Handler
