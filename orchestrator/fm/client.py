"""``FMClient``: chat completions over the OpenAI protocol, with retries, cost and usage totals.

One client is shared by every thread of a campaign. A call either returns a ``Completion`` or
raises ``FMError`` whose ``kind`` says what went wrong:

- ``timeout``    no whole answer within ``timeout_s`` (retried): a server that stalls or
                 trickles its body is cut off at the deadline too, not only one that says nothing
- ``connection`` the server could not be reached (retried)
- ``http``       an error status; 429 and 5xx are retried, other 4xx are not
- ``garbage``    a 200 answer that is not a usable completion: not JSON, no choices, no text
                 (not retried: the same request tends to give the same answer)

The API key never appears in messages, logs or ``repr``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlsplit

import httpx2  # the HTTP library the openai SDK is built on (its fork of httpx)
import openai

from .config import FMConfig, Prices

log = logging.getLogger("dgm.fm")

FM_ERROR_KINDS = ("timeout", "http", "connection", "garbage")
EMBEDDED_API_KEY = "dgm-embedded"  # the embedded server checks no key; the client wants one


class FMError(RuntimeError):
    """A call that failed after its last attempt. ``kind`` is one of ``FM_ERROR_KINDS``."""

    def __init__(self, kind: str, message: str, *, status: int | None = None, attempts: int = 0) -> None:
        if kind not in FM_ERROR_KINDS:
            raise ValueError(f"unknown FMError kind {kind!r}")
        super().__init__(f"FM {kind} error: {message}")
        self.kind = kind
        self.message = message
        self.status = status
        self.attempts = attempts


class FMConfigError(ValueError):
    """The FM cannot be set up as configured (e.g. the API key variable is not set)."""


def resolve_api_key(env_name: str) -> str:
    """The value of the environment variable ``env_name``; a clear error when unset or empty."""
    value = os.environ.get(env_name, "")
    if not value.strip():
        raise FMConfigError(
            f"[fm].api_key_env = {env_name!r}: the environment variable {env_name} is not set "
            f"(export it before starting the campaign; the key is never read from files)"
        )
    return value.strip()


@dataclass(frozen=True)
class Completion:
    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    latency_s: float        # wall time of the whole call, retries and back-off included
    attempts: int           # HTTP requests sent (1 = no retry)
    finish_reason: str | None
    usage_estimated: bool = False  # the server reported no usage; tokens ≈ len(text) / 4
    node_tag: str | None = None


@dataclass
class UsageTotals:
    calls: int = 0            # complete() calls that returned or raised
    failures: int = 0         # of those, the ones that raised FMError
    attempts: int = 0         # HTTP requests sent, retries included
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    estimated_calls: int = 0  # successful calls whose tokens were estimated

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def _add_success(self, c: Completion) -> None:
        self.calls += 1
        self.attempts += c.attempts
        self.prompt_tokens += c.prompt_tokens
        self.completion_tokens += c.completion_tokens
        self.cost_usd += c.cost_usd
        self.estimated_calls += int(c.usage_estimated)

    def _add_failure(self, attempts: int) -> None:
        self.calls += 1
        self.failures += 1
        self.attempts += attempts


def estimate_tokens(text: str) -> int:
    """Rough token count (≈ 4 characters per token) for servers that report no usage."""
    return (len(text) + 3) // 4


class _Garbage(Exception):
    pass


class _Deadline(Exception):
    """The answer's body was still arriving when the call's deadline passed."""


def parse_chat_completion(data: Any) -> tuple[str, str | None, str | None, dict]:
    """(text, model, finish_reason, usage dict) from a chat-completion body; ``_Garbage`` if unusable."""
    if not isinstance(data, dict):
        raise _Garbage(f"body is {type(data).__name__}, not a JSON object")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        raise _Garbage("no choices in the response")
    choice = choices[0]
    message = choice.get("message") if isinstance(choice, dict) else None
    text = message.get("content") if isinstance(message, dict) else None
    if not isinstance(text, str) or not text:
        raise _Garbage("the first choice has no text")
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    model = data.get("model") if isinstance(data.get("model"), str) else None
    finish = choice.get("finish_reason")
    return text, model, finish if isinstance(finish, str) else None, usage


def _token_count(usage: dict, key: str) -> int | None:
    v = usage.get(key)
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None


class FMClient:
    """Thread-safe chat-completion client for one model at one OpenAI-protocol endpoint."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str,
        timeout_s: float = 300.0,
        max_retries: int = 2,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        prices: Prices = Prices(),
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s = {timeout_s}: must be > 0")
        if max_retries < 0:
            raise ValueError(f"max_retries = {max_retries}: must be >= 0")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.prices = prices
        self._secret = api_key
        self._sleep = sleep
        self._rng = rng or random.Random()
        # A loopback server (the embedded model) must not be reached through an HTTP(S)_PROXY.
        local = urlsplit(self.base_url).hostname in ("127.0.0.1", "localhost", "::1")
        self._client = openai.OpenAI(
            base_url=self.base_url, api_key=api_key, timeout=timeout_s, max_retries=0,
            http_client=openai.DefaultHttpxClient(trust_env=False) if local else None)
        self._lock = threading.Lock()
        self._totals = UsageTotals()
        self._by_tag: dict[str, UsageTotals] = {}

    @classmethod
    def from_config(cls, cfg: FMConfig, *, base_url: str | None = None,
                    api_key: str | None = None) -> "FMClient":
        """Build from ``FMConfig``; the key comes from ``cfg.api_key_env`` unless given."""
        url = base_url or cfg.base_url
        if not url:
            raise FMConfigError("[fm].base_url is not set")
        if api_key is None:
            api_key = resolve_api_key(cfg.api_key_env) if cfg.api_key_env else EMBEDDED_API_KEY
        return cls(url, cfg.model, api_key=api_key, timeout_s=cfg.timeout_s,
                   max_retries=cfg.max_retries, backoff_s=cfg.backoff_s, prices=cfg.prices)

    def __repr__(self) -> str:
        return f"FMClient(base_url={self.base_url!r}, model={self.model!r})"

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "FMClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def totals(self, node_tag: str | None = None) -> UsageTotals:
        """A snapshot of the running totals: all calls, or those tagged ``node_tag``."""
        with self._lock:
            t = self._totals if node_tag is None else self._by_tag.get(node_tag, UsageTotals())
            return dataclasses.replace(t)

    # -- the call ------------------------------------------------------------------------------
    def complete(
        self,
        messages: list[dict],
        *,
        temperature: float,
        seed: int,
        max_tokens: int,
        node_tag: str | None = None,
        extra_body: dict | None = None,
    ) -> Completion:
        """One chat completion. ``extra_body`` adds request fields (``stop``, ``response_format``)."""
        started = time.monotonic()
        attempts = 0
        while True:
            attempts += 1
            try:
                content = self._post(messages, temperature=temperature, seed=seed, max_tokens=max_tokens,
                                     extra_body=extra_body)
                try:
                    data = json.loads(content)
                except ValueError:
                    raise _Garbage(f"body is not JSON: {content[:80]!r}") from None
                text, model, finish, usage = parse_chat_completion(data)
            except Exception as e:  # noqa: BLE001 - mapped to FMError or re-raised below
                err, retry_after = self._classify(e, attempts)
                if err is None:
                    raise
                retryable = err.kind in ("timeout", "connection") or (
                    err.kind == "http" and (err.status == 429 or (err.status or 0) >= 500))
                if not retryable or attempts > self.max_retries:
                    with self._lock:
                        self._totals._add_failure(attempts)
                        if node_tag is not None:
                            self._by_tag.setdefault(node_tag, UsageTotals())._add_failure(attempts)
                    log.warning("%s", err)
                    raise err from None
                delay = self._backoff(attempts, retry_after)
                log.info("FM call to %s failed (%s), retry %d/%d in %.1f s",
                         self.base_url, err.message, attempts, self.max_retries, delay)
                self._sleep(delay)
                continue
            break

        p, c = _token_count(usage, "prompt_tokens"), _token_count(usage, "completion_tokens")
        estimated = p is None or c is None
        if p is None:
            p = estimate_tokens("".join(str(m.get("content") or "") for m in messages))
        if c is None:
            c = estimate_tokens(text)
        result = Completion(
            text=text, model=model or self.model, prompt_tokens=p, completion_tokens=c,
            cost_usd=self.prices.cost(p, c), latency_s=time.monotonic() - started,
            attempts=attempts, finish_reason=finish, usage_estimated=estimated, node_tag=node_tag,
        )
        with self._lock:
            self._totals._add_success(result)
            if node_tag is not None:
                self._by_tag.setdefault(node_tag, UsageTotals())._add_success(result)
        return result

    def _post(self, messages: list[dict], **request: Any) -> bytes:
        """One request's body. httpx's timeout bounds each read, so a server that sends a byte now
        and then would never time out; the body is read piece by piece against a deadline for
        the whole call instead."""
        deadline = time.monotonic() + self.timeout_s
        with self._client.chat.completions.with_streaming_response.create(
            model=self.model, messages=messages, timeout=self.timeout_s, **request,
        ) as raw:
            body = bytearray()
            try:
                for piece in raw.iter_bytes():
                    body += piece
                    if time.monotonic() > deadline:
                        raise _Deadline(f"{len(body)} bytes of the answer after {self.timeout_s:g} s")
            # the body is read outside the SDK's own error mapping: map its transport errors the same way
            except httpx2.TimeoutException as e:
                raise openai.APITimeoutError(request=raw.http_request) from e
            except httpx2.TransportError as e:
                raise openai.APIConnectionError(request=raw.http_request) from e
        return bytes(body)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        delay = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1)) * self._rng.uniform(0.5, 1.0)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_backoff_s))
        return delay

    def _classify(self, e: Exception, attempts: int) -> tuple[FMError | None, float | None]:
        """Map an exception from one attempt to an FMError (None: not ours, re-raise)."""
        where = f"{self.base_url} (model {self.model}), attempt {attempts}"
        retry_after = None
        if isinstance(e, openai.APITimeoutError):
            kind, status, what = "timeout", None, f"no answer within {self.timeout_s:g} s"
        elif isinstance(e, _Deadline):
            kind, status, what = "timeout", None, f"answer not complete within {self.timeout_s:g} s ({e})"
        elif isinstance(e, openai.APIConnectionError):
            cause = e.__cause__ or e
            kind, status, what = "connection", None, f"cannot connect: {cause}"
        elif isinstance(e, openai.APIStatusError):
            kind, status = "http", e.status_code
            what = f"HTTP {e.status_code}: {_short(e.response.text)}"
            try:
                retry_after = float(e.response.headers.get("retry-after", ""))
            except ValueError:
                retry_after = None
        elif isinstance(e, _Garbage):
            kind, status, what = "garbage", None, f"unusable response: {e}"
        elif isinstance(e, openai.OpenAIError):
            kind, status, what = "garbage", None, f"unusable response: {type(e).__name__}: {e}"
        else:
            return None, None
        return FMError(kind, self._scrub(f"{where}: {what}"), status=status, attempts=attempts), retry_after

    def _scrub(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text


def _short(text: str, n: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[:n] + "…"
