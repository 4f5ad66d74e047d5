"""What a dataset reader yields: a valid row, or an invalid one with its reason."""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dataclass_field

from jobs.errors import DatasetError, RowError

__all__ = ["BadRow", "DatasetError", "PromptRow", "RowError"]


@dataclass(slots=True)
class PromptRow:
    line_no: int
    custom_id: str | None
    prompt: str
    messages: list | None = None
    max_tokens: int | None = None
    params: dict | None = None


@dataclass(slots=True)
class BadRow:
    line_no: int
    field: str | None
    reason: str
    custom_id: str | None = None
    raw: str | None = dataclass_field(default=None, repr=False)
