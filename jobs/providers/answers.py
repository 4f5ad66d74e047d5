"""The answer text of a stored provider body, whatever protocol produced it.

Items keep the provider's body as returned: an OpenAI ``chat.completion`` (``choices[0]
.message.content``) or an Anthropic Message (text blocks of ``content``). Everything that
reads the answer (``CallResult.text``, grading, the Parquet export) reads it through here,
so a new protocol is taught in one place.
"""

from __future__ import annotations

from typing import Any

from jobs.providers.anthropic import message_text


def answer_text(body: Any) -> str | None:
    """The assistant's text in ``body``, or None when it holds none (an error, a tool call)."""
    if not isinstance(body, dict):
        return None
    choices = body.get("choices")
    if isinstance(choices, list):
        first = choices[0] if choices else None
        message = first.get("message") if isinstance(first, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        return content if isinstance(content, str) else None
    return message_text(body)
