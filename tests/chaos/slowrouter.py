"""A router that takes its time, so a test can kill a score worker in the middle of a chunk.

Workers load it with ``routebatch worker --queue score --import tests.chaos.slowrouter``;
the job names it as ``--router slow:delay=0.05`` (seconds per prompt).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from routing import register
from routing.baselines import LengthRouter


class SlowRouter(LengthRouter):
    name = "slow"

    def __init__(self, delay: float = 0.05, scale: float = 100.0) -> None:
        super().__init__(scale=scale)
        self.delay = float(delay)

    def score(self, prompts: Sequence[str]) -> np.ndarray:
        time.sleep(self.delay * len(prompts))
        return super().score(prompts)


register("slow", "tests.chaos.slowrouter:SlowRouter")
