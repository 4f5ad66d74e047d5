"""Token estimates: local counts for responses without ``usage``, and worst cases for budgets.

Filled in fully in M4 (tiktoken where an encoding is available offline). Until then every
estimate is the conservative byte bound, which never undercounts a BPE tokenizer by much
on real text: UTF-8 bytes / 2, plus a per-message overhead.
"""

from __future__ import annotations

from collections.abc import Iterable

PER_MESSAGE_OVERHEAD = 4
PER_REQUEST_OVERHEAD = 3


def _message_text(message: dict) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def count_text_tokens(text: str, encoding: str | None = None) -> int:
    """Tokens of ``text``: conservative bound (bytes / 2, rounded up)."""
    return (len(text.encode("utf-8")) + 1) // 2


def count_message_tokens(messages: Iterable[dict], encoding: str | None = None) -> int:
    """Input tokens of a chat request, including the per-message framing overhead."""
    total = PER_REQUEST_OVERHEAD
    for m in messages:
        total += PER_MESSAGE_OVERHEAD + count_text_tokens(_message_text(m), encoding)
        total += count_text_tokens(str(m.get("role", "")), encoding)
    return total


def worst_case_tokens(req: object, model_cfg: object, max_tokens: int | None = None) -> tuple[int, int]:
    """(input tokens, max output tokens) for a budget reservation: never below the real usage
    as long as the input estimate is an upper bound and the provider honours ``max_tokens``."""
    messages = getattr(req, "messages")
    enc = getattr(model_cfg, "encoding", None)
    out = max_tokens or getattr(req, "max_tokens", 0) or getattr(model_cfg, "max_tokens", None) or 0
    return count_message_tokens(messages, enc), int(out)
