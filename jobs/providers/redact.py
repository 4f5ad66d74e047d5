"""Keeping secrets out of everything the pool produces (attempt rows, errors, logs).

Provider error bodies and httpx exception texts may echo request headers or URLs; every
message that leaves the pool goes through :func:`redact` with the keys in use.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

_PATTERNS = (
    re.compile(r"(?i)(bearer\s+)[^\s\"',;]+"),
    re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}"),
    re.compile(r"(?i)((?:api[_-]?key|authorization|token)[\"']?\s*[:=]\s*[\"']?)[^\s\"',;&]+"),
)
MAX_MESSAGE_CHARS = 500


def redact(text: str | None, secrets: Iterable[str | None] = (), limit: int | None = MAX_MESSAGE_CHARS) -> str | None:
    """``text`` with the given secrets and anything that looks like a credential masked,
    cut to ``limit`` characters (messages are for people; None keeps it whole)."""
    if text is None:
        return None
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, "***")
    for pat in _PATTERNS:
        text = pat.sub(lambda m: (m.group(1) if m.lastindex else "") + "***", text)
    if limit is not None and len(text) > limit:
        text = text[:limit] + "…"
    return text


def redact_json(value: Any, secrets: Iterable[str | None] = ()) -> Any:
    """A copy of a JSON value with every string redacted (provider bodies are stored whole,
    and an error body may echo the key that was sent)."""
    secrets = list(secrets)
    if isinstance(value, str):
        return redact(value, secrets, limit=None)
    if isinstance(value, dict):
        return {k: redact_json(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_json(v, secrets) for v in value]
    return value
