"""Shared rate limits: requests/min and tokens/min per provider and per model.

Token buckets, one per (scope, name, kind), e.g. ``provider:openai:rpm`` or
``model:gpt-4o:tpm``. A call takes from every bucket that applies to it in one atomic step:
a Lua script in Redis when a broker URL is configured (all workers on all machines share
the buckets; Celery's ``rate_limit`` is per worker and cannot do this), an in-process
table otherwise.

The bound is strict over any 60-second window: a bucket for ``L`` per minute holds at most
``b = L/60`` (one second's worth) and refills at ``(L - b)/60.5`` per second, so no window
sees more than ``b + 60 * (L - b)/60 = L`` (the half second is a margin for clock jitter and
float rounding; steady throughput is 99% of ``L``). A token cost larger than the bucket is allowed
once the bucket is full and drives it negative (debt), so a big prompt waits instead of
deadlocking while the long-run rate still holds.

A 429 from the provider pauses the buckets of that call for everyone until its
Retry-After (1 s when absent) and empties them, so the whole fleet backs off together
instead of each worker discovering the limit on its own.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import redis.asyncio as aioredis
    from redis.commands.core import AsyncScript

    from jobs.config import AppConfig

log = logging.getLogger("jobs.providers.ratelimit")

DEFAULT_PAUSE_S = 1.0
KEY_PREFIX = "routebatch:rl:"


class RateLimiter(Protocol):
    """What the pool needs: wait for capacity before a call, report a 429 after one."""

    async def acquire(self, provider: str, model: str, tokens: int) -> float | None:
        """Returns the grant time where the limiter knows it (the pool does not use it)."""
        ...

    async def penalize(self, provider: str, model: str, retry_after_s: float | None) -> None: ...


@dataclass(frozen=True)
class BucketSpec:
    key: str
    per_minute: int

    @property
    def capacity(self) -> float:
        return max(1.0, self.per_minute / 60.0)

    @property
    def rate(self) -> float:
        """Refill per second, reduced by the burst so that any 60 s window stays <= per_minute."""
        return max(self.per_minute - self.capacity, 1e-9) / 60.5


class Buckets:
    """Which buckets apply to a (provider, model) call, from the config."""

    def __init__(self, config: AppConfig) -> None:
        self._specs: dict[tuple[str, str], list[tuple[BucketSpec, bool]]] = {}
        for model_key, m in config.models.items():
            prov = config.providers[m.provider]
            specs: list[tuple[BucketSpec, bool]] = []  # (spec, counts tokens)
            if prov.rpm:
                specs.append((BucketSpec(f"provider:{m.provider}:rpm", prov.rpm), False))
            if prov.tpm:
                specs.append((BucketSpec(f"provider:{m.provider}:tpm", prov.tpm), True))
            if m.rpm:
                specs.append((BucketSpec(f"model:{model_key}:rpm", m.rpm), False))
            if m.tpm:
                specs.append((BucketSpec(f"model:{model_key}:tpm", m.tpm), True))
            self._specs[(m.provider, model_key)] = specs

    def __bool__(self) -> bool:
        return any(self._specs.values())

    def for_call(self, provider: str, model: str, tokens: int) -> list[tuple[BucketSpec, float]]:
        return [(s, float(max(tokens, 1)) if is_tokens else 1.0) for s, is_tokens in self._specs.get((provider, model), [])]


# --- in-process ------------------------------------------------------------------------------


@dataclass
class _State:
    level: float
    ts: float
    blocked_until: float = 0.0


class _LocalTable:
    """Bucket states of this process, shared by every limiter in it (a new pool per chunk
    must not start with full buckets)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.states: dict[str, _State] = {}

    def take(self, items: list[tuple[BucketSpec, float]], now: float) -> float:
        """Take all costs, or nothing; returns 0 when taken, else seconds to wait."""
        with self.lock:
            wait = 0.0
            refreshed = []
            for spec, cost in items:
                st = self.states.setdefault(spec.key, _State(spec.capacity, now))
                level = min(spec.capacity, st.level + max(0.0, now - st.ts) * spec.rate)
                refreshed.append(level)
                need = min(cost, spec.capacity)
                if st.blocked_until > now:
                    wait = max(wait, st.blocked_until - now)
                if level < need:
                    wait = max(wait, (need - level) / spec.rate)
            if wait > 0:
                return wait
            for (spec, cost), level in zip(items, refreshed):
                st = self.states[spec.key]
                st.level, st.ts = level - cost, now
            return 0.0

    def pause(self, items: list[tuple[BucketSpec, float]], now: float, pause_s: float) -> None:
        with self.lock:
            for spec, _ in items:
                st = self.states.setdefault(spec.key, _State(spec.capacity, now))
                level = min(spec.capacity, st.level + max(0.0, now - st.ts) * spec.rate)
                st.level, st.ts = min(level, 0.0), now
                st.blocked_until = max(st.blocked_until, now + pause_s)


