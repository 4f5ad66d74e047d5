"""What a dataset reader yields: a valid row, or an invalid one with its reason."""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dataclass_field

from pydantic import BaseModel, ConfigDict, Field

from jobs.errors import DatasetError, RowError

__all__ = ["BadRow", "DatasetError", "PromptRow", "RowError", "RowLimits"]

MAX_TOKENS_CAP = 10_000_000
"""Default upper bound of a row's ``max_tokens`` (fits the ledger's integer column with room);
the model's context window is a tighter bound, enforced by the caller that knows the model."""


class RowLimits(BaseModel):
    """Bounds a reader enforces on every row; a row over one becomes a ``BadRow``.

    The defaults keep one row well inside memory and inside what the ledger columns hold.
    Pass tighter ones to ``read_rows(..., limits=RowLimits(max_tokens=...))``.
    """

    model_config = ConfigDict(frozen=True)

    max_prompt_chars: int = Field(default=1_000_000, ge=1, description="Characters in a prompt, or in all of a row's messages.")
    max_line_bytes: int = Field(default=16 * 1024 * 1024, ge=1024, description="Bytes in one JSONL line or one CSV record.")
    max_tokens: int = Field(default=MAX_TOKENS_CAP, ge=1, le=2**31 - 1, description="Largest max_tokens a row may ask for.")
    max_depth: int = Field(default=64, ge=2, le=500, description="Nesting of JSON objects and lists in a row.")


@dataclass(slots=True)
class PromptRow:
    """A valid row. ``end_offset``/``next_line``: where the input continues after this row
    (see ``jobs.datasets.readers.read_rows``); None where the format has no byte offsets."""

    line_no: int
    custom_id: str | None
    prompt: str
    messages: list | None = None
    max_tokens: int | None = None
    params: dict | None = None
    end_offset: int | None = None
    next_line: int | None = None


@dataclass(slots=True)
class BadRow:
    """An invalid row: its line (1-based; the row number for Parquet), the field at fault
    (None for the whole line) and why. Every text here is safe to store and print."""

    line_no: int
    field: str | None
    reason: str
    custom_id: str | None = None
    raw: str | None = dataclass_field(default=None, repr=False)
    end_offset: int | None = None
    next_line: int | None = None
