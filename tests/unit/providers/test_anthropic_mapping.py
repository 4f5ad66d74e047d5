"""OpenAI-style requests mapped onto Anthropic's Messages API, and its answers read back (issue 14, item 4)."""

from __future__ import annotations

import pytest

from jobs.providers import anthropic
from jobs.providers.answers import answer_text
from jobs.providers.anthropic import Unmappable, map_messages, map_params, message_body, message_usage
from jobs.providers.ratelimit import MAX_HEADER_PAUSE_S, anthropic_pause_s


def test_system_messages_go_to_the_top_level_and_same_roles_merge() -> None:
    system, turns = map_messages(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "user", "content": [{"type": "text", "text": "there"}]},
            {"role": "developer", "content": "No lists."},
            {"role": "assistant", "content": "Hello", "name": "bot"},
            {"role": "user", "content": "2+2?"},
        ]
    )
    assert system == "Be brief.\n\nNo lists."
    assert turns == [
        {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}]},
        {"role": "assistant", "content": "Hello"},  # one plain text stays a string; name is dropped
        {"role": "user", "content": "2+2?"},
    ]


def test_content_parts_become_blocks_and_keep_cache_control() -> None:
    system, turns = map_messages(
        [
            {
                "role": "system",
                "content": [{"type": "text", "text": "long shared prefix", "cache_control": {"type": "ephemeral"}}],
            },
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                ],
            },
        ]
    )
    assert system == [{"type": "text", "text": "long shared prefix", "cache_control": {"type": "ephemeral"}}]
    assert turns[0]["content"] == [
        {"type": "text", "text": "what is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


@pytest.mark.parametrize(
    ("messages", "reason"),
    [
        ([{"role": "system", "content": "only a system prompt"}], "no user or assistant message"),
        ([{"role": "tool", "content": "42", "tool_call_id": "t"}], "role 'tool'"),
        ([{"role": "user", "content": ""}], "empty content"),
        ([{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}], "'input_audio'"),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}], "image url"),
        ([{"role": "assistant", "content": None, "tool_calls": [{"id": "x"}]}, {"role": "user", "content": "q"}], "tool calls"),
    ],
)
def test_what_cannot_be_mapped_is_refused_with_a_reason(messages: list[dict], reason: str) -> None:
    with pytest.raises(Unmappable, match=reason):
        map_messages(messages)


def test_params_are_mapped_or_refused() -> None:
    assert map_params({"temperature": 0.2, "top_p": 0.9, "stop": "\n\n", "user": "u1", "n": 1, "seed": None}) == {
        "temperature": 0.2,
        "top_p": 0.9,
        "stop_sequences": ["\n\n"],
        "metadata": {"user_id": "u1"},
    }
    assert map_params({"stop": ["END", "STOP"]}) == {"stop_sequences": ["END", "STOP"]}
    with pytest.raises(Unmappable, match="'response_format' is not supported"):
        map_params({"response_format": {"type": "json_object"}})
    with pytest.raises(Unmappable, match=r"temperature 1.5 is outside .*\[0, 1\]"):
        map_params({"temperature": 1.5})
    with pytest.raises(Unmappable, match="'presence_penalty'"):
        map_params({"presence_penalty": 0.5})


def test_message_body_always_carries_max_tokens_and_params_cannot_override_it() -> None:
    body = message_body("claude-x", [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}], 64, {"top_k": 5})
    assert body == {
        "top_k": 5,
        "model": "claude-x",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "Q"}],
        "system": "S",
    }


@pytest.mark.parametrize(
    "base",
    ["https://api.anthropic.com", "https://api.anthropic.com/", "https://api.anthropic.com/v1", "https://api.anthropic.com/v1/"],
)
def test_endpoint_accepts_both_base_url_habits(base: str) -> None:
    assert anthropic.endpoint(base) == "https://api.anthropic.com/v1/messages"
    assert anthropic.endpoint(base, anthropic.MODELS_PATH) == "https://api.anthropic.com/v1/models"


def test_headers_never_carry_authorization() -> None:
    assert anthropic.headers("k-123") == {"anthropic-version": "2023-06-01", "x-api-key": "k-123"}
    assert anthropic.headers(None) == {"anthropic-version": "2023-06-01"}


def test_usage_counts_cached_parts_as_input() -> None:
    msg = {
        "type": "message",
        "content": [],
        "usage": {"input_tokens": 10, "output_tokens": 7, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 1000},
    }
    assert message_usage(msg) == (1110, 7, 1000, 100)
    assert message_usage({"usage": {"input_tokens": 3, "output_tokens": 2}}) == (3, 2, 0, 0)
    assert message_usage({"usage": {"input_tokens": "3", "output_tokens": 2}}) is None
    assert message_usage({}) is None


def test_answer_text_reads_both_protocols() -> None:
    openai = {"choices": [{"message": {"role": "assistant", "content": "four"}}]}
    claude = {
        "type": "message",
        "content": [{"type": "thinking", "thinking": "hmm"}, {"type": "text", "text": "fo"}, {"type": "text", "text": "ur"}],
    }
    assert answer_text(openai) == answer_text(claude) == "four"
    assert answer_text({"type": "error", "error": {"type": "api_error", "message": "x"}}) is None
    assert answer_text(None) is None


def test_rate_limit_headers_pause_until_the_reset_of_a_used_up_limit() -> None:
    headers = {
        "anthropic-ratelimit-requests-remaining": "0",
        "anthropic-ratelimit-requests-reset": "2027-01-15T08:00:02Z",
        "anthropic-ratelimit-tokens-remaining": "5000",
        "anthropic-ratelimit-tokens-reset": "2027-01-15T08:00:30Z",
    }
    from datetime import datetime

    now = datetime.fromisoformat("2027-01-15T08:00:00+00:00").timestamp()
    assert anthropic_pause_s(headers, now) == pytest.approx(2.0)  # only the used-up limit counts
    assert anthropic_pause_s({**headers, "anthropic-ratelimit-requests-remaining": "7"}, now) is None
    far = {**headers, "anthropic-ratelimit-requests-reset": "2027-01-16T08:00:00Z"}
    assert anthropic_pause_s(far, now) == MAX_HEADER_PAUSE_S
    assert anthropic_pause_s({}, now) is None
