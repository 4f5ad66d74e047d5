"""Anthropic Message Batches request lines as dataset rows (issue 14): read next to plain and
OpenAI Batch lines, stored in the OpenAI shape, mapped back to the same Messages request, and
refused with the line and the field when they carry what cannot be mapped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobs.datasets import BadRow, PromptRow, RowLimits, read_rows
from jobs.providers.anthropic import message_body

SECRET = "sk-ant-THIS-IS-THE-OPERATORS-KEY"
IMG = "iVBORw0KGgo="


def _line(params: dict, custom_id: str | None = "a1") -> str:
    obj: dict = {"params": params}
    if custom_id is not None:
        obj["custom_id"] = custom_id
    return json.dumps(obj)


def _params(**over: object) -> dict:
    p: dict = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 300,
        "system": "You are terse.",
        "messages": [
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": [{"type": "text", "text": "first answer"}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look at this"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": IMG}},
                    {"type": "text", "text": "and this"},
                ],
            },
        ],
        "temperature": 0.3,
        "top_p": 0.9,
        "stop_sequences": ["\n\nHuman:"],
        "metadata": {"user_id": "u-42"},
    }
    p.update(over)
    return p


def _read(tmp_path: Path, *lines: str, limits: RowLimits | None = None) -> list:
    path = tmp_path / "in.jsonl"
    path.write_text("".join(x + "\n" for x in lines))
    return list(read_rows(path, limits=limits))


def test_an_anthropic_line_is_read_next_to_plain_and_openai_lines(tmp_path: Path) -> None:
    openai = {
        "custom_id": "o1",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"messages": [{"role": "user", "content": "hi"}]},
    }
    rows = _read(tmp_path, json.dumps({"prompt": "plain"}), _line(_params()), json.dumps(openai))
    assert all(isinstance(r, PromptRow) for r in rows), rows
    plain, row, batch = rows
    assert (plain.prompt, batch.custom_id) == ("plain", "o1")
    assert (row.line_no, row.custom_id, row.max_tokens) == (2, "a1", 300)
    assert row.prompt == "look at this\nand this"  # the router scores the last user turn's text
    assert row.messages[0] == {"role": "system", "content": "You are terse."}
    assert row.messages[1] == {"role": "user", "content": "first question"}
    assert row.messages[3]["content"][1] == {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{IMG}"}}
    assert row.params == {"temperature": 0.3, "top_p": 0.9, "stop": ["\n\nHuman:"], "user": "u-42"}


def test_the_anthropic_provider_sends_the_request_the_line_describes(tmp_path: Path) -> None:
    system = [{"type": "text", "text": "long shared context", "cache_control": {"type": "ephemeral"}}]
    url_image = {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "q"}, url_image]},
        {"role": "assistant", "content": "a"},
        {"role": "user", "content": [{"type": "text", "text": "again", "cache_control": {"type": "ephemeral"}}]},
    ]
    for params in (_params(), _params(system=system, messages=messages)):
        (row,) = _read(tmp_path, _line(params))
        assert isinstance(row, PromptRow), row
        sent = message_body("claude-sonnet-4-5", row.messages, row.max_tokens, row.params)
        want = {k: v for k, v in params.items() if k != "stop_sequences" and k != "metadata"}
        want.update(stop_sequences=params["stop_sequences"], metadata=params["metadata"])
        # the provider writes one-text-block turns as strings; compare in that normal form
        for m in want["messages"]:
            c = m["content"]
            if isinstance(c, list) and len(c) == 1 and c[0]["type"] == "text" and "cache_control" not in c[0]:
                m["content"] = c[0]["text"]
        assert sent == want


def test_system_text_blocks_without_cache_control_and_no_system(tmp_path: Path) -> None:
    blocks = [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]
    a, b = _read(tmp_path, _line(_params(system=blocks)), _line({"messages": [{"role": "user", "content": "x"}]}, "b"))
    assert a.messages[0] == {"role": "system", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]}
    assert b.messages == [{"role": "user", "content": "x"}] and b.max_tokens is None and b.params is None


@pytest.mark.parametrize(
    ("params", "field", "reason_part"),
    [
        (
            _params(
                messages=[
                    {"role": "user", "content": "a"},
                    {"role": "assistant", "content": "b"},
                    {"role": "user", "content": [{"type": "document", "source": {"type": "text", "data": "x"}}]},
                ]
            ),
            "params.messages[2].content[0].type",
            "'document' is not supported",
        ),
        (
            _params(messages=[{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "x"}]}]),
            "params.messages[0].content[0].type",
            "'tool_result'",
        ),
        (_params(messages=[{"role": "system", "content": "x"}]), "params.messages[0].role", "params.system"),
        (_params(messages=[{"role": "user", "content": ""}]), "params.messages[0].content", "empty content"),
        (
            _params(messages=[{"role": "user", "content": [{"type": "text", "text": ""}]}]),
            "params.messages[0].content[0].text",
            "empty text",
        ),
        (
            _params(messages=[{"role": "user", "content": [{"type": "text", "text": "x", "citations": []}]}]),
            "params.messages[0].content[0].citations",
            "not supported",
        ),
        (
            _params(
                messages=[
                    {
                        "role": "user",
                        "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/bmp", "data": "x"}}],
                    }
                ]
            ),
            "params.messages[0].content[0].source.media_type",
            "media_type",
        ),
        (
            _params(messages=[{"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}]}]),
            "params.messages[0].content[0].source.type",
            "'file'",
        ),
        (_params(messages=[{"role": "user", "content": "x", "name": "bob"}]), "params.messages[0].name", "not a message field"),
        (_params(messages=[{"role": "assistant", "content": "only me"}]), "params.messages", "no user message"),
        (_params(messages=[]), "params.messages", "non-empty list"),
        (_params(system=[{"type": "image", "source": {}}]), "params.system[0].type", "only text blocks"),
        (_params(top_k=5), "params.top_k", "no chat-completions equivalent"),
        (_params(tools=[{"name": "t"}]), "params.tools", "tool use"),
        (_params(thinking={"type": "enabled", "budget_tokens": 1024}), "params.thinking", "thinking"),
        (_params(service_tier="auto"), "params.service_tier", "costs"),
        (_params(frequency_penalty=0.5), "params.frequency_penalty", "not a supported Message Batches parameter"),
        (_params(temperature=1.5), "params.temperature", "between 0 and 1"),
        (_params(top_p="high"), "params.top_p", "must be a number"),
        (_params(stop_sequences="STOP"), "params.stop_sequences", "list of non-empty strings"),
        (_params(metadata={"user_id": "u", "team": "x"}), "params.metadata.team", "only metadata.user_id"),
        (_params(max_tokens=0), "params.max_tokens", ">= 1"),
        (_params(max_tokens="300"), "params.max_tokens", "integer"),
        (_params(stream="yes"), "params.stream", "true or false"),
        (_params(extra_headers={"x": "y"}), "params.extra_headers", "transport"),
    ],
)
def test_bad_anthropic_lines_name_the_line_and_the_field(tmp_path: Path, params: dict, field: str, reason_part: str) -> None:
    good = json.dumps({"prompt": "fine"})
    rows = _read(tmp_path, good, _line(params), good)
    bad = [r for r in rows if isinstance(r, BadRow)]
    assert [r.line_no for r in rows if isinstance(r, PromptRow)] == [1, 3]
    assert len(bad) == 1 and bad[0].line_no == 2
    assert bad[0].field == field, bad[0]
    assert reason_part in bad[0].reason, bad[0].reason
    assert bad[0].custom_id == "a1"


def test_the_line_needs_a_custom_id_and_an_object_of_params(tmp_path: Path) -> None:
    a, b = _read(tmp_path, _line(_params(), custom_id=None), json.dumps({"custom_id": "x", "params": [1]}))
    assert isinstance(a, BadRow) and a.field == "custom_id" and "need a custom_id" in a.reason
    assert isinstance(b, BadRow) and b.field == "params" and "must be an object" in b.reason


def test_a_key_in_params_is_not_stored_with_the_bad_row(tmp_path: Path) -> None:
    (bad,) = _read(tmp_path, _line(_params(_headers={"x-api-key": SECRET})))
    assert isinstance(bad, BadRow) and bad.field == "params._headers"
    assert SECRET not in (bad.raw or "") and SECRET not in bad.reason


def test_limits_apply_to_the_system_prompt_and_the_messages(tmp_path: Path) -> None:
    limits = RowLimits(max_prompt_chars=50, max_tokens=100)
    long_system = _params(system="s" * 45, messages=[{"role": "user", "content": "x" * 10}], max_tokens=10)
    (a,) = _read(tmp_path, _line(long_system), limits=limits)
    assert isinstance(a, BadRow) and a.field == "params.messages" and "limit is 50" in a.reason
    (b,) = _read(tmp_path, _line({"messages": [{"role": "user", "content": "x"}], "max_tokens": 101}), limits=limits)
    assert isinstance(b, BadRow) and b.field == "params.max_tokens"


def test_a_plain_row_with_a_params_key_is_still_a_plain_row(tmp_path: Path) -> None:
    (row,) = _read(tmp_path, json.dumps({"prompt": "hello", "params": {"anything": 1}}))
    assert isinstance(row, PromptRow) and row.prompt == "hello" and row.params is None
