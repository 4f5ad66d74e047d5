"""Nothing from a dataset row reaches the wire except the JSON body (issue 10, item 1).

A raw-socket fake provider records the bytes it receives and parses them itself; for a
dataset full of header-injection attempts it must see exactly one request per call, each
carrying only the headers the project sets. The transport refuses CR, LF, NUL and a second
Host/Content-Length on its own, before anything is written.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
from pathlib import Path
from typing import Any

import httptools
import httpx
import pytest

from jobs.config import parse_config
from jobs.providers import ChatRequest, ProviderPool
from jobs.providers.transport import FastTransport, UnsafeRequestError, check_headers
from tests.unit.providers.conftest import make_config

KEY = "sk-operator-4f1e9b2c7d3a8e6f0b5c"
PROJECT_HEADERS = {"host", "content-type", "idempotency-key", "authorization", "accept-encoding", "content-length"}


class RawProvider:
    """An OpenAI-compatible fake that reads raw bytes: every request it parses is kept as
    (method, target, [(name, value)], body); ``status`` and ``reply`` shape its answers."""

    def __init__(self, status: int = 200, reply: dict[str, Any] | None = None, body: bytes | None = None) -> None:
        self.status = status
        self.reply = reply
        self.body = body
        self.raw = bytearray()
        self.requests: list[tuple[str, str, list[tuple[str, str]], bytes]] = []
        self.parse_errors: list[str] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self.port = 0
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> RawProvider:
        self._thread.start()
        assert self._ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)

    def _answer(self, body: bytes) -> bytes:
        if self.body is not None:
            payload = self.body
        elif self.reply is not None:
            payload = json.dumps(self.reply).encode()
        else:
            try:
                model = json.loads(body).get("model", "m")
            except ValueError:
                model = "m"
            payload = json.dumps({
                "id": "chatcmpl-raw", "object": "chat.completion", "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
            }).encode()
        head = f"HTTP/1.1 {self.status} X\r\ncontent-type: application/json\r\ncontent-length: {len(payload)}\r\n\r\n"
        return head.encode() + payload

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        provider = self

        class Proto(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = transport
                self.parser = httptools.HttpRequestParser(self)
                self.url, self.headers, self.body = b"", [], b""

            def data_received(self, data: bytes) -> None:
                provider.raw += data
                try:
                    self.parser.feed_data(data)
                except httptools.HttpParserError as exc:
                    provider.parse_errors.append(str(exc))
                    self.transport.close()

            def on_url(self, url: bytes) -> None:
                self.url += url

            def on_header(self, name: bytes, value: bytes) -> None:
                self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

            def on_body(self, body: bytes) -> None:
                self.body += body

            def on_message_complete(self) -> None:
                method = self.parser.get_method().decode()
                provider.requests.append((method, self.url.decode("latin-1"), self.headers, self.body))
                self.transport.write(provider._answer(self.body))  # type: ignore[attr-defined]
                self.url, self.headers, self.body = b"", [], b""

        server = await self._loop.create_server(Proto, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        await self._stop.wait()
        server.close()


def assert_only_project_headers(provider: RawProvider, expected_requests: int, other_requests: int = 0) -> None:
    assert provider.parse_errors == []
    assert len(provider.requests) == expected_requests  # no smuggled second request
    for method, target, headers, body in provider.requests:
        assert (method, target) == ("POST", "/v1/chat/completions")
        names = [n.lower() for n, _ in headers]
        assert sorted(names) == sorted(PROJECT_HEADERS), headers  # each exactly once, nothing else
        values = {n.lower(): v for n, v in headers}
        assert values["host"] == f"127.0.0.1:{provider.port}"
        assert values["authorization"] == f"Bearer {KEY}"
        assert int(values["content-length"]) == len(body)
        sent = json.loads(body)
        assert not any(k.startswith("_") or k in ("headers", "extra_headers", "extra_query", "n", "stream") for k in sent)
    assert bytes(provider.raw).count(f"Bearer {KEY}".encode()) == expected_requests + other_requests


SMUGGLE = "a\r\nContent-Length: 0\r\n\r\nPOST /v1/admin/delete HTTP/1.1\r\nHost: victim\r\nX-Evil: 1"
INJECTIONS: list[dict[str, Any]] = [
    {"_headers": {"X-Evil": SMUGGLE}},  # the reproduction of the issue
    {"_headers": {"X-A\r\nX-Evil": "v"}},
    {"_headers": {"X-Nul": "a\x00b"}},
    {"_headers": {"Content-Length": "0"}},
    {"_headers": {"Host": "victim"}},
    {"_headers": {"Transfer-Encoding": "chunked"}},
    {"_headers": {"Authorization": "Bearer attacker"}},
    {"_headers": {"X-Sim-Fault": "500"}},
    {"_headers": "notadict"},
    {"_headers": ["X-Evil: 1"]},
    {"headers": {"X-Evil": "1"}},
    {"extra_headers": {"X-Evil": SMUGGLE}},
    {"extra_query": {"admin": "1"}},
    {"user": SMUGGLE},  # values and keys of ordinary params: only ever JSON-escaped body text
    {f"temperature{SMUGGLE}": 0.5},
    {"_private": {"x": SMUGGLE}},
    {"stream": True, "stream_options": {"include_usage": True}},
]


def generated_injections(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Random header/param names and values built from the pieces that break HTTP framing."""
    rng = random.Random(seed)
    pieces = ["\r", "\n", "\r\n", "\x00", " ", ":", "Content-Length: 0", "Host: victim", "HTTP/1.1", "X-Evil: 1", "a", "\x7f", "\t"]

    def text() -> str:
        return "".join(rng.choice(pieces) for _ in range(rng.randint(1, 6)))

    out = []
    for _ in range(n):
        where = rng.choice(["_headers", "headers", "extra_headers", "param_key", "param_value"])
        if where == "param_key":
            out.append({text(): text()})
        elif where == "param_value":
            out.append({"user": text(), "stop": [text()]})
        else:
            out.append({where: {text(): text() for _ in range(rng.randint(1, 3))}})
    return out


