"""Which items this process has handed to a provider and not yet seen recorded.

``FanOut`` marks an item just before its call goes out, with the lease its step claimed it
under; ``generate_chunk`` forgets the chunk's items once the fan-out returned (their
answers are then in the ledger), and keeps the lease it claimed them under until it returns
(:func:`claimed`). What is left after Ctrl-C are the calls that may have reached the
provider: ``record_interrupted`` (``jobs.lifecycle.service``) records exactly those as
maybe-sent, and releases the others.

Marks are kept per lease and claims per thread: a worker running steps in threads
(``celery -P threads``) may run two steps of one job, or two deliveries of one chunk, at
once, and a step that raises must clean up only its own.
"""

from __future__ import annotations

import threading
from datetime import datetime

_lock = threading.Lock()
_sent: dict[str, dict[int, datetime | None]] = {}  # job -> item -> the lease it was sent under
_claims: dict[tuple[str, int, int], datetime] = {}  # (job, chunk, thread) -> lease


def mark(job_id: str, item_id: int, lease: datetime | None = None) -> None:
    with _lock:
        _sent.setdefault(job_id, {})[item_id] = lease


def forget(job_id: str, item_ids: list[int]) -> None:
    with _lock:
        got = _sent.get(job_id)
        if got is not None:
            for item_id in item_ids:
                got.pop(item_id, None)
            if not got:
                del _sent[job_id]


def take(job_id: str, lease: datetime | None = None) -> set[int]:
    """The job's marked items, removed from the registry: all of them, or with ``lease``
    only those sent under it (one step's)."""
    with _lock:
        got = _sent.get(job_id)
        if got is None:
            return set()
        if lease is None:
            del _sent[job_id]
            return set(got)
        mine = {item_id for item_id, at in got.items() if at == lease}
        for item_id in mine:
            del got[item_id]
        if not got:
            del _sent[job_id]
        return mine


def claimed(job_id: str, chunk: int, lease: datetime) -> None:
    """The generate step of ``chunk`` claims its items under ``lease`` (its own, to the
    microsecond): if it raises, exactly those are its to clean up."""
    with _lock:
        _claims[(job_id, chunk, threading.get_ident())] = lease


def take_claim(job_id: str, chunk: int) -> datetime | None:
    """The lease this thread's generate step of ``chunk`` claimed under (the step and its
    error handler run in one thread)."""
    with _lock:
        return _claims.pop((job_id, chunk, threading.get_ident()), None)
