"""A lean HTTP/1.1 keep-alive transport for httpx, for high fan-out to a few origins.

Why not httpx's default transport: httpcore 1.0's connection pool re-scans every
connection (and polls every idle socket) for each request it queues or releases — quadratic
in the pool size. At 256–1,024 concurrent requests that alone costs milliseconds of CPU per
request, far above the dispatch target (≥ 1,000 requests/s on two cores, server included).

This transport keeps a stack of idle connections per origin (O(1) to take or return one),
parses responses with httptools (C), and maps failures onto httpx's exception classes so
the retry policy treats it exactly like the default transport. It does HTTP and HTTPS
(asyncio's TLS), no proxies and no HTTP/2: the pool falls back to httpx's transport when a
proxy is configured in the environment. Concurrency is bounded by the pool's semaphores,
so there is no connection limit here.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import ssl
import time
from collections import deque

import httptools
import httpx

from jobs.errors import ProviderError

_DEFAULT_PORTS = {"http": 80, "https": 443}

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""An HTTP field name (RFC 9110 §5.1: a token)."""
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
"""What a field value must not hold: CR, LF, NUL and the other controls (HTAB is allowed)."""
_FRAMING = frozenset({b"host", b"content-length", b"transfer-encoding", b"connection", b"accept-encoding"})
"""Headers the transport writes itself: a caller's copy would duplicate or contradict them."""


class UnsafeRequestError(ProviderError, httpx.LocalProtocolError):
    """A request the transport refuses to write: a header name or value with CR, LF, NUL or
    another control character, or a header that would duplicate the transport's own framing
    (Host, Content-Length, ...). Nothing is sent; the message never repeats the value (it may
    be a key). An httpx ``LocalProtocolError`` too, so httpx callers see their own class."""

    def __init__(self, message: str) -> None:
        httpx.LocalProtocolError.__init__(self, message)


def check_headers(headers: list[tuple[bytes, bytes]]) -> None:
    """Raise :class:`UnsafeRequestError` for any header that could change the request's framing."""
    for name, value in headers:
        shown = ascii(name.decode("latin-1"))[:60]
        if not _TOKEN.fullmatch(name):
            raise UnsafeRequestError(f"refusing to send header {shown}: its name is not an HTTP token (CR, LF, NUL, space...)")
        if _BAD_VALUE.search(value):
            raise UnsafeRequestError(f"refusing to send header {shown}: its value contains CR, LF, NUL or a control character")
        if name.lower() in _FRAMING:
            raise UnsafeRequestError(f"refusing to send header {shown}: the transport sets it (a second copy would smuggle)")


class _Conn(asyncio.Protocol):
    """One TCP (or TLS) connection; one request in flight at a time."""

    def __init__(self, origin: tuple[str, str, int]) -> None:
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self._waiter: asyncio.Future | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._complete = False
        self._headers_done = False

    # asyncio.Protocol --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        w = self._waiter
        if w is not None and not w.done() and exc is None and self._close_delimited():
            # llhttp ends a body without length or chunking at EOF; httptools cannot be told
            # about EOF, so the message is completed here.
            w.set_result((self.parser.get_status_code(), self._headers, b"".join(self._body), False))
            return
        if w is not None and not w.done():
            if exc is None or isinstance(exc, (ConnectionError, OSError)):
                w.set_exception(httpx.RemoteProtocolError("Server disconnected without sending a complete response."))
            else:
                w.set_exception(httpx.ReadError(str(exc)))

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # pragma: no cover - we never ask for upgrades
            self._fail(httpx.RemoteProtocolError("unexpected protocol upgrade"))
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"malformed HTTP response: {exc}"))

    def _close_delimited(self) -> bool:
        if not self._headers_done or self._complete:
            return False
        names = {k.lower() for k, _ in self._headers}
        return b"content-length" not in names and b"transfer-encoding" not in names

    # httptools callbacks -----------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._complete = True
        w = self._waiter
        if w is not None and not w.done():
            w.set_result((self.parser.get_status_code(), self._headers, b"".join(self._body), self.parser.should_keep_alive()))

    # use -----------------------------------------------------------------------------------
    def _fail(self, exc: Exception) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_exception(exc)
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    async def roundtrip(self, data: bytes, read_timeout: float | None) -> tuple[int, list, bytes, bool]:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        self._headers, self._body, self._complete, self._headers_done = [], [], False, False
        self.parser = httptools.HttpResponseParser(self)
        self._waiter = loop.create_future()
        try:
            self.transport.write(data)
        except (OSError, RuntimeError) as exc:
            raise httpx.WriteError(str(exc)) from exc
        try:
            if read_timeout is None:
                return await self._waiter
            async with asyncio.timeout(read_timeout):
                return await self._waiter
        except TimeoutError:
            raise httpx.ReadTimeout(f"no response within {read_timeout:g} s") from None
        finally:
            self._waiter = None


class FastTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 keep-alive transport with an O(1) idle-connection stack per origin."""

    def __init__(self, *, keepalive_expiry: float = 30.0, ssl_context: ssl.SSLContext | None = None) -> None:
        self.keepalive_expiry = keepalive_expiry
        self._ssl = ssl_context
        self._idle: dict[tuple[str, str, int], deque[_Conn]] = {}
        self._closed = False

    def _ssl_context(self) -> ssl.SSLContext:
        """Like httpx: certifi's CA bundle, unless SSL_CERT_FILE/SSL_CERT_DIR say otherwise."""
        if self._ssl is None:
            if os.environ.get("SSL_CERT_FILE") or os.environ.get("SSL_CERT_DIR"):
                self._ssl = ssl.create_default_context()
            else:
                try:
                    import certifi

                    self._ssl = ssl.create_default_context(cafile=certifi.where())
                except ImportError:  # pragma: no cover
                    self._ssl = ssl.create_default_context()
        return self._ssl

    async def _connect(self, origin: tuple[str, str, int], timeout: float | None) -> _Conn:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        tls = self._ssl_context() if scheme == "https" else None
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(
                    lambda: _Conn(origin), host, port, ssl=tls, server_hostname=host if tls is not None else None
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connect to {host}:{port} timed out") from None
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(f"cannot connect to {host}:{port}: {exc}") from exc
        sock = conn.transport.get_extra_info("socket") if conn.transport else None
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:  # pragma: no cover
                pass
        return conn

    def _take_idle(self, origin: tuple[str, str, int]) -> _Conn | None:
        stack = self._idle.get(origin)
        now = time.monotonic()
        while stack:
            conn = stack.pop()  # most recently used first: warmest, least likely to be closed
            if not conn.closed and now - conn.idle_since < self.keepalive_expiry:
                return conn
            conn.close()
        return None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """The httpx transport interface (used by tests, tools and any httpx client)."""
        body = await request.aread()
        # httpx adds Host, Content-Length and Accept-Encoding itself; this transport writes its own.
        own = {b"host", b"accept-encoding", b"content-length"}
        headers = [(k, v) for k, v in request.headers.raw if k.lower() not in own]
        status, resp_headers, content = await self.exchange(
            request.method.encode("ascii"), request.url, headers, body, request.extensions.get("timeout", {})
        )
        return httpx.Response(
            status, headers=resp_headers, content=content, request=request, extensions={"http_version": b"HTTP/1.1"}
        )

    async def exchange(
        self,
        method: bytes,
        url: httpx.URL,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        timeouts: dict[str, float | None],
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """One request/response without httpx's Request/Response objects (the pool's hot path:
        building and reading those costs ~50 µs a request). Adds Host, Content-Length and
        ``accept-encoding: identity``; raises httpx's exception classes.

        Every header is checked before anything is written (:func:`check_headers`): a name or
        value with CR, LF or NUL, or a second Host/Content-Length, raises
        :class:`UnsafeRequestError` and nothing reaches the socket."""
        if self._closed:
            raise RuntimeError("transport is closed")
        scheme = url.scheme
        if scheme not in _DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}")
        origin = (scheme, url.host, url.port or _DEFAULT_PORTS[scheme])
        check_headers(headers)
        target = url.raw_path or b"/"
        if not _TOKEN.fullmatch(method) or _BAD_VALUE.search(target) or b" " in target or _BAD_VALUE.search(url.netloc):
            raise UnsafeRequestError("refusing to send a request line with a space or a control character")
        lines = [method + b" " + target + b" HTTP/1.1", b"host: " + url.netloc]
        lines += [k + b": " + v for k, v in headers]
        lines.append(b"accept-encoding: identity")  # the body is handed over as is
        if body or method in (b"POST", b"PUT", b"PATCH"):
            lines.append(b"content-length: " + str(len(body)).encode())
        data = b"\r\n".join(lines) + b"\r\n\r\n" + body

        conn = self._take_idle(origin) or await self._connect(origin, timeouts.get("connect"))
        try:
            status, resp_headers, content, keep_alive = await conn.roundtrip(data, timeouts.get("read"))
        except BaseException:
            conn.abort()  # never reuse a connection with an unknown state (timeouts, cancellation)
            raise
        if keep_alive and not conn.closed and not self._closed:
            conn.idle_since = time.monotonic()
            self._idle.setdefault(origin, deque()).append(conn)
        else:
            conn.close()
        return status, resp_headers, content

    async def aclose(self) -> None:
        self._closed = True
        for stack in self._idle.values():
            while stack:
                stack.pop().close()
        self._idle.clear()
