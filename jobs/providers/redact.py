"""Keeping secrets out of everything the pool produces (attempt rows, errors, logs).

Provider error bodies and httpx exception texts may echo request headers or URLs; every
message that leaves the pool goes through :func:`redact` with the keys in use, and every
stored body through :func:`redact_json`.

A known secret is matched by its exact value in any spelling a provider or a log could give
it: raw, with any character JSON-escaped (``\\u0073k-...``, which also covers a body that
could not be parsed), URL-encoded (``%73k-...``), or any mix (escapes case-insensitively). On top of that, anything shaped like a credential (``Bearer ...``,
``sk-...``, ``api_key=...``) is masked in messages and error bodies, not in answers: an answer
about API keys keeps its text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

_PATTERNS = (
    re.compile(r"(?i)(bearer\s+)[^\s\"',;]+"),
    re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}"),
    re.compile(r"(?i)((?:api[_-]?key|authorization|token)[\"']?\s*[:=]\s*[\"']?)[^\s\"',;&]+"),
)
MAX_MESSAGE_CHARS = 500
MIN_SECRET_CHARS = 4
"""Shorter 'secrets' are not masked (they would mask ordinary text)."""
MASK = "***"


@lru_cache(maxsize=64)
def secret_pattern(secret: str) -> re.Pattern[str]:
    """A pattern for ``secret`` in any spelling: each character raw, as ``\\uXXXX`` or as
    ``%XX`` (UTF-8 percent-encoding for non-ASCII characters), case-insensitively."""
    parts = []
    for ch in secret:
        alts = [re.escape(ch)]
        code = ord(ch)
        if code < 0x10000:
            alts.append(rf"\\u{code:04x}")
        utf8 = ch.encode("utf-8", "surrogatepass")
        alts.append("".join(f"%{b:02x}" for b in utf8))
        if ch == " ":
            alts.append(r"\+")
        parts.append("(?:" + "|".join(alts) + ")")
    return re.compile("".join(parts), re.IGNORECASE)


def storable(text: str) -> str:
    """``text`` without what a database refuses (NUL: Postgres text; lone surrogates: any
    UTF-8 encoder), each replaced by U+FFFD: a provider's text must never fail its batch."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def storable_json(value: Any) -> Any:
    """A copy of a JSON value whose strings (keys included) are :func:`storable`."""
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, dict):
        return {(storable(k) if isinstance(k, str) else k): storable_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [storable_json(v) for v in value]
    return value


def _mask_secrets(text: str, secrets: Iterable[str | None]) -> str:
    for s in secrets:
        if s and len(s) >= MIN_SECRET_CHARS:
            if s in text:
                text = text.replace(s, MASK)
            if "\\" in text or "%" in text:  # an escaped spelling is possible
                text = secret_pattern(s).sub(MASK, text)
    return text


def redact(
    text: str | None,
    secrets: Iterable[str | None] = (),
    limit: int | None = MAX_MESSAGE_CHARS,
    *,
    patterns: bool = True,
) -> str | None:
    """``text`` with the given secrets (in any spelling) and, with ``patterns``, anything that
    looks like a credential masked, cut to ``limit`` characters (messages are for people;
    None keeps it whole)."""
    if text is None:
        return None
    text = _mask_secrets(storable(text), secrets)
    if patterns:
        for pat in _PATTERNS:
            text = pat.sub(lambda m: (m.group(1) if m.lastindex else "") + MASK, text)
    if limit is not None and len(text) > limit:
        text = text[:limit] + "…"
    return text


def redact_json(value: Any, secrets: Iterable[str | None] = (), *, patterns: bool = True) -> Any:
    """A copy of a JSON value with every string (keys included) redacted: provider bodies are
    stored whole, and an error body (or an answer) may echo the key that was sent."""
    known = [s for s in secrets if s and len(s) >= MIN_SECRET_CHARS]
    if not known and not patterns:
        return value
    return _walk(value, known, patterns)


def _walk(value: Any, secrets: list[str], patterns: bool) -> Any:
    if isinstance(value, str):
        return redact(value, secrets, limit=None, patterns=patterns)
    if isinstance(value, dict):
        return {(_walk(k, secrets, patterns) if isinstance(k, str) else k): _walk(v, secrets, patterns) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(v, secrets, patterns) for v in value]
    return value
