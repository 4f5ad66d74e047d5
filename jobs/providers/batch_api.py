"""Clients of the providers' own batch APIs: OpenAI Batch (files + batches) and Anthropic
Message Batches, behind one small interface.

Both charge half the synchronous price for results within 24 hours, which is what an
offline job wants (issue 14). The two APIs differ in shape — OpenAI takes an uploaded JSONL
file and answers with output and error files in any order; Anthropic takes the requests in
the create call and streams results not in request order — so callers see only
:class:`RemoteBatch` (a normalised state) and :class:`BatchResult` (one line per request,
matched by ``custom_id``).

Calls are few and large, so this is a plain synchronous ``httpx.Client`` with tenacity
retries on 429, 5xx and connection errors; ``Retry-After`` is honoured.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import httpx
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from jobs.errors import ProviderError
from jobs.providers.redact import redact, redact_json

RUNNING = "running"
ENDED = "ended"

_OPENAI_ENDED = {"completed", "failed", "expired", "cancelled"}


@dataclass(frozen=True)
class BatchRequest:
    """One request of a batch: its ``custom_id`` and the body in the provider's protocol."""

    custom_id: str
    body: dict[str, Any]


@dataclass
class RemoteBatch:
    """A provider batch as routebatch tracks it: ``phase`` is ``running`` or ``ended``;
    ``status`` is the provider's own word (completed, expired, cancelled, failed, ended, ...)."""

    id: str
    phase: str
    status: str
    total: int = 0
    done: int = 0
    failed: int = 0
    output_file_id: str | None = None
    error_file_id: str | None = None
    results_url: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None


@dataclass(frozen=True)
class Listing:
    """The provider's batches created since a time, newest first. ``complete`` is False
    when the scan stopped at :data:`LIST_MAX` batches before reaching that time: a batch
    missing from it may still exist."""

    batches: list[RemoteBatch]
    complete: bool


@dataclass(frozen=True)
class BatchResult:
    """One request's outcome: an HTTP-like status and body, or an error code without a body
    (``batch_expired``, ``batch_cancelled``, ...)."""

    custom_id: str
    status_code: int | None
    body: dict[str, Any] | None
    error_code: str | None = None
    error_message: str | None = None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class BatchClient(Protocol):
    def submit(self, requests: list[BatchRequest], metadata: dict[str, str]) -> RemoteBatch: ...
    def retrieve(self, batch_id: str) -> RemoteBatch: ...
    def cancel(self, batch_id: str) -> RemoteBatch: ...
    def list_since(self, since: datetime, max_batches: int = ...) -> Listing: ...
    def results(self, batch: RemoteBatch) -> Iterator[BatchResult]: ...
    def close(self) -> None: ...


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None, status: int = 0) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status


def _unsent(exc: BaseException) -> bool:
    """The request provably did not create anything: rate-limited, or no connection made."""
    return (isinstance(exc, _Retryable) and exc.status == 429) or isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)


def _retry_any(exc: BaseException) -> bool:
    return isinstance(exc, _Retryable | httpx.TransportError)


def _wait(state: Any) -> float:
    exc = state.outcome.exception() if state.outcome else None
    if isinstance(exc, _Retryable) and exc.retry_after is not None:
        return min(exc.retry_after, WAIT_MAX_S)
    return float(wait_exponential(multiplier=0.5, max=30.0)(state))


LIST_MAX = 10_000
"""The most batches one :meth:`list_since` reads (100 per page) before it gives up on
reaching its time."""
CLOCK_SLACK = timedelta(hours=1)
"""How far the provider's clock may be behind ours when a batch's creation time is compared
with the time we recorded before uploading it. Generous: reading an hour more of the list
costs little next to paying for a batch twice."""

MAX_ATTEMPTS = 5
"""Tries of one batch API call."""
WAIT_MAX_S = 60.0
"""The longest wait between two tries (a provider's ``retry-after``, capped)."""


def longest_call_s(timeout_s: float) -> float:
    """How long one call with its retries can take at most: every try timing out, the
    longest wait between them."""
    return MAX_ATTEMPTS * timeout_s + (MAX_ATTEMPTS - 1) * WAIT_MAX_S


