"""Anthropic's Messages API: OpenAI-style requests mapped onto it, and its answers read back.

A dataset speaks OpenAI chat (``messages`` with system/user/assistant roles, string content or
content-part lists, ``temperature``, ``stop``, ...); a provider of ``kind = "anthropic"``
receives the same item as a Messages API body. The mapping lives here once, as pure functions
of plain values, so the synchronous pool and a later Message Batches dispatcher (whose
``params`` is this same body and whose results carry this same Message) share it.

What cannot be mapped faithfully is refused with a reason (:class:`Unmappable`) before any
call is made: a silently dropped ``response_format`` or ``tools`` would bill for answers of
another shape.
"""

from __future__ import annotations

import re
from typing import Any

from jobs.providers.types import token_count

ANTHROPIC_VERSION = "2023-06-01"
"""The ``anthropic-version`` header every request carries (the Messages API's stable version)."""

MESSAGES_PATH = "/v1/messages"
MODELS_PATH = "/v1/models"

PASSTHROUGH_PARAMS = frozenset({"temperature", "top_p", "top_k"})
"""OpenAI body fields with the same name and meaning on the Messages API."""

IGNORED_PARAMS = frozenset({"n", "best_of", "model", "messages", "max_tokens"})
"""Fields handled elsewhere: the choice count (the pool allows only 1), and what the pool sets."""

_DATA_URL = re.compile(r"^data:(image/(?:png|jpeg|gif|webp));base64,(.+)$", re.DOTALL)


class Unmappable(ValueError):
    """The request has something the Messages API cannot express the same way; the message
    says what and is shown to the user as the item's error."""


def endpoint(base_url: str, path: str = MESSAGES_PATH) -> str:
    """``{base_url}/v1/messages`` for ``https://api.anthropic.com`` (the SDKs' form) and for a
    base URL that already ends in ``/v1`` (the OpenAI habit, and the simulator's)."""
    base = base_url.rstrip("/")
    if base.endswith("/v1"):
        base = base[: -len("/v1")]
    return base + path


def headers(api_key: str | None) -> dict[str, str]:
    """The authentication and version headers (never ``Authorization``: Anthropic reads
    ``x-api-key``)."""
    out = {"anthropic-version": ANTHROPIC_VERSION}
    if api_key:
        out["x-api-key"] = api_key
    return out


def _image_block(part: dict, where: str) -> dict:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url:
        raise Unmappable(f"{where}: image_url needs a url")
    m = _DATA_URL.match(url)
    if m is not None:
        return {"type": "image", "source": {"type": "base64", "media_type": m.group(1), "data": m.group(2)}}
    if url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise Unmappable(f"{where}: image url must be https:// or a base64 data: URL of png, jpeg, gif or webp")


def _blocks(content: Any, where: str) -> list[dict]:
    """Content as Anthropic content blocks (text and images; ``cache_control`` is kept)."""
    if isinstance(content, str):
        if not content:
            raise Unmappable(f"{where}: empty content (the Messages API refuses empty text)")
        return [{"type": "text", "text": content}]
    if not isinstance(content, list) or not content:
        raise Unmappable(f"{where}: content must be a non-empty string or list of parts")
    out: list[dict] = []
    for j, part in enumerate(content):
        at = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str) or not text:
                raise Unmappable(f"{at}: a text part needs a non-empty text")
            block: dict[str, Any] = {"type": "text", "text": text}
        elif kind == "image_url":
            block = _image_block(part, at)
        else:
            raise Unmappable(f"{at}: content part type {str(kind)[:40]!r} is not supported on the Messages API")
        if isinstance(part.get("cache_control"), dict):
            block["cache_control"] = part["cache_control"]
        out.append(block)
    return out


