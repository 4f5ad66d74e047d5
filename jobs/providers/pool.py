"""ProviderPool: send chat calls to providers (OpenAI-compatible or Anthropic), with retries and fallback.

One httpx transport per pool (keep-alive connections shared by every provider; by default
:class:`~jobs.providers.transport.FastTransport`, see there why), created lazily on first
use in the running event loop — never at import, and anew if the pool is used from another
loop (``asyncio.run`` per chunk), since connections belong to the loop that opened them. A semaphore per provider bounds in-flight requests to
``ProviderConfig.concurrency``; it is held only while a request is on the wire, not while
backing off, so a retrying item does not starve the others.

Every HTTP try is one :class:`Attempt`. Retries follow ``ProviderConfig.retry`` through
tenacity; a model that fails permanently for an item hands over to its ``fallback``. What is
protocol-specific (URL, auth headers, body, reading the answer) is the provider's
:class:`~jobs.providers.wire.Wire`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx
from tenacity import (
    DoAttempt,
    DoSleep,
    RetryCallState,
    Retrying,
    retry_if_result,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential,
    wait_random_exponential,
)

from jobs.config import AppConfig, ModelConfig, ProviderConfig, RetryConfig
from jobs.errors import SendRefused
from jobs.money import tokens
from jobs.providers.answers import answer_text
from jobs.providers.errors import (
    exception_error_class,
    exception_is_retryable,
    parse_retry_after,
    status_error_class,
    status_is_retryable,
)
from jobs.providers.ratelimit import anthropic_pause_s
from jobs.providers.redact import redact, redact_json, storable, storable_json
from jobs.providers.transport import FastTransport
from jobs.providers.types import Attempt, CallResult, ChatRequest
from jobs.providers.wire import Unmappable, Usage, Wire, wire_for

if TYPE_CHECKING:
    from jobs.providers.ratelimit import RateLimiter

WIRE_PARAMS = frozenset(
    {
        "_headers",
        "headers",
        "extra_headers",
        "extra_query",
        "extra_body",
        "timeout",
        "stream",
        "stream_options",
        "max_completion_tokens",
    }
)
"""Keys of ``ChatRequest.params`` (a dataset's body fields) that are never sent: anything that
would reach the wire other than as a JSON body field (HTTP headers, query strings), an event
stream the pool cannot read, or a second output limit beside the ``max_tokens`` the budget
reserved for. Keys starting with ``_`` are dropped too. Headers come only from the code
(``ChatRequest.headers``), never from params."""

CHOICE_PARAMS = ("n", "best_of")
"""Body fields that multiply the output billed; only 1 is sent (the hold covers one choice)."""

PROMPT_MARGIN_TOKENS = 64
COMPLETION_MARGIN_TOKENS = 16
"""How far a provider's ``usage`` may exceed what the request allows before it is flagged and
capped (framing a provider adds on its side); see :func:`check_usage`."""

log = logging.getLogger("jobs.providers")

BeforeSend = Callable[[], Awaitable[None]]
"""Awaited before each try goes on the wire (see :meth:`ProviderPool.complete`)."""

_UNSTORABLE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")
"""A JSON escape for NUL or a surrogate in a body: the parsed strings may hold what a database
refuses (a lone surrogate, NUL on Postgres), so they are cleaned before they are stored."""

Sleep = Callable[[float], Awaitable[None]]


class _Unsendable(Exception):
    """The request cannot be written at all (its body does not serialise); the item fails alone."""


@dataclass
class _Outcome:
    """One try: its ledger row plus what the retry loop needs to decide."""

    attempt: Attempt
    body: dict | None
    error: str | None
    retryable: bool
    retry_after_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class _Response:
    """What the pool needs of a response; ``headers`` looks names up case-insensitively
    (lower-cased dict, or httpx.Headers)."""

    status_code: int
    headers: Mapping[str, str]
    content: bytes


@dataclass(frozen=True)
class _AttemptOf:
    """Builds the :class:`Attempt` of one try once its outcome is known (``_interpret`` calls
    it): the same fields for a synchronous call and a provider batch's line; an answer's
    usage is checked against the request's bounds (:func:`check_usage`)."""

    req: ChatRequest
    max_tokens: int
    attempt_id: str
    model: str
    provider: str
    attempt_no: int
    status_code: int | None
    api_key: str | None
    latency_ms: int
    started: datetime
    finished: datetime
    is_fallback: bool = False
    request_id: str | None = None
    provider_batch_id: str | None = None

    def __call__(
        self,
        error_class: str | None,
        message: str | None,
        rid: str | None = None,
        usage: tuple[int, int, int, int, bool] = (0, 0, 0, 0, False),
    ) -> Attempt:
        a = Attempt(
            attempt_id=self.attempt_id,
            model=self.model,
            provider=self.provider,
            attempt_no=self.attempt_no,
            status_code=self.status_code,
            error_class=error_class,
            error_message=redact(message, [self.api_key]),
            request_id=rid or self.request_id,
            latency_ms=self.latency_ms,
            prompt_tokens=usage[0],
            completion_tokens=usage[1],
            cached_tokens=usage[2],
            usage_estimated=usage[4],
            started_at=self.started,
            finished_at=self.finished,
            is_fallback=self.is_fallback,
            cache_write_tokens=usage[3],
            provider_batch_id=self.provider_batch_id,
        )
        if error_class is None:
            check_usage(a, self.req, self.max_tokens)
        return a


class _LoopState:
    """Everything bound to one event loop: the transport and the per-provider semaphores.

    Requests go straight to the transport (``handle_async_request``) rather than through
    ``AsyncClient.send``: the client's auth/redirect/cookie/hook machinery costs about
    0.2 ms of CPU per request and the pool uses none of it. With a proxy configured in the
    environment an ``AsyncClient`` is used instead, because only it reads proxy settings.
    """

    def __init__(self, transport: httpx.AsyncBaseTransport | None, limits: dict[str, int]) -> None:
        # (no reference to the loop itself: states are kept in a WeakKeyDictionary by loop)
        self.semaphores = {name: asyncio.Semaphore(n) for name, n in limits.items()}
        self.client: httpx.AsyncClient | None = None
        if transport is None and _proxy_in_env():
            total = sum(limits.values())
            lim = httpx.Limits(max_connections=total, max_keepalive_connections=total)
            self.client = httpx.AsyncClient(limits=lim, trust_env=True)
        self.transport = transport if transport is not None else FastTransport()

    async def post(self, url: httpx.URL, headers: dict[str, str], content: bytes, timeout: dict[str, float | None]) -> _Response:
        if self.client is None and isinstance(self.transport, FastTransport):
            raw_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
            status, resp_headers, body = await self.transport.exchange(b"POST", url, raw_headers, content, timeout)
            return _Response(status, {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in resp_headers}, body)
        request = httpx.Request("POST", url, content=content, headers=headers, extensions={"timeout": timeout})
        if self.client is not None:
            resp = await self.client.send(request)
        else:
            resp = await self.transport.handle_async_request(request)
        try:
            await resp.aread()
        finally:
            await resp.aclose()
        return _Response(resp.status_code, resp.headers, resp.content)

    async def aclose(self) -> None:
        if self.client is not None:
            await self.client.aclose()
        await self.transport.aclose()


def _proxy_in_env() -> bool:
    return any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"))


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _last_outcome(state: RetryCallState) -> _Outcome:
    """The result of the last try (tenacity calls ``retry_error_callback`` only after one)."""
    assert state.outcome is not None
    return state.outcome.result()


def _wait_strategy(cfg: RetryConfig) -> Callable[[RetryCallState], float]:
    """Exponential backoff (full jitter when enabled), but never shorter than Retry-After."""
    backoff = (
        wait_random_exponential(multiplier=cfg.backoff_base_s, max=cfg.backoff_cap_s)
        if cfg.jitter
        else wait_exponential(multiplier=cfg.backoff_base_s, max=cfg.backoff_cap_s)
    )

    def wait(state: RetryCallState) -> float:
        delay = float(backoff(state))
        last = state.outcome.result() if state.outcome is not None and not state.outcome.failed else None
        ra = getattr(last, "retry_after_s", None)
        return max(delay, ra) if ra is not None else delay

    return wait


class ProviderPool:
    """Async client for every provider of an :class:`AppConfig`.

    ``base_urls`` overrides provider URLs (the simulated providers started for a run);
    ``transport`` replaces the network (tests pass ``httpx.MockTransport``); ``sleep``
    replaces ``asyncio.sleep`` between retries (tests record the waits instead).
    """

    def __init__(
        self,
        config: AppConfig,
        *,
        base_urls: dict[str, str] | None = None,
        rate_limiter: RateLimiter | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep | None = None,
    ) -> None:
        self.config = config
        self.base_urls = dict(base_urls or {})
        self.rate_limiter = rate_limiter
        self._transport = transport
        self._sleep = sleep or asyncio.sleep
        # One state per event loop: a pool shared by threads (each with its own loop) or
        # reused across ``asyncio.run`` calls never touches another loop's connections.
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = weakref.WeakKeyDictionary()
        self._endpoints: dict[str, tuple[httpx.URL, dict[str, float | None]]] = {}
        self._policies: dict[str, Retrying] = {}
        # provider -> time.monotonic() before which no call goes out (its own headers said so)
        self._paused_until: dict[str, float] = {}

    # -- lifecycle -----------------------------------------------------------------------
    def _loop_state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        st = self._states.get(loop)
        if st is None:
            limits = {name: p.concurrency for name, p in self.config.providers.items()}
            st = self._states[loop] = _LoopState(self._transport, limits)
        return st

    async def aclose(self) -> None:
        """Close this loop's connections (and the rate limiter's, which reopens lazily)."""
        st = self._states.pop(asyncio.get_running_loop(), None)
        if st is not None:
            await st.aclose()
        closer = getattr(self.rate_limiter, "aclose", None)
        if closer is not None:
            await closer()

    async def __aenter__(self) -> ProviderPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- public ------------------------------------------------------------------------
    async def complete(self, req: ChatRequest, before_send: BeforeSend | None = None) -> CallResult:
        """Run ``req`` to a final outcome: success, or failure after retries and fallbacks.

        ``before_send`` is awaited right before each try goes on the wire (after rate limits
        and the concurrency slot): the fan-out makes its "this call may have reached the
        provider" marker durable there. An exception from it propagates: nothing is sent;
        :class:`~jobs.errors.SendRefused` instead ends the call unsent, with its message.

        Never raises for provider or network failures (they are in the result); raises only
        for programming errors such as an unknown model key. A request the pool refuses to
        send (``n`` > 1) fails without any attempt: nothing reached a provider.
        """
        refused = request_problem(req)
        if refused is not None:
            log.warning("%s not sent: %s", req.custom_id, refused)
            return CallResult(req, False, [], None, req.model, None, refused)
        attempts: list[Attempt] = []
        model_key = req.model
        tried: set[str] = set()
        is_fallback = False
        while True:
            tried.add(model_key)
            try:
                outcome = await self._run_with_retries(req, model_key, attempts, is_fallback, before_send)
            except (_Unsendable, SendRefused) as exc:
                log.warning("%s not sent: %s", req.custom_id, exc)
                return CallResult(req, False, attempts, None, model_key, None, str(exc))
            if outcome.ok:
                return CallResult(req, True, attempts, outcome.body, model_key, outcome.attempt.status_code, None)
            nxt = self.config.model(model_key).fallback
            if nxt is None or nxt in tried:
                log.warning("%s failed on %s: %s", req.custom_id, model_key, outcome.error)
                return CallResult(req, False, attempts, outcome.body, model_key, outcome.attempt.status_code, outcome.error)
            log.info("%s failed on %s (%s); falling back to %s", req.custom_id, model_key, outcome.error, nxt)
            model_key, is_fallback = nxt, True

    # -- batch dispatch: the same request bodies and answer checks as a synchronous call ----
    def request_body(self, req: ChatRequest) -> dict:
        """The body a synchronous call of ``req`` would carry, for a provider batch's line.

        Raises :class:`~jobs.providers.wire.Unmappable` or ValueError when it cannot be
        built (the item then fails alone, as a synchronous call would). The caller encodes
        it (and so finds a body that JSON cannot hold) once, when it sizes the batch."""
        problem = request_problem(req)
        if problem is not None:
            raise ValueError(problem)
        model_cfg = self.config.model(req.model)
        return self._body(req, req.model, model_cfg, wire_for(self.config.providers[model_cfg.provider].kind))

    def batch_line_result(
        self,
        req: ChatRequest,
        status_code: int | None,
        body: dict | None,
        error: str | None,
        *,
        provider_batch_id: str,
        started_at: datetime,
        finished_at: datetime,
        request_id: str | None = None,
    ) -> CallResult:
        """One line of a provider batch's results as the :class:`CallResult` of a call:
        usage, error class, redaction and the answer checks are exactly those of a synchronous
        answer (``_interpret``). A line without a status (expired, cancelled) has no attempt:
        that request was never answered, and nothing is billed for it."""
        model_cfg = self.config.model(req.model)
        prov = self.config.providers[model_cfg.provider]
        if status_code is None:
            return CallResult(req, False, [], None, req.model, None, error or "no result")
        wire = wire_for(prov.kind)
        api_key = prov.api_key()
        max_tokens = self._max_tokens(req, model_cfg)

        attempt = _AttemptOf(
            req=req,
            max_tokens=max_tokens,
            attempt_id=uuid.uuid4().hex,
            model=req.model,
            provider=model_cfg.provider,
            attempt_no=1,
            status_code=status_code,
            api_key=api_key,
            latency_ms=int((finished_at - started_at).total_seconds() * 1000),
            started=started_at,
            finished=finished_at,
            request_id=request_id,
            provider_batch_id=provider_batch_id,
        )

        raw = json.dumps(body).encode() if body is not None else b""
        outcome = self._interpret(_Response(status_code, {}, raw), req, model_cfg, api_key, attempt, wire)
        if outcome.ok:
            return CallResult(req, True, [outcome.attempt], outcome.body, req.model, status_code, None)
        return CallResult(req, False, [outcome.attempt], outcome.body, req.model, status_code, outcome.error)

    # -- internals -----------------------------------------------------------------------
    def _endpoint(self, provider_name: str, prov: ProviderConfig) -> tuple[httpx.URL, dict[str, float | None]]:
        """The parsed call URL (chat completions or messages) and timeouts of a provider,
        cached: parsing a URL costs about 30 µs, which matters at thousands of requests per second."""
        ep = self._endpoints.get(provider_name)
        if ep is None:
            base = (self.base_urls.get(provider_name) or prov.base_url).rstrip("/")
            if not base:
                raise ValueError(
                    f"provider {provider_name!r} has no base_url (a simulated provider must be started "
                    "and its URL passed in base_urls)"
                )
            url = httpx.URL(wire_for(prov.kind).url(base))
            ep = self._endpoints[provider_name] = (url, httpx.Timeout(prov.timeout_s).as_dict())
        return ep

    async def _run_with_retries(
        self, req: ChatRequest, model_key: str, attempts: list[Attempt], is_fallback: bool, before_send: BeforeSend | None = None
    ) -> _Outcome:
        """Try until success, a permanent failure, or the provider's retry policy gives up.

        tenacity decides (stop, wait, retry); this loop only performs its actions. It drives
        tenacity's synchronous ``Retrying.iter`` rather than ``AsyncRetrying``, which wraps
        every strategy in a coroutine on every try (~90 µs of CPU per request, a third of the
        pool's own cost at 1,000 requests/s). Same decisions, same policy objects.
        """
        model_cfg = self.config.model(model_key)
        prov = self.config.providers[model_cfg.provider]
        retrying = self._retrying(model_cfg.provider, prov.retry)
        retrying.begin()  # (re)sets tenacity's informational statistics; decisions use ``state``
        state = RetryCallState(retrying, fn=None, args=(), kwargs={})
        while True:
            action = retrying.iter(state)
            if isinstance(action, DoAttempt):
                outcome = await self._send_once(req, model_key, model_cfg, prov, len(attempts) + 1, is_fallback, before_send)
                attempts.append(outcome.attempt)
                state.set_result(outcome)
            elif isinstance(action, DoSleep):
                assert state.outcome is not None  # tenacity sleeps only after a try's set_result
                last = state.outcome.result()
                log.info(
                    "retrying %s on %s (try %d failed: %s) in %.2fs",
                    req.custom_id,
                    model_key,
                    state.attempt_number,
                    last.error,
                    float(action),
                )
                state.prepare_for_next_attempt()
                await self._sleep(float(action))
            else:
                return action  # the final _Outcome (success, permanent failure, or last failure)

    def _retrying(self, provider_name: str, cfg: RetryConfig) -> Retrying:
        """One tenacity policy per provider; ``iter`` is synchronous, so sharing it between
        coroutines is safe (no await happens inside a decision)."""
        r = self._policies.get(provider_name)
        if r is None:
            r = self._policies[provider_name] = Retrying(
                stop=stop_after_attempt(cfg.max_attempts) | stop_before_delay(cfg.max_elapsed_s),
                wait=_wait_strategy(cfg),
                retry=retry_if_result(lambda o: not o.ok and o.retryable),
                retry_error_callback=_last_outcome,  # give up: return the last failure
                sleep=lambda _: None,  # never called: this loop sleeps, asynchronously
            )
        return r

    def _max_tokens(self, req: ChatRequest, model_cfg: ModelConfig) -> int:
        max_tokens = req.max_tokens if req.max_tokens and req.max_tokens > 0 else None
        return max_tokens or model_cfg.max_tokens or self.config.defaults.max_tokens

    def _body(self, req: ChatRequest, model_key: str, model_cfg: ModelConfig, wire: Wire) -> dict:
        """The JSON body: the row's params minus :data:`WIRE_PARAMS` (and ``_``-keys and the
        choice counts), then model, messages and ``max_tokens``, which params cannot override;
        in the provider's protocol (an Anthropic body is mapped, and refuses what it cannot map:
        :class:`~jobs.providers.wire.Unmappable`)."""
        params = {
            k: v
            for k, v in req.params.items()
            if k not in WIRE_PARAMS and k not in CHOICE_PARAMS and not (isinstance(k, str) and k.startswith("_"))
        }
        max_tokens = self._max_tokens(req, model_cfg)
        return wire.body(model_cfg.name or model_key, req.messages, max_tokens, params)

    async def _send_once(
        self,
        req: ChatRequest,
        model_key: str,
        model_cfg: ModelConfig,
        prov: ProviderConfig,
        attempt_no: int,
        is_fallback: bool,
        before_send: BeforeSend | None = None,
    ) -> _Outcome:
        """One HTTP try, always turned into an :class:`Attempt` (never raises for I/O errors)."""
        provider_name = model_cfg.provider
        st = self._loop_state()
        wire = wire_for(prov.kind)
        try:
            body = self._body(req, model_key, model_cfg, wire)
        except Unmappable as bad:
            raise _Unsendable(f"invalid_request: {bad} (provider {provider_name!r} speaks {prov.kind})") from None
        api_key = prov.api_key()
        attempt_id = uuid.uuid4().hex
        headers = {**req.headers, "content-type": "application/json", "idempotency-key": attempt_id}
        headers.update(wire.auth_headers(api_key))
        url, timeout = self._endpoint(provider_name, prov)
        try:
            content = json.dumps(body).encode()
        except (ValueError, TypeError, RecursionError) as bad:
            raise _Unsendable(f"invalid_request: the request body cannot be encoded as JSON ({type(bad).__name__})") from None

        await self._wait_provider_pause(provider_name)
        if self.rate_limiter is not None:
            est_in, est_out = tokens.rate_limit_tokens(req, model_cfg, body["max_tokens"])
            await self.rate_limiter.acquire(provider_name, model_key, est_in + est_out)

        resp: _Response | None = None
        exc: Exception | None = None
        async with st.semaphores[provider_name]:
            if before_send is not None:
                await before_send()
            started = _utcnow()
            t0 = time.perf_counter()
            try:
                resp = await st.post(url, headers, content, timeout)
            except Exception as e:  # classified below; asyncio.CancelledError is not an Exception
                exc = e
            latency_ms = int((time.perf_counter() - t0) * 1000)
            finished = _utcnow()

        attempt = _AttemptOf(
            req=req,
            max_tokens=body["max_tokens"],
            attempt_id=attempt_id,
            model=model_key,
            provider=provider_name,
            attempt_no=attempt_no,
            status_code=resp.status_code if resp is not None else None,
            api_key=api_key,
            latency_ms=latency_ms,
            started=started,
            finished=finished,
            is_fallback=is_fallback,
        )

        if resp is None:
            assert exc is not None
            cls = exception_error_class(exc)
            a = attempt(cls, f"{cls}: {exc}" if str(exc) else cls)
            return _Outcome(a, None, a.error_message, exception_is_retryable(exc))
        outcome = self._interpret(resp, req, model_cfg, api_key, attempt, wire)
        pause = self._announced_pause(prov, resp, outcome)
        if pause is not None:
            self._pause_provider(provider_name, pause)
        if (resp.status_code == 429 or pause is not None) and self.rate_limiter is not None:
            await self.rate_limiter.penalize(provider_name, model_key, outcome.retry_after_s or pause)
        return outcome

    # -- what a provider says about its limits ---------------------------------------------
    @staticmethod
    def _announced_pause(prov: ProviderConfig, resp: _Response, outcome: _Outcome) -> float | None:
        """Seconds every call to this provider should wait, from its own headers: an Anthropic
        limit used up (``anthropic-ratelimit-*-remaining: 0`` until its ``-reset``), or its 429's
        ``retry-after``. A 429 without ``retry-after`` waits for the reset the headers name
        (the try's backoff is at least that long too). OpenAI-kind providers: only the
        shared limiter is paused on a 429, as before."""
        if prov.kind != "anthropic":
            return None
        pause = anthropic_pause_s(resp.headers)
        if resp.status_code == 429:
            if outcome.retry_after_s is None and pause is not None:
                outcome.retry_after_s = pause
            pause = max(pause or 0.0, outcome.retry_after_s or 0.0) or None
        return pause

    def _pause_provider(self, provider_name: str, seconds: float) -> None:
        until = time.monotonic() + seconds
        if until > self._paused_until.get(provider_name, 0.0):
            self._paused_until[provider_name] = until
            log.info("provider %s reports its limit used up: calls wait %.2fs", provider_name, seconds)

    async def _wait_provider_pause(self, provider_name: str) -> None:
        """Hold a call while its provider said it has no room (see :meth:`_announced_pause`).
        One wait: a pause announced meanwhile costs at most a 429, which is retried."""
        wait = self._paused_until.get(provider_name, 0.0) - time.monotonic()
        if wait > 0:
            await self._sleep(wait)

    @staticmethod
    def _interpret(
        resp: _Response,
        req: ChatRequest,
        model_cfg: ModelConfig,
        api_key: str | None,
        attempt: Callable[..., Attempt],
        wire: Wire,
    ) -> _Outcome:
        """What a response means: success with usage, or a transient/permanent failure."""
        status, raw = resp.status_code, resp.content
        rid = _request_id(resp.headers.get("x-request-id") or resp.headers.get("request-id"))
        try:
            parsed: Any = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        if parsed is not None and _UNSTORABLE.search(raw):
            parsed = storable_json(parsed)
        if parsed is not None and api_key:
            # Bodies are stored whole: no echoed key, in any spelling (JSON escapes decode to the
            # key itself). Error bodies also lose anything shaped like a credential; an answer
            # keeps its text but the exact key.
            parsed = redact_json(parsed, [api_key], patterns=not 200 <= status < 300)
        elif parsed is not None and not 200 <= status < 300:
            parsed = redact_json(parsed)
        if not 200 <= status < 300:
            cls = status_error_class(status)
            a = attempt(cls, f"HTTP {status}: {_provider_message(parsed, raw) or cls}", rid)
            return _Outcome(
                a,
                parsed if isinstance(parsed, dict) else None,
                a.error_message,
                status_is_retryable(status),
                parse_retry_after(resp.headers),
            )
        if not wire.is_answer(parsed):
            a = attempt("malformed_response", f"HTTP {status}: body is not a {wire.answer_name}", rid)
            return _Outcome(a, None, a.error_message, True)
        a = attempt(None, None, _request_id(rid or parsed.get("id")), _usage(parsed, req, model_cfg, wire))
        return _Outcome(a, parsed, None, False)


MAX_REQUEST_ID_CHARS = 200
"""``attempts.request_id`` is a String(200)."""


def _request_id(value: Any) -> str | None:
    """A provider's request id as the ledger can store it (it may send any JSON value)."""
    if value is None or value == "":
        return None
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return storable(text)[:MAX_REQUEST_ID_CHARS]


def _provider_message(parsed: Any, raw: bytes) -> str | None:
    if isinstance(parsed, dict):
        err = parsed.get("error")
        if isinstance(err, dict) and err.get("message"):
            if parsed.get("type") == "error" and isinstance(err.get("type"), str):  # Anthropic's envelope
                return f"{err['type']}: {err['message']}"
            return str(err["message"])
        if isinstance(err, str):
            return err
        if parsed.get("message"):
            return str(parsed["message"])
    text = raw[:300].decode("utf-8", "replace").strip()
    return text or None


def request_problem(req: ChatRequest) -> str | None:
    """Why the pool refuses to send ``req`` at all, or None. Only one choice per call: the
    budget holds the worst case of one (a dataset's ``"n": 20`` would bill 20 times that)."""
    for key in CHOICE_PARAMS:
        if key in req.params:
            value = req.params[key]
            if value is not None and (isinstance(value, bool) or value != 1):
                return (
                    f"invalid_request: {key}={str(value)[:40]!r} is not supported (one choice per prompt; the budget holds one)"
                )
    return None


def check_usage(a: Attempt, req: ChatRequest, max_tokens: int) -> None:
    """Bring an answer's ``usage`` within what its request could have been billed, in place.

    A provider's numbers are untrusted: negative counts would lower ``spent`` (and then break
    the budget's CHECK constraint, losing the batch), absurd ones record a huge overdraft.
    Allowed: ``0 <= prompt <= input_token_bound(messages) + the params' bytes + 64``,
    ``0 <= completion <= max_tokens + 16``, ``0 <= cached <= prompt``,
    ``0 <= cache writes <= prompt - cached``. What is outside is
    capped to the bound; the attempt is flagged ``usage_estimated`` (its usage is no longer the
    provider's) with the reason in ``error_message`` (the call still succeeded). Idempotent:
    the pool runs it when parsing, :mod:`jobs.pipeline.record` again before charging.
    """
    problems: list[str] = []
    bound_in = tokens.input_token_bound(req.messages) + PROMPT_MARGIN_TOKENS
    if a.prompt_tokens > bound_in and req.params:
        bound_in += len(json.dumps(req.params, default=str).encode())  # tools, schemas: counted as input
    bound_out = max(max_tokens, 0) + COMPLETION_MARGIN_TOKENS
    for field, bound in (("prompt_tokens", bound_in), ("completion_tokens", bound_out)):
        value = getattr(a, field)
        if value < 0 or value > bound:
            problems.append(f"{field} {value} outside [0, {bound}]")
            setattr(a, field, min(max(value, 0), bound))
    if a.cached_tokens < 0 or a.cached_tokens > a.prompt_tokens:
        problems.append(f"cached_tokens {a.cached_tokens} outside [0, prompt_tokens {a.prompt_tokens}]")
        a.cached_tokens = min(max(a.cached_tokens, 0), a.prompt_tokens)
    room = a.prompt_tokens - a.cached_tokens
    if a.cache_write_tokens < 0 or a.cache_write_tokens > room:
        problems.append(f"cache_write_tokens {a.cache_write_tokens} outside [0, prompt_tokens - cached_tokens {room}]")
        a.cache_write_tokens = min(max(a.cache_write_tokens, 0), room)
    if problems and not a.usage_estimated:  # a local count is flagged already; it is only capped
        a.usage_estimated = True
        note = "usage out of bounds, charged at the bound: " + "; ".join(problems)
        a.error_message = note if not a.error_message else f"{a.error_message}; {note}"


def _usage(parsed: dict, req: ChatRequest, model_cfg: ModelConfig, wire: Wire) -> tuple[int, int, int, int, bool]:
    """(prompt, completion, cache reads, cache writes, estimated) from the answer's usage, or
    counted locally without it (also when its counts are not integers). Bounds are applied by
    :func:`check_usage`."""
    u: Usage | None = wire.usage(parsed)
    if u is not None:
        return u[0], u[1], u[2], u[3], False
    text = answer_text(parsed) or ""
    enc = model_cfg.encoding
    return tokens.count_message_tokens(req.messages, enc), tokens.count_text_tokens(text, enc), 0, 0, True
