"""FastTransport against hand-written HTTP responses: chunked, close-delimited, keep-alive."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import httpx
import pytest

from jobs.providers.transport import FastTransport

BODY = json.dumps({"ok": True}).encode()


async def serve(respond: Callable[[bytes], bytes | None]) -> tuple[asyncio.AbstractServer, int, list[int]]:
    """A raw server: ``respond(request_bytes)`` gives the bytes to write (None: close)."""
    conns: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conns.append(1)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length)
                out = respond(head + body)
                if out is None:
                    writer.close()
                    return
                writer.write(out)
                await writer.drain()
                if b"connection: close" in out.lower():
                    writer.close()
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], conns


def fetch(respond: Callable[[bytes], bytes | None], n: int = 1, timeout: float = 2.0) -> tuple[list, int]:
    async def go():
        server, port, conns = await serve(respond)
        tr = FastTransport()
        out = []
        try:
            for _ in range(n):
                req = httpx.Request("POST", f"http://127.0.0.1:{port}/v1/x", content=b'{"a":1}',
                                    extensions={"timeout": {"connect": timeout, "read": timeout}})
                try:
                    resp = await tr.handle_async_request(req)
                    await resp.aread()
                    out.append(resp)
                except httpx.HTTPError as exc:
                    out.append(exc)
        finally:
            await tr.aclose()
            server.close()
        return out, len(conns)

    return asyncio.run(go())


def test_content_length_keep_alive_reuses_one_connection() -> None:
    seen: list[bytes] = []

    def respond(req: bytes) -> bytes:
        seen.append(req)
        return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(BODY) + BODY

    out, conns = fetch(respond, n=5)
    assert [r.json() for r in out] == [{"ok": True}] * 5 and conns == 1
    assert seen[0].startswith(b"POST /v1/x HTTP/1.1\r\n") and seen[0].endswith(b'{"a":1}')
    assert b"accept-encoding: identity" in seen[0].lower()


def test_chunked_response_is_decoded() -> None:
    half = len(BODY) // 2
    chunked = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (half, BODY[:half], len(BODY) - half, BODY[half:])
    out, conns = fetch(lambda _: b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + chunked, n=3)
    assert [r.json() for r in out] == [{"ok": True}] * 3 and conns == 1


def test_connection_close_response_opens_a_new_connection() -> None:
    out, conns = fetch(lambda _: b"HTTP/1.1 503 Busy\r\nconnection: close\r\ncontent-length: 4\r\n\r\nbusy", n=2)
    assert [(r.status_code, r.content) for r in out] == [(503, b"busy")] * 2 and conns == 2


def test_close_delimited_body() -> None:
    out, _ = fetch(lambda _: b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n" + BODY)
    assert out[0].json() == {"ok": True}


def test_drop_before_response_is_remote_protocol_error() -> None:
    out, _ = fetch(lambda _: None)
    assert isinstance(out[0], httpx.RemoteProtocolError)


def test_truncated_body_is_an_error() -> None:
    out, _ = fetch(lambda _: b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 100\r\n\r\n{\"ok\"")
    assert isinstance(out[0], httpx.RemoteProtocolError)


def test_garbage_response_is_remote_protocol_error() -> None:
    out, _ = fetch(lambda _: b"NOT HTTP AT ALL\r\n\r\n")
    assert isinstance(out[0], httpx.RemoteProtocolError)


def test_connect_refused_is_connect_error() -> None:
    async def go():
        tr = FastTransport()
        req = httpx.Request("GET", "http://127.0.0.1:9/", extensions={"timeout": {"connect": 1, "read": 1}})
        with pytest.raises(httpx.ConnectError):
            await tr.handle_async_request(req)

    asyncio.run(go())


def test_read_timeout() -> None:
    async def go():
        async def hang(reader, writer):
            await asyncio.sleep(5)

        server = await asyncio.start_server(hang, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        tr = FastTransport()
        req = httpx.Request("GET", f"http://127.0.0.1:{port}/", extensions={"timeout": {"connect": 1, "read": 0.2}})
        with pytest.raises(httpx.ReadTimeout):
            await tr.handle_async_request(req)
        server.close()

    asyncio.run(go())


def test_unsupported_scheme() -> None:
    async def go():
        with pytest.raises(httpx.UnsupportedProtocol):
            await FastTransport().handle_async_request(httpx.Request("GET", "ftp://x/"))

    asyncio.run(go())


def test_https_with_a_trusted_certificate(tmp_path) -> None:
    import shutil
    import ssl
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("openssl not available to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)

    async def go():
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(cert, key)

        async def handle(reader, writer):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(BODY) + BODY)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        tr = FastTransport(ssl_context=ssl.create_default_context(cafile=str(cert)))
        try:
            req = httpx.Request("GET", f"https://localhost:{port}/", extensions={"timeout": {"connect": 5, "read": 5}})
            resp = await tr.handle_async_request(req)
            await resp.aread()
            assert resp.json() == {"ok": True}
            with pytest.raises(httpx.ConnectError):  # an untrusted certificate is refused
                await FastTransport().handle_async_request(req)
        finally:
            await tr.aclose()
            server.close()

    asyncio.run(go())
