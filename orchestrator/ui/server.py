"""``dgm ui``: a read-only web app over run directories (Starlette app, served by uvicorn).

Every route is a GET; the archives are opened read-only. The page, its script and the vendored
libraries (d3, Chart.js) are files of this package, so nothing is fetched from the network.

Safety: the server binds to loopback unless told otherwise, and then accepts only requests whose
Host is a loopback name (a web page elsewhere cannot reach it through DNS rebinding). Any other
bind needs a token; with a token set, every request must carry it (``?token=`` once, which sets a
cookie, or ``Authorization: Bearer …``), and one without it is refused with 401.
"""

from __future__ import annotations

import hmac
import ipaddress
import socket
import threading
import time
from pathlib import Path
from typing import Sequence

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from .data import RunView

STATIC_DIR = Path(__file__).parent / "static"
TOKEN_ENV = "DGM_UI_TOKEN"
COOKIE = "dgm_ui_token"
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class BindError(ValueError):
    """A bind the UI refuses (non-loopback without a token)."""


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse a non-loopback bind without a token, with words a person can act on."""
    if not is_loopback(host) and not token:
        raise BindError(
            f"refusing to serve on {host}: that address is reachable from other machines and the UI shows "
            f"every prompt, answer and program of the run. Give a token (--token SECRET or {TOKEN_ENV}=SECRET) "
            "or bind to 127.0.0.1"
        )


class Guard:
    """ASGI middleware: loopback Host check, token check, security headers."""

    def __init__(self, app: ASGIApp, token: str | None, loopback: bool):
        self.app = app
        self.token = token
        self.loopback = loopback

    def _host_ok(self, scope: Scope) -> bool:
        host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return is_loopback(name)

    def _token_of(self, request: Request) -> tuple[str | None, bool]:
        """The token a request carries, and whether it came in the query (then a cookie is set)."""
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip(), False
        if "token" in request.query_params:
            return request.query_params["token"], True
        return request.cookies.get(COOKIE), False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.loopback and not self._host_ok(scope):
            return await _plain(403, "dgm ui: this server answers loopback host names only")(scope, receive, send)
        from_query = False
        if self.token is not None:
            given, from_query = self._token_of(Request(scope))
            if not given or not hmac.compare_digest(given.encode(), self.token.encode()):
                return await _plain(401, "dgm ui: this server needs its token: open it as http://HOST:PORT/?token=TOKEN")(
                    scope, receive, send
                )

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
                if from_query:
                    cookie = f"{COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/"
                    headers.append((b"set-cookie", cookie.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _plain(status: int, text: str) -> Response:
    return PlainTextResponse(text + "\n", status_code=status, headers=SECURITY_HEADERS)


def create_app(runs: Sequence[RunView], *, token: str | None = None, loopback: bool = True) -> Starlette:
    def run_of(request: Request) -> RunView:
        i = request.path_params["run"]
        if not 0 <= i < len(runs):
            raise LookupError(f"no run {i} (runs 0..{len(runs) - 1})")
        return runs[i]

    def not_found(e: LookupError) -> JSONResponse:
        return JSONResponse({"error": str(e).strip("'\"")}, status_code=404)

    async def index(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-store"})

    def api_runs(request: Request) -> JSONResponse:
        return JSONResponse(
            [{"index": r.index, "name": r.name, "run_dir": str(r.run_dir), "campaign": r.campaign} for r in runs]
        )

    def api_nodes(request: Request) -> JSONResponse:
        try:
            since = int(request.query_params.get("since", "0"))
        except ValueError:
            return JSONResponse({"error": "since must be an integer cursor"}, status_code=400)
        try:
            return JSONResponse(run_of(request).changes(since), headers={"Cache-Control": "no-store"})
        except LookupError as e:
            return not_found(e)

    def api_node(request: Request) -> JSONResponse:
        try:
            return JSONResponse(run_of(request).detail(request.path_params["node"]))
        except LookupError as e:
            return not_found(e)

    def api_series(request: Request) -> JSONResponse:
        try:
            return JSONResponse(run_of(request).series(), headers={"Cache-Control": "no-store"})
        except LookupError as e:
            return not_found(e)

    def api_summary(request: Request) -> JSONResponse:
        try:
            view = run_of(request)
        except LookupError as e:
            return not_found(e)
        view.refresh()
        return JSONResponse(view.summary(), headers={"Cache-Control": "no-store"})

    async def no_icon(request: Request) -> Response:
        return Response(status_code=204)

    routes = [
        Route("/", index),
        Route("/favicon.ico", no_icon),
        Route("/api/runs", api_runs),
        Route("/api/runs/{run:int}/nodes", api_nodes),
        Route("/api/runs/{run:int}/nodes/{node:int}", api_node),
        Route("/api/runs/{run:int}/series", api_series),
        Route("/api/runs/{run:int}/summary", api_summary),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    middleware = [Middleware(Guard, token=token, loopback=loopback), Middleware(GZipMiddleware, minimum_size=4096)]
    return Starlette(routes=routes, middleware=middleware)


class UIServer:
    """The app on a socket of its own, served by uvicorn (in this thread, or a background one)."""

    def __init__(self, run_dirs: Sequence[str | Path], host: str = "127.0.0.1", port: int = 8765, token: str | None = None):
        check_bind(host, token)
        self.host = host
        self.token = token or None
        self.runs = [RunView(d, i, load=False) for i, d in enumerate(run_dirs)]
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host.strip("[]"), port))
        except OSError as e:
            self.sock.close()
            raise BindError(f"cannot listen on {host}:{port}: {e.strerror}; pick another --port") from None
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        app = create_app(self.runs, token=self.token, loopback=is_loopback(host))
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host.strip('[]')}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def load(self, wait: bool = False) -> None:
        """Read every run's nodes in background threads (pages show them as they arrive)."""
        threads = [run.start_loading() for run in self.runs]
        if wait:
            for t in threads:
                t.join()

    def serve_forever(self) -> None:
        self.load()
        try:
            self.server.run(sockets=[self.sock])
        finally:
            self.close()

    def start(self, wait_loaded: bool = True) -> UIServer:
        """Serve from a background thread (tests, benchmarks); returns once it answers (and, by
        default, once every node is read)."""
        self.load(wait=wait_loaded)
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self._thread.start()
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the UI server stopped while starting")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.close()

    def close(self) -> None:
        self.sock.close()
        for run in self.runs:
            run.close()
