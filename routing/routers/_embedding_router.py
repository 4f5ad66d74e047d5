"""Shared base of routers that read a prompt embedding (mf, sw_ranking).

Scoring is split in two so callers can reuse embeddings: ``score(prompts)`` embeds (through
the shared, disk-cached embedder) and calls ``score_embeddings(E)``, the cheap head.
Evaluation, ensembles and the benchmark call ``score_embeddings`` directly.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np

from routing.base import Router


def _flag(value: Any) -> bool:
    return str(value).strip().lower() not in {"0", "false", "no", "off", ""}


class EmbedderHolder:
    """Holds a router's embedder: chosen at construction, loaded on first use.

    Shared by every router that reads prompt embeddings (mf, sw_ranking, blend), so they
    all load, cache and override the embedder the same way.
    """

    def _init_embedder(
        self, embedder_spec: str, *, cache: Any = True, batch_size: Any = None, device: str | None = None, num_threads: Any = None
    ) -> None:
        self.embedder_spec = embedder_spec
        self._cache = _flag(cache)
        self._embedder_options = {
            k: v
            for k, v in {"batch_size": batch_size, "device": device, "num_threads": num_threads}.items()
            if v not in (None, "")
        }
        self._embedder: Any = None

    @property
    def embedder(self) -> Any:
        """The process-wide embedder (loaded on first use, never at construction)."""
        if self._embedder is None:
            from routing.embeddings import get_embedder

            opts = (
                self._embedder_options
                if not self.embedder_spec.startswith("http:")
                else {k: v for k, v in self._embedder_options.items() if k == "batch_size"}
            )
            self._embedder = get_embedder(self.embedder_spec, cache=self._cache, **opts)
        return self._embedder

    def use_embedder(self, embedder: Any) -> None:
        """Score through this embedder instead of the shared one (benchmarks, a private cache)."""
        self._embedder = embedder

    def embed(self, prompts: Sequence[str]) -> np.ndarray:
        return self.embedder.embed(list(prompts))


class EmbeddingRouter(EmbedderHolder, Router):
    """A router whose input is the L2-normalised prompt embedding."""

    def __init__(
        self,
        embedder_spec: str,
        *,
        embedder: str | None = None,
        cache: Any = True,
        batch_size: Any = None,
        device: str | None = None,
        num_threads: Any = None,
    ) -> None:
        from routing.routers._checkpoint import check_embedder

        #: the embedder the checkpoint was trained on, and the width of its vectors (if recorded)
        self.trained_embedder = embedder_spec
        self.trained_dim: int | None = None
        if embedder in ("", "auto"):
            embedder = None
        if embedder is not None:
            check_embedder(getattr(self, "path", None), embedder_spec, str(embedder))
        self._init_embedder(embedder or embedder_spec, cache=cache, batch_size=batch_size, device=device, num_threads=num_threads)

    def score(self, prompts: Sequence[str]) -> np.ndarray:
        if len(prompts) == 0:
            return np.zeros(0, dtype=np.float64)
        E = self.embed(prompts)
        self.check_width(E.shape[1])
        return self.score_embeddings(E)

    def check_width(self, width: int) -> None:
        """ValueError when the embedder's vectors are not as wide as the checkpoint's."""
        from routing.routers._checkpoint import check_width

        check_width(getattr(self, "path", None), self.trained_embedder, self.trained_dim, self.embedder_spec, width)

    @abstractmethod
    def score_embeddings(self, embeddings: np.ndarray) -> np.ndarray:
        """Strong-win probabilities for rows of prompt embeddings (n, dim)."""
