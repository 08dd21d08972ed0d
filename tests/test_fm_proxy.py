"""FMProxy over a real Unix socket, forwarding to a ScriptedFMServer upstream."""

from __future__ import annotations

import json
import stat
import threading

import httpx2
import openai
import pytest

from tests.fm_server import Delay, Reply, ScriptedFMServer, Status
from orchestrator.fm.client import FMClient
from orchestrator.fm.config import Prices
from orchestrator.fm.proxy import Budget, FMProxy, UnixHTTPConnection

KEY = "sk-real-KEY-never-in-the-sandbox"
MSGS = [{"role": "user", "content": "improve yourself"}]


@pytest.fixture
def upstream():
    with ScriptedFMServer(default=Reply("proposal", prompt_tokens=12, completion_tokens=3),
                          model="up-model") as srv:
        yield srv


def client_for(srv: ScriptedFMServer, **kw) -> FMClient:
    kw.setdefault("max_retries", 0)
    kw.setdefault("timeout_s", 5)
    return FMClient(srv.base_url, "up-model", api_key=KEY, sleep=lambda s: None, **kw)


def post(sock, body, path: str = "/v1/chat/completions", headers: dict | None = None) -> tuple[int, dict, str]:
    conn = UnixHTTPConnection(sock, timeout=10)
    try:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        conn.request("POST", path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
        r = conn.getresponse()
        raw = r.read().decode()
        return r.status, json.loads(raw), raw + str(r.getheaders())
    finally:
        conn.close()


def get(sock, path: str) -> tuple[int, dict]:
    conn = UnixHTTPConnection(sock, timeout=10)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, json.loads(r.read())
    finally:
        conn.close()


def test_forwards_with_the_real_key_and_tags_the_node(upstream, tmp_path):
    sock = tmp_path / "fm.sock"
    client = client_for(upstream, prices=Prices(prompt_per_mtok=1.0, completion_per_mtok=2.0))
    budget = Budget(limit_calls=10)
    with FMProxy(client, sock, node_id="n42", budget=budget, max_tokens_cap=100) as proxy:
        assert stat.S_ISSOCK(sock.stat().st_mode) and stat.S_IMODE(sock.stat().st_mode) == 0o666
        status, body, raw = post(sock, {"model": "gpt-agent-wants", "messages": MSGS, "seed": 5,
                                        "temperature": 0.25, "max_tokens": 5000},
                                 headers={"Authorization": "Bearer agent-guess"})
    assert status == 200
    assert body["choices"][0]["message"]["content"] == "proposal"
    assert body["model"] == "up-model"
    assert body["usage"] == {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}
    assert KEY not in raw
    (req,) = upstream.requests
    assert req["model"] == "up-model" and req["messages"] == MSGS
    assert (req["seed"], req["temperature"], req["max_tokens"]) == (5, 0.25, 100)  # capped
    assert upstream.request_headers[0]["authorization"] == f"Bearer {KEY}"
    t = proxy.totals()
    assert (t.calls, t.prompt_tokens, t.completion_tokens) == (1, 12, 3)
    assert t.cost_usd == pytest.approx((12 + 2 * 3) / 1e6)
    assert client.totals("n42").calls == 1
    assert (budget.calls, budget.tokens) == (1, 15) and budget.usd == pytest.approx(18e-6)
    assert not sock.exists()  # removed on stop


def test_fresh_seed_and_defaults_when_the_agent_gives_none(upstream, tmp_path):
    sock = tmp_path / "fm.sock"
    with FMProxy(client_for(upstream), sock, node_id="n1", max_tokens_cap=77, default_temperature=0.6):
        for _ in range(3):
            assert post(sock, {"messages": MSGS})[0] == 200
    seeds = [r["seed"] for r in upstream.requests]
    assert len(set(seeds)) == 3 and all(isinstance(s, int) and s >= 0 for s in seeds)
    assert {(r["temperature"], r["max_tokens"]) for r in upstream.requests} == {(0.6, 77)}


def test_call_budget_refuses_with_429_json(upstream, tmp_path):
    sock = tmp_path / "fm.sock"
    with FMProxy(client_for(upstream), sock, node_id="n1", budget=Budget(limit_calls=2)) as proxy:
        assert [post(sock, {"messages": MSGS})[0] for _ in range(2)] == [200, 200]
        status, body, _ = post(sock, {"messages": MSGS})
        assert status == 429
        assert body["error"]["type"] == "budget_exhausted"
        assert body["error"]["message"] == "FM call budget spent: 2 of 2 calls used"
        assert proxy.refused == 1 and proxy.totals().calls == 2
    assert len(upstream.requests) == 2


def test_token_and_cost_budgets(upstream, tmp_path):
    sock = tmp_path / "fm.sock"
    with FMProxy(client_for(upstream), sock, node_id="n1", budget=Budget(limit_tokens=20)):
        assert post(sock, {"messages": MSGS})[0] == 200          # 15 tokens used, 5 left
        assert post(sock, {"messages": MSGS})[0] == 200          # 30: over, but it had started
        status, body, _ = post(sock, {"messages": MSGS})
        assert status == 429 and body["error"]["message"] == "FM token budget spent: 30 of 20 tokens used"
    client = client_for(upstream, prices=Prices(prompt_per_mtok=1e5, completion_per_mtok=0))  # $1.2 a call
    with FMProxy(client, sock, node_id="n2", budget=Budget(limit_usd=2.0)):
        assert [post(sock, {"messages": MSGS})[0] for _ in range(3)] == [200, 200, 429]


def test_one_budget_shared_by_two_nodes(upstream, tmp_path):
    client, budget = client_for(upstream), Budget(limit_calls=3)
    with FMProxy(client, tmp_path / "a.sock", node_id="a", budget=budget) as pa, \
            FMProxy(client, tmp_path / "b.sock", node_id="b", budget=budget) as pb:
        codes = [post(tmp_path / s, {"messages": MSGS})[0] for s in ("a.sock", "b.sock", "a.sock", "b.sock")]
        assert codes == [200, 200, 200, 429]
        assert (pa.totals().calls, pb.totals().calls, pb.refused) == (2, 1, 1)
    assert (client.totals("a").calls, client.totals("b").calls) == (2, 1)


def test_upstream_failures_map_to_gateway_errors_without_the_key(tmp_path):
    sock = tmp_path / "fm.sock"
    script = [Status(500, {"error": {"message": f"bad key {KEY}"}}), Delay(5), Status(400, "context too long")]
    with ScriptedFMServer(script) as srv:
        budget = Budget(limit_calls=10)
        with FMProxy(client_for(srv, timeout_s=0.3), sock, node_id="n1", budget=budget) as proxy:
            s1, b1, raw1 = post(sock, {"messages": MSGS})
            s2, b2, _ = post(sock, {"messages": MSGS})
            s3, b3, _ = post(sock, {"messages": MSGS})
    assert (s1, b1["error"]["type"]) == (502, "fm_http")
    assert KEY not in raw1 and "bad key ***" in b1["error"]["message"]
    assert (s2, b2["error"]["type"]) == (504, "fm_timeout")
    assert (s3, b3["error"]["type"]) == (400, "fm_http")
    t = proxy.totals()
    assert (t.calls, t.failures) == (3, 3)
    assert (budget.calls, budget.tokens) == (3, 0)  # failed calls count as calls, cost nothing


@pytest.mark.parametrize("body, status, fragment", [
    (b"{not json", 400, "not JSON"),
    ({"messages": []}, 400, "messages must be"),
    ({"messages": [{"role": "user"}]}, 400, "messages must be"),
    ({"messages": MSGS, "stream": True}, 400, "streaming is not supported"),
    ({"messages": MSGS, "max_tokens": 0}, 400, "max_tokens = 0"),
    ({"messages": MSGS, "temperature": 9}, 400, "temperature = 9.0"),
    ({"messages": MSGS, "seed": "x"}, 400, "seed = 'x'"),
])
def test_bad_requests_are_400_and_reach_no_one(upstream, tmp_path, body, status, fragment):
    sock = tmp_path / "fm.sock"
    budget = Budget()
    with FMProxy(client_for(upstream), sock, node_id="n1", budget=budget):
        got, payload, _ = post(sock, body)
    assert got == status and fragment in payload["error"]["message"]
    assert upstream.requests == [] and budget.calls == 0


def test_models_health_and_unknown_routes(upstream, tmp_path):
    sock = tmp_path / "fm.sock"
    with FMProxy(client_for(upstream), sock, node_id="n9"):
        assert get(sock, "/v1/models") == (200, {"object": "list", "data": [
            {"id": "up-model", "object": "model", "owned_by": "dgm"}]})
        assert get(sock, "/health") == (200, {"status": "ok", "node": "n9"})
        assert get(sock, "/v1/files")[0] == 404
        assert post(sock, {"messages": MSGS}, path="/v1/embeddings")[0] == 404


def test_the_openai_client_works_over_the_socket(upstream, tmp_path):
    sock = tmp_path / "fm.sock"
    with FMProxy(client_for(upstream), sock, node_id="n1", budget=Budget(limit_calls=1)):
        agent = openai.OpenAI(base_url="http://fm/v1", api_key="none", max_retries=0,
                              http_client=openai.DefaultHttpxClient(transport=httpx2.HTTPTransport(uds=str(sock))))
        r = agent.chat.completions.create(model="anything", messages=MSGS, seed=1)
        assert r.choices[0].message.content == "proposal" and r.usage.total_tokens == 15
        with pytest.raises(openai.RateLimitError, match="call budget spent"):
            agent.chat.completions.create(model="anything", messages=MSGS)


def test_concurrent_requests_are_counted_exactly(upstream, tmp_path):
    sock = tmp_path / "fm.sock"
    budget = Budget(limit_calls=30)
    codes: list[int] = []
    lock = threading.Lock()

    def worker():
        for _ in range(20):
            code = post(sock, {"messages": MSGS})[0]
            with lock:
                codes.append(code)

    with FMProxy(client_for(upstream), sock, node_id="n1", budget=budget) as proxy:
        threads = [threading.Thread(target=worker) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sorted(codes) == [200] * 30 + [429] * 10
    assert (proxy.totals().calls, proxy.refused, budget.calls, budget.tokens) == (30, 10, 30, 450)
    assert len(upstream.requests) == 30


def test_budget_start_call_is_atomic():
    budget = Budget(limit_calls=100)
    granted: list[int] = []

    def worker():
        n = sum(budget.start_call() is None for _ in range(60))
        granted.append(n)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(granted) == 100 and budget.calls == 100
    assert budget.exhausted() == "FM call budget spent: 100 of 100 calls used"
    with pytest.raises(ValueError, match="limit_usd = -1"):
        Budget(limit_usd=-1)


def test_socket_path_handling(upstream, tmp_path):
    client = client_for(upstream)
    stale = tmp_path / "stale.sock"
    with FMProxy(client, stale, node_id="x"):
        pass
    import socket as _s
    s = _s.socket(_s.AF_UNIX)
    s.bind(str(stale))  # a stale socket file left behind by a dead process
    s.close()
    with FMProxy(client, stale, node_id="x"):
        assert get(stale, "/health")[0] == 200
    regular = tmp_path / "file.sock"
    regular.write_text("keep me")
    with pytest.raises(FileExistsError, match="not a socket"):
        FMProxy(client, regular, node_id="x").start()
    assert regular.read_text() == "keep me"
    with pytest.raises(ValueError, match="the limit is 107"):
        FMProxy(client, tmp_path / ("x" * 120), node_id="x").start()


@pytest.mark.parametrize("max_in_flight, serialized", [(1, True), (3, False)])
def test_requests_in_flight_are_capped(tmp_path, max_in_flight, serialized):
    import time

    arrivals: list[float] = []

    def responder(req):
        arrivals.append(time.monotonic())
        return Delay(0.3, then=Reply("ok", 1, 1))

    sock = tmp_path / "fm.sock"
    with ScriptedFMServer(responder=responder) as srv:
        with FMProxy(client_for(srv), sock, node_id="n1", max_in_flight=max_in_flight):
            threads = [threading.Thread(target=post, args=(sock, {"messages": MSGS})) for _ in range(3)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    gaps = [b - a for a, b in zip(sorted(arrivals), sorted(arrivals)[1:])]
    assert len(arrivals) == 3
    assert all(g >= 0.25 for g in gaps) if serialized else all(g < 0.25 for g in gaps)


def test_an_internal_error_still_answers_json(upstream, tmp_path, monkeypatch):
    sock = tmp_path / "fm.sock"
    client = client_for(upstream)
    monkeypatch.setattr(client, "complete", lambda *a, **k: 1 / 0)
    with FMProxy(client, sock, node_id="n1") as proxy:
        status, body, _ = post(sock, {"messages": MSGS})
        assert get(sock, "/health")[0] == 200  # still serving
    assert status == 500 and body["error"] == {"message": "internal FM proxy error: ZeroDivisionError",
                                               "type": "proxy_error", "code": "proxy_error"}
    assert proxy.totals().failures == 1
