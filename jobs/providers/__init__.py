"""Providers: OpenAI-compatible chat completions and Anthropic's Messages API, with retries,
fallback and rate limits.

The public surface is small and re-exported here; modules behind it each do one thing:
``types`` (values), ``pool`` (sending), ``wire`` (the protocol of a provider kind),
``anthropic`` (the Messages API mapping), ``answers`` (the answer text of a stored body),
``errors`` (retryability), ``redact`` (secrets), ``ratelimit`` (shared buckets, providers'
limit headers), ``transport`` (the keep-alive HTTP/1.1 transport), and ``sim/`` (the built-in
simulated server: ``server``, ``anthropic``, ``options``, ``replay`` of labelled answer files).
"""

from jobs.providers.pool import ProviderPool
from jobs.providers.ratelimit import RateLimiter, limiter_for
from jobs.providers.sim.server import SimulatedServer, start_simulated_provider, start_simulated_providers
from jobs.providers.transport import FastTransport
from jobs.providers.types import Attempt, CallResult, ChatRequest

__all__ = [
    "Attempt",
    "CallResult",
    "ChatRequest",
    "FastTransport",
    "ProviderPool",
    "RateLimiter",
    "SimulatedServer",
    "start_simulated_provider",
    "limiter_for",
    "start_simulated_providers",
]
