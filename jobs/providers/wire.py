"""The wire protocols a provider can speak: where a call goes, its headers, its body, and how
its answer is read. One object per ``ProviderConfig.kind``; the pool holds no protocol detail.

``openai``: chat completions (``{base_url}/chat/completions``, ``Authorization: Bearer``, the
row's messages and params as they are). ``anthropic``: the Messages API
(``{base_url}/v1/messages``, ``x-api-key`` and ``anthropic-version``, the body mapped by
:mod:`jobs.providers.anthropic`). A batch dispatcher builds its request lines with the same
``body`` and reads its result lines with the same ``is_answer``/``usage``.
"""

from __future__ import annotations

from typing import Any, Protocol

from jobs.providers import anthropic
from jobs.providers.anthropic import Unmappable
from jobs.providers.types import token_count

__all__ = ["AnthropicMessages", "OpenAIChat", "Unmappable", "Usage", "Wire", "wire_for"]

Usage = tuple[int, int, int, int]
"""(prompt tokens incl. cached parts, completion tokens, cache reads, cache writes)."""


class Wire(Protocol):
    kind: str
    answer_name: str
    """What a valid answer is called, for the ``malformed_response`` message."""

    def url(self, base_url: str) -> str: ...

    def auth_headers(self, api_key: str | None) -> dict[str, str]: ...

    def body(self, model_id: str, messages: list[dict], max_tokens: int, params: dict) -> dict[str, Any]: ...

    def is_answer(self, parsed: Any) -> bool: ...

    def usage(self, parsed: dict) -> Usage | None: ...


class OpenAIChat:
    """OpenAI-compatible chat completions (OpenAI, vLLM, LiteLLM, Together, Ollama, the sim)."""

    kind = "openai"
    answer_name = "chat.completion JSON object"

    def url(self, base_url: str) -> str:
        return base_url.rstrip("/") + "/chat/completions"

    def auth_headers(self, api_key: str | None) -> dict[str, str]:
        return {"authorization": f"Bearer {api_key}"} if api_key else {}

    def body(self, model_id: str, messages: list[dict], max_tokens: int, params: dict) -> dict[str, Any]:
        return {**params, "model": model_id, "messages": messages, "max_tokens": max_tokens}

    def is_answer(self, parsed: Any) -> bool:
        if not isinstance(parsed, dict):
            return False
        choices = parsed.get("choices")
        return isinstance(choices, list) and bool(choices) and isinstance(choices[0], dict)

    def usage(self, parsed: dict) -> Usage | None:
        u = parsed.get("usage")
        if not isinstance(u, dict):
            return None
        prompt = token_count(u.get("prompt_tokens"))
        completion = token_count(u.get("completion_tokens") or 0)
        if prompt is None or completion is None:
            return None
        details = u.get("prompt_tokens_details")
        cached = token_count(details.get("cached_tokens")) if isinstance(details, dict) else None
        return prompt, completion, cached or 0, 0


class AnthropicMessages:
    """Anthropic's Messages API."""

    kind = "anthropic"
    answer_name = "Messages API message object"

    def url(self, base_url: str) -> str:
        return anthropic.endpoint(base_url)

    def auth_headers(self, api_key: str | None) -> dict[str, str]:
        return anthropic.headers(api_key)

    def body(self, model_id: str, messages: list[dict], max_tokens: int, params: dict) -> dict[str, Any]:
        return anthropic.message_body(model_id, messages, max_tokens, params)  # raises Unmappable

    def is_answer(self, parsed: Any) -> bool:
        return anthropic.is_message(parsed)

    def usage(self, parsed: dict) -> Usage | None:
        return anthropic.message_usage(parsed)


_WIRES: dict[str, Wire] = {"openai": OpenAIChat(), "anthropic": AnthropicMessages()}


def wire_for(kind: str) -> Wire:
    """The protocol object of a ``ProviderConfig.kind``."""
    try:
        return _WIRES[kind]
    except KeyError:
        raise ValueError(f"unknown provider kind {kind!r}; known: {', '.join(_WIRES)}") from None
