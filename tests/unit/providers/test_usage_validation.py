"""Provider-controlled spend (issue 10, item 7): ``n`` is never sent above 1, and a provider's
``usage`` is validated, flagged and capped before it is charged; a lying provider never
costs a received answer."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from jobs.ledger.models import Attempt as AttemptRow
from jobs.ledger.models import Item
from jobs.ledger.session import session_scope
from jobs.lifecycle.service import JobSpec, run
from jobs.money.tokens import input_token_bound
from jobs.providers import Attempt, CallResult, ChatRequest, ProviderPool
from jobs.providers.pool import COMPLETION_MARGIN_TOKENS, PROMPT_MARGIN_TOKENS, check_usage
from tests.unit.providers.conftest import make_config

MSGS = [{"role": "user", "content": "What is the capital of France?"}]


def attempt(prompt: int, completion: int, cached: int = 0, estimated: bool = False) -> Attempt:
    now = datetime.now(UTC)
    return Attempt("a1", "weak", "p", 1, 200, None, None, None, 1, prompt, completion, cached, estimated, now, now)


def test_usage_within_bounds_is_kept() -> None:
    a = attempt(12, 10, 4)
    check_usage(a, ChatRequest("c", "weak", MSGS, 10), 10)
    assert (a.prompt_tokens, a.completion_tokens, a.cached_tokens, a.usage_estimated, a.error_message) == (12, 10, 4, False, None)


@pytest.mark.parametrize(
    "usage, expected",
    [
        ((-1_000_000, -5, 0), (0, 0, 0)),
        ((10, 1_000_000_000, 0), (10, 10 + COMPLETION_MARGIN_TOKENS, 0)),
        ((10**12, 3, 0), (input_token_bound(MSGS) + PROMPT_MARGIN_TOKENS, 3, 0)),
        ((10, 3, 50), (10, 3, 10)),
        ((10, 3, -7), (10, 3, 0)),
    ],
)
def test_usage_outside_bounds_is_capped_and_flagged(usage: tuple[int, int, int], expected: tuple[int, int, int]) -> None:
    a = attempt(*usage)
    req = ChatRequest("c", "weak", MSGS, 10)
    check_usage(a, req, 10)
    assert (a.prompt_tokens, a.completion_tokens, a.cached_tokens) == expected
    assert a.usage_estimated and a.error_message and a.error_message.startswith("usage out of bounds")
    assert a.ok  # the call still succeeded
    note = a.error_message
    check_usage(a, req, 10)  # idempotent: the ledger runs it again
    assert a.error_message == note and (a.prompt_tokens, a.completion_tokens, a.cached_tokens) == expected


def _pool_call(usage: object, params: dict | None = None) -> tuple[CallResult, list[dict]]:
    sent: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        body = {"id": "x", "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris."}, "finish_reason": "stop"}]}
        if usage is not None:
            body["usage"] = usage
        return httpx.Response(200, json=body)

    pool = ProviderPool(make_config(), transport=httpx.MockTransport(handler))
    res = asyncio.run(pool.complete(ChatRequest("c1", "weak", MSGS, 10, params or {})))
    return res, sent


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": "12", "completion_tokens": 3},
        {"prompt_tokens": 12, "completion_tokens": "lots"},
        {"prompt_tokens": 12.5, "completion_tokens": 3},
        {"prompt_tokens": True, "completion_tokens": 3},
        {"prompt_tokens": None},
        "usage",
        [1, 2],
    ],
)
def test_usage_that_is_not_numbers_is_counted_locally(usage: object) -> None:
    res, _ = _pool_call(usage)
    assert res.ok and res.attempts[0].usage_estimated and res.attempts[0].completion_tokens >= 1


def test_negative_usage_from_the_wire_is_capped_at_parse() -> None:
    res, _ = _pool_call({"prompt_tokens": -50, "completion_tokens": 10**9, "prompt_tokens_details": {"cached_tokens": 10**6}})
    a = res.attempts[0]
    assert res.ok and (a.prompt_tokens, a.completion_tokens, a.cached_tokens) == (0, 10 + COMPLETION_MARGIN_TOKENS, 0)
    assert a.usage_estimated and "completion_tokens 1000000000" in (a.error_message or "")


@pytest.mark.parametrize("params", [{"n": 20}, {"n": 0}, {"n": "2"}, {"n": True}, {"best_of": 5}, {"n": 1.5}])
def test_n_above_one_is_never_sent(params: dict) -> None:
    res, sent = _pool_call(None, params)
    assert sent == [] and not res.ok and res.attempts == []
    assert res.error and "one choice per prompt" in res.error


def test_n_of_one_and_wire_params_are_dropped_from_the_body() -> None:
    params = {"n": 1, "temperature": 0.2, "max_completion_tokens": 100_000, "stream": True, "_headers": {"X": "1"}}
    res, sent = _pool_call(None, params)
    assert res.ok and len(sent) == 1
    body = sent[0]
    assert body["temperature"] == 0.2 and body["max_tokens"] == 10
    assert not {"n", "max_completion_tokens", "stream", "_headers"} & set(body)


def _write(path: Path, n: int) -> Path:
    with path.open("w") as fh:
        for i in range(n):
            fh.write(json.dumps({"custom_id": f"q{i}", "prompt": f"question {i} about things"}) + "\n")
    return path


@pytest.mark.parametrize("fault", ["negative_usage", "huge_usage"])
def test_lying_usage_through_a_whole_run_with_a_budget(tmp_path: Path, sqlite_url: str, runtime_factory, fault: str) -> None:
    """Every answer is recorded, nothing is charged below zero or above its hold: no job death
    on ck_budget_windows_non_negative, no $3,000 overdraft."""
    data = _write(tmp_path / "in.jsonl", 40)
    rt = runtime_factory(sqlite_url, {"providers.sim.simulated.faults": {fault: 1.0}})
    st = run(rt, JobSpec(input_file=str(data), router="length", threshold=0.0, budget_usd=1.0, max_tokens=32))
    assert st.status == "completed"
    budget = st.budgets["job"]
    assert 0 <= budget["spent_usd"] <= 1.0 and budget["overdraft_usd"] == 0 and budget["reserved_usd"] == 0
    with session_scope(sqlite_url) as s:
        states = s.scalars(select(Item.state)).all()
        rows = s.execute(select(AttemptRow.usage_estimated, AttemptRow.error_message, AttemptRow.completion_tokens,
                                AttemptRow.prompt_tokens, AttemptRow.cost_micro_usd)).all()
    assert states == ["succeeded"] * 40
    assert len(rows) == 40
    for estimated, message, completion, prompt, cost in rows:
        assert estimated and message and message.startswith("usage out of bounds")
        assert 0 <= completion <= 32 and prompt >= 0 and cost >= 0


UNSTORABLE_ANSWER = (b'{"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", '
                     b'"content": "a\\u0000b\\ud800c \\ud83d\\ude00"}, "finish_reason": "stop"}], '
                     b'"usage": {"prompt_tokens": 3, "completion_tokens": 2}}')
UNSTORABLE_ERROR = b'{"error": {"message": "bad \\u0000 request \\udc00"}}'


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
@pytest.mark.parametrize("status, body", [(200, UNSTORABLE_ANSWER), (400, UNSTORABLE_ERROR)])
def test_provider_text_a_database_refuses_never_loses_the_answer(
    tmp_path: Path, request: pytest.FixtureRequest, db: str, status: int, body: bytes
) -> None:
    """NUL (refused by Postgres text) and lone surrogates (refused by every UTF-8 encoder) in a
    provider's answer or error are replaced, so the batch is recorded instead of killing the job."""
    from jobs.config import parse_config
    from jobs.runtime import Runtime
    from jobs.settings import Settings
    from tests.unit.providers.test_header_injection import RawProvider

    url = f"sqlite:///{tmp_path / 'ledger.db'}" if db == "sqlite" else request.getfixturevalue("pg_url")
    data = _write(tmp_path / "in.jsonl", 5)
    with RawProvider(status=status, body=body) as provider:
        cfg = parse_config({
            "providers": {"raw": {"base_url": provider.base_url, "retry": {"max_attempts": 1}}},
            "models": {"strong": {"provider": "raw", "input_usd_per_mtok": 1, "output_usd_per_mtok": 1},
                       "weak": {"provider": "raw", "input_usd_per_mtok": 1, "output_usd_per_mtok": 1}},
            "defaults": {"strong": "strong", "weak": "weak", "router": "length"},
        })
        rt = Runtime(Settings(database_url=url, broker_url=None), cfg)
        try:
            st = run(rt, JobSpec(input_file=str(data), router="length", threshold=0.0, budget_usd=1.0))
        finally:
            rt.close()
    assert st.status == "completed"
    with session_scope(url) as s:
        items = s.execute(select(Item.state, Item.response, Item.error)).all()
    assert len(items) == 5
    for state, response, error in items:
        if status == 200:
            assert state == "succeeded"
            assert response["choices"][0]["message"]["content"] == "a\ufffdb\ufffdc \U0001F600"
        else:
            assert state == "failed" and error and "\x00" not in error and "request" in error


