"""The simulator's Anthropic Messages API (``POST /v1/messages``): validation, answers, usage
with prompt-cache reads and writes, and the ``anthropic-ratelimit-*`` headers.

Pure functions and small state objects, no I/O; :class:`~jobs.providers.sim.server.SimulatedApp`
routes requests here and applies the same latency and fault draws as on the OpenAI endpoint.
Validation is at least as strict as the real API (a mapping bug in the client must show up
as a 400 here, not in production): unknown fields, a ``system`` role inside ``messages``,
empty text, a missing ``max_tokens`` or ``anthropic-version`` are refused. It is stricter in
one place: two consecutive turns of the same role are refused (the API merges them; the
client is meant to have merged them already).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

TOP_LEVEL_FIELDS = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "system",
        "temperature",
        "top_p",
        "top_k",
        "stop_sequences",
        "metadata",
        "stream",
        "tools",
        "tool_choice",
        "thinking",
        "service_tier",
    }
)
BLOCK_TYPES = frozenset({"text", "image"})
IMAGE_TOKENS = 85
"""What one image counts as input (the sim does not look at pixels)."""

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def error_body(status: int, message: str) -> bytes:
    """Anthropic's error envelope: ``{"type": "error", "error": {"type", "message"}}``."""
    etype = ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return json.dumps({"type": "error", "error": {"type": etype, "message": message}}).encode()


def _check_number(body: dict, key: str, lo: float, hi: float | None) -> str | None:
    if key not in body:
        return None
    v = body[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < lo or (hi is not None and v > hi):
        bound = f"[{lo:g}, {hi:g}]" if hi is not None else f">= {lo:g}"
        return f"{key}: must be a number in {bound}"
    return None


def _check_blocks(content: Any, where: str) -> str | None:
    if isinstance(content, str):
        return None if content else f"{where}: text content blocks must be non-empty"
    if not isinstance(content, list) or not content:
        return f"{where}: must be a non-empty string or list of content blocks"
    for j, block in enumerate(content):
        at = f"{where}.{j}"
        if not isinstance(block, dict) or block.get("type") not in BLOCK_TYPES:
            kind = block.get("type") if isinstance(block, dict) else type(block).__name__
            return f"{at}: unsupported content block type {str(kind)[:40]!r}"
        if block["type"] == "text" and (not isinstance(block.get("text"), str) or not block["text"]):
            return f"{at}.text: text content blocks must be non-empty"
        if block["type"] == "image" and not isinstance(block.get("source"), dict):
            return f"{at}.source: an image needs a source"
        extra = set(block) - {"type", "text", "source", "cache_control"}
        if extra:
            return f"{at}.{sorted(extra)[0]}: Extra inputs are not permitted"
    return None


def validate(body: Any, headers: dict[str, str]) -> str | None:
    """Why a Messages API request is refused (400), or None."""
    if not headers.get("anthropic-version"):
        return "anthropic-version: header is required"
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    extra = sorted(set(body) - TOP_LEVEL_FIELDS)
    if extra:
        return f"{extra[0][:60]}: Extra inputs are not permitted"
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "model: Field required"
    mt = body.get("max_tokens")
    if isinstance(mt, bool) or not isinstance(mt, int) or mt < 1:
        return "max_tokens: Field required (an integer >= 1)"
    if body.get("stream"):
        return "stream: the simulator does not stream"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: Field required (a non-empty list)"
    prev = None
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or set(m) - {"role", "content"}:
            return f"messages.{i}: a message is an object with role and content"
        if m.get("role") not in ("user", "assistant"):
            return (
                f'messages.{i}.role: Unexpected role "{str(m.get("role"))[:40]}"; system prompts go in the top-level system field'
            )
        if m["role"] == prev:
            return f"messages.{i}: consecutive {prev} turns (the simulator wants them merged)"
        prev = m["role"]
        problem = _check_blocks(m.get("content"), f"messages.{i}.content")
        if problem:
            return problem
    if "system" in body:
        system = body["system"]
        if isinstance(system, list) and any(not isinstance(b, dict) or b.get("type") != "text" for b in system):
            return "system: only text blocks are allowed"
        problem = _check_blocks(system, "system")
        if problem:
            return problem
    for key, lo, hi in (("temperature", 0.0, 1.0), ("top_p", 0.0, 1.0), ("top_k", 0.0, None)):
        problem = _check_number(body, key, lo, hi)
        if problem:
            return problem
    stops = body.get("stop_sequences")
    if stops is not None and (not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops)):
        return "stop_sequences: must be a list of non-empty strings"
    meta = body.get("metadata")
    if meta is not None and (not isinstance(meta, dict) or set(meta) - {"user_id"}):
        return "metadata: only user_id is allowed"
    return None


