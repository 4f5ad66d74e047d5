"""Reports over a finished job: realised quality against a labelled file."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from jobs.ledger.models import Item
from jobs.ledger.session import session_scope
from jobs.runtime import Runtime


def grade_job(rt: Runtime, job_id: str, labels: Path) -> dict:
    """Accuracy of the answers the job got, from the recorded correctness in ``labels``.

    The model -> labels-column mapping is the simulated provider's ``replay_models``; for a
    model without one, its API name (``name``) or key is taken as the column.
    """
    from jobs.providers.answers import answer_text
    from jobs.reports.grading import grade, model_columns_from_config

    with session_scope(rt.db_url) as s:
        rows = s.execute(
            select(Item.prompt, Item.model, Item.response).where(Item.job_id == job_id, Item.state == "succeeded")
        ).all()
    triples = []
    for prompt, model, response in rows:
        triples.append((prompt, model, answer_text(response) or ""))
    columns = {key: (m.name or key) for key, m in rt.config.models.items()}
    columns.update(model_columns_from_config(rt.config))
    return grade(triples, labels, columns).to_dict()