@pytest.mark.parametrize("rid", [{"a": 1}, 12345, ["x"], "r" * 5000, "a\u0000b"])
def test_any_request_id_a_provider_sends_is_storable(rid: object, sqlite_url: str, runtime_factory, tmp_path: Path) -> None:
    """``id`` is provider-controlled: a dict or a 5,000-character id must not fail the batch."""
    from jobs.config import parse_config
    from jobs.runtime import Runtime
    from jobs.settings import Settings
    from tests.unit.providers.test_header_injection import RawProvider

    body = json.dumps({"id": rid, "object": "chat.completion", "usage": {"prompt_tokens": 3, "completion_tokens": 1},
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]})
    data = _write(tmp_path / "in.jsonl", 3)
    with RawProvider(body=body.encode()) as provider:
        cfg = parse_config({
            "providers": {"raw": {"base_url": provider.base_url}},
            "models": {"strong": {"provider": "raw", "input_usd_per_mtok": 1, "output_usd_per_mtok": 1},
                       "weak": {"provider": "raw", "input_usd_per_mtok": 1, "output_usd_per_mtok": 1}},
            "defaults": {"strong": "strong", "weak": "weak", "router": "length"},
        })
        rt = Runtime(Settings(database_url=sqlite_url, broker_url=None), cfg)
        try:
            st = run(rt, JobSpec(input_file=str(data), router="length", threshold=0.0))
        finally:
            rt.close()
    assert st.status == "completed" and st.succeeded == 3
    with session_scope(sqlite_url) as s:
        ids = s.scalars(select(AttemptRow.request_id)).all()
    assert len(ids) == 3 and all(isinstance(i, str) and 0 < len(i) <= 200 and "\x00" not in i for i in ids)
