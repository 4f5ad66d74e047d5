"""Budget alerts and job outcomes POSTed to webhooks, after the ledger has committed them.

Why after commit: an alert is the ledger's event (``ledger_events``, unique by dedupe key),
so a webhook fires exactly once per committed event; a transaction that rolls back sends
nothing, and a redelivered task that finds the event already there sends nothing again.

Sending never blocks a job: payloads go on an in-process queue drained by one daemon thread
(tenacity retries with back-off; failures are logged, never raised). ``Runtime.close``
flushes it with a time limit. The webhook URL itself may carry a token (Slack's does), so it
is never logged; payload text is redacted with every configured provider key.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import event
from sqlalchemy.orm import Session

if TYPE_CHECKING:
    from jobs.config import AppConfig, WebhookConfig

log = logging.getLogger(__name__)

EVENT_KINDS = ("budget_alert", "job_completed", "job_failed", "job_cancelled", "job_budget_exhausted", "job_expired")
_PENDING_KEY = "routebatch_notifications"


@dataclass(frozen=True)
class Notification:
    kind: str
    message: str
    data: dict[str, Any] = field(default_factory=dict)


def queue_after_commit(s: Session, note: Notification) -> None:
    """Send ``note`` to the process's webhooks once ``s`` commits (dropped on rollback)."""
    pending: list[Notification] = s.info.setdefault(_PENDING_KEY, [])
    pending.append(note)


@event.listens_for(Session, "after_commit")
def _after_commit(s: Session) -> None:
    if s.in_nested_transaction():  # SQLAlchemy fires this when a savepoint is released too
        return
    pending = s.info.pop(_PENDING_KEY, None)
    if pending and _notifier is not None:
        for note in pending:
            _notifier.submit(note)


@event.listens_for(Session, "after_soft_rollback")
def _after_rollback(s: Session, previous_transaction: Any) -> None:
    # A savepoint's rollback (budget holds use them) keeps the outer transaction's notes.
    if previous_transaction.parent is None:
        s.info.pop(_PENDING_KEY, None)


def payload(hook: WebhookConfig, note: Notification) -> dict[str, Any]:
    """Slack-compatible (``{"text": ...}``) or generic JSON (kind, message, data)."""
    if hook.format == "slack":
        return {"text": f"routebatch: {note.message}"}
    return {"source": "routebatch", "kind": note.kind, "message": note.message, "data": note.data}


class Notifier:
    """One daemon thread per process posting notifications to the configured webhooks."""

    def __init__(self, hooks: Iterable[WebhookConfig], secrets: Iterable[str | None] = ()) -> None:
        self.hooks = list(hooks)
        self.secrets = [s for s in secrets if s]
        self._queue: queue.Queue[Notification | None] = queue.Queue()
        self._thread = threading.Thread(target=self._drain, name="routebatch-webhooks", daemon=True)
        self._thread.start()
        self.sent = 0
        self.failed = 0

    def submit(self, note: Notification) -> None:
        self._queue.put(note)

    def flush(self, timeout_s: float = 5.0) -> None:
        """Wait (at most ``timeout_s``) until everything submitted so far was tried."""
        done = threading.Event()
        self._flushed = done
        self._queue.put(None)
        done.wait(timeout_s)

    def _drain(self) -> None:
        while True:
            note = self._queue.get()
            if note is None:
                flushed = getattr(self, "_flushed", None)
                if flushed is not None:
                    flushed.set()
                continue
            for hook in self.hooks:
                if note.kind in hook.events:
                    self._post(hook, note)

    def _post(self, hook: WebhookConfig, note: Notification) -> None:
        import httpx
        from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

        from jobs.providers.redact import redact, redact_json

        body = redact_json(payload(hook, note), self.secrets)
        try:
            for attempt in Retrying(
                retry=retry_if_exception_type(httpx.HTTPError),
                stop=stop_after_attempt(hook.retries + 1),
                wait=wait_exponential(multiplier=hook.backoff_s, max=10.0),
                reraise=True,
            ):
                with attempt:
                    resp = httpx.post(hook.url, json=body, timeout=hook.timeout_s)
                    if resp.status_code >= 500 or resp.status_code == 429:
                        resp.raise_for_status()
            self.sent += 1
            if resp.status_code >= 400:
                log.warning("webhook %s refused a %s notification: HTTP %d", hook.name, note.kind, resp.status_code)
        except httpx.HTTPError as exc:
            self.failed += 1
            log.warning("webhook %s: %s notification not delivered (%s)", hook.name, note.kind, redact(type(exc).__name__))


_notifier: Notifier | None = None
_lock = threading.Lock()


def configure(config: AppConfig) -> Notifier | None:
    """Start (once per process) the notifier for the config's webhooks; None without any."""
    global _notifier
    if not config.webhooks:
        return None
    with _lock:
        if _notifier is None or _notifier.hooks != list(config.webhooks):
            keys = [p.api_key() for p in config.providers.values()]
            _notifier = Notifier(config.webhooks, keys)
        return _notifier


def flush(timeout_s: float = 5.0) -> None:
    if _notifier is not None:
        _notifier.flush(timeout_s)
