"""JSONL lines in Anthropic's Message Batches request format, read as ordinary rows.

``{"custom_id": "q1", "params": {"model": ..., "max_tokens": 256, "system": "...",
"messages": [{"role": "user", "content": [{"type": "text", "text": "..."}]}], ...}}`` is
what ``POST /v1/messages/batches`` takes per request, so a file made for Anthropic runs as
it is (issue 14). The row is stored in the shape every other row has (OpenAI-style
``messages`` and body params, see :mod:`jobs.datasets.validate`): the router may send it to
a model of either protocol, and an ``anthropic`` provider maps it back
(:mod:`jobs.providers.anthropic`), so the request Anthropic receives is the one the file
describes.

Only what maps both ways is accepted: text and image blocks, ``system`` (string or text
blocks, ``cache_control`` kept), ``max_tokens``, ``temperature``, ``top_p``,
``stop_sequences``, ``metadata.user_id`` and ``stream`` (dropped). Anything else (tool
blocks, documents, ``tools``, ``thinking``, ``top_k``, ``service_tier``, ...) is an invalid
row whose field names the place, e.g. ``params.messages[2].content[0].type``: dropping it
silently would bill for answers to another request.
"""

from __future__ import annotations

from typing import Any

from jobs.datasets.rows import PromptRow, RowError, RowLimits
from jobs.datasets.validate import (
    check_custom_id,
    check_json_value,
    check_max_tokens,
    field_path,
    refuse_transport,
    safe_text,
)

HANDLED = frozenset({"model", "max_tokens", "messages", "system", "stream", "temperature", "top_p", "stop_sequences", "metadata"})
"""The ``params`` keys an Anthropic line may carry; ``model`` is ignored (the router picks)."""

REFUSED = {
    "top_k": "has no chat-completions equivalent, and the router may send the row to an OpenAI-kind model",
    "tools": "tool use is not supported for Anthropic-format rows",
    "tool_choice": "tool use is not supported for Anthropic-format rows",
    "thinking": "extended thinking is not supported (its tokens are billed beside the answer)",
    "service_tier": "changes what a call costs; the price tier comes from the config",
    "container": "is not supported",
    "mcp_servers": "is not supported",
}
"""Known Messages API parameters refused on purpose, with the reason shown for the row."""

IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
_TEXT_KEYS = frozenset({"type", "text", "cache_control"})
_IMAGE_KEYS = frozenset({"type", "source", "cache_control"})


def _cache_control(block: dict, out: dict, where: str) -> None:
    if "cache_control" in block and block["cache_control"] is not None:
        if not isinstance(block["cache_control"], dict):
            raise RowError(f"{where}.cache_control", "cache_control must be an object")
        out["cache_control"] = block["cache_control"]


def _extra_keys(block: dict, allowed: frozenset[str], where: str) -> None:
    for key in block:
        if key not in allowed:
            path = field_path(where, key)
            raise RowError(path, f"{path} is not supported on a {safe_text(block.get('type'), 20)} block")


def _text_part(block: dict, where: str) -> dict:
    _extra_keys(block, _TEXT_KEYS, where)
    text = block.get("text")
    if not isinstance(text, str):
        raise RowError(f"{where}.text", f"a text block needs a string text, got {type(text).__name__}")
    if not text:
        raise RowError(f"{where}.text", "empty text (the Messages API refuses empty text blocks)")
    part: dict[str, Any] = {"type": "text", "text": text}
    _cache_control(block, part, where)
    return part


def _image_part(block: dict, where: str) -> dict:
    """An ``image`` block as an OpenAI ``image_url`` part (a ``data:`` URL for base64), which
    the Anthropic provider maps back to the same block."""
    _extra_keys(block, _IMAGE_KEYS, where)
    source = block.get("source")
    at = f"{where}.source"
    if not isinstance(source, dict):
        raise RowError(at, "an image block needs a source object")
    kind = source.get("type")
    if kind == "base64":
        media, data = source.get("media_type"), source.get("data")
        if media not in IMAGE_TYPES:
            raise RowError(f"{at}.media_type", f"media_type must be one of {', '.join(sorted(IMAGE_TYPES))}")
        if not isinstance(data, str) or not data:
            raise RowError(f"{at}.data", "base64 image data must be a non-empty string")
        url = f"data:{media};base64,{data}"
    elif kind == "url":
        given = source.get("url")
        if not isinstance(given, str) or not given.startswith(("https://", "http://")):
            raise RowError(f"{at}.url", "an image url must be an http(s) URL")
        url = given
    else:
        raise RowError(f"{at}.type", f"image source type {safe_text(repr(kind), 40)} is not supported (base64 or url)")
    part: dict[str, Any] = {"type": "image_url", "image_url": {"url": url}}
    _cache_control(block, part, where)
    return part


