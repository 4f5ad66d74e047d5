"""Job ids as people type them: the full id, or a unique prefix of it.

``routebatch list`` may shorten ids to fit the terminal (``batch_de3…``); every command
that takes a job id resolves it here, so a prefix that is unique works everywhere and an
ambiguous one is an error naming the candidates.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from jobs.errors import JobNotFound
from jobs.ledger.models import Job

_SHOWN = 5


def resolve_job_id(s: Session, prefix: str) -> str:
    """The id of the one job whose id is ``prefix`` or starts with it.

    A trailing ``…`` or ``...`` (copied from a shortened table cell) is ignored. Raises
    ``JobNotFound`` when no job matches or more than one does.
    """
    wanted = prefix.strip().removesuffix("…").removesuffix("...")
    if not wanted:
        raise JobNotFound(f"no job {prefix!r}: give a job id (see routebatch list)")
    if s.get(Job, wanted) is not None:
        return wanted
    escaped = wanted.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    ids = s.scalars(select(Job.id).where(Job.id.like(escaped + "%", escape="\\")).order_by(Job.id).limit(_SHOWN + 1)).all()
    if not ids:
        raise JobNotFound(f"no job {prefix!r}")
    if len(ids) > 1:
        shown = ", ".join(ids[:_SHOWN]) + (", ..." if len(ids) > _SHOWN else "")
        raise JobNotFound(f"job id prefix {prefix!r} is ambiguous: it matches {shown}; give more characters")
    return ids[0]
