"""Retry policy: what is retried, how long it waits, what fails at once, and fallback."""

from __future__ import annotations

import asyncio
import email.utils
import time

import httpx
import pytest

from jobs.providers import CallResult, ChatRequest, ProviderPool
from jobs.providers.errors import parse_retry_after
from tests.unit.providers.conftest import make_config
from tests.unit.providers.test_pool_basic import completion

USAGE = {"prompt_tokens": 5, "completion_tokens": 2}
MSGS = [{"role": "user", "content": "What is the capital of France?"}]


class Script:
    """A MockTransport handler that plays a list of responses/exceptions in order."""

    def __init__(self, *steps: object) -> None:
        self.steps = list(steps)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        step = self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]
        if isinstance(step, Exception):
            raise step
        assert isinstance(step, httpx.Response)
        return step


def ok() -> httpx.Response:
    return httpx.Response(200, json=completion("Paris", usage=USAGE))


def err(status: int, message: str = "nope", headers: dict | None = None) -> httpx.Response:
    return httpx.Response(status, json={"error": {"message": message, "type": "x"}}, headers=headers or {})


def call(script: Script, model: str = "weak", **cfg_kw) -> tuple[CallResult, list[float]]:
    waits: list[float] = []

    async def sleep(s: float) -> None:
        waits.append(s)

    pool = ProviderPool(make_config(**cfg_kw), transport=httpx.MockTransport(script), sleep=sleep)

    async def go() -> CallResult:
        try:
            return await pool.complete(ChatRequest("c1", model, MSGS, 10))
        finally:
            await pool.aclose()

    return asyncio.run(go()), waits


@pytest.mark.parametrize("status", [429, 408, 409, 500, 502, 503, 504])
def test_transient_status_is_retried(status: int) -> None:
    res, _ = call(Script(err(status), err(status), ok()))
    assert res.ok and res.text == "Paris"
    assert [a.status_code for a in res.attempts] == [status, status, 200]
    assert [a.attempt_no for a in res.attempts] == [1, 2, 3]
    assert len({a.attempt_id for a in res.attempts}) == 3  # a fresh idempotency key per try
    assert res.attempts[0].error_class is not None and res.attempts[-1].error_class is None


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_permanent_status_fails_at_once_with_message(status: int) -> None:
    script = Script(err(status, "Invalid model 'weak' for this key"))
    res, waits = call(script)
    assert not res.ok and len(res.attempts) == 1 and len(script.requests) == 1 and waits == []
    assert res.status_code == status
    assert res.error == f"HTTP {status}: Invalid model 'weak' for this key"
    assert res.body == {"error": {"message": "Invalid model 'weak' for this key", "type": "x"}}


@pytest.mark.parametrize(
    "exc, cls",
    [
        (httpx.ConnectError("refused"), "connect_error"),
        (httpx.ConnectTimeout("slow"), "connect_timeout"),
        (httpx.ReadTimeout("slow"), "read_timeout"),
        (httpx.WriteTimeout("slow"), "write_timeout"),
        (httpx.RemoteProtocolError("Server disconnected"), "connection_dropped"),
        (httpx.ReadError("reset by peer"), "connection_reset"),
    ],
)
def test_transport_failures_are_retried(exc: Exception, cls: str) -> None:
    res, _ = call(Script(exc, ok()))
    assert res.ok
    first = res.attempts[0]
    assert (first.status_code, first.error_class) == (None, cls)


@pytest.mark.parametrize("body", [b"{\"choices\": [", b"<html>bad gateway</html>", b"{\"object\": \"x\"}", b""])
def test_non_protocol_body_is_retried(body: bytes) -> None:
    res, _ = call(Script(httpx.Response(200, content=body), ok()))
    assert res.ok and res.attempts[0].error_class == "malformed_response"


