"""Every exported line passes the OpenAI SDK's own models (issue: exports failed its validation)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from openai.types import BatchError
from openai.types.chat import ChatCompletion
from pydantic import BaseModel, ConfigDict

from jobs.ledger.export import export_job
from jobs.lifecycle.service import JobSpec, run


class _Response(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status_code: int
    request_id: str | None
    body: dict


class _Line(BaseModel):
    """An OpenAI Batch output/error line (the documented shape) plus our ``routebatch`` object."""

    model_config = ConfigDict(extra="forbid")
    id: str
    custom_id: str | None
    response: _Response | None
    error: dict | None
    routebatch: dict | None = None


N = 5000


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory):
    from tests.conftest import make_runtime

    tmp = tmp_path_factory.mktemp("sdk")
    data = tmp / "in.jsonl"
    with data.open("w") as fh:
        for i in range(N):
            fh.write(json.dumps({"custom_id": f"c-{i}", "prompt": f"question {i} " + "word " * (i % 11)}) + "\n")
        fh.write("{not json\n")
    db = f"sqlite:///{tmp / 'ledger.db'}"
    rt = make_runtime(
        db,
        {"providers.sim.simulated.faults": {"500": 0.05}, "providers.sim.retry.max_attempts": 1, "providers.sim.concurrency": 64},
    )
    try:
        st = run(rt, JobSpec(input_file=str(data), router="length", strong_share=0.3))
    finally:
        rt.close()
    assert st.failed > 0 and st.succeeded > 0 and st.succeeded + st.failed == N
    return tmp, db, st


def test_every_jsonl_line_validates_and_errors_appear_once(finished) -> None:
    tmp, db, st = finished
    out, errors = tmp / "results.jsonl", tmp / "errors.jsonl"
    counts = export_job(db, st.job_id, out, errors, force=True)
    results = [json.loads(x) for x in out.read_text().splitlines()]
    errs = [json.loads(x) for x in errors.read_text().splitlines()]
    assert len(results) == counts["results"] == st.succeeded
    assert len(errs) == counts["errors"] == st.failed + st.invalid
    for line in results:
        _Line.model_validate(line)
        completion = ChatCompletion.model_validate(line["response"]["body"])
        assert completion.choices[0].message.content
        assert line["routebatch"]["model"] in (st.strong_model, st.weak_model)
    for line in errs:
        _Line.model_validate(line)
        BatchError.model_validate(line["error"])
        if line["response"] is not None:
            error = line["response"]["body"]["error"]
            assert isinstance(error["message"], str) and "error" not in error  # not nested twice
    answered = {x["custom_id"] for x in results}
    failed = {x["custom_id"] for x in errs if x["error"]["code"] != "invalid_input"}
    assert not answered & failed and len(answered | failed) == N


def test_errors_in_results_keeps_one_line_per_item(finished) -> None:
    tmp, db, st = finished
    out = tmp / "all.jsonl"
    export_job(db, st.job_id, out, errors_in_results=True, force=True)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == N
    for line in lines:
        _Line.model_validate(line)
        if line["error"] is None:
            ChatCompletion.model_validate(line["response"]["body"])


def test_every_parquet_row_carries_a_valid_body(finished) -> None:
    tmp, db, st = finished
    out = tmp / "results.parquet"
    export_job(db, st.job_id, out, fmt="parquet", force=True)
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == N
    ok = [r for r in rows if r["state"] == "succeeded"]
    assert len(ok) == st.succeeded
    for r in ok:
        completion = ChatCompletion.model_validate(json.loads(r["response_body"]))
        assert completion.choices[0].message.content == r["content"]
