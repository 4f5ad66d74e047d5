"""An Anthropic Message exported as an OpenAI ``chat.completion`` (issue 14: results of every
provider in the same OpenAI Batch output format), checked by both SDKs' own types."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from anthropic.types import Message
from openai.types.chat import ChatCompletion

from jobs.ledger.anthropic_export import chat_completion, finish_reason, openai_body
from jobs.ledger.export import openai_line
from jobs.ledger.models import Item, Job


def _message(**over: object) -> dict:
    msg: dict = {
        "id": "msg_01ABC",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": "Hello, "}, {"type": "text", "text": "world."}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 7, "cache_read_input_tokens": 900, "cache_creation_input_tokens": 30},
    }
    msg.update(over)
    return msg


def test_a_message_becomes_a_valid_chat_completion() -> None:
    Message.model_validate(_message())  # the input is a real Message
    body = chat_completion(_message(), created=1_765_000_000)
    c = ChatCompletion.model_validate(body)
    assert (c.id, c.object, c.created, c.model) == ("msg_01ABC", "chat.completion", 1_765_000_000, "claude-sonnet-4-5")
    assert len(c.choices) == 1 and c.choices[0].index == 0
    assert c.choices[0].message.role == "assistant" and c.choices[0].message.content == "Hello, world."
    assert c.choices[0].finish_reason == "stop"
    assert c.usage is not None
    assert (c.usage.prompt_tokens, c.usage.completion_tokens, c.usage.total_tokens) == (942, 7, 949)
    assert c.usage.prompt_tokens_details is not None and c.usage.prompt_tokens_details.cached_tokens == 900


@pytest.mark.parametrize(
    ("stop", "want"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        ("model_context_window_exceeded", "length"),
        (None, "stop"),
        ("something_new", "stop"),
    ],
)
def test_stop_reasons_map_to_finish_reasons(stop: str | None, want: str) -> None:
    assert finish_reason(stop) == want
    assert ChatCompletion.model_validate(chat_completion(_message(stop_reason=stop), 0)).choices[0].finish_reason == want


def test_thinking_is_left_out_and_tool_use_becomes_tool_calls() -> None:
    msg = _message(
        content=[
            {"type": "thinking", "thinking": "hmm", "signature": "sig"},
            {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "x"}},
        ],
        stop_reason="tool_use",
    )
    Message.model_validate(msg)
    c = ChatCompletion.model_validate(chat_completion(msg, 0))
    m = c.choices[0].message
    assert m.content is None and c.choices[0].finish_reason == "tool_calls"
    assert m.tool_calls is not None and len(m.tool_calls) == 1
    call = m.tool_calls[0]
    assert (call.id, call.function.name, json.loads(call.function.arguments)) == ("toolu_1", "lookup", {"q": "x"})


def test_an_empty_answer_and_a_missing_usage() -> None:
    msg = _message(content=[])
    del msg["usage"]
    c = ChatCompletion.model_validate(chat_completion(msg, 5))
    assert c.choices[0].message.content == "" and c.usage is None
    no_cache = _message(usage={"input_tokens": 3, "output_tokens": 4})
    u = ChatCompletion.model_validate(chat_completion(no_cache, 5)).usage
    assert u is not None and (u.prompt_tokens, u.total_tokens, u.prompt_tokens_details.cached_tokens) == (3, 7, 0)


def test_an_openai_body_is_left_as_it_is() -> None:
    body = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m", "choices": []}
    assert openai_body(body, 99) is body


def _answered(response: dict) -> tuple[Item, Job]:
    when = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    job = Job(id="job_x", router="length", created_at=when)
    item = Item(
        id=17,
        job_id="job_x",
        line_no=1,
        custom_id="c-1",
        state="succeeded",
        model="claude-sonnet",
        response=response,
        status_code=200,
        attempts_count=1,
        cost_micro_usd=12,
        updated_at=when,
    )
    return item, job


def test_the_export_line_is_openai_by_default_and_native_on_request() -> None:
    item, job = _answered(_message())
    line = openai_line(item, job)
    c = ChatCompletion.model_validate(line["response"]["body"])
    assert line["response"]["request_id"] == c.id == "msg_01ABC"
    assert c.created == int(datetime(2026, 12, 2, 12, 0, tzinfo=UTC).timestamp())
    native = openai_line(item, job, native_bodies=True)
    msg = Message.model_validate(native["response"]["body"])
    assert native["response"]["request_id"] == msg.id and msg.usage.cache_read_input_tokens == 900
    assert item.response == _message()  # the stored Message is never changed by an export
