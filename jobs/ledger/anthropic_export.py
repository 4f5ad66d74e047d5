"""An Anthropic Message as an OpenAI ``chat.completion``, for the results export.

A job may route between providers of both protocols; its export is one OpenAI Batch output
file whatever answered (issue 14), so a consumer of OpenAI Batch files reads every line with
the same code (``openai.types.chat.ChatCompletion.model_validate``). The Message as returned
stays in the ledger (``items.response``) and ``export --native-bodies`` writes it instead.

Pure functions of plain values: no ledger or provider imports beyond the Messages helpers.
"""

from __future__ import annotations

import json
from typing import Any

from jobs.providers.anthropic import is_message, message_usage

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
"""Anthropic ``stop_reason`` -> OpenAI ``finish_reason``; anything else (None, a reason added
later) is ``stop``, the one value that claims nothing about truncation or tools."""


def finish_reason(stop_reason: Any) -> str:
    return FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def _usage(message: dict) -> dict[str, Any] | None:
    """OpenAI usage: ``prompt_tokens`` is all input (fresh + cache reads + cache writes, as the
    ledger counts it), ``cached_tokens`` the reads. None when the Message has no usable usage
    (the export then leaves ``usage`` out rather than invent one)."""
    counted = message_usage(message)
    if counted is None:
        return None
    prompt, completion, read, _write = (max(n, 0) for n in counted)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": read},
    }


def _tool_calls(blocks: list) -> list[dict[str, Any]]:
    """``tool_use`` blocks as OpenAI tool calls (arguments are a JSON string there)."""
    calls: list[dict[str, Any]] = []
    for b in blocks:
        if isinstance(b, dict) and b.get("type") == "tool_use":
            calls.append(
                {
                    "id": str(b.get("id") or f"call_{len(calls)}"),
                    "type": "function",
                    "function": {
                        "name": str(b.get("name") or ""),
                        "arguments": json.dumps(b.get("input") or {}, ensure_ascii=False),
                    },
                }
            )
    return calls


def chat_completion(message: dict, created: int) -> dict[str, Any]:
    """``message`` (an Anthropic Message body) as an OpenAI ``chat.completion`` body.

    The content is the text blocks joined (thinking blocks left out, as in the Parquet
    ``content``); ``tool_use`` blocks become ``tool_calls``; ``created`` (Unix seconds) comes
    from the caller, since a Message carries no timestamp; ``id`` and ``model`` are the
    Message's, so ``request_id`` still finds the call in Anthropic's console.
    """
    content = message.get("content")
    blocks: list = content if isinstance(content, list) else []
    texts = [b["text"] for b in blocks if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)]
    calls = _tool_calls(blocks)
    chat_message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not calls else None,
        "refusal": None,
    }
    if calls:
        chat_message["tool_calls"] = calls
    body: dict[str, Any] = {
        "id": str(message.get("id") or ""),
        "object": "chat.completion",
        "created": int(created),
        "model": str(message.get("model") or ""),
        "choices": [
            {"index": 0, "message": chat_message, "finish_reason": finish_reason(message.get("stop_reason")), "logprobs": None}
        ],
    }
    usage = _usage(message)
    if usage is not None:
        body["usage"] = usage
    return body


def openai_body(body: Any, created: int) -> Any:
    """The body to export in the OpenAI format: an Anthropic Message mapped to a
    ``chat.completion``; any other body (already OpenAI's) unchanged."""
    return chat_completion(body, created) if is_message(body) else body
