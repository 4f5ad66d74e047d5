"""Budget alerts and job outcomes reach webhooks exactly once, after commit, without secrets."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from jobs.lifecycle.service import JobSpec, run
from jobs.notify import webhooks


class _Receiver:
    """A real HTTP server that records each POSTed JSON body; ``fail_first`` 503s first."""

    def __init__(self, fail_first: int = 0) -> None:
        self.bodies: list[dict] = []
        self.fail_first = fail_first
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                if receiver.fail_first > 0:
                    receiver.fail_first -= 1
                    self.send_response(503)
                    self.end_headers()
                    return
                receiver.bodies.append(json.loads(raw))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook/SECRET-TOKEN"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def receiver():
    r = _Receiver()
    yield r
    r.close()


@pytest.fixture(autouse=True)
def _fresh_notifier():
    webhooks._notifier = None
    yield
    webhooks._notifier = None


def _prompts(path: Path, n: int) -> Path:
    with path.open("w") as fh:
        for i in range(n):
            fh.write(json.dumps({"custom_id": f"r{i}", "prompt": f"question {i} " + "word " * (i % 30)}) + "\n")
    return path


def test_capped_job_sends_50_80_100_and_completion_exactly_once(tmp_path: Path, sqlite_url: str, runtime_factory, receiver) -> None:
    data = _prompts(tmp_path / "in.jsonl", 150)
    probe = runtime_factory(f"sqlite:///{tmp_path / 'probe.db'}")
    all_strong = run(probe, JobSpec(input_file=str(data), router="length", threshold=0.0, max_tokens=64)).cost_usd
    webhooks._notifier = None
    rt = runtime_factory(sqlite_url, {"webhooks": [{"name": "ops", "url": receiver.url, "format": "json"}]})
    cap = round(0.3 * all_strong, 6)
    st = run(rt, JobSpec(input_file=str(data), router="length", strong_share=0.9, budget_usd=cap, on_exhausted="skip", max_tokens=64))
    # the cap bit (upgrades it could not pay were answered weak: the weak floor), so 100% was reached
    assert st.skipped_budget == 0 and st.strong_calls < 135
    webhooks.flush()
    kinds = [(b["kind"], b["data"].get("level")) for b in receiver.bodies]
    assert sorted(k for k in kinds if k[0] == "budget_alert") == [("budget_alert", 50), ("budget_alert", 80), ("budget_alert", 100)]
    assert kinds.count(("job_completed", None)) == 1
    assert all(b["data"].get("job_id") in (st.job_id, None) for b in receiver.bodies)


def test_a_second_run_does_not_repeat_alerts_of_a_shared_budget(tmp_path: Path, sqlite_url: str, runtime_factory, receiver) -> None:
    from jobs.ledger.migrate import upgrade
    from jobs.ledger.session import session_scope
    from jobs.money.budgets import create_budget

    data = _prompts(tmp_path / "in.jsonl", 60)
    rt = runtime_factory(sqlite_url, {"webhooks": [{"url": receiver.url, "format": "slack", "events": ["budget_alert"]}]})
    upgrade(sqlite_url)
    with session_scope(sqlite_url) as s:
        create_budget(s, "labeling", 0.02, "monthly")
    run(rt, JobSpec(input_file=str(data), router="length", budget="labeling", max_tokens=32))
    run(rt, JobSpec(input_file=str(data), router="length", budget="labeling", max_tokens=32))
    webhooks.flush()
    texts = [b["text"] for b in receiver.bodies]
    assert all(set(b) == {"text"} for b in receiver.bodies)  # Slack-compatible
    for level in (50, 80):
        assert sum(f"(alert {level}%)" in t for t in texts) == 1, texts


def test_rolled_back_events_send_nothing(sqlite_url: str, runtime_factory, receiver) -> None:
    from jobs.ledger.migrate import upgrade
    from jobs.ledger.session import session_scope
    from jobs.notify.webhooks import Notification, queue_after_commit

    runtime_factory(sqlite_url, {"webhooks": [{"url": receiver.url}]})
    upgrade(sqlite_url)
    with pytest.raises(RuntimeError), session_scope(sqlite_url) as s:
        queue_after_commit(s, Notification("job_failed", "never committed"))
        raise RuntimeError("roll back")
    with pytest.raises(RuntimeError), session_scope(sqlite_url) as s:
        queue_after_commit(s, Notification("job_failed", "never committed, a savepoint released"))
        s.begin_nested().commit()  # budget holds release savepoints inside the transaction
        raise RuntimeError("roll back")
    with session_scope(sqlite_url) as s:
        queue_after_commit(s, Notification("job_failed", "committed"))
    webhooks.flush()
    assert [b["message"] for b in receiver.bodies] == ["committed"]


def test_retries_then_delivers_and_never_carries_a_key(monkeypatch) -> None:
    from jobs.config import WebhookConfig

    flaky = _Receiver(fail_first=2)
    try:
        monkeypatch.setenv("SOME_KEY", "sk-live-abcdef123456")
        hook = WebhookConfig(url=flaky.url, backoff_s=0.01, retries=3)
        notifier = webhooks.Notifier([hook], secrets=["sk-live-abcdef123456"])
        notifier.submit(webhooks.Notification("job_failed", "provider said: bad key sk-live-abcdef123456", {"k": "sk-live-abcdef123456"}))
        notifier.flush(5)
        assert notifier.sent == 1 and len(flaky.bodies) == 1
        assert "sk-live-abcdef123456" not in json.dumps(flaky.bodies)
    finally:
        flaky.close()


def test_an_unreachable_webhook_never_blocks_or_fails_the_job(tmp_path: Path, sqlite_url: str, runtime_factory) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/x"
    rt = runtime_factory(sqlite_url, {"webhooks": [{"url": dead, "retries": 1, "backoff_s": 0.01, "timeout_s": 0.5}]})
    st = run(rt, JobSpec(input_file=str(_prompts(tmp_path / "in.jsonl", 20)), router="length"))
    assert st.status == "completed" and st.succeeded == 20
    webhooks.flush()
    assert webhooks._notifier is not None and webhooks._notifier.failed >= 1


def test_unknown_event_names_are_a_config_error() -> None:
    from pydantic import ValidationError

    from jobs.config import WebhookConfig

    with pytest.raises(ValidationError, match="unknown events"):
        WebhookConfig(url="https://example.invalid/x", events=("budget_alrt",))


def test_an_expired_job_sends_job_expired_once(tmp_path: Path, sqlite_url: str, runtime_factory, receiver) -> None:
    from jobs.lifecycle.states import JobState
    from jobs.settings import Settings

    rt = runtime_factory(
        sqlite_url,
        {
            "webhooks": [{"name": "ops", "url": receiver.url, "format": "json"}],
            "providers.sim.simulated.latency_ms": 40,
            "providers.sim.concurrency": 2,
        },
    )
    rt.settings = Settings(database_url=sqlite_url, broker_url=None, cancel_poll_s=0.05)
    spec = JobSpec(input_file=str(_prompts(tmp_path / "in.jsonl", 300)), router="length", chunk_size=40, completion_window="2s")
    st = run(rt, spec)
    assert st.status == JobState.EXPIRED
    webhooks.flush()
    kinds = [b["kind"] for b in receiver.bodies]
    assert kinds.count("job_expired") == 1 and "job_completed" not in kinds
