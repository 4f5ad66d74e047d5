"""What a failed provider call means: its error class, whether to retry, and how long to wait.

One table decides retryability so that the pool, the tests and the docs agree: 429, 408,
409 and 5xx (Anthropic's 529 ``overloaded_error`` among them), timeouts, dropped connections and a 2xx body that is not the protocol's JSON
are transient; every other 4xx fails the item at once with the provider's message.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping

import httpx

RETRYABLE_STATUS = frozenset({408, 409, 429})

_STATUS_CLASS = {
    400: "bad_request",
    401: "authentication",
    403: "permission_denied",
    404: "not_found",
    408: "request_timeout",
    409: "conflict",
    422: "unprocessable_entity",
    429: "rate_limited",
    529: "overloaded",  # Anthropic's overloaded_error: transient, retried like 5xx
}


def status_error_class(status: int) -> str:
    if status in _STATUS_CLASS:
        return _STATUS_CLASS[status]
    return "server_error" if status >= 500 else f"http_{status}"


def status_is_retryable(status: int) -> bool:
    return status in RETRYABLE_STATUS or status >= 500


def exception_error_class(exc: BaseException) -> str:
    """A stable name for a transport failure (stored in ``attempts.error_class``)."""
    if isinstance(exc, httpx.LocalProtocolError):
        return "unsafe_request"  # refused before sending (a header with CR/LF/NUL, ...)
    if isinstance(exc, httpx.ConnectTimeout):
        return "connect_timeout"
    if isinstance(exc, httpx.ReadTimeout):
        return "read_timeout"
    if isinstance(exc, httpx.WriteTimeout):
        return "write_timeout"
    if isinstance(exc, httpx.PoolTimeout):
        return "pool_timeout"
    if isinstance(exc, httpx.ConnectError):
        return "connect_error"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "connection_dropped"
    if isinstance(exc, (httpx.ReadError, httpx.WriteError, ConnectionError)):
        return "connection_reset"
    if isinstance(exc, httpx.TransportError):
        return "transport_error"
    return type(exc).__name__


def exception_is_retryable(exc: BaseException) -> bool:
    """Transport failures are transient; anything else (a bug, an invalid URL, a request the
    transport refused to write) is not."""
    if isinstance(exc, (httpx.UnsupportedProtocol, httpx.InvalidURL, httpx.LocalProtocolError)):
        return False
    return isinstance(exc, (httpx.TransportError, ConnectionError))


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` (preferred: finer) or ``Retry-After``.

    ``headers`` must look names up case-insensitively (httpx.Headers, or lower-cased keys).
    ``Retry-After`` is either delta-seconds or an HTTP date (RFC 9110 §10.2.3). Returns None
    when absent or unparseable; never negative.
    """
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(float(ms) / 1000.0, 0.0)
        except ValueError:
            pass
    ra = headers.get("retry-after")
    if not ra:
        return None
    ra = ra.strip()
    try:
        return max(float(ra), 0.0)
    except ValueError:
        pass
    try:
        dt = email.utils.parsedate_to_datetime(ra)
    except (TypeError, ValueError, IndexError):
        return None
    if dt is None:
        return None
    return max(dt.timestamp() - (time.time() if now is None else now), 0.0)
