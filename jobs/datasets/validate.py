"""Validation shared by every input format: prompts, messages, custom ids, max_tokens."""

from __future__ import annotations

from typing import Any

from jobs.datasets.rows import PromptRow, RowError

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
MAX_CUSTOM_ID = 512


def check_custom_id(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise RowError("custom_id", f"custom_id must be a string, got {type(value).__name__}")
    if not value.strip():
        raise RowError("custom_id", "custom_id is empty")
    if len(value) > MAX_CUSTOM_ID:
        raise RowError("custom_id", f"custom_id longer than {MAX_CUSTOM_ID} characters")
    return value


def check_max_tokens(value: Any, field: str = "max_tokens") -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise RowError(field, f"{field} must be an integer, got {type(value).__name__}")
    if value < 1:
        raise RowError(field, f"{field} must be >= 1, got {value}")
    return value


def check_prompt(value: Any, field: str = "prompt") -> str:
    if value is None:
        raise RowError(field, f"missing {field}")
    if not isinstance(value, str):
        raise RowError(field, f"{field} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise RowError(field, f"{field} is empty")
    return value


def _content_text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or "type" not in part:
                raise RowError(f"{where}.content[{j}]", "content part must be an object with a type")
            if part["type"] == "text":
                if not isinstance(part.get("text"), str):
                    raise RowError(f"{where}.content[{j}].text", "text part needs a string text")
                parts.append(part["text"])
        return "\n".join(parts)
    if content is None:
        return ""
    raise RowError(f"{where}.content", f"content must be a string or a list of parts, got {type(content).__name__}")


def routing_text(messages: Any, field: str = "messages") -> str:
    """Validate chat messages; return the text the router scores: the last user turn."""
    if messages is None:
        raise RowError(field, f"missing {field}")
    if not isinstance(messages, list):
        raise RowError(field, f"{field} must be a list, got {type(messages).__name__}")
    if not messages:
        raise RowError(field, f"{field} is empty")
    last_user = None
    for i, msg in enumerate(messages):
        where = f"{field}[{i}]"
        if not isinstance(msg, dict):
            raise RowError(where, "message must be an object")
        role = msg.get("role")
        if role not in ROLES:
            raise RowError(f"{where}.role", f"unknown role {role!r}")
        text = _content_text(msg.get("content"), where)
        if role == "user":
            last_user = text
    if last_user is None or not last_user.strip():
        raise RowError(field, f"{field} has no non-empty user message")
    return last_user


def row_from_object(obj: Any, line_no: int) -> PromptRow:
    """A JSONL object in either accepted shape: plain prompt/messages or an OpenAI Batch line."""
    if not isinstance(obj, dict):
        raise RowError(None, f"line must be a JSON object, got {type(obj).__name__}")
    if "body" in obj or "method" in obj or "url" in obj:
        return _openai_batch_row(obj, line_no)
    custom_id = check_custom_id(obj.get("custom_id"))
    max_tokens = check_max_tokens(obj.get("max_tokens"))
    if "messages" in obj:
        messages = obj["messages"]
        prompt = routing_text(messages)
        return PromptRow(line_no, custom_id, prompt, messages, max_tokens)
    return PromptRow(line_no, custom_id, check_prompt(obj.get("prompt")), None, max_tokens)


def _openai_batch_row(obj: dict, line_no: int) -> PromptRow:
    custom_id = check_custom_id(obj.get("custom_id"))
    if custom_id is None:
        raise RowError("custom_id", "OpenAI Batch lines need a custom_id")
    method = obj.get("method", "POST")
    if method != "POST":
        raise RowError("method", f"method must be POST, got {method!r}")
    url = obj.get("url", "/v1/chat/completions")
    if url not in ("/v1/chat/completions", "/chat/completions"):
        raise RowError("url", f"only /v1/chat/completions is supported, got {url!r}")
    body = obj.get("body")
    if not isinstance(body, dict):
        raise RowError("body", "body must be an object")
    prompt = routing_text(body.get("messages"), "body.messages")
    max_tokens = check_max_tokens(body.get("max_tokens"), "body.max_tokens")
    if max_tokens is None:
        max_tokens = check_max_tokens(body.get("max_completion_tokens"), "body.max_completion_tokens")
    params = {k: v for k, v in body.items() if k not in ("messages", "model", "max_tokens", "max_completion_tokens")}
    return PromptRow(line_no, custom_id, prompt, body["messages"], max_tokens, params or None)
