"""Answer-length estimates for ``plan``: kept as the name reports import.

The model (``LengthModel``, ``load_history``, the prompt-length buckets) moved to
``jobs.money.estimates`` so that ``--allocate budget`` in ``jobs/pipeline`` can size its
allocation on the same estimates (the pipeline may not import ``jobs/reports``). The names
stay importable from here.
"""

from __future__ import annotations

from jobs.money.estimates import (
    HIGH_Q,
    HISTORY_LIMIT,
    LOW_Q,
    MIN_BUCKET,
    LengthModel,
    bucket_of,
    history_in,
    load_history,
    text_bytes,
)

__all__ = [
    "HIGH_Q",
    "HISTORY_LIMIT",
    "LOW_Q",
    "MIN_BUCKET",
    "LengthModel",
    "bucket_of",
    "history_in",
    "load_history",
    "text_bytes",
]
