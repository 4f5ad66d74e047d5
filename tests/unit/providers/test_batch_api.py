"""The batch-API clients against the simulator's batch endpoints (through httpx's transport
seam, so the real request encoding — multipart upload, JSON, query strings — is exercised)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import httpx
import pytest

from jobs.errors import ProviderError
from jobs.providers.batch_api import CLOCK_SLACK, ENDED, RUNNING, AnthropicBatchClient, BatchRequest, OpenAIBatchClient
from jobs.providers.sim.batches import Answer, SimBatches
from tests.unit.providers.test_sim_batches import Clock, fake_complete

KEY = "sk-test-batch-0123456789abcdef"


def transport_for(sim: SimBatches, seen: list[httpx.Request], fail_first: int = 0) -> httpx.MockTransport:
    failures = {"left": fail_first}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if failures["left"]:
            failures["left"] -= 1
            return httpx.Response(429, headers={"retry-after": "0"}, json={"error": {"message": "slow down"}})
        path = request.url.raw_path.decode()
        got = sim.handle(request.method, path, {k.lower(): v for k, v in request.headers.items()}, request.read())
        assert got is not None, path
        status, body = got
        if isinstance(body, bytes):
            return httpx.Response(status, content=body)
        return httpx.Response(status, json=body)

    return httpx.MockTransport(handler)


def chat(i: int, text: str | None = None) -> BatchRequest:
    return BatchRequest(
        f"c{i}", {"model": "sim-weak", "messages": [{"role": "user", "content": text or f"q{i}"}], "max_tokens": 8}
    )


def test_openai_client_submits_polls_and_reads_both_files() -> None:
    clock, seen = Clock(), []
    sim = SimBatches(fake_complete, complete_after_s=5.0, clock=clock)
    client = OpenAIBatchClient("http://sim", KEY, transport=transport_for(sim, seen, fail_first=1))
    batch = client.submit([chat(0), chat(1, "FAIL"), chat(2)], {"routebatch_job": "job1"})
    assert batch.phase == RUNNING and batch.total == 3 and batch.metadata == {"routebatch_job": "job1"}
    assert all(r.headers["authorization"] == f"Bearer {KEY}" for r in seen)
    assert client.retrieve(batch.id).phase == RUNNING
    clock.now += 6
    done = client.retrieve(batch.id)
    assert done.phase == ENDED and done.status == "completed" and (done.done, done.failed) == (2, 1)
    results = {r.custom_id: r for r in client.results(done)}
    assert results["c0"].ok and results["c0"].body["choices"][0]["message"]["content"] == "Q0"
    assert not results["c1"].ok and results["c1"].status_code == 400
    listing = client.list_since(datetime.fromtimestamp(clock.now - 6, UTC))
    assert [b.id for b in listing.batches] == [batch.id] and listing.complete
    assert listing.batches[0].created_at == datetime.fromtimestamp(clock.now - 6, UTC)


def test_openai_client_reads_expired_lines_and_cancels() -> None:
    clock, seen = Clock(), []
    sim = SimBatches(fake_complete, complete_after_s=10.0, expire_after_s=5.0, clock=clock)
    client = OpenAIBatchClient("http://sim", KEY, transport=transport_for(sim, seen))
    batch = client.submit([chat(i) for i in range(4)], {})
    clock.now += 6
    done = client.retrieve(batch.id)
    assert done.status == "expired"
    codes = sorted(r.error_code or "ok" for r in client.results(done))
    assert codes == ["batch_expired", "batch_expired", "ok", "ok"]
    other = client.submit([chat(9)], {})
    assert client.cancel(other.id).status == "cancelling"


def test_anthropic_client_headers_and_results_by_custom_id() -> None:
    clock, seen = Clock(), []
    sim = SimBatches(fake_complete, complete_after_s=5.0, clock=clock)
    client = AnthropicBatchClient("http://sim", KEY, transport=transport_for(sim, seen))
    batch = client.submit([chat(0), chat(1, "FAIL")], {"routebatch_job": "job1"})
    assert batch.phase == RUNNING
    assert all(
        r.headers["x-api-key"] == KEY and r.headers["anthropic-version"] and "authorization" not in r.headers for r in seen
    )
    clock.now += 6
    done = client.retrieve(batch.id)
    assert done.phase == ENDED and (done.done, done.failed) == (1, 1)
    results = {r.custom_id: r for r in client.results(done)}
    assert results["c0"].ok and results["c0"].body["content"][0]["text"] == "Q0"
    assert not results["c1"].ok


def test_errors_are_one_line_without_the_key() -> None:
    def echo_key(path: str, headers: dict[str, str], body: bytes) -> Answer:
        return Answer(200, b"{}")

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"error": {"message": f"Incorrect API key provided: {KEY}"}})

    client = OpenAIBatchClient("http://sim", KEY, transport=httpx.MockTransport(handler))
    with pytest.raises(ProviderError) as exc:
        client.retrieve("batch_x")
    assert KEY not in str(exc.value) and "HTTP 401" in str(exc.value)


def test_results_with_an_echoed_key_are_redacted() -> None:
    def echo(path: str, headers: dict[str, str], body: bytes) -> Answer:
        req = json.loads(body)
        out = {
            "id": "c",
            "object": "chat.completion",
            "created": 1,
            "model": req["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": f"your key is {KEY}"}, "finish_reason": "stop"}],
        }
        return Answer(200, json.dumps(out).encode())

    clock, seen = Clock(), []
    sim = SimBatches(echo, complete_after_s=1.0, clock=clock)
    client = OpenAIBatchClient("http://sim", KEY, transport=transport_for(sim, seen))
    batch = client.submit([chat(0)], {})
    clock.now += 2
    (only,) = list(client.results(client.retrieve(batch.id)))
    assert KEY not in json.dumps(only.body)


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_clients_against_the_simulator_over_http(kind: str) -> None:
    """The real simulator: batch requests are answered by its synchronous endpoint, with the key checked."""
    import time

    from jobs.providers.sim.server import start_simulated_provider

    with start_simulated_provider({"api_key": KEY, "batch_complete_s": 0.3, "seed": 3}) as server:
        if kind == "openai":
            client: OpenAIBatchClient | AnthropicBatchClient = OpenAIBatchClient(server.base_url.removesuffix("/v1"), KEY)
            reqs = [chat(i) for i in range(6)]
        else:
            client = AnthropicBatchClient(server.base_url.removesuffix("/v1"), KEY)
            reqs = [
                BatchRequest(f"c{i}", {"model": "sim-weak", "max_tokens": 8, "messages": [{"role": "user", "content": f"q{i}"}]})
                for i in range(6)
            ]
        batch = client.submit(reqs, {"routebatch_job": "j"})
        deadline = time.monotonic() + 10
        while (batch := client.retrieve(batch.id)).phase != ENDED and time.monotonic() < deadline:
            time.sleep(0.05)
        assert batch.phase == ENDED and batch.done == 6
        results = list(client.results(batch))
        assert sorted(r.custom_id for r in results) == [f"c{i}" for i in range(6)] and all(r.ok for r in results)
        wrong = (
            OpenAIBatchClient(server.base_url.removesuffix("/v1"), "sk-wrong-key-0000")
            if kind == "openai"
            else AnthropicBatchClient(server.base_url.removesuffix("/v1"), "sk-wrong-key-0000")
        )
        with pytest.raises(ProviderError):
            wrong.retrieve(batch.id)
        client.close()
        wrong.close()


def test_an_anthropic_errored_line_keeps_the_status_its_error_type_has_on_the_sync_api() -> None:
    import json as _json

    from jobs.providers.batch_api import _anthropic_line

    def line(etype: str) -> bytes:
        error = {"type": "error", "error": {"type": etype, "message": "m"}}
        return _json.dumps({"custom_id": "pb_x-0", "result": {"type": "errored", "error": error}}).encode()

    assert _anthropic_line(line("overloaded_error")).status_code == 529
    assert _anthropic_line(line("api_error")).status_code == 500
    assert _anthropic_line(line("rate_limit_error")).status_code == 429
    assert _anthropic_line(line("invalid_request_error")).status_code == 400
    assert _anthropic_line(line("something_new")).status_code == 400


@pytest.mark.parametrize("client_cls", [OpenAIBatchClient, AnthropicBatchClient])
@pytest.mark.parametrize("failure", ["500", "read timeout"])
def test_a_create_that_may_have_landed_is_not_sent_again(client_cls, failure: str) -> None:
    """The create call was retried after a 5xx or a read timeout like any other call, but it
    is not idempotent: a batch the provider accepted before its answer was lost was created a
    second time, and both were billed. Now the error goes up (the poll later finds the batch
    by its metadata, or uploads it); only a try that provably created nothing (a 429, no
    connection) is repeated."""
    clock, seen = Clock(), []
    sim = SimBatches(fake_complete, complete_after_s=5.0, clock=clock)
    inner = transport_for(sim, seen)
    creates = []

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.raw_path.decode()
        if request.method == "POST" and path.rstrip("/") in ("/v1/batches", "/v1/messages/batches"):
            creates.append(path)
            got = inner.handle_request(request)  # the provider creates it...
            if len(creates) == 1:  # ...and the answer is lost
                if failure == "500":
                    return httpx.Response(500, json={"error": {"message": "upstream reset"}})
                raise httpx.ReadTimeout("read timed out", request=request)
            return got
        return inner.handle_request(request)

    client = client_cls("http://sim", KEY, transport=httpx.MockTransport(handler))
    with pytest.raises(Exception) as exc:
        client.submit([chat(0), chat(1)], {"routebatch_batch": "pb1"})
    assert not isinstance(exc.value, ProviderError), "not a refusal: the batch may exist"
    assert len(creates) == 1
    assert client.list_since(datetime(2000, 1, 1, tzinfo=UTC)).batches == []
    assert len(client.list_since(datetime(1970, 1, 1, tzinfo=UTC)).batches) == 1, "one batch, found again by the poll"


def test_a_rate_limited_create_is_tried_again() -> None:
    clock, seen = Clock(), []
    sim = SimBatches(fake_complete, complete_after_s=5.0, clock=clock)
    inner = transport_for(sim, seen)
    limited = {"left": 2}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.raw_path.decode() == "/v1/batches" and limited["left"]:
            limited["left"] -= 1
            return httpx.Response(429, headers={"retry-after": "0"}, json={"error": {"message": "slow down"}})
        return inner.handle_request(request)

    client = OpenAIBatchClient("http://sim", KEY, transport=httpx.MockTransport(handler))
    assert client.submit([chat(0)], {}).total == 1 and limited["left"] == 0


@pytest.mark.parametrize("client_cls", [OpenAIBatchClient, AnthropicBatchClient])
def test_listing_since_a_time_reads_every_page_back_to_it(client_cls: type) -> None:
    """A reconcile must see every batch created since its record, not only the first page:
    250 batches two hours apart, listed since the 20th, page by page (100 at most each)."""
    clock, seen = Clock(), []
    sim = SimBatches(fake_complete, complete_after_s=5.0, clock=clock)
    client = client_cls("http://sim", KEY, transport=transport_for(sim, seen))
    start = clock.now
    ids = []
    for i in range(250):
        ids.append(client.submit([chat(i)], {}).id)
        clock.now += 7200
    seen.clear()
    since = datetime.fromtimestamp(start + 20 * 7200, UTC)
    listing = client.list_since(since)
    assert listing.complete and [b.id for b in listing.batches] == ids[20:][::-1]
    assert len(seen) == 3, "three pages of at most 100"
    assert all(b.created_at is not None and b.created_at >= since - CLOCK_SLACK for b in listing.batches)
    short = client.list_since(since, max_batches=150)
    assert not short.complete and len(short.batches) == 150, "stopped before reaching the time: it says so"
    assert client.list_since(datetime.fromtimestamp(clock.now + 3600, UTC)).batches == []


def test_a_list_that_says_more_but_gives_no_page_is_not_complete() -> None:
    """A provider answering ``has_more`` with an empty page (or a cursor that does not move)
    has not shown everything: the scan must not say it saw every batch, or a reconcile would
    upload a batch that may exist."""
    pages = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        pages["n"] += 1
        if pages["n"] == 1:
            b = {"id": "batch_a", "status": "in_progress", "created_at": 2_000_000_000, "request_counts": {"total": 1}}
            return httpx.Response(200, json={"data": [b], "has_more": True, "last_id": "batch_a"})
        if pages["n"] == 2:  # the same cursor again
            b = {"id": "batch_a", "status": "in_progress", "created_at": 2_000_000_000, "request_counts": {"total": 1}}
            return httpx.Response(200, json={"data": [b], "has_more": True, "last_id": "batch_a"})
        return httpx.Response(200, json={"data": [], "has_more": True})

    client = OpenAIBatchClient("http://sim", KEY, transport=httpx.MockTransport(handler))
    listing = client.list_since(datetime(2020, 1, 1, tzinfo=UTC))
    assert not listing.complete and pages["n"] == 2
    pages["n"] = 2
    assert not client.list_since(datetime(2020, 1, 1, tzinfo=UTC)).complete, "an empty page with has_more"
