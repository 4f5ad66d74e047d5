"""Keeping secrets out of everything the pool produces (attempt rows, errors, logs).

Provider error bodies and httpx exception texts may echo request headers or URLs; every
message that leaves the pool goes through :func:`redact` with the keys in use.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_PATTERNS = (
    re.compile(r"(?i)(bearer\s+)[^\s\"',;]+"),
    re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}"),
    re.compile(r"(?i)((?:api[_-]?key|authorization|token)[\"']?\s*[:=]\s*[\"']?)[^\s\"',;&]+"),
)
MAX_MESSAGE_CHARS = 500


def redact(text: str | None, secrets: Iterable[str | None] = ()) -> str | None:
    """``text`` with the given secrets and anything that looks like a credential masked."""
    if text is None:
        return None
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, "***")
    for pat in _PATTERNS:
        text = pat.sub(lambda m: (m.group(1) if m.lastindex else "") + "***", text)
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[:MAX_MESSAGE_CHARS] + "…"
    return text