def _block_tokens(block: Any, count: Any) -> int:
    if isinstance(block, str):
        return count(block)
    if block.get("type") == "text":
        return count(block["text"])
    return IMAGE_TOKENS


def _units(body: dict) -> list[tuple[Any, bool]]:
    """Every content unit of the prompt in order (system first), with its cache breakpoint."""
    out: list[tuple[Any, bool]] = []
    system = body.get("system")
    if system is not None:
        for b in [system] if isinstance(system, str) else system:
            out.append((b, isinstance(b, dict) and "cache_control" in b))
    for m in body["messages"]:
        c = m["content"]
        for b in [c] if isinstance(c, str) else c:
            out.append((b, isinstance(b, dict) and "cache_control" in b))
    return out


class PromptCache:
    """Which cached prefixes this server has seen: the first request with a breakpoint writes
    its prefix, later ones read it (no expiry, no minimum length; concurrent first requests
    may both write, as on the real API)."""

    def __init__(self) -> None:
        self._seen: set[bytes] = set()

    def usage(self, body: dict, count: Any) -> tuple[int, int, int]:
        """(input tokens not cached, cache writes, cache reads) of a valid request."""
        units = _units(body)
        tokens = [_block_tokens(b, count) for b, _ in units]
        total = 3 + 4 * len(body["messages"]) + sum(tokens)
        last_bp = max((i for i, (_, bp) in enumerate(units) if bp), default=-1)
        if last_bp < 0:
            return total, 0, 0
        prefix = sum(tokens[: last_bp + 1])
        key = hashlib.blake2b(
            json.dumps([body["model"], [b for b, _ in units[: last_bp + 1]]], sort_keys=True).encode("utf-8", "surrogatepass"),
            digest_size=16,
        ).digest()
        if key in self._seen:
            return total - prefix, 0, prefix
        self._seen.add(key)
        return total - prefix, prefix, 0


def apply_stop(text: str, stops: list[str] | None) -> tuple[str, str | None]:
    """``text`` cut before the first stop sequence it contains, and that sequence."""
    best: tuple[int, str] | None = None
    for s in stops or []:
        i = text.find(s)
        if i >= 0 and (best is None or i < best[0]):
            best = (i, s)
    return (text, None) if best is None else (text[: best[0]], best[1])


def message(
    msg_id: str, model: str, text: str, stop_reason: str, stop_sequence: str | None, usage: dict[str, int] | None
) -> dict[str, Any]:
    """A Messages API answer, shaped as ``anthropic.types.Message``."""
    out: dict[str, Any] = {
        "id": msg_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}] if text else [],
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
    }
    if usage is not None:
        out["usage"] = usage
    return out


@dataclass
class _Window:
    start: float
    requests: int = 0
    tokens: int = 0


class RateLimits:
    """Fixed windows of ``window_s`` seconds holding ``requests`` and ``tokens`` (input +
    ``max_tokens``, as Anthropic estimates a call): every answer carries the
    ``anthropic-ratelimit-*`` headers, and a call past a limit is a 429 with ``retry-after``
    until the window resets."""

    def __init__(self, requests: int | None, tokens: int | None, window_s: float) -> None:
        self.requests, self.tokens, self.window_s = requests, tokens, window_s
        self._w = _Window(time.monotonic())

    def __bool__(self) -> bool:
        return self.requests is not None or self.tokens is not None

    def _window(self, now: float) -> _Window:
        if now - self._w.start >= self.window_s:
            k = math.floor((now - self._w.start) / self.window_s)
            self._w = _Window(self._w.start + k * self.window_s)
        return self._w

    def take(self, cost: int) -> tuple[bool, list[tuple[str, str]], float]:
        """(admitted, headers, seconds until reset) for one call of ``cost`` tokens."""
        now = time.monotonic()
        w = self._window(now)
        reset_in = max(w.start + self.window_s - now, 0.0)
        ok = (self.requests is None or w.requests + 1 <= self.requests) and (
            self.tokens is None or w.tokens + cost <= self.tokens
        )
        if ok:
            w.requests += 1
            w.tokens += cost
        reset = datetime.fromtimestamp(time.time() + reset_in, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        headers: list[tuple[str, str]] = []
        for name, limit, used in (("requests", self.requests, w.requests), ("tokens", self.tokens, w.tokens)):
            if limit is not None:
                headers += [
                    (f"anthropic-ratelimit-{name}-limit", str(limit)),
                    (f"anthropic-ratelimit-{name}-remaining", str(max(limit - used, 0))),
                    (f"anthropic-ratelimit-{name}-reset", reset),
                ]
        return ok, headers, reset_in
