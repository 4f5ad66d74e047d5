"""Reports over a finished job: realised quality against a labelled file."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from jobs.db.models import Item
from jobs.db.session import session_scope
from jobs.runtime import Runtime


def grade_job(rt: Runtime, job_id: str, labels: Path) -> dict:
    """Accuracy of the answers the job got, from the recorded correctness in ``labels``."""
    from jobs.grading import grade

    with session_scope(rt.db_url) as s:
        rows = s.execute(
            select(Item.prompt, Item.model, Item.response).where(Item.job_id == job_id, Item.state == "succeeded")
        ).all()
    triples = []
    for prompt, model, response in rows:
        choices = (response or {}).get("choices") or [{}]
        text = (choices[0].get("message") or {}).get("content") or ""
        triples.append((prompt, model, text))
    report = grade(triples, labels, _model_columns(rt))
    return report.as_dict() if hasattr(report, "as_dict") else dict(report.__dict__)


def _model_columns(rt: Runtime) -> dict[str, str]:
    """Model key -> the labelled file's column: the model's API name (``name``) or its key."""
    return {key: (m.name or key) for key, m in rt.config.models.items()}
