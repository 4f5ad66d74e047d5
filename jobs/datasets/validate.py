"""Validation shared by every input format: prompts, messages, custom ids, max_tokens, params.

Datasets are untrusted. A row reaches the ledger only if everything in it can be stored
(no NUL, no lone surrogate, no NaN/Infinity, no integer wider than 64 bits, nesting at
most ``RowLimits.max_depth`` deep) and nothing in it can reach the wire except the JSON
body of the request.

Anthropic Message Batches lines (``custom_id`` + ``params``) are read by
:mod:`jobs.datasets.anthropic_rows` into the same OpenAI-style row.

What an OpenAI Batch ``body`` may carry (everything else is an invalid row, so a dataset
cannot set HTTP headers, query strings, timeouts or a price tier):

- ``messages`` (required), ``model`` (ignored: the router picks the model),
  ``max_tokens`` / ``max_completion_tokens`` (an integer 1..``RowLimits.max_tokens``);
- ``n`` only as 1 (each choice is billed, and the budget reserves one);
- ``stream`` as a boolean, dropped (the pool reads one JSON answer, never a stream);
- the parameters in ``BODY_PARAMS``, passed on unchanged in ``PromptRow.params``.

Refused on purpose, since they change what a call costs in ways the budget does not
reserve for: ``service_tier``, ``modalities``/``audio``, ``prediction``,
``web_search_options``, ``stream_options``, and any parameter not listed.

``_headers``, ``headers``, ``extra_headers``, ``extra_query``, ``extra_body``, ``timeout``
and every key starting with ``_`` are refused with a reason naming the field, in a batch
body (or an Anthropic line's ``params``), at the top of a batch line and in a plain row; their values are never stored (the
row's ``raw`` text has them blanked).
"""

from __future__ import annotations

import math
from typing import Any

from jobs.datasets.rows import PromptRow, RowError, RowLimits

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
MAX_CUSTOM_ID = 512
MAX_FIELD = 100  # invalid_rows.field is varchar(100)
INT64 = 2**63 - 1

BODY_PARAMS = frozenset(
    {
        "temperature",
        "top_p",
        "stop",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "seed",
        "response_format",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "functions",
        "function_call",
        "user",
        "metadata",
        "store",
        "reasoning_effort",
        "verbosity",
    }
)
"""Request body parameters a batch line may set; they change the answer, not the bill's basis."""

TRANSPORT_FIELDS = frozenset({"_headers", "headers", "extra_headers", "extra_query", "extra_body", "timeout"})
"""Names that would control the HTTP request itself rather than its JSON body."""

_BODY_HANDLED = frozenset({"messages", "model", "max_tokens", "max_completion_tokens", "n", "stream"})
_DEFAULT_LIMITS = RowLimits()


def is_transport_field(key: str) -> bool:
    return key in TRANSPORT_FIELDS or key.startswith("_")


def safe_text(value: Any, limit: int) -> str:
    """``value`` as text that any database column and terminal accepts: at most ``limit``
    characters, no lone surrogate, no NUL."""
    text = value if isinstance(value, str) else str(value)
    text = text[:limit]
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")


def field_path(parent: str | None, key: Any) -> str:
    """``parent.key`` (or ``parent['odd key']``), clipped to fit ``invalid_rows.field``."""
    if isinstance(key, int):
        part = f"[{key}]"
    elif isinstance(key, str) and key.isidentifier() and len(key) <= 40:
        part = f".{key}" if parent else key
    else:
        part = f"[{safe_text(repr(key), 40)}]"
    path = f"{parent or ''}{part}"
    return path if len(path) <= MAX_FIELD else path[: MAX_FIELD - 3] + "..."


