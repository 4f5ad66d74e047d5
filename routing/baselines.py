"""Baseline routers: the yardsticks every learned router must beat."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from routing.base import Router


class RandomRouter(Router):
    """Uniform scores that depend only on the prompt text and the seed.

    Hashing the prompt (instead of drawing from a global RNG) makes a re-run, a resumed
    job or a redelivered chunk score every prompt exactly as before.
    """

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)

    def score(self, prompts: Sequence[str]) -> np.ndarray:
        out = np.empty(len(prompts), dtype=np.float64)
        salt = str(self.seed).encode()
        for i, p in enumerate(prompts):
            digest = hashlib.blake2b(p.encode("utf-8", "surrogatepass"), digest_size=8, key=salt).digest()
            out[i] = int.from_bytes(digest, "big") / 2.0**64
        return out

    def describe(self) -> dict:
        return {"name": self.name, "seed": self.seed}


class LengthRouter(Router):
    """Longer prompts are harder: score = 1 - exp(-words / scale).

    A surprisingly strong baseline on MMLU and GSM8K (APGR about 0.58-0.60); monotone in
    length, so only the ranking matters for quantile thresholds.
    """

    name = "length"

    def __init__(self, scale: float = 100.0) -> None:
        self.scale = float(scale)

    def score(self, prompts: Sequence[str]) -> np.ndarray:
        words = np.fromiter((len(p.split()) + len(p) / 1e6 for p in prompts), dtype=np.float64, count=len(prompts))
        return 1.0 - np.exp(-words / self.scale)

    def describe(self) -> dict:
        return {"name": self.name, "scale": self.scale}
