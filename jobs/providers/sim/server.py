"""The simulated provider: a small, fast HTTP server for runs and tests, speaking OpenAI's
chat completions (``/v1/chat/completions``) and Anthropic's Messages API (``/v1/messages``,
see :mod:`jobs.providers.sim.anthropic`).

It is a raw asyncio protocol on httptools (on uvloop when available) rather than an ASGI
app, for two reasons: the dispatch benchmark needs well over 1,000 requests/s with client
and server sharing two cores, and fault injection needs to drop a connection or write a
broken body, which ASGI cannot express.

Answers are a pure function of (seed, model, prompt) so that reruns are reproducible; in
replay mode they are the recorded answers of a labelled CSV. Faults and latencies are
drawn from a generator seeded by (seed, model, prompt, n-th request for that prompt), so a
retry of the same item draws again while a rerun of the whole job sees the same sequence.

Per-request headers for tests: ``X-Sim-Fault: <kind>`` (one of FAULT_KINDS, or an HTTP
status such as ``401``), ``X-Sim-Latency-Ms: <ms>``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httptools

from jobs.providers.sim import anthropic as anth
from jobs.providers.sim.batches import Answer as BatchAnswer
from jobs.providers.sim.batches import SimBatches
from jobs.providers.sim.judge import JudgeRule
from jobs.providers.sim.options import ALL_FAULT_KINDS, SimOptions
from jobs.providers.sim.replay import ReplayTable, load_replay_table, prompt_of

_WORD_RE = re.compile(r"\w+|[^\w\s]")
_VOCAB = (
    "the answer is that we first compute each part then add them together so result equals "
    "value step because total number of items per day given remaining sold price dollars "
    "therefore final check simple clear reason model output token plan"
).split()
_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    413: "Payload Too Large",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    529: "Overloaded",
}


def sim_count_tokens(text: str) -> int:
    """The sim's own tokenizer: words and punctuation marks. Cheap and deterministic."""
    return len(_WORD_RE.findall(text))


def sim_prompt_tokens(messages: list[dict]) -> int:
    total = 3
    for m in messages:
        c = m.get("content")
        text = c if isinstance(c, str) else json.dumps(c) if c is not None else ""
        total += 4 + sim_count_tokens(text)
    return total


def _digest(*parts: str) -> bytes:
    return hashlib.blake2b("\x00".join(parts).encode("utf-8", "surrogatepass"), digest_size=16).digest()


def generate_answer(seed: int, model: str, prompt: str) -> str:
    """A deterministic pseudo-answer; different models answer the same prompt differently.

    Word choices are bytes of a SHAKE-128 stream (about 10x cheaper than ``random.Random``):
    the sim must stay far cheaper than the client it is benchmarking.
    """
    stream = hashlib.shake_128("\x00".join((str(seed), model, prompt)).encode("utf-8", "surrogatepass")).digest(68)
    n = 5 + stream[0] % 60
    words = [_VOCAB[b % len(_VOCAB)] for b in stream[4 : 4 + n]]
    return f"[{model}] " + " ".join(words) + f" . #{stream[:4].hex()}"


def _truncate(text: str, max_tokens: int) -> tuple[str, int, str]:
    """Cut ``text`` to ``max_tokens`` sim tokens; returns (text, tokens, finish_reason)."""
    matches = list(_WORD_RE.finditer(text))
    if len(matches) <= max_tokens:
        return text, len(matches), "stop"
    if max_tokens <= 0:
        return "", 0, "length"
    return text[: matches[max_tokens - 1].end()], max_tokens, "length"


@dataclass
class _Reply:
    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)
    delay_s: float = 0.0
    drop: bool = False


def _error(status: int, message: str, etype: str, headers: list[tuple[str, str]] | None = None) -> _Reply:
    body = json.dumps({"error": {"message": message, "type": etype, "code": status}}).encode()
    return _Reply(status, body, headers or [])