_LOCAL_TABLE: _LocalTable | None = None
_LOCAL_TABLE_LOCK = threading.Lock()


def _local_table() -> _LocalTable:
    global _LOCAL_TABLE
    with _LOCAL_TABLE_LOCK:
        if _LOCAL_TABLE is None:
            _LOCAL_TABLE = _LocalTable()
        return _LOCAL_TABLE


class _Waiting:
    """One waiter per bucket set per process polls the store; the others queue on a lock.

    Without it, a thousand coroutines blocked on the same bucket would all wake and poll
    Redis at every refill.
    """

    def __init__(self) -> None:
        self._locks: dict[tuple[str, ...], asyncio.Lock] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def lock(self, keys: tuple[str, ...]) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._locks, self._loop = {}, loop
        lk = self._locks.get(keys)
        if lk is None:
            lk = self._locks[keys] = asyncio.Lock()
        return lk


class LocalRateLimiter:
    """Buckets in this process only (the embedded mode, or no broker configured)."""

    def __init__(self, config: AppConfig, table: _LocalTable | None = None) -> None:
        self.buckets = Buckets(config)
        self.table = table or _local_table()
        self._waiting = _Waiting()

    async def acquire(self, provider: str, model: str, tokens: int) -> float:
        items = self.buckets.for_call(provider, model, tokens)
        if not items:
            return time.time()
        async with self._waiting.lock(tuple(s.key for s, _ in items)):
            while True:
                wait = self.table.take(items, time.monotonic())
                if wait <= 0:
                    return time.time()
                await asyncio.sleep(wait)

    async def penalize(self, provider: str, model: str, retry_after_s: float | None) -> None:
        items = self.buckets.for_call(provider, model, 1)
        if items:
            self.table.pause(items, time.monotonic(), retry_after_s or DEFAULT_PAUSE_S)


# --- Redis -----------------------------------------------------------------------------------

# KEYS: bucket keys. ARGV: for each key (rate/s, capacity, cost), then ttl_ms.
# Returns {wait_seconds, now} as strings (Lua numbers would be truncated to integers).
_TAKE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local n = #KEYS
local ttl = tonumber(ARGV[3 * n + 1])
local wait = 0
local levels = {}
for i = 1, n do
  local rate = tonumber(ARGV[3 * i - 2])
  local cap = tonumber(ARGV[3 * i - 1])
  local cost = tonumber(ARGV[3 * i])
  local h = redis.call('HMGET', KEYS[i], 'level', 'ts', 'blocked')
  local level = tonumber(h[1]) or cap
  local ts = tonumber(h[2]) or now
  local blocked = tonumber(h[3]) or 0
  level = math.min(cap, level + math.max(0, now - ts) * rate)
  levels[i] = level
  local need = math.min(cost, cap)
  if blocked > now and blocked - now > wait then wait = blocked - now end
  if level < need and (need - level) / rate > wait then wait = (need - level) / rate end
end
if wait > 0 then
  return {tostring(wait), tostring(now)}
end
for i = 1, n do
  redis.call('HSET', KEYS[i], 'level', tostring(levels[i] - tonumber(ARGV[3 * i])), 'ts', tostring(now))
  redis.call('PEXPIRE', KEYS[i], ttl)
end
return {'0', tostring(now)}
"""

# KEYS: bucket keys. ARGV: for each key (rate/s, capacity), then pause_s, ttl_ms.
_PAUSE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local n = #KEYS
local pause = tonumber(ARGV[2 * n + 1])
local ttl = tonumber(ARGV[2 * n + 2])
for i = 1, n do
  local rate = tonumber(ARGV[2 * i - 1])
  local cap = tonumber(ARGV[2 * i])
  local h = redis.call('HMGET', KEYS[i], 'level', 'ts', 'blocked')
  local level = tonumber(h[1]) or cap
  local ts = tonumber(h[2]) or now
  local blocked = tonumber(h[3]) or 0
  level = math.min(0, math.min(cap, level + math.max(0, now - ts) * rate))
  if now + pause > blocked then blocked = now + pause end
  redis.call('HSET', KEYS[i], 'level', tostring(level), 'ts', tostring(now), 'blocked', tostring(blocked))
  redis.call('PEXPIRE', KEYS[i], ttl)
end
return 1
"""