def _content(content: Any, where: str, *, images: bool) -> tuple[str | list[dict], str]:
    """(OpenAI content, its text) for a message's or the system prompt's ``content``."""
    if isinstance(content, str):
        if not content:
            raise RowError(where, "empty content (the Messages API refuses empty text)")
        return content, content
    if not isinstance(content, list) or not content:
        raise RowError(where, "content must be a non-empty string or list of content blocks")
    parts: list[dict] = []
    texts: list[str] = []
    for j, block in enumerate(content):
        at = f"{where}[{j}]"
        if not isinstance(block, dict):
            raise RowError(at, "a content block must be an object")
        kind = block.get("type")
        if kind == "text":
            parts.append(_text_part(block, at))
            texts.append(block["text"])
        elif kind == "image" and images:
            parts.append(_image_part(block, at))
        else:
            allowed = "text and image blocks are" if images else "only text blocks are"
            raise RowError(f"{at}.type", f"content block type {safe_text(repr(kind), 40)} is not supported ({allowed})")
    return parts, "\n".join(texts)


def _messages(params: dict, limits: RowLimits) -> tuple[list[dict], str]:
    """OpenAI-style messages (the system prompt first) and the router's text: the last user turn."""
    out: list[dict] = []
    total = 0
    system = params.get("system")
    if system is not None:
        content, text = _content(system, "params.system", images=False)
        out.append({"role": "system", "content": content})
        total += len(text)
    messages = params.get("messages")
    if messages is None:
        raise RowError("params.messages", "missing params.messages")
    if not isinstance(messages, list) or not messages:
        raise RowError("params.messages", "params.messages must be a non-empty list")
    last_user: str | None = None
    for i, msg in enumerate(messages):
        where = f"params.messages[{i}]"
        if not isinstance(msg, dict):
            raise RowError(where, "a message must be an object")
        role = msg.get("role")
        if role not in ("user", "assistant"):
            hint = " (the system prompt goes in params.system)" if role == "system" else ""
            raise RowError(f"{where}.role", f"role must be user or assistant, got {safe_text(repr(role), 40)}{hint}")
        for key in msg:
            if key not in ("role", "content"):
                raise RowError(field_path(where, key), f"{field_path(where, key)} is not a message field (role, content)")
        content, text = _content(msg.get("content"), f"{where}.content", images=True)
        out.append({"role": role, "content": content})
        total += len(text)
        if role == "user":
            last_user = text
    if total > limits.max_prompt_chars:
        raise RowError("params.messages", f"the messages hold {total:,} characters; the limit is {limits.max_prompt_chars:,}")
    if last_user is None or not last_user.strip():
        raise RowError("params.messages", "params.messages has no user message with text")
    return out, last_user


def _unit_number(params: dict, key: str) -> float | None:
    value = params.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RowError(f"params.{key}", f"{key} must be a number, got {type(value).__name__}")
    if not 0 <= value <= 1:
        raise RowError(f"params.{key}", f"{key} must be between 0 and 1 (the Messages API's range), got {value!r}")
    return value


def _body_params(params: dict) -> dict | None:
    """The sampling parameters under their chat-completions names (see the module docstring)."""
    out: dict[str, Any] = {}
    for key in ("temperature", "top_p"):
        value = _unit_number(params, key)
        if value is not None:
            out[key] = value
    stops = params.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
            raise RowError("params.stop_sequences", "stop_sequences must be a list of non-empty strings")
        if stops:
            out["stop"] = stops
    meta = params.get("metadata")
    if meta is not None:
        if not isinstance(meta, dict):
            raise RowError("params.metadata", "metadata must be an object")
        for key in meta:
            if key != "user_id":
                path = field_path("params.metadata", key)
                raise RowError(path, f"{path} is not supported (only metadata.user_id)")
        user = meta.get("user_id")
        if user is not None:
            if not isinstance(user, str):
                raise RowError("params.metadata.user_id", "metadata.user_id must be a string")
            out["user"] = user
    if "stream" in params and not isinstance(params["stream"], bool):
        raise RowError("params.stream", "stream must be true or false")
    return out or None


def anthropic_batch_row(obj: dict, line_no: int, limits: RowLimits) -> PromptRow:
    """A Message Batches request line as a row (see the module docstring)."""
    custom_id = check_custom_id(obj.get("custom_id"))
    if custom_id is None:
        raise RowError("custom_id", "Anthropic Message Batches lines need a custom_id")
    params = obj.get("params")
    if not isinstance(params, dict):
        raise RowError("params", f"params must be an object, got {type(params).__name__}")
    refuse_transport(params, "params")
    for key in params:
        if key in REFUSED:
            raise RowError(field_path("params", key), f"params.{key} {REFUSED[key]}")
        if key not in HANDLED:
            raise RowError(
                field_path("params", key),
                f"{field_path('params', key)} is not a supported Message Batches parameter "
                "(see HANDLED in jobs/datasets/anthropic_rows.py)",
            )
    check_json_value(params, "params", limits, depth=1)
    messages, prompt = _messages(params, limits)
    max_tokens = check_max_tokens(params.get("max_tokens"), "params.max_tokens", limits.max_tokens)
    return PromptRow(line_no, custom_id, prompt, messages, max_tokens, _body_params(params))
