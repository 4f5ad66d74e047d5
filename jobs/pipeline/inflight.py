"""Which items this process has handed to a provider and not yet seen recorded.

``FanOut`` marks an item just before its call goes out; ``generate_chunk`` forgets the
chunk's items once the fan-out returned (their answers are then in the ledger), and keeps the
lease it claimed them under until it returns (:func:`claimed`). What is
left after Ctrl-C are the calls that may have reached the provider: ``record_interrupted``
(``jobs.lifecycle.service``) records exactly those as maybe-sent, and releases the others.
"""

from __future__ import annotations

import threading
from datetime import datetime

_lock = threading.Lock()
_sent: dict[str, set[int]] = {}
_claims: dict[tuple[str, int], datetime] = {}


def mark(job_id: str, item_id: int) -> None:
    with _lock:
        _sent.setdefault(job_id, set()).add(item_id)


def forget(job_id: str, item_ids: list[int]) -> None:
    with _lock:
        got = _sent.get(job_id)
        if got is not None:
            got.difference_update(item_ids)
            if not got:
                del _sent[job_id]


def take(job_id: str) -> set[int]:
    """The job's marked items, removed from the registry."""
    with _lock:
        return _sent.pop(job_id, set())


def claimed(job_id: str, chunk: int, lease: datetime) -> None:
    """The generate step of ``chunk`` claims its items under ``lease`` (its own, to the
    microsecond): if it raises, exactly those are its to clean up."""
    with _lock:
        _claims[(job_id, chunk)] = lease


def take_claim(job_id: str, chunk: int) -> datetime | None:
    with _lock:
        return _claims.pop((job_id, chunk), None)
