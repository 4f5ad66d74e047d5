"""The Router interface every router implements.

A router turns a batch of prompts into scores. Routing a whole batch at once is the point
of this project (RouteLLM scores one prompt per call), so the only abstract method takes a
sequence and returns an array.

What a score is, once, for every router: a float64 in [0, 1] per prompt, higher meaning
"more likely to need the strong model", and the same for a prompt alone or inside any batch
(no batch-relative normalisation) — with one deliberate exception: ``blend`` strips a
template that a batch of at least 16 prompts shares (``routing.templates``), so a templated
prompt scores as its varying part would; a batch without one scores exactly as before. It is an ordering, not necessarily a probability: only
``mf``/``sw_ranking``/``bert``/``causal_llm`` (and calibrated checkpoints) estimate the
strong-win probability; ``blend`` returns a rank (the mean of its parts' CDF values) and
``length`` a squashed length. So a fixed ``--threshold`` is only meaningful for the router
it was calibrated on (``routebatch calibrate``); ``--strong-share`` and ``--allocate budget``
use the scores as an ordering and work for any router.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

Prompt = str


class Router(ABC):
    """Scores prompts; higher means "more likely to need the strong model"."""

    #: name in the router table (``routing.registry``)
    name: str = "router"

    @abstractmethod
    def score(self, prompts: Sequence[Prompt]) -> np.ndarray:
        """One score per prompt (see the module docstring), float64 in [0, 1], in input order."""

    def describe(self) -> dict:
        """What the audit trail stores about this router (name, checkpoint, version)."""
        return {"name": self.name}