def check_text(value: str, field: str | None) -> None:
    """A string the ledger can store: valid Unicode (no lone surrogate) and no NUL."""
    if "\x00" in value:
        raise RowError(field, f"{field or 'text'} contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RowError(field, f"{field or 'text'} is not valid Unicode (lone surrogate at character {exc.start})") from None


def check_json_value(value: Any, field: str | None, limits: RowLimits = _DEFAULT_LIMITS, depth: int = 0) -> None:
    """Walk ``value`` without recursion and refuse what cannot be stored as JSON or text;
    ``depth`` is how deep ``value`` sits in its line (nesting counts from the line's top)."""
    stack: list[tuple[Any, str | None, int]] = [(value, field, depth)]
    while stack:
        v, where, depth = stack.pop()
        if depth > limits.max_depth:
            raise RowError(where, f"nested deeper than {limits.max_depth} levels")
        if v is None or isinstance(v, bool):
            continue
        if isinstance(v, str):
            check_text(v, where)
        elif isinstance(v, int):
            if not -INT64 - 1 <= v <= INT64:
                raise RowError(where, f"{where or 'value'}: integer out of the 64-bit range")
        elif isinstance(v, float):
            if not math.isfinite(v):
                raise RowError(where, f"{where or 'value'}: NaN and Infinity are not valid JSON")
        elif isinstance(v, dict):
            children = []
            for k, x in v.items():
                if not isinstance(k, str):
                    raise RowError(where, f"{where or 'object'} has a non-string key")
                key_path = field_path(where, k)
                check_text(k, key_path)
                children.append((x, key_path, depth + 1))
            stack.extend(reversed(children))
        elif isinstance(v, list):
            stack.extend(reversed([(x, field_path(where, i), depth + 1) for i, x in enumerate(v)]))
        else:
            raise RowError(where, f"{where or 'value'}: unsupported value of type {type(v).__name__}")


def check_custom_id(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise RowError("custom_id", f"custom_id must be a string, got {type(value).__name__}")
    if not value.strip():
        raise RowError("custom_id", "custom_id is empty")
    if len(value) > MAX_CUSTOM_ID:
        raise RowError("custom_id", f"custom_id longer than {MAX_CUSTOM_ID} characters")
    check_text(value, "custom_id")
    return value


def safe_custom_id(value: Any) -> str | None:
    """The custom_id to report on an invalid row: only one that is itself valid."""
    try:
        return check_custom_id(value)
    except RowError:
        return None


def check_max_tokens(value: Any, field: str = "max_tokens", cap: int = _DEFAULT_LIMITS.max_tokens) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise RowError(field, f"{field} must be an integer, got {type(value).__name__}")
    if value < 1:
        raise RowError(field, f"{field} must be >= 1, got {value}")
    if value > cap:
        raise RowError(field, f"{field} must be <= {cap:,}, got {value:,}"[:300])
    return value


def check_prompt(value: Any, field: str = "prompt", limits: RowLimits = _DEFAULT_LIMITS) -> str:
    if value is None:
        raise RowError(field, f"missing {field}")
    if not isinstance(value, str):
        raise RowError(field, f"{field} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise RowError(field, f"{field} is empty")
    if len(value) > limits.max_prompt_chars:
        raise RowError(field, f"{field} is {len(value):,} characters; the limit is {limits.max_prompt_chars:,}")
    check_text(value, field)
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


def routing_text(messages: Any, field: str = "messages", limits: RowLimits = _DEFAULT_LIMITS, depth: int = 1) -> str:
    """Validate chat messages; return the text the router scores: the last user turn."""
    if messages is None:
        raise RowError(field, f"missing {field}")
    if not isinstance(messages, list):
        raise RowError(field, f"{field} must be a list, got {type(messages).__name__}")
    if not messages:
        raise RowError(field, f"{field} is empty")
    check_json_value(messages, field, limits, depth)
    last_user = None
    total = 0
    for i, msg in enumerate(messages):
        where = f"{field}[{i}]"
        if not isinstance(msg, dict):
            raise RowError(where, "message must be an object")
        role = msg.get("role")
        if role not in ROLES:
            raise RowError(f"{where}.role", f"unknown role {safe_text(repr(role), 60)}")
        text = _content_text(msg.get("content"), where)
        total += len(text)
        if role == "user":
            last_user = text
    if total > limits.max_prompt_chars:
        raise RowError(field, f"{field} hold {total:,} characters; the limit is {limits.max_prompt_chars:,}")
    if last_user is None or not last_user.strip():
        raise RowError(field, f"{field} has no non-empty user message")
    return last_user


def refuse_transport(obj: dict, where: str | None) -> None:
    for key in obj:
        if isinstance(key, str) and is_transport_field(key):
            raise RowError(
                field_path(where, key),
                f"{field_path(where, key)} is not allowed: a dataset cannot set HTTP headers or other transport options",
            )


def is_anthropic_line(obj: dict) -> bool:
    """An Anthropic Message Batches request line: ``params`` and no plain-row prompt fields
    (a plain row may carry other keys, ignored as before)."""
    return "params" in obj and "prompt" not in obj and "messages" not in obj


def row_from_object(obj: Any, line_no: int, limits: RowLimits = _DEFAULT_LIMITS) -> PromptRow:
    """A JSONL object in any accepted shape: plain prompt/messages, an OpenAI Batch line
    (``method``/``url``/``body``) or an Anthropic Message Batches line (``custom_id`` and
    ``params``, :mod:`jobs.datasets.anthropic_rows`)."""
    if not isinstance(obj, dict):
        raise RowError(None, f"line must be a JSON object, got {type(obj).__name__}")
    refuse_transport(obj, None)
    if "body" in obj or "method" in obj or "url" in obj:
        return _openai_batch_row(obj, line_no, limits)
    if is_anthropic_line(obj):
        from jobs.datasets.anthropic_rows import anthropic_batch_row  # imports this module

        return anthropic_batch_row(obj, line_no, limits)
    custom_id = check_custom_id(obj.get("custom_id"))
    max_tokens = check_max_tokens(obj.get("max_tokens"), cap=limits.max_tokens)
    if "messages" in obj:
        messages = obj["messages"]
        prompt = routing_text(messages, limits=limits)
        return PromptRow(line_no, custom_id, prompt, messages, max_tokens)
    return PromptRow(line_no, custom_id, check_prompt(obj.get("prompt"), limits=limits), None, max_tokens)


def _check_n(body: dict) -> None:
    if "n" not in body or body["n"] is None:
        return
    n = body["n"]
    if isinstance(n, bool) or not isinstance(n, int):
        raise RowError("body.n", f"n must be an integer, got {type(n).__name__}")
    if n > 1:
        raise RowError("body.n", "n > 1 is not supported: each choice is billed")
    if n < 1:
        raise RowError("body.n", f"n must be 1, got {n}")


def body_params(body: dict, limits: RowLimits = _DEFAULT_LIMITS) -> dict | None:
    """The body fields passed on to the provider as they are (see the module docstring)."""
    refuse_transport(body, "body")
    for key in body:
        if key not in BODY_PARAMS and key not in _BODY_HANDLED:
            raise RowError(
                field_path("body", key),
                f"{field_path('body', key)} is not a supported request parameter (see BODY_PARAMS in jobs/datasets/validate.py)",
            )
    _check_n(body)
    if "stream" in body and not isinstance(body["stream"], bool):
        raise RowError("body.stream", "stream must be true or false")
    params = {k: v for k, v in body.items() if k in BODY_PARAMS}
    for key, value in params.items():
        check_json_value(value, f"body.{key}", limits, depth=2)
    if body.get("n") == 1:
        params["n"] = 1
    return params or None


def _openai_batch_row(obj: dict, line_no: int, limits: RowLimits) -> PromptRow:
    custom_id = check_custom_id(obj.get("custom_id"))
    if custom_id is None:
        raise RowError("custom_id", "OpenAI Batch lines need a custom_id")
    method = obj.get("method", "POST")
    if method != "POST":
        raise RowError("method", f"method must be POST, got {safe_text(repr(method), 60)}")
    url = obj.get("url", "/v1/chat/completions")
    if url not in ("/v1/chat/completions", "/chat/completions"):
        raise RowError("url", f"only /v1/chat/completions is supported, got {safe_text(repr(url), 200)}")
    body = obj.get("body")
    if not isinstance(body, dict):
        raise RowError("body", "body must be an object")
    params = body_params(body, limits)
    prompt = routing_text(body.get("messages"), "body.messages", limits, depth=2)
    max_tokens = check_max_tokens(body.get("max_tokens"), "body.max_tokens", limits.max_tokens)
    if max_tokens is None:
        max_tokens = check_max_tokens(body.get("max_completion_tokens"), "body.max_completion_tokens", limits.max_tokens)
    return PromptRow(line_no, custom_id, prompt, body["messages"], max_tokens, params)
