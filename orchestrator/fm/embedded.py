"""``EmbeddedServer``: the local llama.cpp model server, run as a child process we own.

    with EmbeddedServer(model_path) as server:
        client = FMClient(server.base_url, "qwen", api_key=EMBEDDED_API_KEY)

A crash of the model server cannot take the campaign down: it lives in its own process
(``python -m orchestrator.fm.embedded_server``), listens on 127.0.0.1 only, and exits when this
process dies. Its log (llama.cpp's stderr) goes to a file whose tail is quoted in errors. When
the child dies later, a supervisor thread restarts it on the same port (``max_restarts`` times),
so the client's base URL stays valid and later calls succeed again.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

_PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the directory holding `orchestrator/`


class EmbeddedServerError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EmbeddedServer:
    """Start, health-check and stop the model server child process."""

    def __init__(
        self,
        model_path: Path | str,
        *,
        n_ctx: int = 8192,
        n_parallel: int = 2,
        n_threads: int | None = None,
        alias: str | None = None,
        start_timeout_s: float = 180.0,
        max_restarts: int = 3,
        log_path: Path | str | None = None,
        log: Callable[[str], None] = lambda msg: None,
        server_module: str = "orchestrator.fm.embedded_server",
    ) -> None:
        self.model_path = Path(model_path)
        self.n_ctx = n_ctx
        self.n_parallel = n_parallel
        self.n_threads = n_threads
        self.alias = alias
        self.start_timeout_s = start_timeout_s
        self.max_restarts = max_restarts
        self.log_path = Path(log_path) if log_path else None
        self._own_log = False
        self._log = log
        self._server_module = server_module  # tests substitute a fake child
        self._proc: subprocess.Popen | None = None
        self._port: int | None = None
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None
        self.startup_s: float | None = None  # measured by start()
        self.restarts = 0

    @property
    def port(self) -> int:
        if self._port is None:
            raise EmbeddedServerError("the embedded FM server is not running")
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> "EmbeddedServer":
        with self._lock:
            if self.alive():
                return self
            if not self.model_path.is_file():
                raise EmbeddedServerError(f"model file not found: {self.model_path}")
            if self.log_path is None:
                fd, name = tempfile.mkstemp(prefix="dgm-fm-server-", suffix=".log")
                os.close(fd)
                self.log_path, self._own_log = Path(name), True
            self._stopping.clear()
            started = time.monotonic()
            for attempt in range(3):  # another process may take the free port before the child binds it
                self._port = free_port()
                try:
                    self._spawn_and_wait()
                    break
                except EmbeddedServerError:
                    if "couldn't bind" not in self.log_tail().lower() or attempt == 2:
                        self._port = None
                        raise
            self.startup_s = time.monotonic() - started
            self._log(f"embedded FM ready on {self.base_url} in {self.startup_s:.1f} s "
                      f"(pid {self.pid}, log {self.log_path})")
            if self.max_restarts > 0 and self._supervisor is None:
                self._supervisor = threading.Thread(target=self._supervise, name="fm-server-supervisor",
                                                    daemon=True)
                self._supervisor.start()
            return self

    def _spawn_and_wait(self) -> None:
        """Start the child on ``self._port`` and wait until it answers; on failure it is gone."""
        self._spawn()
        try:
            self._wait_ready()
        except EmbeddedServerError:
            self._kill_child()
            raise

    def _supervise(self) -> None:
        while not self._stopping.wait(0.5):
            with self._lock:
                if self._stopping.is_set() or (self._proc is not None and self._proc.poll() is None):
                    continue
                rc = self._proc.returncode if self._proc is not None else "failed restart"
                if self.restarts >= self.max_restarts:
                    self._log(f"embedded FM server died (status {rc}) and was restarted "
                              f"{self.restarts} times already: giving up; log {self.log_path}")
                    self._proc = None
                    return
                self.restarts += 1
                self._log(f"embedded FM server died (status {rc}); restarting it on port {self._port} "
                          f"({self.restarts}/{self.max_restarts})")
                try:
                    self._spawn_and_wait()
                except EmbeddedServerError as e:
                    self._log(str(e))

    def _spawn(self) -> None:
        cmd = [sys.executable, "-m", self._server_module,
               "--model", str(self.model_path), "--port", str(self._port),
               "--ctx", str(self.n_ctx), "--parallel", str(self.n_parallel),
               "--threads", str(self.n_threads or 0), "--parent-pid", str(os.getpid())]
        if self.alias:
            cmd += ["--alias", self.alias]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_PACKAGE_ROOT), env.get("PYTHONPATH")]))
        with open(self.log_path, "ab") as logf:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                          env=env, start_new_session=True)

    def _wait_ready(self) -> None:
        started = time.monotonic()
        url = f"http://127.0.0.1:{self._port}/health"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # ignore *_proxy vars
        while True:
            if self._stopping.is_set():
                raise EmbeddedServerError("the embedded FM server was stopped while starting")
            rc = self._proc.poll()
            if rc is not None:
                raise EmbeddedServerError(
                    f"the embedded FM server exited with status {rc} while starting "
                    f"(model {self.model_path}); log {self.log_path}:\n{self.log_tail()}")
            try:
                with opener.open(url, timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass  # not listening yet, or 503 while the model loads
            if time.monotonic() - started > self.start_timeout_s:
                raise EmbeddedServerError(
                    f"the embedded FM server was not ready within {self.start_timeout_s:g} s "
                    f"(model {self.model_path}); log {self.log_path}:\n{self.log_tail()}")
            time.sleep(0.1)

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``grace_s``. Safe to call twice."""
        self._stopping.set()
        with self._lock:
            self._kill_child(grace_s)
            self._port = None
            supervisor, self._supervisor = self._supervisor, None
            if self._own_log and self.log_path is not None:
                self.log_path.unlink(missing_ok=True)
                self.log_path, self._own_log = None, False
        if supervisor is not None and supervisor is not threading.current_thread():
            supervisor.join(timeout=5)

    def _kill_child(self, grace_s: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace") if self.log_path else ""
        except OSError:
            return "(no log)"
        return "\n".join(text.rstrip().splitlines()[-lines:]) or "(empty log)"

    def __enter__(self) -> "EmbeddedServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __del__(self) -> None:
        try:
            self.stop(grace_s=1.0)
        except Exception:
            pass
