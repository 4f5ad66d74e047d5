"""Rows that used to abort ingest (or reach the wire) are invalid rows with line, field and reason."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.datasets import BadRow, PromptRow, RowLimits, read_rows
from jobs.datasets.validate import BODY_PARAMS

GOOD = [json.dumps({"prompt": "good one"}), json.dumps({"prompt": "good two"})]
SECRET = "sk-live-THIS-IS-THE-OPERATORS-KEY"


def _batch(body: dict, **top) -> str:
    return json.dumps({"custom_id": "b1", "method": "POST", "url": "/v1/chat/completions", "body": body, **top})


MSG = [{"role": "user", "content": "hi"}]


def _read_one_bad(tmp_path: Path, line: str | bytes, limits: RowLimits | None = None) -> BadRow:
    """``line`` between two good rows: the good ones survive, the bad one is line 2."""
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(x if isinstance(x, bytes) else x.encode() for x in (GOOD[0], line, GOOD[1])) + b"\n")
    rows = list(read_rows(path, limits=limits))
    assert [(r.line_no, r.prompt) for r in rows if isinstance(r, PromptRow)] == [(1, "good one"), (3, "good two")]
    bad = [r for r in rows if isinstance(r, BadRow)]
    assert len(bad) == 1 and bad[0].line_no == 2
    return bad[0]


@pytest.mark.parametrize(
    ("line", "field", "reason_part"),
    [
        ('{"prompt": "a\\ud800b"}', "prompt", "lone surrogate"),
        ('{"messages": [{"role": "user", "content": "x\\udfff"}]}', "messages[0].content", "lone surrogate"),
        (
            '{"messages": [{"role": "user", "content": [{"type": "text", "text": "\\ud83d"}]}]}',
            "messages[0].content[0].text",
            "surrogate",
        ),
        (
            '{"custom_id": "b1", "body": {"messages": [{"role": "user", "content": "a\\ud800"}]}}',
            "body.messages[0].content",
            "surrogate",
        ),
        ('{"prompt": "a\\u0000b"}', "prompt", "NUL"),
        ('{"messages": [{"role": "user", "content": "a\\u0000"}]}', "messages[0].content", "NUL"),
        ('{"prompt": "ok", "custom_id": "a\\u0000"}', "custom_id", "NUL"),
        ('{"prompt": "x", "max_tokens": 100000000000000000000}', "max_tokens", "<= 10,000,000"),
        ('{"prompt": "x", "max_tokens": 1099511627776}', "max_tokens", "<= 10,000,000"),
        ('{"prompt": "x", "max_tokens": 1e20}', "max_tokens", "integer"),
        ('{"prompt": "x", "max_tokens": 0}', "max_tokens", ">= 1"),
        ('{"prompt": "x", "max_tokens": true}', "max_tokens", "integer"),
        (_batch({"messages": MSG, "max_tokens": 2**40}), "body.max_tokens", "<="),
        (_batch({"messages": MSG, "max_completion_tokens": 10**30}), "body.max_completion_tokens", "<="),
        (_batch({"messages": MSG}).replace('"body": {', '"body": {"temperature": NaN, '), "body.temperature", "NaN"),
        (_batch({"messages": MSG}).replace('"body": {', '"body": {"top_p": Infinity, '), "body.top_p", "NaN"),
        (_batch({"messages": MSG}).replace('"body": {', '"body": {"temperature": -Infinity, '), "body.temperature", "NaN"),
        (_batch({"messages": MSG}).replace('"body": {', '"body": {"temperature": 1e400, '), "body.temperature", "NaN"),
        (_batch({"messages": MSG, "seed": 2**70}), "body.seed", "64-bit"),
        (_batch({"messages": MSG, "n": 20}), "body.n", "n > 1 is not supported: each choice is billed"),
        (_batch({"messages": MSG, "n": 0}), "body.n", "must be 1"),
        (_batch({"messages": MSG, "n": "2"}), "body.n", "integer"),
        (_batch({"messages": MSG, "stream": "yes"}), "body.stream", "true or false"),
        (_batch({"messages": MSG, "service_tier": "priority"}), "body.service_tier", "not a supported request parameter"),
    ],
)
def test_hostile_values_are_invalid_rows(tmp_path: Path, line: str, field: str, reason_part: str) -> None:
    bad = _read_one_bad(tmp_path, line)
    assert bad.field == field
    assert reason_part in bad.reason


@pytest.mark.parametrize("depth", [70, 5_000, 100_000])
def test_deep_nesting_is_an_invalid_row(tmp_path: Path, depth: int) -> None:
    line = '{"prompt": "x", "messages": [{"role": "user", "content": "hi", "extra": ' + "[" * depth + "]" * depth + "}]}"
    bad = _read_one_bad(tmp_path, line)
    assert "nested" in bad.reason
    assert bad.raw is not None and len(bad.raw) <= 500


def test_deep_nesting_in_batch_params(tmp_path: Path) -> None:
    bad = _read_one_bad(tmp_path, _batch({"messages": MSG, "metadata": json.loads("[" * 200 + "]" * 200)}))
    assert bad.field.startswith("body.metadata") and "nested deeper than 64" in bad.reason
    assert len(bad.field) <= 100


@pytest.mark.parametrize("key", ["_headers", "extra_headers", "headers", "extra_body", "extra_query", "timeout", "_anything"])
def test_transport_fields_in_a_batch_body_are_refused_and_never_stored(tmp_path: Path, key: str) -> None:
    value = {"Authorization": f"Bearer {SECRET}", "X-Evil": "a\r\nContent-Length: 0\r\n\r\nPOST /admin HTTP/1.1"}
    bad = _read_one_bad(tmp_path, _batch({"messages": MSG, key: value}))
    assert bad.field == f"body.{key}"
    assert "not allowed" in bad.reason and "header" in bad.reason
    assert SECRET not in (bad.raw or "") and SECRET not in bad.reason
    assert bad.custom_id == "b1"


@pytest.mark.parametrize("key", ["_headers", "headers", "extra_headers"])
def test_transport_fields_at_the_top_of_a_line_are_refused(tmp_path: Path, key: str) -> None:
    for line in (
        _batch({"messages": MSG}, **{key: {"Authorization": SECRET}}),
        json.dumps({"prompt": "p", key: {"Authorization": SECRET}}),
    ):
        bad = _read_one_bad(tmp_path, line)
        assert bad.field == key and "not allowed" in bad.reason
        assert SECRET not in (bad.raw or "")


def test_a_malformed_line_with_a_header_is_not_kept_raw(tmp_path: Path) -> None:
    bad = _read_one_bad(tmp_path, '{"prompt": "x", "_headers": {"Authorization": "' + SECRET + '"}} trailing')
    assert "malformed JSON" in bad.reason
    assert bad.raw is None


def test_allowed_body_params_pass_through_and_n_1_is_accepted(tmp_path: Path) -> None:
    body = {
        "model": "ignored",
        "messages": MSG,
        "max_tokens": 7,
        "temperature": 0.5,
        "seed": 3,
        "n": 1,
        "stream": True,
        "response_format": {"type": "json_object"},
        "metadata": {"k": "v"},
    }
    path = tmp_path / "in.jsonl"
    path.write_text(_batch(body) + "\n")
    (row,) = list(read_rows(path))
    assert isinstance(row, PromptRow)
    assert row.max_tokens == 7
    assert row.params == {
        "temperature": 0.5,
        "seed": 3,
        "n": 1,
        "response_format": {"type": "json_object"},
        "metadata": {"k": "v"},
    }
    assert set(row.params) - {"n"} <= BODY_PARAMS, "stream, model, messages and max_tokens are not passed as params"


def test_row_limits_bound_prompts_and_max_tokens(tmp_path: Path) -> None:
    limits = RowLimits(max_prompt_chars=100, max_tokens=500)
    bad = _read_one_bad(tmp_path, json.dumps({"prompt": "y" * 101}), limits)
    assert bad.field == "prompt" and "limit is 100" in bad.reason
    bad = _read_one_bad(
        tmp_path,
        json.dumps({"messages": [{"role": "system", "content": "s" * 60}, {"role": "user", "content": "u" * 60}]}),
        limits,
    )
    assert bad.field == "messages" and "limit is 100" in bad.reason
    bad = _read_one_bad(tmp_path, json.dumps({"prompt": "x", "max_tokens": 501}), limits)
    assert bad.field == "max_tokens" and "<= 500" in bad.reason


def test_an_overlong_line_is_skipped_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    with path.open("wb") as fh:
        fh.write(GOOD[0].encode() + b"\n")
        fh.write(b'{"prompt": "' + b"z" * (20 * 1024 * 1024) + b'"}\n')  # 20 MB line
        fh.write(GOOD[1].encode() + b"\n")
    tracemalloc.start()
    try:
        rows = list(read_rows(path, limits=RowLimits(max_line_bytes=1024 * 1024)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [type(r) for r in rows] == [PromptRow, BadRow, PromptRow]
    assert rows[1].line_no == 2 and "longer than 1,048,576 bytes" in rows[1].reason
    assert rows[2].line_no == 3
    assert peak < 6 * 1024 * 1024, f"peak {peak} bytes: the long line was held whole"


def test_csv_hostile_cells(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(
        b"custom_id,prompt,max_tokens\n"
        b"a,fine,\n"
        b"b,nul\x00inside,\n"
        b"c,ok,1099511627776\n"
        b"d,ok," + b"9" * 5000 + b"\n"
        b"e,ok,1e20\n"
        b'f,"quoted, fine",12\n'
    )
    rows = {r.line_no: r for r in read_rows(path)}
    assert isinstance(rows[2], PromptRow) and isinstance(rows[7], PromptRow) and rows[7].max_tokens == 12
    assert rows[3].field == "prompt" and "NUL" in rows[3].reason
    assert rows[4].field == "max_tokens" and "<=" in rows[4].reason
    assert rows[5].field == "max_tokens" and "integer" in rows[5].reason
    assert rows[6].field == "max_tokens" and "integer" in rows[6].reason
    assert all(r.custom_id in (None, "b", "c", "d", "e") for r in rows.values() if isinstance(r, BadRow))


def test_csv_overlong_record_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(b"prompt\nfirst\n" + b"x" * 5000 + b"\nlast\n")
    rows = list(read_rows(path, limits=RowLimits(max_line_bytes=1024)))
    assert [(type(r).__name__, r.line_no) for r in rows] == [("PromptRow", 2), ("BadRow", 3), ("PromptRow", 4)]
    assert "longer than 1,024 bytes" in rows[1].reason


def test_parquet_hostile_values(tmp_path: Path) -> None:
    prompts = pa.array([b"ok", b"\xff\xfe not utf-8", b"nul\x00", b"fine", b"big"], type=pa.binary())
    as_string = pa.Array.from_buffers(pa.string(), len(prompts), prompts.buffers()[:3])  # bypasses UTF-8 validation
    table = pa.table(
        {
            "prompt": as_string,
            "custom_id": ["1", "2", "3", "4", "5"],
            "max_tokens": pa.array([5, None, None, None, 2**40], pa.int64()),
        }
    )
    path = tmp_path / "in.parquet"
    pq.write_table(table, path, row_group_size=2)
    rows = list(read_rows(path))
    assert [type(r).__name__ for r in rows] == ["PromptRow", "BadRow", "BadRow", "PromptRow", "BadRow"]
    assert [r.line_no for r in rows] == [1, 2, 3, 4, 5]
    assert rows[1].field == "prompt" and "decode" in rows[1].reason
    assert rows[2].field == "prompt" and "NUL" in rows[2].reason
    assert rows[4].field == "max_tokens" and "<=" in rows[4].reason
    assert rows[0].max_tokens == 5 and rows[3].prompt == "fine"


@pytest.mark.parametrize(("levels", "ok"), [(63, True), (64, False)])
def test_nesting_counts_from_the_top_of_the_line(tmp_path: Path, levels: int, ok: bool) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(
        _batch({"messages": MSG}).replace('"body": {', '"body": {"metadata": ' + "[" * levels + "]" * levels + ", ") + "\n"
    )
    (row,) = list(read_rows(path))
    assert isinstance(row, PromptRow) is ok