def test_dataset_params_never_become_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RB_INJECT_KEY", KEY)
    rows = INJECTIONS + generated_injections(200)
    cfg = make_config(provider={"api_key_env": "RB_INJECT_KEY", "retry": {"max_attempts": 1}})
    with RawProvider() as provider:
        async def go() -> list:
            pool = ProviderPool(cfg, base_urls={"p": provider.base_url})
            try:
                return await asyncio.gather(*(
                    pool.complete(ChatRequest(f"c{i}\r\nX-Evil: 1", "weak", [{"role": "user", "content": SMUGGLE}], 8, params))
                    for i, params in enumerate(rows)
                ))
            finally:
                await pool.aclose()

        results = asyncio.run(go())
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    assert [len(r.attempts) for r in results] == [1] * len(rows)
    assert_only_project_headers(provider, len(rows))


def test_batch_file_with_injections_through_a_whole_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same through ingest and the pipeline: whatever ingest does with such rows, no
    request carries a header the project did not set, and one request per attempt arrives."""
    from sqlalchemy import func, select

    from jobs.ledger.models import Attempt
    from jobs.ledger.session import session_scope
    from jobs.lifecycle.service import JobSpec, run
    from jobs.runtime import Runtime
    from jobs.settings import Settings

    monkeypatch.setenv("RB_INJECT_KEY", KEY)
    data = tmp_path / "batch.jsonl"
    with data.open("w") as fh:
        for i, params in enumerate(INJECTIONS + generated_injections(30, seed=1)):
            body = {**params, "model": "x", "messages": [{"role": "user", "content": f"q{i} {SMUGGLE}"}], "max_tokens": 8}
            fh.write(json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}) + "\n")
        fh.write(json.dumps({"custom_id": "clean", "method": "POST", "url": "/v1/chat/completions",
                             "body": {"messages": [{"role": "user", "content": "hi"}]}}) + "\n")
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    with RawProvider() as provider:
        cfg = parse_config({
            "providers": {"raw": {"base_url": provider.base_url, "api_key_env": "RB_INJECT_KEY", "retry": {"max_attempts": 1}}},
            "models": {
                "strong": {"provider": "raw", "input_usd_per_mtok": 1, "output_usd_per_mtok": 1},
                "weak": {"provider": "raw", "input_usd_per_mtok": 1, "output_usd_per_mtok": 1},
            },
            "defaults": {"strong": "strong", "weak": "weak", "router": "length"},
        })
        rt = Runtime(Settings(database_url=db, broker_url=None), cfg)
        try:
            st = run(rt, JobSpec(input_file=str(data), router="length", threshold=0.0))
        finally:
            rt.close()
        with session_scope(db) as s:
            attempts = s.scalar(select(func.count()).select_from(Attempt))
    assert st.status == "completed"
    assert attempts >= 1  # at least the clean row was sent
    preflight = [r for r in provider.requests if r[0] == "GET"]
    assert [(m, target) for m, target, _, _ in preflight] == [("GET", "/v1/models")]  # the pre-flight, once
    assert {name.lower() for name in (h for h, _ in preflight[0][2])} <= {"host", "accept", "accept-encoding", "connection", "user-agent", "authorization"}
    provider.requests = [r for r in provider.requests if r[0] != "GET"]
    assert_only_project_headers(provider, attempts, other_requests=1)


HEADER_CASES = [
    [(b"x-evil", b"a\r\nhost: victim")],
    [(b"x-evil", b"a\nb")],
    [(b"x-evil", b"a\rb")],
    [(b"x-evil", b"a\x00b")],
    [(b"x-evil", b"a\x1bb")],
    [(b"x-evil\r\nx-more", b"v")],
    [(b"x evil", b"v")],
    [(b"x-evil:", b"v")],
    [(b"", b"v")],
    [(b"x-\x00", b"v")],
    [(b"host", b"victim")],
    [(b"Host", b"victim")],
    [(b"content-length", b"0")],
    [(b"Content-Length", b"5")],
    [(b"transfer-encoding", b"chunked")],
    [(b"x-ok", b"fine"), (b"CONTENT-LENGTH", b"1")],
]


def _generated_header_cases(n: int) -> list[list[tuple[bytes, bytes]]]:
    rng = random.Random(5)
    bad = [b"\r", b"\n", b"\x00", b"\x01", b"\x7f"]
    cases = []
    for _ in range(n):
        name, value = bytearray(b"x-gen"), bytearray(b"value")
        target = rng.choice([name, value])
        target.insert(rng.randint(0, len(target)), rng.choice(bad)[0])
        cases.append([(bytes(name), bytes(value))])
    return cases


@pytest.mark.parametrize("headers", HEADER_CASES + _generated_header_cases(40))
def test_transport_refuses_unsafe_headers_before_writing(headers: list[tuple[bytes, bytes]]) -> None:
    with RawProvider() as provider:
        async def go() -> None:
            tr = FastTransport()
            try:
                url = httpx.URL(provider.base_url + "/chat/completions")
                with pytest.raises(UnsafeRequestError) as info:
                    await tr.exchange(b"POST", url, headers, b"{}", {})
                assert "victim" not in str(info.value) and "value" not in str(info.value).split(":")[0]
                # the same transport still works for a clean request afterwards
                status, _, _ = await tr.exchange(b"POST", url, [(b"content-type", b"application/json")], b"{}", {})
                assert status == 200
            finally:
                await tr.aclose()

        asyncio.run(go())
    assert len(provider.requests) == 1 and b"victim" not in provider.raw and b"x-gen" not in provider.raw


def test_safe_headers_pass() -> None:
    check_headers([(b"content-type", b"application/json"), (b"x-tab", b"a\tb"), (b"idempotency-key", b"abc")])


def test_an_unsafe_header_fails_that_call_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """Code-set headers go through the same check: the call fails at once (not retried, nothing
    sent), the other calls of the pool go on, and the error does not repeat the value."""
    monkeypatch.setenv("RB_INJECT_KEY", KEY)
    cfg = make_config(provider={"api_key_env": "RB_INJECT_KEY"})
    with RawProvider() as provider:
        async def go() -> list:
            pool = ProviderPool(cfg, base_urls={"p": provider.base_url})
            try:
                bad = ChatRequest("bad", "weak", [{"role": "user", "content": "x"}], 8, headers={"X-Sim-Fault": "500\r\nX-Evil: 1"})
                good = ChatRequest("good", "weak", [{"role": "user", "content": "x"}], 8)
                return await asyncio.gather(pool.complete(bad), pool.complete(good))
            finally:
                await pool.aclose()

        bad, good = asyncio.run(go())
    assert good.ok
    assert not bad.ok and len(bad.attempts) == 1 and bad.attempts[0].error_class == "unsafe_request"
    assert bad.attempts[0].status_code is None and "X-Evil" not in (bad.error or "")
    assert_only_project_headers(provider, 1)


def test_a_key_with_a_line_break_is_refused_without_leaking_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RB_INJECT_KEY", KEY + "\n")  # e.g. read from a file with its newline
    cfg = make_config(provider={"api_key_env": "RB_INJECT_KEY"})
    with RawProvider() as provider:
        async def go():
            pool = ProviderPool(cfg, base_urls={"p": provider.base_url})
            try:
                return await pool.complete(ChatRequest("c", "weak", [{"role": "user", "content": "x"}], 8))
            finally:
                await pool.aclose()

        res = asyncio.run(go())
    assert not res.ok and [a.error_class for a in res.attempts] == ["unsafe_request"]
    assert KEY not in repr(res.attempts) and KEY not in (res.error or "")
    assert provider.raw == b""
