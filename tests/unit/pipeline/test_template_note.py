"""A job whose prompts share a long template says so once in ``status`` notes (#11 item 1)."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import func, select

from jobs.ledger.models import LedgerEvent
from jobs.ledger.session import session_scope
from jobs.lifecycle.service import JobSpec, run

PREFIX = (
    "You are labelling customer messages. Read the message and answer with one word: billing, "
    "shipping, account or other. Be strict: a message about a refund is billing; a message about "
    "a lost parcel is shipping; a password reset is account.\n\n"
    "Example: 'My card was charged twice' -> billing\n\n"
    "Example: 'Where is my order?' -> shipping\n\n"
)


def test_a_templated_job_records_the_stripped_template_once(tmp_path: Path, sqlite_url: str, runtime_factory) -> None:
    data = tmp_path / "in.jsonl"
    with data.open("w") as fh:
        for i in range(120):
            fh.write(
                json.dumps({"custom_id": f"m{i}", "prompt": PREFIX + f"Message: order {i} " + "and more words " * (i % 7)}) + "\n"
            )
    rt = runtime_factory(sqlite_url)
    st = run(rt, JobSpec(input_file=str(data), router="blend", threshold=0.5, chunk_size=40))
    notes = [n for n in st.notes if n.startswith("template:")]
    assert len(notes) == 1 and "shared prefix stripped" in notes[0], st.notes
    with session_scope(sqlite_url) as s:
        n = s.scalar(
            select(func.count())
            .select_from(LedgerEvent)
            .where(LedgerEvent.job_id == st.job_id, LedgerEvent.message.like("template:%"))
        )
        data_ = s.scalar(select(LedgerEvent.data).where(LedgerEvent.job_id == st.job_id, LedgerEvent.message.like("template:%")))
    assert n == 1 and data_["prefix_chars"] >= 300
    assert PREFIX[:40] not in json.dumps(data_), "the template text is the user's data: only its size is recorded"
