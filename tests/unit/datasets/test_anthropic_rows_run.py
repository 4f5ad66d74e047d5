"""A Message Batches request file run as it is (issue 14), embedded, against the simulated
Anthropic provider and against the built-in OpenAI-compatible pair: every valid line is
answered, the bad ones are invalid rows with their field, and every exported answer is an
OpenAI Batch output line with a ``chat.completion`` body."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from openai.types.chat import ChatCompletion
from sqlalchemy import select

from jobs.ledger.export import export_job
from jobs.ledger.models import InvalidRow, Item
from jobs.ledger.session import session_scope
from jobs.lifecycle.service import JobSpec, run
from jobs.runtime import Runtime
from jobs.settings import Settings
from tests.conftest import make_runtime
from tests.unit.jobs.test_anthropic_run import example_config
from tests.unit.test_export_sdk import _Line

N = 40


def _dataset(path: Path) -> Path:
    with path.open("w") as fh:
        for i in range(N):
            params: dict = {
                "model": "claude-sonnet-4-5",
                "max_tokens": 32 + i,
                "system": [{"type": "text", "text": "Answer briefly.", "cache_control": {"type": "ephemeral"}}],
                "messages": [{"role": "user", "content": [{"type": "text", "text": f"question {i} " + "w " * (i % 7)}]}],
                "temperature": 0.5,
                "stop_sequences": ["END"],
            }
            if i == 5:
                params["messages"][0]["content"].append({"type": "document", "source": {"type": "text", "data": "x"}})
            fh.write(json.dumps({"custom_id": f"req-{i}", "params": params}) + "\n")
    return path


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_a_message_batches_file_runs_and_exports_chat_completions(tmp_path: Path, provider: str) -> None:
    data = _dataset(tmp_path / "requests.jsonl")
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    if provider == "anthropic":
        rt = Runtime(Settings(database_url=db, broker_url=None), example_config())
    else:
        rt = make_runtime(db)
    try:
        st = run(rt, JobSpec(input_file=str(data), router="length", strong_share=0.5))
    finally:
        rt.close()
    assert (st.status, st.succeeded, st.invalid, st.failed) == ("completed", N - 1, 1, 0)
    with session_scope(db) as s:
        (bad,) = s.scalars(select(InvalidRow).where(InvalidRow.job_id == st.job_id)).all()
        assert (bad.line_no, bad.field) == (6, "params.messages[0].content[1].type")
        item = s.scalars(select(Item).where(Item.job_id == st.job_id, Item.custom_id == "req-3")).one()
        assert item.max_tokens == 35 and item.params == {"temperature": 0.5, "stop": ["END"]}
        assert item.messages[0]["role"] == "system" and item.prompt == "question 3 w w w "
    out = tmp_path / "results.jsonl"
    export_job(db, st.job_id, out, force=True)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == N - 1
    for line in lines:
        _Line.model_validate(line)
        completion = ChatCompletion.model_validate(line["response"]["body"])
        assert completion.choices[0].message.content
        assert completion.usage is not None and completion.usage.completion_tokens <= 32 + int(line["custom_id"][4:])
