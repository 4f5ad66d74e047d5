"""The simulator's batch APIs (OpenAI files + batches, Anthropic message batches) on a fake clock."""

from __future__ import annotations

import json

import httpx
import pytest

from jobs.providers.sim.batches import Answer, SimBatches


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def fake_complete(path: str, headers: dict[str, str], body: bytes) -> Answer:
    req = json.loads(body)
    text = req["messages"][-1]["content"]
    if "FAIL" in text:
        return Answer(400, json.dumps({"error": {"message": "bad", "type": "invalid_request_error"}}).encode())
    if path.endswith("/v1/messages"):
        msg = {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": req["model"],
            "content": [{"type": "text", "text": text.upper()}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 3, "output_tokens": 2},
        }
        return Answer(200, json.dumps(msg).encode(), "req_1")
    out = {
        "id": "c1",
        "object": "chat.completion",
        "created": 1,
        "model": req["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text.upper()}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }
    return Answer(200, json.dumps(out).encode(), "req_1")


def upload(sim: SimBatches, lines: list[dict]) -> str:
    """A real multipart body, as the openai SDK and httpx build it."""
    content = "".join(json.dumps(x) + "\n" for x in lines).encode()
    req = httpx.Request("POST", "http://x/v1/files", files={"file": ("in.jsonl", content)}, data={"purpose": "batch"})
    body = req.read()
    status, obj = sim.handle("POST", "/v1/files", {"content-type": req.headers["content-type"]}, body)
    assert status == 200, obj
    assert obj["bytes"] == len(content) and obj["purpose"] == "batch"
    return obj["id"]


def line(i: int, text: str | None = None) -> dict:
    body = {"model": "sim-weak", "messages": [{"role": "user", "content": text or f"q{i}"}], "max_tokens": 8}
    return {"custom_id": f"c{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}


def jsonl(raw: bytes) -> list[dict]:
    return [json.loads(x) for x in raw.splitlines() if x.strip()]


@pytest.fixture
def sim() -> tuple[SimBatches, Clock]:
    clock = Clock()
    return SimBatches(fake_complete, complete_after_s=10.0, clock=clock), clock


def test_openai_batch_runs_through_its_states_and_writes_output_and_error_files(sim) -> None:
    batches, clock = sim
    fid = upload(batches, [line(0), line(1, "FAIL me"), line(2)])
    status, b = batches.handle(
        "POST",
        "/v1/batches",
        {},
        json.dumps(
            {"input_file_id": fid, "endpoint": "/v1/chat/completions", "completion_window": "24h", "metadata": {"job": "j1"}}
        ).encode(),
    )
    assert status == 200 and b["status"] == "validating" and b["metadata"] == {"job": "j1"}
    clock.now += 1
    assert batches.handle("GET", f"/v1/batches/{b['id']}", {}, b"")[1]["status"] == "in_progress"
    clock.now += 10
    _, done = batches.handle("GET", f"/v1/batches/{b['id']}", {}, b"")
    assert done["status"] == "completed" and done["completed_at"] is not None
    assert done["request_counts"] == {"total": 3, "completed": 2, "failed": 1}
    out = jsonl(batches.handle("GET", f"/v1/files/{done['output_file_id']}/content", {}, b"")[1])
    err = jsonl(batches.handle("GET", f"/v1/files/{done['error_file_id']}/content", {}, b"")[1])
    assert [x["custom_id"] for x in out] == ["c0", "c2"]
    assert out[0]["response"]["status_code"] == 200 and out[0]["response"]["body"]["choices"][0]["message"]["content"] == "Q0"
    assert [x["custom_id"] for x in err] == ["c1"] and err[0]["response"]["status_code"] == 400


def test_openai_output_lines_validate_with_the_sdk(sim) -> None:
    from openai.types import Batch
    from openai.types.chat import ChatCompletion

    batches, clock = sim
    fid = upload(batches, [line(i) for i in range(5)])
    _, b = batches.handle(
        "POST", "/v1/batches", {}, json.dumps({"input_file_id": fid, "endpoint": "/v1/chat/completions"}).encode()
    )
    Batch.model_validate(b)
    clock.now += 11
    _, done = batches.handle("GET", f"/v1/batches/{b['id']}", {}, b"")
    Batch.model_validate(done)
    for x in jsonl(batches.handle("GET", f"/v1/files/{done['output_file_id']}/content", {}, b"")[1]):
        ChatCompletion.model_validate(x["response"]["body"])


def test_openai_bad_input_file_fails_the_batch_with_line_numbers(sim) -> None:
    batches, _ = sim
    bad = [line(0), {"custom_id": "c0", "method": "POST", "url": "/v1/chat/completions", "body": {}}, {"nope": 1}]
    fid = upload(batches, bad)
    _, b = batches.handle(
        "POST", "/v1/batches", {}, json.dumps({"input_file_id": fid, "endpoint": "/v1/chat/completions"}).encode()
    )
    assert b["status"] == "failed"
    assert {(e["code"], e["line"]) for e in b["errors"]["data"]} == {("duplicate_custom_id", 2), ("invalid_json_line", 3)}


def test_openai_cancel_keeps_what_was_done_and_lists_the_rest(sim) -> None:
    batches, clock = sim
    fid = upload(batches, [line(i) for i in range(10)])
    _, b = batches.handle(
        "POST", "/v1/batches", {}, json.dumps({"input_file_id": fid, "endpoint": "/v1/chat/completions"}).encode()
    )
    clock.now += 5  # half-way
    assert batches.handle("POST", f"/v1/batches/{b['id']}/cancel", {}, b"")[1]["status"] == "cancelling"
    clock.now += 1
    _, done = batches.handle("GET", f"/v1/batches/{b['id']}", {}, b"")
    assert done["status"] == "cancelled" and done["cancelled_at"] is not None
    out = jsonl(batches.handle("GET", f"/v1/files/{done['output_file_id']}/content", {}, b"")[1])
    err = jsonl(batches.handle("GET", f"/v1/files/{done['error_file_id']}/content", {}, b"")[1])
    assert len(out) == 5 and {e["error"]["code"] for e in err} == {"batch_cancelled"} and len(err) == 5


def test_openai_expiry_before_completion(sim) -> None:
    batches, clock = sim
    batches.expire_after_s = 3.0
    fid = upload(batches, [line(i) for i in range(10)])
    _, b = batches.handle(
        "POST", "/v1/batches", {}, json.dumps({"input_file_id": fid, "endpoint": "/v1/chat/completions"}).encode()
    )
    clock.now += 4
    _, done = batches.handle("GET", f"/v1/batches/{b['id']}", {}, b"")
    assert done["status"] == "expired" and done["expired_at"] is not None
    err = jsonl(batches.handle("GET", f"/v1/files/{done['error_file_id']}/content", {}, b"")[1])
    assert len(err) == 7 and {e["error"]["code"] for e in err} == {"batch_expired"}


def test_openai_list_pages_newest_first_with_metadata(sim) -> None:
    batches, clock = sim
    fid = upload(batches, [line(0)])
    ids = []
    for i in range(5):
        clock.now += 1
        body = {"input_file_id": fid, "endpoint": "/v1/chat/completions", "metadata": {"n": str(i)}}
        ids.append(batches.handle("POST", "/v1/batches", {}, json.dumps(body).encode())[1]["id"])
    _, page1 = batches.handle("GET", "/v1/batches?limit=2", {}, b"")
    assert [b["id"] for b in page1["data"]] == ids[::-1][:2] and page1["has_more"]
    _, page2 = batches.handle("GET", f"/v1/batches?limit=10&after={page1['last_id']}", {}, b"")
    assert [b["id"] for b in page2["data"]] == ids[::-1][2:] and not page2["has_more"]


def test_anthropic_message_batch_results_match_by_custom_id(sim) -> None:
    batches, clock = sim
    reqs = [
        {"custom_id": f"a{i}", "params": {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": t}]}}
        for i, t in enumerate(["x", "FAIL", "y", "z"])
    ]
    status, b = batches.handle("POST", "/v1/messages/batches", {}, json.dumps({"requests": reqs}).encode())
    assert status == 200 and b["processing_status"] == "in_progress" and b["request_counts"]["processing"] == 4
    assert batches.handle("GET", f"/v1/messages/batches/{b['id']}/results", {}, b"")[0] == 400  # not ended yet
    clock.now += 11
    _, done = batches.handle("GET", f"/v1/messages/batches/{b['id']}", {}, b"")
    assert done["processing_status"] == "ended" and done["results_url"]
    assert done["request_counts"] == {"processing": 0, "succeeded": 3, "errored": 1, "canceled": 0, "expired": 0}
    results = {x["custom_id"]: x["result"] for x in jsonl(batches.handle("GET", done["results_url"], {}, b"")[1])}
    assert results["a0"]["type"] == "succeeded" and results["a0"]["message"]["content"][0]["text"] == "X"
    assert results["a1"]["type"] == "errored"
    dup = {"requests": [reqs[0], reqs[0]]}
    assert batches.handle("POST", "/v1/messages/batches", {}, json.dumps(dup).encode())[0] == 400


def test_anthropic_results_validate_with_the_sdk(sim) -> None:
    anthropic = pytest.importorskip("anthropic")
    batches, clock = sim
    reqs = [
        {"custom_id": f"a{i}", "params": {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "x"}]}}
        for i in range(3)
    ]
    _, b = batches.handle("POST", "/v1/messages/batches", {}, json.dumps({"requests": reqs}).encode())
    anthropic.types.messages.MessageBatch.model_validate(b)
    clock.now += 11
    _, done = batches.handle("GET", f"/v1/messages/batches/{b['id']}", {}, b"")
    anthropic.types.messages.MessageBatch.model_validate(done)
    for x in jsonl(batches.handle("GET", done["results_url"], {}, b"")[1]):
        anthropic.types.messages.MessageBatchIndividualResponse.model_validate(x)
