"""The values that cross the provider boundary: a request, one attempt, the final result.

They are plain dataclasses so that the execution layer can store them in the ledger without
knowing anything about HTTP; an :class:`Attempt` maps one-to-one onto a row of ``attempts``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class ChatRequest:
    """One chat completion to make for one item.

    ``model`` is a key of ``AppConfig.models`` (not the provider's model id).
    ``max_tokens`` <= 0 means "use the model's default" — the request that is sent always
    carries an explicit ``max_tokens`` so that the worst-case cost is bounded.

    ``params`` are the dataset's extra body fields (untrusted): they only ever become JSON
    body fields, never headers (see ``jobs.providers.pool.WIRE_PARAMS``). ``headers`` are
    extra HTTP headers set by code (tests use them for the simulator's ``X-Sim-Fault``); the
    pipeline never fills them from a dataset, and the transport refuses CR, LF and NUL in them.
    """

    custom_id: str
    model: str
    messages: list[dict]
    max_tokens: int
    params: dict = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Attempt:
    """One provider call, recorded whatever its outcome.

    ``attempt_id`` is made before sending, so that it can serve as an idempotency key and so
    that a call that was sent can be recorded even when the response never comes.
    ``error_message`` never contains secrets (see :mod:`jobs.providers.redact`).
    """

    attempt_id: str
    model: str
    provider: str
    attempt_no: int
    status_code: int | None
    error_class: str | None
    error_message: str | None
    request_id: str | None
    latency_ms: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    usage_estimated: bool
    started_at: datetime
    finished_at: datetime
    is_fallback: bool = False
    cache_write_tokens: int = 0
    """Input tokens written to a prompt cache (Anthropic's ``cache_creation_input_tokens``),
    part of ``prompt_tokens`` like ``cached_tokens`` (the reads), charged at the cache-write
    price. Not a column of ``attempts``: it is in the attempt's cost."""
    provider_batch_id: str | None = None
    """The provider batch that carried the call (batch dispatch); None for a synchronous call."""

    @property
    def ok(self) -> bool:
        return self.error_class is None and self.status_code is not None and 200 <= self.status_code < 300


@dataclass
class CallResult:
    """The outcome of :meth:`ProviderPool.complete`: every attempt, and the final answer.

    ``model`` is the model key that produced the final outcome, which differs from
    ``request.model`` when a fallback model was used.
    """

    request: ChatRequest
    ok: bool
    attempts: list[Attempt]
    body: dict | None
    model: str
    status_code: int | None
    error: str | None

    @property
    def text(self) -> str | None:
        """The answer text, when the call succeeded: the first choice's message (OpenAI), or
        the text blocks of the Message (Anthropic)."""
        if not self.ok or not self.body:
            return None
        from jobs.providers.answers import answer_text  # a leaf; types.py stays import-free

        return answer_text(self.body)


def token_count(value: object) -> int | None:
    """A token count as a provider sent it: an integer (or an integral float), else None
    (booleans, strings and fractions are not counts: the caller counts locally instead)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None
