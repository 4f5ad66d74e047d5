"""A deterministic stand-in for MiniLM: tests must not load a model or touch a cache."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np


class HashEmbedder:
    """Unit vectors seeded by a hash of the text; identical texts give identical rows."""

    model_id = "test-hash"

    def __init__(self, dim: int = 384) -> None:
        self.dim = dim
        self.texts_embedded = 0

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        rows = []
        for t in texts:
            seed = int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "big")
            v = np.random.default_rng(seed).standard_normal(self.dim)
            rows.append(v / np.linalg.norm(v))
        self.texts_embedded += len(texts)
        return np.asarray(rows, dtype=np.float32).reshape(len(texts), self.dim)