class RedisRateLimiter:
    """Buckets in Redis, shared by every worker that uses the same Redis and prefix.

    The Redis client is made lazily per event loop (redis.asyncio connections belong to the
    loop that opened them), never at import or construction.
    """

    def __init__(self, config: AppConfig, url: str, *, prefix: str = KEY_PREFIX) -> None:
        self.buckets = Buckets(config)
        self.url = url
        self.prefix = prefix
        self._client: aioredis.Redis | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._take: AsyncScript | None = None
        self._pause: AsyncScript | None = None
        self._waiting = _Waiting()

    def _scripts(self) -> tuple[AsyncScript, AsyncScript]:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            import redis.asyncio as aioredis

            client = aioredis.Redis.from_url(self.url)
            self._client = client
            self._loop = loop
            self._take = client.register_script(_TAKE_LUA)
            self._pause = client.register_script(_PAUSE_LUA)
        assert self._take is not None and self._pause is not None  # set together with _client
        return self._take, self._pause

    @staticmethod
    def _ttl_ms(items: list[tuple[BucketSpec, float]]) -> int:
        # Long enough to refill the largest bucket completely, then the state is moot.
        return int(1000 * (max(s.capacity / s.rate for s, _ in items) + 120))

    async def acquire(self, provider: str, model: str, tokens: int) -> float:
        """Wait until every bucket of the call has room; returns the grant time (Redis clock)."""
        items = self.buckets.for_call(provider, model, tokens)
        if not items:
            return time.time()
        take, _ = self._scripts()
        keys = [self.prefix + s.key for s, _ in items]
        args: list[str | int] = []
        for s, cost in items:
            args += [repr(s.rate), repr(s.capacity), repr(cost)]
        args.append(self._ttl_ms(items))
        async with self._waiting.lock(tuple(keys)):
            while True:
                wait_s, now = await take(keys=keys, args=args)
                wait = float(wait_s)
                if wait <= 0:
                    return float(now)
                # a little jitter so processes waiting on one bucket do not poll in lockstep
                await asyncio.sleep(wait * (1.0 + 0.1 * random.random()))

    async def penalize(self, provider: str, model: str, retry_after_s: float | None) -> None:
        items = self.buckets.for_call(provider, model, 1)
        if not items:
            return
        _, pause = self._scripts()
        keys = [self.prefix + s.key for s, _ in items]
        args: list[str | int] = []
        for s, _ in items:
            args += [repr(s.rate), repr(s.capacity)]
        args += [repr(retry_after_s or DEFAULT_PAUSE_S), self._ttl_ms(items)]
        await pause(keys=keys, args=args)
        log.info(
            "429 from %s/%s: buckets %s paused %.2fs for all workers", provider, model, keys, retry_after_s or DEFAULT_PAUSE_S
        )

    async def aclose(self) -> None:
        if self._client is not None and self._loop is asyncio.get_running_loop():
            await self._client.aclose()
        self._client = None


# --- what a provider says about its own limits -----------------------------------------------

ANTHROPIC_LIMITS = ("requests", "tokens", "input-tokens", "output-tokens")
"""The limits Anthropic reports on every answer: ``anthropic-ratelimit-<limit>-limit``,
``-remaining`` and ``-reset`` (an RFC 3339 time)."""

MAX_HEADER_PAUSE_S = 60.0
"""A provider's reset time is believed up to this far ahead (its limits are per minute; a
clock skew or a hostile header must not stall a job for hours)."""


def _reset_in(value: str | None, now: float) -> float | None:
    if not value:
        return None
    try:
        at = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if at.tzinfo is None:
        return None
    return max(at.timestamp() - now, 0.0)


def anthropic_pause_s(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """How long to hold every call to an Anthropic provider because a limit it reports is
    used up (``-remaining`` is 0): until the latest ``-reset`` of those limits, at most
    :data:`MAX_HEADER_PAUSE_S`. None when every reported limit has room (or none is reported).

    ``headers`` looks names up case-insensitively (lower-cased keys or httpx.Headers).
    """
    now = time.time() if now is None else now
    pause: float | None = None
    for limit in ANTHROPIC_LIMITS:
        remaining = headers.get(f"anthropic-ratelimit-{limit}-remaining")
        if remaining is None:
            continue
        try:
            if float(remaining) > 0:
                continue
        except ValueError:
            continue
        wait = _reset_in(headers.get(f"anthropic-ratelimit-{limit}-reset"), now)
        if wait is None:
            wait = DEFAULT_PAUSE_S
        pause = max(pause or 0.0, min(wait, MAX_HEADER_PAUSE_S))
    return pause


def limiter_for(config: AppConfig, broker_url: str | None) -> RateLimiter | None:
    """The limiter for a run: None when nothing is limited, Redis when the broker is Redis."""
    if not Buckets(config):
        return None
    if broker_url and broker_url.startswith(("redis://", "rediss://", "unix://")):
        return RedisRateLimiter(config, broker_url)
    if broker_url:
        log.warning("rate limits are per process: broker %s is not Redis", broker_url.split("://", 1)[0])
    return LocalRateLimiter(config)
