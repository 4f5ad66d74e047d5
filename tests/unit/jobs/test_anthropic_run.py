"""An embedded ``routebatch run`` against a simulated Anthropic provider, end to end (issue 14):
every exported line is an OpenAI Batch output line whose body the ``openai`` SDK accepts as
a ``ChatCompletion`` (with ``native_bodies``, the ``anthropic`` SDK as a ``Message``), the
ledger's costs are the Anthropic prices of the usage the answers report (prompt-cache reads
and writes included), and faults end up in the errors file once."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from anthropic.types import Message
from openai.types import BatchError
from openai.types.chat import ChatCompletion
from sqlalchemy import func, select

from jobs.config import parse_config
from jobs.ledger.export import export_job
from jobs.ledger.models import Attempt, Item
from jobs.ledger.session import session_scope
from jobs.lifecycle.service import JobSpec, run
from jobs.runtime import Runtime
from jobs.settings import Settings
from tests.unit.test_export_sdk import _Line

ROOT = Path(__file__).resolve().parents[3]
N = 300
SHARED = "You are a careful assistant. Follow the house style guide in every answer. " * 12


def example_config(**sim: object):
    data = tomllib.loads((ROOT / "examples" / "anthropic.toml").read_text())
    data["providers"]["claude-sim"]["simulated"].update({"latency_ms": 0, **sim})
    data["providers"]["claude-sim"]["retry"] = {"max_attempts": 3, "backoff_base_s": 0.0, "backoff_cap_s": 0.0, "jitter": False}
    return parse_config(data, "examples/anthropic.toml")


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("anthropic")
    data = tmp / "in.jsonl"
    with data.open("w") as fh:
        for i in range(N):
            system = [{"type": "text", "text": SHARED, "cache_control": {"type": "ephemeral"}}] if i % 2 else "Be brief."
            body = {
                "messages": [
                    {"role": "system", "content": system},
                    {"role": "user", "content": f"question {i} " + "w " * (i % 9)},
                ],
                "temperature": 0.2,
                "max_tokens": 48,
            }
            if i == 7:
                body["logprobs"] = True  # no Messages API equivalent: the item fails without a call
            fh.write(json.dumps({"custom_id": f"c-{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}) + "\n")
    db = f"sqlite:///{tmp / 'ledger.db'}"
    rt = Runtime(Settings(database_url=db, broker_url=None), example_config(faults={"529": 0.1}))
    try:
        st = run(rt, JobSpec(input_file=str(data), router="length", strong_share=0.4))
    finally:
        rt.close()
    return tmp, db, st


def test_the_job_completes_and_every_line_is_an_openai_chat_completion(finished) -> None:
    tmp, db, st = finished
    assert st.status == "completed" and st.succeeded + st.failed == N and st.failed >= 1
    out, errors = tmp / "results.jsonl", tmp / "errors.jsonl"
    counts = export_job(db, st.job_id, out, errors, force=True)
    results = [json.loads(x) for x in out.read_text().splitlines()]
    errs = [json.loads(x) for x in errors.read_text().splitlines()]
    assert len(results) == counts["results"] == st.succeeded and len(errs) == st.failed
    with session_scope(db) as s:
        ledger = {i.custom_id: i for i in s.scalars(select(Item).where(Item.job_id == st.job_id, Item.state == "succeeded"))}
    cached = 0
    for line in results:
        _Line.model_validate(line)  # the OpenAI Batch output envelope, plus the routebatch object
        completion = ChatCompletion.model_validate(line["response"]["body"])
        assert completion.object == "chat.completion" and completion.choices[0].message.content
        assert completion.model in ("claude-sonnet-4-5", "claude-haiku-4-5")
        assert completion.choices[0].finish_reason in ("stop", "length")
        assert line["response"]["request_id"] == completion.id and completion.id.startswith("msg_")
        assert line["routebatch"]["model"] in ("sim-sonnet", "sim-haiku")
        item = ledger[line["custom_id"]]  # usage as the ledger counted (and charged) it
        assert completion.usage is not None
        assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (
            item.prompt_tokens,
            item.completion_tokens,
        )
        cached += completion.usage.prompt_tokens_details.cached_tokens > 0
    assert cached >= 1  # prompt-cache reads are reported as OpenAI's cached_tokens
    by_id = {e["custom_id"]: e for e in errs}
    refused = by_id.pop("c-7")
    assert (
        refused["response"] is None and "'logprobs' is not supported by the Anthropic Messages API" in refused["error"]["message"]
    )
    for line in errs:
        _Line.model_validate(line)
        BatchError.model_validate(line["error"])
    for line in by_id.values():  # retries exhausted on 529: Anthropic's error body, once
        assert line["response"]["status_code"] == 529
        assert line["response"]["body"]["error"]["type"] == "overloaded_error"


def test_native_bodies_are_anthropic_messages(finished) -> None:
    tmp, db, st = finished
    out = tmp / "native.jsonl"
    counts = export_job(db, st.job_id, out, force=True, native_bodies=True)
    results = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(results) == counts["results"] == st.succeeded
    for line in results:
        _Line.model_validate(line)
        msg = Message.model_validate(line["response"]["body"])
        assert msg.content[0].text and msg.model in ("claude-sonnet-4-5", "claude-haiku-4-5")
        assert line["response"]["request_id"] == msg.id


def test_costs_are_the_anthropic_prices_of_the_reported_usage(finished) -> None:
    _, db, st = finished
    rates = {"sim-sonnet": (3_000_000, 300_000, 3_750_000, 15_000_000), "sim-haiku": (1_000_000, 100_000, 1_250_000, 5_000_000)}
    writes = reads = 0
    with session_scope(db) as s:
        items = s.scalars(select(Item).where(Item.job_id == st.job_id, Item.state == "succeeded")).all()
        for item in items:
            u = item.response["usage"]
            inp, read, write, out = rates[item.model]
            billed = u["input_tokens"] * inp + u["cache_read_input_tokens"] * read + u["cache_creation_input_tokens"] * write
            want = -(-(billed + u["output_tokens"] * out) // 1_000_000)
            last = s.scalars(select(Attempt).where(Attempt.item_id == item.id).order_by(Attempt.attempt_no.desc())).first()
            assert last.cost_micro_usd == want, (item.custom_id, u)
            assert last.prompt_tokens == u["input_tokens"] + u["cache_read_input_tokens"] + u["cache_creation_input_tokens"]
            assert last.cached_tokens == u["cache_read_input_tokens"]
            assert last.cache_write_tokens == u["cache_creation_input_tokens"]  # kept, so the charge can be recomputed
            writes += u["cache_creation_input_tokens"] > 0
            reads += u["cache_read_input_tokens"] > 0
        attempt_cost = s.scalar(select(func.sum(Attempt.cost_micro_usd)).where(Attempt.job_id == st.job_id))
        item_cost = s.scalar(select(func.sum(Item.cost_micro_usd)).where(Item.job_id == st.job_id))
    assert writes >= 1 and reads > writes  # one cache write per model (per concurrent first use), then reads
    assert attempt_cost == item_cost == st.cost_micro_usd


def test_parquet_export_reads_the_text_blocks(finished) -> None:
    tmp, db, st = finished
    out, native = tmp / "results.parquet", tmp / "native.parquet"
    export_job(db, st.job_id, out, fmt="parquet", force=True)
    export_job(db, st.job_id, native, fmt="parquet", force=True, native_bodies=True)
    rows = pq.read_table(out).to_pylist()
    answered = [r for r in rows if r["state"] == "succeeded"]
    assert len(answered) == st.succeeded
    for r in answered:
        completion = ChatCompletion.model_validate(json.loads(r["response_body"]))
        assert r["content"] == completion.choices[0].message.content
    for r in pq.read_table(native).to_pylist():
        if r["state"] == "succeeded":
            assert r["content"] == Message.model_validate(json.loads(r["response_body"])).content[0].text


def test_the_example_config_points_at_the_real_api() -> None:
    cfg = parse_config(tomllib.loads((ROOT / "examples" / "anthropic.toml").read_text()))
    prov = cfg.providers["anthropic"]
    assert (prov.kind, prov.base_url, prov.api_key_env) == ("anthropic", "https://api.anthropic.com", "ANTHROPIC_API_KEY")
    assert cfg.providers["claude-sim"].kind == "anthropic" and cfg.providers["claude-sim"].simulated is not None
