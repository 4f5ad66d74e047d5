"""The one request-shape policy: the messages and the ``max_tokens`` a call carries.

Reservations, ``--allocate budget``, ``plan`` and the provider call all take the shape from
here, so they can never disagree about what one prompt costs at worst.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jobs.config import AppConfig


@dataclass(frozen=True)
class RequestShape:
    messages: list[dict[str, Any]]
    max_tokens: int


def request_shape(
    config: AppConfig,
    model: str,
    *,
    prompt: str,
    messages: list[dict[str, Any]] | None,
    row_max_tokens: int | None,
    job_max_tokens: int | None,
) -> RequestShape:
    """A row's own messages (else its prompt as one user message) and the winning ``max_tokens``:
    the row's, else the model's, else the job's, else the config default."""
    return RequestShape(
        messages if messages else [{"role": "user", "content": prompt}],
        config.max_tokens_for(model, row_max_tokens, job_max_tokens),
    )
