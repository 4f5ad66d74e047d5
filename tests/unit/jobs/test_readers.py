"""Dataset readers: every bad row is reported with its line and field; good rows survive."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.datasets import BadRow, DatasetError, PromptRow, read_rows


def _write_lines(path: Path, lines: list[bytes | str]) -> Path:
    with path.open("wb") as fh:
        for line in lines:
            fh.write(line if isinstance(line, bytes) else line.encode())
            fh.write(b"\n")
    return path


def test_jsonl_plain_messages_and_batch_lines(tmp_path: Path) -> None:
    batch_line = {
        "custom_id": "req-1",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "gpt-4o", "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi?"}], "max_tokens": 12, "temperature": 0.2},
    }
    path = _write_lines(
        tmp_path / "in.jsonl",
        [
            json.dumps({"prompt": "plain"}),
            json.dumps({"custom_id": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "parts"}]}]}),
            json.dumps(batch_line),
        ],
    )
    rows = list(read_rows(path))
    assert [type(r) for r in rows] == [PromptRow, PromptRow, PromptRow]
    assert rows[0].prompt == "plain" and rows[0].custom_id is None and rows[0].line_no == 1
    assert rows[1].prompt == "parts" and rows[1].messages[0]["content"][0]["text"] == "parts"
    assert rows[2].custom_id == "req-1" and rows[2].prompt == "hi?" and rows[2].max_tokens == 12
    assert rows[2].params == {"temperature": 0.2}, "model and max_tokens are not passed through as params"


@pytest.mark.parametrize(
    ("line", "field", "reason_part"),
    [
        (b"{not json", None, "malformed JSON"),
        (b'{"prompt": ""}', "prompt", "empty"),
        (b'{"custom_id": "x"}', "prompt", "missing"),
        (b'{"prompt": 3}', "prompt", "must be a string"),
        (b'{"prompt": "ok", "custom_id": 7}', "custom_id", "must be a string"),
        (b'{"prompt": "ok", "max_tokens": "9"}', "max_tokens", "integer"),
        (b'{"messages": [{"role": "robot", "content": "x"}]}', "messages[0].role", "unknown role"),
        (b'{"messages": [{"role": "system", "content": "x"}]}', "messages", "no non-empty user"),
        (b'{"custom_id": "b", "url": "/v1/embeddings", "body": {"messages": []}}', "url", "only /v1/chat/completions"),
        (b'{"url": "/v1/chat/completions", "body": {"messages": [{"role": "user", "content": "x"}]}}', "custom_id", "need a custom_id"),
        (b"[1, 2]", None, "JSON object"),
        (b'{"prompt": "caf\xe9"}', None, "UTF-8"),
    ],
)
def test_jsonl_bad_rows_name_line_and_field(tmp_path: Path, line: bytes, field: str | None, reason_part: str) -> None:
    path = _write_lines(tmp_path / "in.jsonl", [b'{"prompt": "good one"}', line, b'{"prompt": "good two"}'])
    rows = list(read_rows(path))
    assert [r.prompt for r in rows if isinstance(r, PromptRow)] == ["good one", "good two"]
    bad = [r for r in rows if isinstance(r, BadRow)]
    assert len(bad) == 1
    assert bad[0].line_no == 2
    assert bad[0].field == field
    assert reason_part in bad[0].reason


def test_blank_lines_keep_physical_line_numbers(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "in.jsonl", ['{"prompt": "a"}', "", "   ", "{oops"])
    rows = list(read_rows(path))
    assert rows[0].line_no == 1
    assert isinstance(rows[1], BadRow) and rows[1].line_no == 4


def test_csv_with_prompt_column_quoted_newlines_and_bad_bytes(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(
        b'id,question,custom_id\n1,"first\nspans two lines",a\n2,,b\n3,"caf\xe9",c\n4,last,d\n5,too,many,fields\n'
    )
    rows = list(read_rows(path, prompt_column="question"))
    good = [r for r in rows if isinstance(r, PromptRow)]
    bad = {r.line_no: r for r in rows if isinstance(r, BadRow)}
    assert [(r.custom_id, r.line_no) for r in good] == [("a", 2), ("d", 6)]
    assert good[0].prompt == "first\nspans two lines"
    assert bad[4].field == "question" and "empty" in bad[4].reason
    assert bad[5].field == "question" and "UTF-8" in bad[5].reason
    assert "expected 3 fields" in bad[7].reason


def test_csv_missing_prompt_column_is_a_file_error(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(DatasetError, match="no column 'prompt'"):
        list(read_rows(path))


def test_parquet_rows(tmp_path: Path) -> None:
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"prompt": ["x", "", "z"], "custom_id": ["1", "2", "3"]}), path)
    rows = list(read_rows(path))
    assert [type(r).__name__ for r in rows] == ["PromptRow", "BadRow", "PromptRow"]
    assert rows[1].line_no == 2 and rows[1].field == "prompt"


def test_missing_and_unknown_files(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such file"):
        read_rows(tmp_path / "nope.jsonl")
    weird = tmp_path / "data.bin"
    weird.write_text("x")
    with pytest.raises(DatasetError, match="cannot tell the format"):
        read_rows(weird)
    with pytest.raises(DatasetError, match="is a directory"):
        read_rows(tmp_path)