class _HttpBatchClient:
    def __init__(
        self,
        base_url: str,
        headers: dict[str, str],
        secret: str | None,
        timeout_s: float = 120.0,
        max_attempts: int = MAX_ATTEMPTS,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s, transport=transport)
        self._max_attempts = max_attempts
        self._secrets = [secret] if secret else []

    def redacted(self, body: Any) -> Any:
        """A provider body as it may be stored: without the key, in any spelling."""
        return redact_json(body, self._secrets, patterns=False)

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, *, creates: bool = False, **kwargs: Any) -> httpx.Response:
        """One API call with retries. ``creates``: the call creates a batch (not idempotent),
        so only a try that provably created nothing is repeated; after a timeout or a 5xx the
        batch may exist, and the error goes up for the caller to reconcile by the batch's
        metadata rather than create a second, billed, batch."""
        retrying = Retrying(
            retry=retry_if_exception(_unsent if creates else _retry_any),
            wait=_wait,
            stop=stop_after_attempt(self._max_attempts),
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                resp = self._http.request(method, path, **kwargs)
                if resp.status_code == 429 or resp.status_code >= 500:
                    ra = resp.headers.get("retry-after")
                    raise _Retryable(f"{method} {path}: HTTP {resp.status_code}", float(ra) if ra else None, resp.status_code)
                if resp.status_code >= 400:
                    raise ProviderError(redact(f"{method} {path}: HTTP {resp.status_code}: {_message(resp)}", self._secrets))
                return resp
        raise AssertionError("unreachable: tenacity returns or reraises")

    def list_since(self, since: datetime, max_batches: int = LIST_MAX) -> Listing:
        """Every batch created since ``since`` (less :data:`CLOCK_SLACK`), page by page.

        Why not the first page: a reconcile decides from this list that a batch never
        reached the provider and uploads it again; on an account that created more than a
        page of batches since, the first page would miss ours and it would be billed twice.
        Lists are newest first, so the scan stops at the first batch older than ``since``.
        """
        floor = since - CLOCK_SLACK
        found: list[RemoteBatch] = []
        after: str | None = None
        seen = 0
        while seen < max_batches:
            page, more, last = self._list_page(after, min(100, max_batches - seen))
            seen += len(page)
            for b in page:
                if b.created_at is not None and b.created_at < floor:
                    return Listing(found, True)
                found.append(b)
            if not more:
                return Listing(found, True)
            if not page or last is None or last == after:  # "more" and no way to get it: not seen all
                return Listing(found, False)
            after = last
        return Listing(found, False)

    def _list_page(self, after: str | None, limit: int) -> tuple[list[RemoteBatch], bool, str | None]:
        raise NotImplementedError

    def _clean(self, result: BatchResult) -> BatchResult:
        if not self._secrets:
            return result
        return BatchResult(
            result.custom_id,
            result.status_code,
            self.redacted(result.body),
            result.error_code,
            redact(result.error_message, self._secrets) if result.error_message else None,
        )

    def _json(self, method: str, path: str, *, creates: bool = False, **kwargs: Any) -> dict[str, Any]:
        got = self._call(method, path, creates=creates, **kwargs).json()
        if not isinstance(got, dict):
            raise ProviderError(f"{method} {path}: expected a JSON object")
        return got


class OpenAIBatchClient(_HttpBatchClient):
    """``POST /v1/files`` (purpose batch), ``/v1/batches`` create/retrieve/cancel/list, file content."""

    endpoint = "/v1/chat/completions"

    def __init__(self, base_url: str, api_key: str | None, **kwargs: Any) -> None:
        super().__init__(base_url, {"authorization": f"Bearer {api_key}"} if api_key else {}, api_key, **kwargs)

    def submit(self, requests: list[BatchRequest], metadata: dict[str, str]) -> RemoteBatch:
        lines = "".join(
            json.dumps({"custom_id": r.custom_id, "method": "POST", "url": self.endpoint, "body": r.body}) + "\n"
            for r in requests
        ).encode()
        f = self._json(
            "POST", "/v1/files", files={"file": ("batch.jsonl", lines, "application/jsonl")}, data={"purpose": "batch"}
        )
        body = {"input_file_id": f["id"], "endpoint": self.endpoint, "completion_window": "24h", "metadata": metadata}
        return _openai_batch(self._json("POST", "/v1/batches", creates=True, json=body))

    def retrieve(self, batch_id: str) -> RemoteBatch:
        return _openai_batch(self._json("GET", f"/v1/batches/{batch_id}"))

    def cancel(self, batch_id: str) -> RemoteBatch:
        return _openai_batch(self._json("POST", f"/v1/batches/{batch_id}/cancel"))

    def _list_page(self, after: str | None, limit: int) -> tuple[list[RemoteBatch], bool, str | None]:
        params: dict[str, Any] = {"limit": limit} | ({"after": after} if after else {})
        got = self._json("GET", "/v1/batches", params=params)
        return _page_of(got, _openai_batch)

    def results(self, batch: RemoteBatch) -> Iterator[BatchResult]:
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            for raw in self._call("GET", f"/v1/files/{file_id}/content").content.splitlines():
                if raw.strip():
                    yield self._clean(_openai_line(raw))


class AnthropicBatchClient(_HttpBatchClient):
    """``/v1/messages/batches`` create/retrieve/cancel/list and the results stream."""

    def __init__(self, base_url: str, api_key: str | None, version: str = "2023-06-01", **kwargs: Any) -> None:
        headers = {"anthropic-version": version} | ({"x-api-key": api_key} if api_key else {})
        super().__init__(base_url, headers, api_key, **kwargs)

    def submit(self, requests: list[BatchRequest], metadata: dict[str, str]) -> RemoteBatch:
        body = {"requests": [{"custom_id": r.custom_id, "params": r.body} for r in requests]}
        got = _anthropic_batch(self._json("POST", "/v1/messages/batches", creates=True, json=body))
        got.metadata = dict(metadata)  # Anthropic keeps none: the ledger's record is the source
        return got

    def retrieve(self, batch_id: str) -> RemoteBatch:
        return _anthropic_batch(self._json("GET", f"/v1/messages/batches/{batch_id}"))

    def cancel(self, batch_id: str) -> RemoteBatch:
        return _anthropic_batch(self._json("POST", f"/v1/messages/batches/{batch_id}/cancel"))

    def _list_page(self, after: str | None, limit: int) -> tuple[list[RemoteBatch], bool, str | None]:
        params: dict[str, Any] = {"limit": limit} | ({"after_id": after} if after else {})
        got = self._json("GET", "/v1/messages/batches", params=params)
        return _page_of(got, _anthropic_batch)

    def results(self, batch: RemoteBatch) -> Iterator[BatchResult]:
        url = batch.results_url or f"/v1/messages/batches/{batch.id}/results"
        for raw in self._call("GET", url).content.splitlines():
            if raw.strip():
                yield self._clean(_anthropic_line(raw))


# -- normalising -----------------------------------------------------------------------------
def _page_of(got: dict[str, Any], batch: Any) -> tuple[list[RemoteBatch], bool, str | None]:
    """One list page, both APIs: ``data``, ``has_more`` and the cursor of the next page."""
    data = got.get("data") or []
    if not isinstance(data, list):
        raise ProviderError("a batch list page without a data list")
    page = [batch(b) for b in data]
    last = got.get("last_id") or (page[-1].id if page else None)
    return page, bool(got.get("has_more")), str(last) if last else None


def _created(raw: Any) -> datetime | None:
    """A batch's creation time: Unix seconds (OpenAI) or RFC 3339 (Anthropic); None if unreadable."""
    try:
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            return datetime.fromtimestamp(float(raw), UTC)
        if isinstance(raw, str):
            got = datetime.fromisoformat(raw.replace("Z", "+00:00"))
            return got if got.tzinfo else got.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        return None
    return None


def _openai_batch(b: dict[str, Any]) -> RemoteBatch:
    counts = b.get("request_counts") or {}
    status = str(b.get("status"))
    return RemoteBatch(
        id=str(b["id"]),
        phase=ENDED if status in _OPENAI_ENDED else RUNNING,
        status=status,
        total=int(counts.get("total") or 0),
        done=int(counts.get("completed") or 0),
        failed=int(counts.get("failed") or 0),
        output_file_id=b.get("output_file_id"),
        error_file_id=b.get("error_file_id"),
        metadata=dict(b.get("metadata") or {}),
        raw=b,
        created_at=_created(b.get("created_at")),
    )


def _anthropic_batch(b: dict[str, Any]) -> RemoteBatch:
    counts = b.get("request_counts") or {}
    status = str(b.get("processing_status"))
    failed = sum(int(counts.get(k) or 0) for k in ("errored", "canceled", "expired"))
    return RemoteBatch(
        id=str(b["id"]),
        phase=ENDED if status == "ended" else RUNNING,
        status=status,
        total=sum(int(v or 0) for v in counts.values()),
        done=int(counts.get("succeeded") or 0),
        failed=failed,
        results_url=b.get("results_url"),
        raw=b,
        created_at=_created(b.get("created_at")),
    )


def _openai_line(raw: bytes) -> BatchResult:
    line = json.loads(raw)
    resp = line.get("response") or None
    err = line.get("error") or None
    if resp is not None:
        return BatchResult(str(line["custom_id"]), int(resp.get("status_code") or 0), resp.get("body"))
    return BatchResult(str(line["custom_id"]), None, None, (err or {}).get("code"), (err or {}).get("message"))


ANTHROPIC_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}
"""An ``errored`` result carries only the error's type: the HTTP status the same error has on
the synchronous API, so a transient one (429, 500, 529) is answered again, not failed."""