def test_gives_up_after_max_attempts_with_last_error() -> None:
    script = Script(err(503, "overloaded"))
    res, waits = call(script)
    assert not res.ok and len(res.attempts) == 4 == len(script.requests)  # make_config: max_attempts=4
    assert len(waits) == 3
    assert res.status_code == 503 and res.error == "HTTP 503: overloaded"


def test_retry_after_seconds_is_honoured() -> None:
    res, waits = call(Script(err(429, headers={"Retry-After": "7"}), ok()))
    assert res.ok and waits == [7.0]


def test_retry_after_ms_is_preferred() -> None:
    res, waits = call(Script(err(429, headers={"Retry-After": "7", "retry-after-ms": "1500"}), ok()))
    assert waits == [1.5]


def test_retry_after_http_date() -> None:
    now = time.time()
    headers = httpx.Headers({"Retry-After": email.utils.formatdate(now + 30, usegmt=True)})
    assert 28 <= parse_retry_after(headers, now=now) <= 31
    assert parse_retry_after(httpx.Headers({"Retry-After": "garbage"})) is None
    assert parse_retry_after(httpx.Headers({})) is None


def test_backoff_is_exponential_and_capped_without_jitter() -> None:
    retry = {"max_attempts": 6, "backoff_base_s": 1.0, "backoff_cap_s": 5.0, "jitter": False}
    res, waits = call(Script(err(500)), provider={"retry": retry})
    assert waits == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_jittered_backoff_stays_within_cap() -> None:
    retry = {"max_attempts": 6, "backoff_base_s": 1.0, "backoff_cap_s": 3.0, "jitter": True}
    _, waits = call(Script(err(500)), provider={"retry": retry})
    assert len(waits) == 5 and all(0 <= w <= 3.0 for w in waits)


def test_max_elapsed_stops_before_a_wait_that_would_pass_it() -> None:
    retry = {"max_attempts": 10, "max_elapsed_s": 5, "backoff_base_s": 0, "backoff_cap_s": 0, "jitter": False}
    res, waits = call(Script(err(429, headers={"Retry-After": "60"})), provider={"retry": retry})
    assert not res.ok and len(res.attempts) == 1 and waits == []


def test_fallback_on_permanent_failure_is_recorded() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        model = __import__("json").loads(request.content)["model"]
        return err(404, "model gone") if model == "big-model" else ok()

    waits: list[float] = []

    async def sleep(s: float) -> None:
        waits.append(s)

    cfg = make_config(strong={"fallback": "weak"})
    pool = ProviderPool(cfg, transport=httpx.MockTransport(handler), sleep=sleep)
    res = asyncio.run(pool.complete(ChatRequest("c1", "strong", MSGS, 10)))
    assert res.ok and res.model == "weak" and res.request.model == "strong"
    assert [(a.model, a.is_fallback, a.attempt_no) for a in res.attempts] == [("strong", False, 1), ("weak", True, 2)]


def test_fallback_after_retries_exhausted_and_no_cycles() -> None:
    cfg_kw = {"strong": {"fallback": "weak"}, "weak": {"fallback": "strong"}}
    res, _ = call(Script(err(500)), model="strong", **cfg_kw)
    assert not res.ok
    assert [a.model for a in res.attempts] == ["strong"] * 4 + ["weak"] * 4
    assert res.model == "weak"


def test_missing_usage_is_counted_locally_and_flagged() -> None:
    res, _ = call(Script(httpx.Response(200, json=completion("Paris is the capital of France."))))
    a = res.attempts[0]
    assert res.ok and a.usage_estimated
    assert a.prompt_tokens >= 8 and a.completion_tokens >= 7  # a bound, never an undercount of BPE tokens


def test_cached_tokens_are_read() -> None:
    usage = {"prompt_tokens": 100, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 64}}
    res, _ = call(Script(httpx.Response(200, json=completion("x", usage=usage))))
    a = res.attempts[0]
    assert (a.prompt_tokens, a.cached_tokens, a.completion_tokens, a.usage_estimated) == (100, 64, 5, False)