class SimulatedApp:
    """Turns one parsed request into a :class:`_Reply`; no I/O, so it is easy to test."""

    def __init__(self, options: SimOptions) -> None:
        self.options = options
        self.replay: ReplayTable | None = load_replay_table(options.replay_file) if options.replay_file else None
        self._seen: dict[bytes, int] = {}
        self._random = options.latency != "fixed" or bool(options.faults)
        self.requests = 0
        self.cache = anth.PromptCache()
        self.limits = anth.RateLimits(options.rate_limit_requests, options.rate_limit_tokens, options.rate_limit_window_s)
        self.batches = SimBatches(self._batch_answer, options.batch_complete_s, options.batch_expire_s)
        self.judge = JudgeRule.from_dict(options.judge)

    def _batch_answer(self, path: str, headers: dict[str, str], body: bytes) -> BatchAnswer:
        """One request of a provider batch, answered by the synchronous endpoint (same
        answers, faults and usage; no latency). A dropped or hung call is a 500 line."""
        reply = self.handle("POST", path, headers, body)
        if reply.drop or reply.status == 0:
            return BatchAnswer(500, json.dumps({"error": {"message": "simulated server error", "type": "server_error"}}).encode())
        rid = next((v for k, v in reply.headers if k.lower() in ("x-request-id", "request-id")), None)
        return BatchAnswer(reply.status, reply.body, rid)

    def models(self) -> list[str]:
        names = list(self.options.models) or ["sim-strong", "sim-weak"]
        names += [m for m in self.options.replay_models if m not in names]
        return names

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> _Reply:
        self.requests += 1
        path_and_query = path
        path = path.split("?", 1)[0].rstrip("/")
        if path.endswith("/v1/messages"):
            return self._messages(method, headers, body)
        if path.endswith("/_sim/stats") and method == "GET":  # the simulator's own counters, for tests
            return _Reply(200, json.dumps({"requests": self.requests, **self.batches.stats()}).encode())
        anthropic_style = "x-api-key" in headers or "anthropic-version" in headers
        key_ok = headers.get("authorization") == f"Bearer {self.options.api_key}"
        if anthropic_style:  # the models list answers either protocol's client
            key_ok = headers.get("x-api-key") == self.options.api_key
        if self.options.api_key is not None and not key_ok:
            # Echoes the key it got, as some real providers do (partly): redaction is tested on it.
            got = headers.get("x-api-key", "") if anthropic_style else headers.get("authorization", "").removeprefix("Bearer ")
            return _error(401, f"Incorrect API key provided: {got or '(none)'}.", "invalid_request_error")
        if "/batches" in path or "/files" in path:  # the provider batch APIs, same key rules
            batch_reply = self.batches.handle(method, path_and_query, headers, body)
            if batch_reply is not None:
                code, answer = batch_reply
                return _Reply(code, answer if isinstance(answer, bytes) else json.dumps(answer).encode())
        if path.endswith("/models") and method == "GET":  # what the pre-flight check asks, with the key
            if anthropic_style:
                listed = [
                    {"type": "model", "id": m, "display_name": m, "created_at": "2026-01-01T00:00:00Z"} for m in self.models()
                ]
                page = {"data": listed, "has_more": False, "first_id": listed[0]["id"], "last_id": listed[-1]["id"]}
                return _Reply(200, json.dumps(page).encode())
            data = [{"id": m, "object": "model", "owned_by": "routebatch-sim"} for m in self.models()]
            return _Reply(200, json.dumps({"object": "list", "data": data}).encode())
        if not path.endswith("/chat/completions"):
            return _error(404, f"no route {path}", "invalid_request_error")
        if method != "POST":
            return _error(405, "use POST", "invalid_request_error")
        try:
            req = json.loads(body)
            model = req["model"]
            messages = req["messages"]
            if not isinstance(model, str) or not isinstance(messages, list) or not messages:
                raise ValueError
        except (ValueError, KeyError, TypeError):
            return _error(400, "body must be JSON with 'model' and a non-empty 'messages' list", "invalid_request_error")
        max_tokens = req.get("max_tokens") or req.get("max_completion_tokens") or 256
        prompt = prompt_of(messages)
        delay, fault = self._draw(model, prompt, headers)

        if fault is not None and fault not in ALL_FAULT_KINDS:
            try:
                status = int(fault)
            except ValueError:
                return _error(400, f"unknown X-Sim-Fault {fault!r}", "invalid_request_error")
            r = _error(status, f"simulated error {status}", "simulated_error")
            r.delay_s = delay
            return r
        if fault == "429":
            ra = self.options.retry_after_s
            r = _error(
                429,
                "Rate limit reached (simulated).",
                "rate_limit_error",
                [("Retry-After", f"{ra:g}"), ("retry-after-ms", str(int(ra * 1000)))],
            )
            return r
        if fault in ("500", "503", "529"):
            r = _error(int(fault), "The server had an error (simulated).", "server_error")
            r.delay_s = delay
            return r
        if fault == "drop":
            return _Reply(0, b"", drop=True, delay_s=delay)
        if fault == "hang":
            delay = self.options.hang_s

        text = self._answer(model, prompt)
        if text is None:
            return _error(404, f"replay: no recorded answer of model {model!r} for this prompt", "not_found_error")
        text, completion_tokens, finish = _truncate(text, int(max_tokens))
        prompt_tokens = sim_prompt_tokens(messages)
        out: dict[str, Any] = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
        }
        if fault == "negative_usage":
            prompt_tokens, completion_tokens = -1_000_000, -1_000_000
        elif fault == "huge_usage":
            completion_tokens = 1_000_000_000
        if fault != "no_usage":
            out["usage"] = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            }
        payload = json.dumps(out).encode()
        if fault == "malformed":
            payload = payload[: len(payload) // 2]
        return _Reply(200, payload, [("x-request-id", out["id"])], delay_s=delay)

    def _draw(self, model: str, prompt: str, headers: dict[str, str]) -> tuple[float, str | None]:
        """(latency in seconds, fault or None) of this request: drawn from (seed, model,
        prompt, n-th request for them), or forced by ``X-Sim-Latency-Ms`` / ``X-Sim-Fault``."""
        opts = self.options
        rng = None
        if self._random:  # a seeded generator costs ~10 µs; only distributions and faults need one
            d = _digest(str(opts.seed), model, prompt)
            n = self._seen.get(d, 0)
            self._seen[d] = n + 1
            rng = random.Random(int.from_bytes(d, "big") ^ (n * 0x9E3779B97F4A7C15))
        delay = opts.draw_latency_s(rng) if rng is not None else opts.latency_ms / 1000.0
        if "x-sim-latency-ms" in headers:
            delay = float(headers["x-sim-latency-ms"]) / 1000.0
        fault = headers.get("x-sim-fault") or (opts.draw_fault(rng) if rng is not None else None)
        return delay, fault

    def _messages(self, method: str, headers: dict[str, str], body: bytes) -> _Reply:
        """``POST /v1/messages``: Anthropic's Messages API, with the same faults and latencies
        as chat completions (``503`` answers Anthropic's ``529 overloaded_error``)."""

        def err(status: int, message: str, extra: list[tuple[str, str]] | None = None) -> _Reply:
            return _Reply(status, anth.error_body(status, message), extra or [])

        opts = self.options
        if opts.api_key is not None and headers.get("x-api-key") != opts.api_key:
            got = headers.get("x-api-key", "")  # echoed, as on the OpenAI endpoint: redaction is tested on it
            return err(401, f"invalid x-api-key: {got or '(none)'}")
        if method != "POST":
            return err(405, "use POST")
        try:
            req = json.loads(body)
        except ValueError:
            return err(400, "the body is not valid JSON")
        problem = anth.validate(req, headers)
        if problem is not None:
            return err(400, problem)
        model, messages = req["model"], req["messages"]
        prompt = prompt_of(messages)
        delay, fault = self._draw(model, prompt, headers)
        fresh, written, read = self.cache.usage(req, sim_count_tokens)

        limit_headers: list[tuple[str, str]] = []
        if self.limits:
            admitted, limit_headers, reset_in = self.limits.take(fresh + written + read + int(req["max_tokens"]))
            if not admitted:
                wait = f"{max(math.ceil(reset_in), 1)}"
                return err(
                    429, "Number of requests has exceeded your rate limit (simulated).", [("retry-after", wait), *limit_headers]
                )
        if fault is not None and fault not in ALL_FAULT_KINDS:
            try:
                status = int(fault)
            except ValueError:
                return err(400, f"unknown X-Sim-Fault {fault!r}")
            r = err(status, f"simulated error {status}", limit_headers)
            r.delay_s = delay
            return r
        if fault == "429":
            return err(
                429,
                "Number of requests has exceeded your rate limit (simulated).",
                [("retry-after", f"{opts.retry_after_s:g}"), *limit_headers],
            )
        if fault in ("500", "503", "529"):
            status = 500 if fault == "500" else 529
            r = err(status, "Overloaded (simulated)." if status == 529 else "Internal server error (simulated).", limit_headers)
            r.delay_s = delay
            return r
        if fault == "drop":
            return _Reply(0, b"", drop=True, delay_s=delay)
        if fault == "hang":
            delay = opts.hang_s

        text = self._answer(model, prompt)
        if text is None:
            return err(404, f"replay: no recorded answer of model {model!r} for this prompt")
        text, stop_sequence = anth.apply_stop(text, req.get("stop_sequences"))
        text, completion_tokens, finish = _truncate(text, int(req["max_tokens"]))
        stop_reason = "max_tokens" if finish == "length" else ("stop_sequence" if stop_sequence else "end_turn")
        counts = {
            "input_tokens": fresh,
            "output_tokens": completion_tokens,
            "cache_creation_input_tokens": written,
            "cache_read_input_tokens": read,
        }
        if fault == "negative_usage":
            counts.update(input_tokens=-1_000_000, output_tokens=-1_000_000)
        elif fault == "huge_usage":
            counts["output_tokens"] = 1_000_000_000
        usage = None if fault == "no_usage" else counts
        msg_id = f"msg_{uuid.uuid4().hex[:24]}"
        out = anth.message(msg_id, model, text, stop_reason, stop_sequence if stop_reason == "stop_sequence" else None, usage)
        payload = json.dumps(out).encode()
        if fault == "malformed":
            payload = payload[: len(payload) // 2]
        return _Reply(200, payload, [("request-id", f"req_{uuid.uuid4().hex[:24]}"), *limit_headers], delay_s=delay)

    def _answer(self, model: str, prompt: str) -> str | None:
        verdict = self.judge.answer(prompt, self.replay)  # a pairwise judge request: jobs.providers.sim.judge
        if verdict is not None:
            return verdict
        if self.replay is None:
            return generate_answer(self.options.seed, model, prompt)
        column = self.options.replay_models.get(model, model)
        rec = self.replay.lookup(prompt, column)
        if rec is not None:
            return rec.response
        return generate_answer(self.options.seed, model, prompt) if self.options.replay_miss == "generate" else None


def _encode(reply: _Reply, keep_alive: bool) -> bytes:
    head = [
        f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Status')}",
        "content-type: application/json",
        f"content-length: {len(reply.body)}",
        "connection: " + ("keep-alive" if keep_alive else "close"),
    ]
    head += [f"{k}: {v}" for k, v in reply.headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + reply.body


class _HttpProtocol(asyncio.Protocol):
    """HTTP/1.1 with keep-alive; responses are written in request order."""

    def __init__(self, app: SimulatedApp, conns: set[_HttpProtocol]) -> None:
        self.app = app
        self.conns = conns
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.tail: asyncio.Future | None = None  # the previous response on this connection
        self.tasks: set[asyncio.Task] = set()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.conns.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.conns.discard(self)
        for t in list(self.tasks):
            t.cancel()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.write(_encode(_error(400, "malformed HTTP request", "invalid_request_error"), False))
                self.transport.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url, self.headers, self.body = b"", {}, []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        keep_alive = self.parser.should_keep_alive()
        method = self.parser.get_method().decode()
        reply = self.app.handle(method, self.url.decode("latin-1"), self.headers, b"".join(self.body))
        prev = self.tail
        task = asyncio.get_running_loop().create_task(self._respond(reply, keep_alive, prev))
        self.tail = task
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _respond(self, reply: _Reply, keep_alive: bool, prev: asyncio.Future | None) -> None:
        if reply.delay_s > 0:
            await asyncio.sleep(reply.delay_s)
        if prev is not None and not prev.done():
            await asyncio.shield(prev)
        t = self.transport
        if t is None or t.is_closing():
            return
        if reply.drop:
            t.abort()
            return
        t.write(_encode(reply, keep_alive))
        if not keep_alive:
            t.close()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop

        return uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency, but optional in principle
        return asyncio.new_event_loop


class SimulatedServer:
    """A running simulated provider (background thread or foreground). ``base_url`` ends in ``/v1``."""

    def __init__(self, options: SimOptions, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = SimulatedApp(options)
        self.options = options
        self._sock = socket.create_server((host, port), reuse_port=False, backlog=4096)
        self.host, self.port = self._sock.getsockname()[:2]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None
        self._ready = threading.Event()
        self._conns: set[_HttpProtocol] = set()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    async def serve(self) -> None:
        """Serve until :meth:`stop`; usable directly in a foreground event loop."""
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        server = await self._loop.create_server(lambda: _HttpProtocol(self.app, self._conns), sock=self._sock)
        self._ready.set()
        try:
            await self._stopped.wait()
        finally:
            server.close()
            for c in list(self._conns):
                if c.transport is not None:
                    c.transport.abort()
            await server.wait_closed()

    def run_forever(self) -> None:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(self.serve())

    def start(self) -> SimulatedServer:
        self._thread = threading.Thread(target=self.run_forever, name=f"sim-provider:{self.port}", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("simulated provider did not start within 10 s")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stopped is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(self._stopped.set)
            except RuntimeError:
                pass
        if self._thread is not None:
            self._thread.join(10)
        self._sock.close()

    def __enter__(self) -> SimulatedServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_simulated_provider(options: dict | None, host: str = "127.0.0.1", port: int = 0) -> SimulatedServer:
    """Start a simulated provider in a daemon thread; ``port=0`` picks a free port."""
    return SimulatedServer(SimOptions.from_dict(options), host, port).start()


def start_simulated_providers(config: Any) -> dict[str, SimulatedServer]:
    """Start one server per ``[providers.X.simulated]`` of an AppConfig; returns name -> server.

    Pass ``{name: s.base_url for name, s in servers.items()}`` as ``base_urls`` to the pool,
    and stop them when the run ends.
    """
    servers: dict[str, SimulatedServer] = {}
    try:
        for name, prov in config.providers.items():
            if prov.simulated is not None and not prov.base_url:
                servers[name] = start_simulated_provider(prov.simulated)
    except BaseException:
        for s in servers.values():
            s.stop()
        raise
    return servers