def _anthropic_line(raw: bytes) -> BatchResult:
    line = json.loads(raw)
    result = line.get("result") or {}
    kind = result.get("type")
    if kind == "succeeded":
        return BatchResult(str(line["custom_id"]), 200, result.get("message"))
    if kind == "errored":
        error = result.get("error") or {}
        inner = error.get("error") or {}
        status = ANTHROPIC_ERROR_STATUS.get(str(inner.get("type")), 400)
        return BatchResult(str(line["custom_id"]), status, error, inner.get("type"), inner.get("message"))
    code = {"canceled": "batch_cancelled", "expired": "batch_expired"}.get(str(kind), str(kind))
    return BatchResult(str(line["custom_id"]), None, None, code, f"request {kind}")


def _message(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:200]
    err = body.get("error") if isinstance(body, dict) else None
    return str((err or {}).get("message") if isinstance(err, dict) else body)[:200]


# -- which client, and how much fits one batch ---------------------------------------------------
PROVIDER_LIMITS = {"openai": (50_000, 200 * 1024 * 1024), "anthropic": (100_000, 256 * 1024 * 1024)}
"""(requests, bytes) one provider batch may hold: OpenAI Batch and Anthropic Message Batches."""
BYTES_MARGIN = 0.9
"""A batch is cut at 90% of the byte limit: the provider counts the request envelope too."""


def batch_limits(kind: str, configured: int | None = None) -> tuple[int, int]:
    """(max requests, max bytes of request bodies) for one batch of a ``kind`` provider."""
    requests, size = PROVIDER_LIMITS[kind]
    return min(configured or requests, requests), int(size * BYTES_MARGIN)


def client_for(kind: str, base_url: str, api_key: str | None, timeout_s: float = 120.0) -> BatchClient:
    """The batch client of a provider. Its paths start at ``/v1``, so a base URL that ends in
    ``/v1`` (the OpenAI habit, the simulator's) loses that suffix here."""
    base = base_url.rstrip("/")
    if base.endswith("/v1"):
        base = base[: -len("/v1")]
    if kind == "anthropic":
        return AnthropicBatchClient(base, api_key, timeout_s=timeout_s)
    return OpenAIBatchClient(base, api_key, timeout_s=timeout_s)
