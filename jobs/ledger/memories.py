"""``--memory NAME``: the judged pairs adapting jobs keep for the next job of that name.

A memory is the set of ``judgements`` rows that carry its name, per model pair. Dropping a
memory takes the name off its rows (no later job learns from them); the rows stay, because
they are the audit trail of the jobs that made them.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from jobs.errors import MemoryNotFound
from jobs.ledger.models import Judgement


def list_memories(s: Session) -> list[dict[str, Any]]:
    rows = s.execute(
        select(
            Judgement.memory,
            Judgement.strong_model,
            Judgement.weak_model,
            func.count(),
            func.count(Judgement.weak_good),
            func.count(func.distinct(Judgement.job_id)),
            func.max(Judgement.created_at),
        )
        .where(Judgement.memory.is_not(None))
        .group_by(Judgement.memory, Judgement.strong_model, Judgement.weak_model)
        .order_by(Judgement.memory)
    ).all()
    out: dict[str, dict[str, Any]] = {}
    for name, strong, weak, total, judged, jobs, last in rows:
        m = out.setdefault(str(name), {"name": name, "pairs": 0, "jobs": 0, "model_pairs": [], "last": None})
        m["pairs"] += int(judged)
        m["jobs"] += int(jobs)
        m["model_pairs"].append({"strong": strong, "weak": weak, "pairs": int(judged), "rows": int(total)})
        stamp = last.isoformat() if last else None
        m["last"] = max(filter(None, [m["last"], stamp]), default=None)
    return list(out.values())


def show_memory(s: Session, name: str) -> dict[str, Any]:
    for m in list_memories(s):
        if m["name"] == name:
            verdicts = dict(
                s.execute(
                    select(Judgement.verdict, func.count()).where(Judgement.memory == name).group_by(Judgement.verdict)
                ).all()
            )
            jobs = list(s.scalars(select(Judgement.job_id).where(Judgement.memory == name).distinct()))
            return {**m, "verdicts": {str(k): int(v) for k, v in verdicts.items()}, "job_ids": sorted(jobs)}
    raise MemoryNotFound(f"no memory named {name!r} (routebatch memory list)")


def drop_memory(s: Session, name: str) -> int:
    """Forget ``name``: later jobs no longer learn from its pairs. Returns the pairs dropped."""
    shown = show_memory(s, name)
    s.execute(update(Judgement).where(Judgement.memory == name).values(memory=None))
    return int(shown["pairs"])
