"""The Router interface every router implements.

A router turns a batch of prompts into strong-win probabilities: the chance that the
strong model's answer is meaningfully better than the weak one's. Routing a whole batch at
once is the point of this project (RouteLLM scores one prompt per call), so the only
abstract method takes a sequence and returns an array.
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
        """Strong-win probability per prompt, float64 in [0, 1], same order as ``prompts``."""

    def describe(self) -> dict:
        """What the audit trail stores about this router (name, checkpoint, version)."""
        return {"name": self.name}
