"""FMClient against a scripted OpenAI-protocol server over real HTTP."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time

import pytest

from tests.fm_server import Delay, Garbage, Reply, ScriptedFMServer, Status, Trickle
from orchestrator.fm.client import (
    Completion,
    FMClient,
    FMConfigError,
    FMError,
    estimate_tokens,
    resolve_api_key,
)
from orchestrator.fm.config import FMConfig, Prices

MSGS = [{"role": "system", "content": "You edit code."}, {"role": "user", "content": "Improve f()."}]
KEY = "sk-test-SECRET-0123456789"


def make_client(server: ScriptedFMServer, **kw) -> tuple[FMClient, list[float]]:
    sleeps: list[float] = []
    kw.setdefault("timeout_s", 5.0)
    kw.setdefault("max_retries", 2)
    client = FMClient(server.base_url, "test-model", api_key=KEY, sleep=sleeps.append, **kw)
    return client, sleeps


def call(client: FMClient, **kw) -> Completion:
    kw.setdefault("temperature", 0.7)
    kw.setdefault("seed", 11)
    kw.setdefault("max_tokens", 64)
    return client.complete(MSGS, **kw)


def test_success_reports_text_usage_and_cost():
    with ScriptedFMServer([Reply("def f(): return 2", prompt_tokens=1000, completion_tokens=500)],
                          model="served-model") as srv:
        client, sleeps = make_client(srv, prices=Prices(prompt_per_mtok=2.0, completion_per_mtok=8.0))
        c = call(client, node_tag="n7")
    assert c.text == "def f(): return 2"
    assert c.model == "served-model"
    assert (c.prompt_tokens, c.completion_tokens) == (1000, 500)
    assert c.cost_usd == pytest.approx((1000 * 2.0 + 500 * 8.0) / 1e6)
    assert c.attempts == 1 and c.finish_reason == "stop" and not c.usage_estimated
    assert c.node_tag == "n7" and c.latency_s > 0
    assert sleeps == []
    t = client.totals()
    assert (t.calls, t.failures, t.attempts, t.prompt_tokens, t.completion_tokens) == (1, 0, 1, 1000, 500)
    assert t.cost_usd == pytest.approx(0.006)
    assert client.totals("n7").calls == 1 and client.totals("other").calls == 0


def test_request_carries_messages_seed_temperature_max_tokens_and_key():
    with ScriptedFMServer([Reply("a", 1, 1)]) as srv:
        client, _ = make_client(srv)
        call(client, temperature=0.83, seed=12345, max_tokens=99, extra_body={"stop": ["```"]})
    (req,) = srv.requests
    assert req["model"] == "test-model"
    assert req["messages"] == MSGS
    assert (req["seed"], req["temperature"], req["max_tokens"]) == (12345, 0.83, 99)
    assert req["stop"] == ["```"]
    assert srv.request_headers[0]["authorization"] == f"Bearer {KEY}"


def test_missing_usage_is_estimated_from_text_length():
    with ScriptedFMServer([Reply("x" * 40)]) as srv:
        client, _ = make_client(srv, prices=Prices(prompt_per_mtok=1e6, completion_per_mtok=0))
        c = call(client)
    prompt_chars = sum(len(m["content"]) for m in MSGS)
    assert c.usage_estimated
    assert c.completion_tokens == 10
    assert c.prompt_tokens == estimate_tokens("x" * prompt_chars) == (prompt_chars + 3) // 4
    assert c.cost_usd == pytest.approx(c.prompt_tokens)
    assert client.totals().estimated_calls == 1


@pytest.mark.parametrize("status", [500, 503, 429])
def test_retries_then_succeeds_on_5xx_and_429(status):
    with ScriptedFMServer([Status(status, {"error": {"message": "busy"}}), Reply("ok", 5, 1)]) as srv:
        client, sleeps = make_client(srv, backoff_s=1.0)
        c = call(client)
    assert c.text == "ok" and c.attempts == 2
    assert len(srv.requests) == 2
    assert len(sleeps) == 1 and 0.5 <= sleeps[0] <= 1.0  # backoff_s * 2**0 * jitter in [0.5, 1]
    t = client.totals()
    assert (t.calls, t.failures, t.attempts) == (1, 0, 2)


def test_backoff_grows_exponentially_and_honours_retry_after():
    script = [Status(500), Status(500), Status(429, "slow down", {"Retry-After": "7"}),
              Status(429, "slow down", {"Retry-After": "600"}), Reply("ok", 1, 1)]
    with ScriptedFMServer(script) as srv:
        client, sleeps = make_client(srv, max_retries=4, backoff_s=1.0, max_backoff_s=10.0)
        assert call(client).attempts == 5
    assert 0.5 <= sleeps[0] <= 1.0 and 1.0 <= sleeps[1] <= 2.0  # backoff_s * 2**k * [0.5, 1]
    assert sleeps[2] == 7.0   # Retry-After beats the 2..4 s backoff
    assert sleeps[3] == 10.0  # ... but never past max_backoff_s


def test_http_error_after_last_retry():
    with ScriptedFMServer(default=Status(502, "bad gateway")) as srv:
        client, sleeps = make_client(srv, max_retries=2)
        with pytest.raises(FMError) as ei:
            call(client)
    e = ei.value
    assert e.kind == "http" and e.status == 502 and e.attempts == 3
    assert len(srv.requests) == 3 and len(sleeps) == 2
    assert srv.base_url in str(e) and "test-model" in str(e) and "502" in str(e)
    t = client.totals()
    assert (t.calls, t.failures, t.attempts, t.prompt_tokens) == (1, 1, 3, 0)


@pytest.mark.parametrize("status", [400, 401, 404, 422])
def test_other_4xx_is_not_retried(status):
    with ScriptedFMServer([Status(status, {"error": {"message": "no"}}), Reply("never")]) as srv:
        client, sleeps = make_client(srv)
        with pytest.raises(FMError) as ei:
            call(client)
    assert ei.value.kind == "http" and ei.value.status == status and ei.value.attempts == 1
    assert len(srv.requests) == 1 and sleeps == []


def test_timeout_after_retries_in_bounded_time():
    with ScriptedFMServer(default=Delay(30)) as srv:
        client, sleeps = make_client(srv, timeout_s=0.3, max_retries=2)
        t0 = time.monotonic()
        with pytest.raises(FMError) as ei:
            call(client)
        elapsed = time.monotonic() - t0
        assert ei.value.kind == "timeout" and ei.value.attempts == 3
        assert len(srv.requests) == 3 and len(sleeps) == 2
        assert 0.9 <= elapsed < 2.5, elapsed
    # leaving the block shut the server down although three handlers were still sleeping


def test_an_answer_that_trickles_is_cut_off_at_the_deadline_of_the_whole_call():
    # one byte every 0.05 s: every read is answered in time, the whole body would take ~15 s
    with ScriptedFMServer(default=Trickle(Reply("x" * 200), every=0.05)) as srv:
        client, _ = make_client(srv, timeout_s=1.0, max_retries=1)
        t0 = time.monotonic()
        with pytest.raises(FMError) as ei:
            call(client)
        elapsed = time.monotonic() - t0
    assert ei.value.kind == "timeout" and ei.value.attempts == 2 and "not complete within 1 s" in str(ei.value)
    assert elapsed < 4, elapsed
    assert client.totals().failures == 1


def test_delay_shorter_than_timeout_succeeds():
    with ScriptedFMServer([Delay(0.2, then=Reply("slow", 2, 3))]) as srv:
        client, _ = make_client(srv, timeout_s=3)
        c = call(client)
    assert c.text == "slow" and c.attempts == 1 and c.latency_s >= 0.2


@pytest.mark.parametrize("raw, ctype", [
    (b"not json at all", "application/json"),
    (b"<html>oops</html>", "text/html"),
    (b"{}", "application/json"),
    (b'{"choices": []}', "application/json"),
    (b'{"choices": [{"message": {"role": "assistant", "content": null}}]}', "application/json"),
    (b'{"choices": [{"message": {"role": "assistant", "content": ""}}]}', "application/json"),
    (b"[1, 2]", "application/json"),
])
def test_garbage_is_reported_and_not_retried(raw, ctype):
    with ScriptedFMServer([Garbage(raw, ctype), Reply("never")]) as srv:
        client, sleeps = make_client(srv)
        with pytest.raises(FMError) as ei:
            call(client)
    assert ei.value.kind == "garbage" and ei.value.attempts == 1
    assert len(srv.requests) == 1 and sleeps == []
    assert client.totals().failures == 1


def test_connection_refused_after_retries():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nobody listens there
    sleeps: list[float] = []
    client = FMClient(f"http://127.0.0.1:{port}/v1", "m", api_key=KEY, timeout_s=2,
                      max_retries=1, sleep=sleeps.append)
    with pytest.raises(FMError) as ei:
        call(client)
    assert ei.value.kind == "connection" and ei.value.attempts == 2 and len(sleeps) == 1
    assert f"127.0.0.1:{port}" in str(ei.value)


def test_api_key_never_in_errors_logs_or_repr(caplog):
    echo = Status(500, {"error": {"message": f"invalid key {KEY}"}})
    with caplog.at_level(logging.DEBUG, logger="dgm.fm"):
        with ScriptedFMServer(default=echo) as srv:
            client, _ = make_client(srv, max_retries=1)
            with pytest.raises(FMError) as ei:
                call(client)
    assert "invalid key ***" in str(ei.value)
    assert KEY not in str(ei.value) and KEY not in repr(ei.value)
    assert KEY not in caplog.text and "retry 1/1" in caplog.text
    assert KEY not in repr(client)


def test_missing_api_key_variable_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("DGM_TEST_FM_KEY", raising=False)
    cfg = FMConfig(provider="openai", base_url="http://127.0.0.1:9/v1", api_key_env="DGM_TEST_FM_KEY")
    with pytest.raises(FMConfigError, match=r"DGM_TEST_FM_KEY.*not set"):
        FMClient.from_config(cfg)
    monkeypatch.setenv("DGM_TEST_FM_KEY", "   ")
    with pytest.raises(FMConfigError, match="DGM_TEST_FM_KEY"):
        resolve_api_key("DGM_TEST_FM_KEY")


def test_from_config_reads_the_key_from_the_named_variable(monkeypatch):
    monkeypatch.setenv("DGM_TEST_FM_KEY", KEY)
    with ScriptedFMServer([Reply("ok", 1, 1)]) as srv:
        cfg = FMConfig(provider="openai", base_url=srv.base_url, api_key_env="DGM_TEST_FM_KEY",
                       model="gpt-x", prices=Prices(prompt_per_mtok=1, completion_per_mtok=1))
        with FMClient.from_config(cfg) as client:
            assert call(client).cost_usd == pytest.approx(2e-6)
    assert srv.request_headers[0]["authorization"] == f"Bearer {KEY}"
    assert srv.requests[0]["model"] == "gpt-x"


def test_totals_are_exact_under_two_threads():
    n = 25
    responder = lambda req: Reply(f"seed {req['seed']}", prompt_tokens=3, completion_tokens=req["seed"] % 5)
    with ScriptedFMServer(responder=responder) as srv:
        client, _ = make_client(srv, prices=Prices(prompt_per_mtok=1.0, completion_per_mtok=2.0))
        results: dict[int, str] = {}
        errors: list[BaseException] = []

        def worker(offset: int) -> None:
            try:
                for i in range(n):
                    seed = offset + i
                    results[seed] = call(client, seed=seed, node_tag=f"t{offset}").text
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(o,)) for o in (0, 1000)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
    assert results == {s: f"seed {s}" for o in (0, 1000) for s in range(o, o + n)}
    seeds = [s for o in (0, 1000) for s in range(o, o + n)]
    completion = sum(s % 5 for s in seeds)
    t = client.totals()
    assert (t.calls, t.failures, t.attempts) == (2 * n, 0, 2 * n)
    assert (t.prompt_tokens, t.completion_tokens) == (3 * 2 * n, completion)
    assert t.cost_usd == pytest.approx((3 * 2 * n + 2 * completion) / 1e6)
    assert client.totals("t0").calls == n and client.totals("t1000").calls == n
    assert sorted(r["seed"] for r in srv.requests) == sorted(seeds)


def test_scripted_server_serves_models_and_stops_with_a_delay_in_flight():
    import http.client

    srv = ScriptedFMServer(default=Delay(60)).start()
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
    conn.request("GET", "/v1/models")
    assert json.loads(conn.getresponse().read())["data"][0]["id"] == "scripted-model"
    stuck = threading.Thread(target=lambda: _post_ignoring_errors(srv.port), daemon=True)
    stuck.start()
    deadline = time.monotonic() + 5
    while not srv.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    t0 = time.monotonic()
    srv.stop()
    assert time.monotonic() - t0 < 2
    stuck.join(timeout=5)
    assert not stuck.is_alive()


def _post_ignoring_errors(port: int) -> None:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/v1/chat/completions", body=json.dumps({"messages": []}),
                     headers={"Content-Type": "application/json"})
        conn.getresponse().read()
    except OSError:
        pass
