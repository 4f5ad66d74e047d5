"""Hypothesis strategies for dataset files that mix good rows with hostile ones.

Each strategy draws a ``Case``: the file's bytes and, per line (record, row) that must be
reported, whether it is good and the prompt it must yield. Blank lines are not reported.
Used by the reader property tests (unit, SQLite) and the Postgres integration test.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import strategies as st

from jobs.datasets import RowLimits

try:
    import zstandard
except ImportError:  # optional: .zst inputs need it
    zstandard = None

LIMITS = RowLimits(max_line_bytes=256 * 1024)
TOO_LONG = 300 * 1024
SECRET = "sk-live-hypothesis-operator-key"
MSG = [{"role": "user", "content": "hi"}]
BOM = b"\xef\xbb\xbf"
COMPRESSIONS = [None, None, "gzip"] + (["zstd"] if zstandard is not None else [])


@dataclass
class Case:
    fmt: str
    data: bytes  # uncompressed content (for Parquet: the table, see ``table``)
    expected: dict[int, str | None] = field(default_factory=dict)  # line -> prompt if good, None if bad
    compression: str | None = None
    table: pa.Table | None = None
    row_group_size: int = 5

    @property
    def good(self) -> int:
        return sum(1 for v in self.expected.values() if v is not None)

    def write(self, directory: Path, name: str = "in") -> Path:
        if self.fmt == "parquet":
            path = directory / f"{name}.parquet"
            pq.write_table(self.table, path, row_group_size=self.row_group_size)
            return path
        suffix = {None: "", "gzip": ".gz", "zstd": ".zst"}[self.compression]
        path = directory / f"{name}.{self.fmt}{suffix}"
        data = self.data
        if self.compression == "gzip":
            data = gzip.compress(data)
        elif self.compression == "zstd":
            data = zstandard.ZstdCompressor().compress(data)
        path.write_bytes(data)
        return path


# -- text ------------------------------------------------------------------------------------

_clean_chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
good_text = st.text(_clean_chars, min_size=1, max_size=40).filter(lambda s: bool(s.strip()))
lone_surrogate = st.integers(0xD800, 0xDFFF).map(lambda c: f"\\u{c:04x}")
transport_key = st.sampled_from(["_headers", "headers", "extra_headers", "extra_query", "extra_body", "timeout", "_x"])
header_value = st.sampled_from(
    [
        {"Authorization": f"Bearer {SECRET}"},
        {"X-Evil": "a\r\nContent-Length: 0\r\n\r\nPOST /v1/admin HTTP/1.1\r\nHost: victim"},
        "notadict",
        [SECRET],
    ]
)
depth = st.one_of(st.sampled_from([65, 1_000, 5_000, 100_000]), st.integers(65, 3_000))
bad_max_tokens = st.sampled_from(["0", "-1", "100000000000000000000", "1099511627776", "10000001", "1e20", '"9"', "true", "1.5"])
non_finite = st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400"])


# -- JSONL -----------------------------------------------------------------------------------


@st.composite
def good_jsonl(draw: st.DrawFn, i: int) -> tuple[bytes, str]:
    prompt = draw(good_text)
    shape = draw(st.sampled_from(["plain", "messages", "batch"]))
    cid = f"id-{i}"
    if shape == "plain":
        obj: dict = {"prompt": prompt}
        if draw(st.booleans()):
            obj["custom_id"] = cid
        if draw(st.booleans()):
            obj["max_tokens"] = draw(st.integers(1, 10_000_000))
    elif shape == "messages":
        obj = {
            "custom_id": cid,
            "messages": [{"role": "system", "content": draw(good_text)}, {"role": "user", "content": prompt}],
        }
    else:
        body = {"model": "any", "messages": [{"role": "user", "content": prompt}], "max_tokens": draw(st.integers(1, 4096))}
        if draw(st.booleans()):
            body["temperature"] = draw(st.floats(0, 2, allow_nan=False))
        if draw(st.booleans()):
            body["n"] = 1
        obj = {"custom_id": cid, "method": "POST", "url": "/v1/chat/completions", "body": body}
    return json.dumps(obj, ensure_ascii=draw(st.booleans())).encode(), prompt


def _batch(body_json: str, cid: str = "h") -> str:
    return (
        '{"custom_id": "'
        + cid
        + '", "url": "/v1/chat/completions", "body": {"messages": [{"role": "user", "content": "hi"}], '
        + body_json
        + "}}"
    )


@st.composite
def hostile_jsonl(draw: st.DrawFn) -> bytes:
    kind = draw(
        st.sampled_from(
            [
                "surrogate_prompt",
                "surrogate_message",
                "nul",
                "deep",
                "max_tokens",
                "non_finite",
                "transport_body",
                "transport_top",
                "n",
                "unknown_param",
                "bad_json",
                "junk_bytes",
                "too_long",
            ]
        )
    )
    if kind == "surrogate_prompt":
        return ('{"prompt": "a' + draw(lone_surrogate) + 'b"}').encode()
    if kind == "surrogate_message":
        return ('{"messages": [{"role": "user", "content": "x' + draw(lone_surrogate) + '"}]}').encode()
    if kind == "nul":
        where = draw(
            st.sampled_from(['{"prompt": "a\\u0000b"}', '{"prompt": "ok", "custom_id": "\\u0000"}', _batch('"user": "\\u0000"')])
        )
        return where.encode()
    if kind == "deep":
        d = draw(depth)
        nested = "[" * d + "]" * d
        return draw(st.sampled_from(['{"prompt": "x", "messages": ' + nested + "}", _batch('"metadata": ' + nested)])).encode()
    if kind == "max_tokens":
        value = draw(bad_max_tokens)
        return draw(st.sampled_from(['{"prompt": "x", "max_tokens": ' + value + "}", _batch('"max_tokens": ' + value)])).encode()
    if kind == "non_finite":
        return _batch(f'"{draw(st.sampled_from(["temperature", "top_p", "seed"]))}": {draw(non_finite)}').encode()
    if kind == "transport_body":
        return json.dumps({"custom_id": "h", "body": {"messages": MSG, draw(transport_key): draw(header_value)}}).encode()
    if kind == "transport_top":
        top = draw(st.sampled_from([{"prompt": "p"}, {"custom_id": "h", "body": {"messages": MSG}}]))
        return json.dumps({**top, draw(transport_key): draw(header_value)}).encode()
    if kind == "n":
        return _batch(f'"n": {draw(st.sampled_from(["2", "20", "0", "-1", chr(34) + "2" + chr(34)]))}').encode()
    if kind == "unknown_param":
        return _batch('"service_tier": "priority"').encode()
    if kind == "bad_json":
        return (draw(st.text(_clean_chars, max_size=60).filter(lambda s: "\n" not in s)) + " {").encode()
    if kind == "junk_bytes":
        return draw(st.binary(max_size=80)).replace(b"\n", b"") + b"\xff {"
    return b'{"prompt": "' + b"x" * TOO_LONG + b'"}'


@st.composite
def jsonl_cases(draw: st.DrawFn) -> Case:
    n = draw(st.integers(1, 25))
    case = Case("jsonl", b"", compression=draw(st.sampled_from(COMPRESSIONS)))
    out = io.BytesIO()
    if draw(st.booleans()):
        out.write(BOM)
    for i in range(1, n + 1):
        kind = draw(st.sampled_from(["good", "good", "bad", "blank"]))
        if kind == "good":
            line, prompt = draw(good_jsonl(i))
            case.expected[i] = prompt
        elif kind == "bad":
            line = draw(hostile_jsonl())
            case.expected[i] = None
        else:
            line = draw(st.sampled_from([b"", b"   ", b"\t", b"\r"]))
        out.write(line)
        if i < n or draw(st.booleans()):
            out.write(draw(st.sampled_from([b"\n", b"\r\n"])))
    case.data = out.getvalue()
    return case


# -- CSV -------------------------------------------------------------------------------------

csv_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r"), min_size=1, max_size=40).filter(
    lambda s: bool(s.strip())
)
junk_csv = st.binary(min_size=1, max_size=60).map(lambda b: b.translate(None, b',"\n\r') or b"?")


def _csv_record(fields: list[str]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(fields)
    return buf.getvalue().encode()


@st.composite
def csv_cases(draw: st.DrawFn) -> Case:
    n = draw(st.integers(1, 25))
    case = Case("csv", b"", compression=draw(st.sampled_from(COMPRESSIONS)))
    out = io.BytesIO()
    if draw(st.booleans()):
        out.write(BOM)
    out.write(b"custom_id,prompt,max_tokens\n")
    line = 2
    for i in range(n):
        kind = draw(st.sampled_from(["good", "good", "bad", "blank"]))
        if kind == "blank":
            record = b"\n"
        elif kind == "good":
            prompt = draw(csv_text)
            mt = draw(st.one_of(st.just(""), st.integers(1, 10_000_000).map(str)))
            record = _csv_record([draw(st.sampled_from([f"r{i}", ""])), prompt, mt])
            case.expected[line] = prompt
        else:
            record = draw(
                st.sampled_from(
                    [
                        f'r{i},"nul\x00inside",\n'.encode(),
                        f"r{i},\xff\xfe,\n".encode("latin-1"),
                        f"r{i},,\n".encode(),
                        f"r{i},   ,\n".encode(),
                        f"r{i},ok,1e20\n".encode(),
                        f"r{i},ok,1099511627776\n".encode(),
                        f"r{i},ok,0\n".encode(),
                        f"r{i},ok,{'9' * 5000}\n".encode(),
                        f"r{i},ok,abc\n".encode(),
                        b"a,b\n",
                        b"a,b,c,d\n",
                        ("x" * 600 + ",ok,\n").encode(),
                        b"\x00,ok,\n",
                        b'r,"' + b"y" * TOO_LONG + b'",\n',
                        draw(junk_csv) + b"\n",
                    ]
                )
            )
            case.expected[line] = None
        out.write(record)
        line += record.count(b"\n")
    data = out.getvalue()
    if draw(st.booleans()):
        data = data[:-1]  # no newline at the end
    case.data = data
    return case


# -- Parquet ---------------------------------------------------------------------------------


@st.composite
def parquet_cases(draw: st.DrawFn) -> Case:
    n = draw(st.integers(1, 25))
    case = Case("parquet", b"", row_group_size=draw(st.integers(1, 10)))
    prompts: list[bytes | None] = []
    ids: list[str | None] = []
    max_tokens: list[int | None] = []
    for i in range(1, n + 1):
        good = draw(st.booleans())
        prompt, cid, mt = (
            draw(good_text),
            draw(st.sampled_from([f"p{i}", None])),
            draw(st.one_of(st.none(), st.integers(1, 10_000_000))),
        )
        if not good:
            bad = draw(st.sampled_from(["empty", "blank", "none", "nul", "utf8", "mt", "cid_long", "cid_empty", "cid_nul"]))
            if bad in ("empty", "blank", "none", "nul", "utf8"):
                prompt = {"empty": "", "blank": "  \t", "none": None, "nul": "a\x00b", "utf8": None}[bad]
            if bad == "mt":
                mt = draw(st.sampled_from([0, -1, 2**40, 10_000_001]))
            if bad == "cid_long":
                cid = "c" * 600
            if bad == "cid_empty":
                cid = ""
            if bad == "cid_nul":
                cid = "c\x00"
            raw = b"\xff\xfe junk" if bad == "utf8" else (prompt.encode() if prompt is not None else None)
        else:
            raw = prompt.encode()
        prompts.append(raw)
        ids.append(cid)
        max_tokens.append(mt)
        case.expected[i] = prompt if good else None
    binary = pa.array(prompts, type=pa.binary())
    as_string = pa.Array.from_buffers(pa.string(), len(binary), binary.buffers()[:3], null_count=binary.null_count)
    case.table = pa.table(
        {"prompt": as_string, "custom_id": pa.array(ids, pa.string()), "max_tokens": pa.array(max_tokens, pa.int64())}
    )
    return case


any_case = st.one_of(jsonl_cases(), csv_cases(), parquet_cases())
