"""The row limits of a job: the reader's defaults tightened by the models' context windows.

One function, so ``submit``, ``resume`` (continuing an ingest) and ``plan`` accept exactly
the same rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from jobs.datasets.rows import RowLimits

if TYPE_CHECKING:
    from jobs.config import AppConfig

CHARS_PER_TOKEN_MAX = 16
"""No tokenizer in use packs more than this many characters into one token on real text,
so a prompt longer than ``context_window * 16`` characters cannot fit any model's window
(a looser bound than the true token count: it never rejects a prompt that fits)."""


def limits_for_models(config: AppConfig, models: Iterable[str]) -> RowLimits:
    """``max_tokens`` at most the smallest context window of ``models`` (and their
    fallbacks); a prompt (or all of a row's messages) at most what that window could hold."""
    windows = [config.model(m).context_window for m in config.models_with_fallbacks(models)]
    base = RowLimits()
    if not windows:
        return base
    window = min(windows)
    return RowLimits(
        max_tokens=min(base.max_tokens, window),
        max_prompt_chars=min(base.max_prompt_chars, window * CHARS_PER_TOKEN_MAX),
        max_line_bytes=base.max_line_bytes,
        max_depth=base.max_depth,
    )