def map_messages(messages: list[dict]) -> tuple[str | list[dict] | None, list[dict]]:
    """(``system``, ``messages``) for the Messages API.

    System (and ``developer``) messages go to the top-level ``system``, in order; consecutive
    messages of the same role are merged into one message whose blocks are theirs in order
    (the API wants user and assistant turns to alternate). A message of one plain text keeps
    string content; ``name`` fields are dropped (no equivalent). Tool and function turns are
    refused.
    """
    system: list[dict] = []
    turns: list[dict] = []
    for i, msg in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise Unmappable(f"{where}: a message must be an object")
        role = msg.get("role")
        if role in ("system", "developer"):
            system.extend(_blocks(msg.get("content"), where))
            continue
        if role not in ("user", "assistant"):
            raise Unmappable(f"{where}: role {str(role)[:40]!r} is not supported on the Messages API")
        if msg.get("tool_calls") or msg.get("function_call"):
            raise Unmappable(f"{where}: tool calls are not supported on the Messages API provider")
        blocks = _blocks(msg.get("content"), where)
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    if not turns:
        raise Unmappable("messages: no user or assistant message besides the system prompt")
    for t in turns:
        c = t["content"]
        if len(c) == 1 and c[0]["type"] == "text" and "cache_control" not in c[0]:
            t["content"] = c[0]["text"]
    sys_out: str | list[dict] | None = None
    if system:
        if all(b["type"] == "text" and "cache_control" not in b for b in system):
            sys_out = "\n\n".join(b["text"] for b in system)
        elif all(b["type"] == "text" for b in system):
            sys_out = system
        else:
            raise Unmappable("system: only text can go in the system prompt")
    return sys_out, turns


def map_params(params: dict) -> dict[str, Any]:
    """The dataset's extra body fields as Messages API fields; refuses what has no
    equivalent. ``None`` values are left out (an OpenAI file may carry ``"stop": null``)."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if value is None or key in IGNORED_PARAMS:
            continue
        if key in PASSTHROUGH_PARAMS:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise Unmappable(f"{key} must be a number")
            if key == "temperature" and not 0 <= value <= 1:
                raise Unmappable(f"temperature {value!r} is outside the Messages API's range [0, 1]")
            out[key] = value
        elif key == "stop":
            stops = [value] if isinstance(value, str) else value
            if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
                raise Unmappable("stop must be a string or a list of non-empty strings")
            if stops:
                out["stop_sequences"] = stops
        elif key == "user":
            if not isinstance(value, str):
                raise Unmappable("user must be a string")
            out["metadata"] = {"user_id": value}
        else:
            raise Unmappable(f"parameter {str(key)[:40]!r} is not supported by the Anthropic Messages API")
    return out


def message_body(model: str, messages: list[dict], max_tokens: int, params: dict) -> dict[str, Any]:
    """The JSON body of one Messages API call (also the ``params`` of a Message Batches
    request). ``max_tokens`` is required there, and always set here."""
    system, turns = map_messages(messages)
    body: dict[str, Any] = {**map_params(params), "model": model, "max_tokens": max_tokens, "messages": turns}
    if system is not None:
        body["system"] = system
    return body


def is_message(parsed: Any) -> bool:
    """A Messages API answer: ``{"type": "message", "content": [...]}``."""
    return isinstance(parsed, dict) and parsed.get("type") == "message" and isinstance(parsed.get("content"), list)


def message_text(body: Any) -> str | None:
    """The answer text of a Message: its text blocks joined (thinking and tool blocks left out)."""
    if not is_message(body):
        return None
    texts = [b.get("text") for b in body["content"] if isinstance(b, dict) and b.get("type") == "text"]
    return "".join(t for t in texts if isinstance(t, str))


def message_usage(body: dict) -> tuple[int, int, int, int] | None:
    """(prompt, completion, cache reads, cache writes) of a Message, or None without usable usage.

    Anthropic's ``input_tokens`` excludes the cached parts; the ledger's ``prompt_tokens`` is
    all input (as OpenAI counts it), so prompt = input + cache writes + cache reads, and the
    reads and writes are charged at their own prices within it.
    """
    u = body.get("usage")
    if not isinstance(u, dict):
        return None
    fresh, out = token_count(u.get("input_tokens")), token_count(u.get("output_tokens"))
    if fresh is None or out is None:
        return None
    write = token_count(u.get("cache_creation_input_tokens") or 0)
    read = token_count(u.get("cache_read_input_tokens") or 0)
    if write is None or read is None:
        return None
    return fresh + max(write, 0) + max(read, 0), out, read, write
