"""``blend``: a rank-blend of a text-feature model and a prompt-embedding model.

Why two parts. On the RouteLLM MMLU/GSM8K labels the single strongest signal is how much
work a prompt is (length, numbers, format: see ``blend_features``), and it transfers across
subjects and tasks; the embedding adds *what* the prompt is about, which helps within a
domain but overfits across domains. Each part alone is near RouteLLM's routers; ranked and
averaged they beat both, and every learned RouteLLM router, on all three cross-fitted
targets (see ``docs/evaluation.md``).

The parts, both linear and tiny (the checkpoint is a few kB):

* ``features``: two L2-regularised logistic regressions on the standardised text features,
  once as they are and once multiplied by a free-form flag (prompts without A-D options),
  which gives free-form tasks like GSM8K their own slopes. Part score =
  P(strong right) - P(weak right): the expected quality gain of the strong model, which is
  exactly the quantity APGR rewards ranking by.
* ``embedding``: ridge regression of (strong - weak) on ``[e, e * free]`` (e the L2-normalised
  MiniLM embedding), again with a free-form copy so GSM8K-like prompts get their own direction.

Blending: each part's score is mapped through its empirical CDF on the training prompts
(stored as a 1001-point quantile grid), and the router returns the weighted mean of those
CDF values. That is a rank average that needs no batch (a prompt scores the same alone or
in a batch of 10,000), lies in [0, 1] and is monotone in each part. It is a ranking score,
not a calibrated probability: choose thresholds with ``routebatch calibrate``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from routing.base import Router
from routing.routers._embedding_router import EmbedderHolder
from routing.routers.blend_features import FEATURE_NAMES, feature_matrix
from routing.templates import TemplateInfo

NAME = "blend"
GRID = 1001
DEFAULTS: dict[str, float] = {"C": 0.1, "alpha": 10.0, "w_features": 1.0, "w_embedding": 1.0}
_FREE = FEATURE_NAMES.index("has_options")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _rowdot(X: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``X @ v`` computed row by row: BLAS gemv rounds a row differently depending on how
    many rows come with it, and a prompt must score the same alone or in a batch."""
    return (X * v).sum(axis=1)


def _free_flag(F: np.ndarray) -> np.ndarray:
    """1.0 for prompts without multiple-choice options (free-form questions), else 0.0."""
    return (1.0 - F[:, _FREE])[:, None]


def feature_design(F: np.ndarray) -> np.ndarray:
    """Text features, their free-form copies, and the free-form flag itself."""
    free = _free_flag(F)
    return np.hstack([F, F * free, free])


def embedding_design(E: np.ndarray, F: np.ndarray) -> np.ndarray:
    """Embedding and its free-form copy."""
    E = np.asarray(E, dtype=np.float64)
    return np.hstack([E, E * _free_flag(F)])


class BlendModel:
    """The fitted arrays; scoring is a few matrix-vector products, pure numpy."""

    def __init__(self, arrays: dict[str, np.ndarray], config: dict[str, Any]) -> None:
        self.a = {k: np.asarray(v, dtype=np.float64) for k, v in arrays.items()}
        self.config = config

    # -- parts
    def part_features(self, F: np.ndarray) -> np.ndarray:
        X = (feature_design(F) - self.a["f_mean"]) / self.a["f_scale"]
        return _sigmoid(_rowdot(X, self.a["coef_strong"]) + self.a["b_strong"][0]) - _sigmoid(
            _rowdot(X, self.a["coef_weak"]) + self.a["b_weak"][0]
        )

    def part_embedding(self, E: np.ndarray, F: np.ndarray) -> np.ndarray:
        """``_rowdot(embedding_design(E, F), coef) + b`` without building the design matrix.

        numpy sums a row pairwise, splitting a row of 2d values (d a multiple of 8) into its
        two halves, so the sum over ``[e, e * free]`` is the sum over ``e`` plus the sum over
        ``e * free`` bit for bit; the second is 0 on rows with options and is only computed on
        free-form rows. ``part_embedding_reference`` is the plain formula (tests compare).
        """
        coef = self.a["coef_emb"]
        d = coef.size // 2
        E = np.asarray(E, dtype=np.float64)
        if E.shape[1] != d or d % 8:
            return self.part_embedding_reference(E, F)
        out = _rowdot(E, coef[:d])
        free = _free_flag(F)[:, 0] != 0.0
        if free.any():
            out[free] = out[free] + _rowdot(E[free] * _free_flag(F)[free], coef[d:])
        return out + self.a["b_emb"][0]

    def part_embedding_reference(self, E: np.ndarray, F: np.ndarray) -> np.ndarray:
        return _rowdot(embedding_design(E, F), self.a["coef_emb"]) + self.a["b_emb"][0]

    def score_arrays(self, E: np.ndarray, F: np.ndarray) -> np.ndarray:
        """Blended score in [0, 1] for embeddings ``E`` (n, dim) and text features ``F``."""
        if E.shape[0] == 0:
            return np.zeros(0)
        if E.shape[1] * 2 != self.a["coef_emb"].size:
            raise ValueError(
                f"embedding width {E.shape[1]} does not match this checkpoint's "
                f"{self.a['coef_emb'].size // 2} (trained on embedder {self.config.get('embedder', 'minilm')!r}); "
                "use the embedder it was trained with"
            )
        levels = np.linspace(0.0, 1.0, GRID)
        u_f = np.interp(self.part_features(F), self.a["grid_features"], levels)
        u_e = np.interp(self.part_embedding(E, F), self.a["grid_embedding"], levels)
        wf, we = float(self.config["w_features"]), float(self.config["w_embedding"])
        return (wf * u_f + we * u_e) / (wf + we)


def fit_blend(E: np.ndarray, F: np.ndarray, strong: np.ndarray, weak: np.ndarray, **options: Any) -> BlendModel:
    """Fit both parts on training prompts (embeddings ``E``, features ``F``, 0/1 or graded labels).

    Graded labels (judge scores) are fine for the embedding part; the feature part's
    logistic regressions need 0/1 labels, so graded ones are split at their median.
    Deterministic: lbfgs and a closed-form ridge, no random state.
    """
    from sklearn.linear_model import LogisticRegression, Ridge

    cfg = {**DEFAULTS, **{k: float(v) for k, v in options.items() if k in DEFAULTS}}
    strong = np.asarray(strong, dtype=np.float64)
    weak = np.asarray(weak, dtype=np.float64)
    X = feature_design(F)
    mean = X.mean(0)
    scale = X.std(0)
    scale[scale < 1e-12] = 1.0
    Xs = (X - mean) / scale

    def binary(v: np.ndarray) -> np.ndarray:
        if np.isin(v, (0.0, 1.0)).all():
            return v.astype(int)
        return (v > np.median(np.concatenate([strong, weak]))).astype(int)

    arrays: dict[str, np.ndarray] = {"f_mean": mean, "f_scale": scale}
    for side, v in (("strong", strong), ("weak", weak)):
        yb = binary(v)
        if yb.min() == yb.max():  # one class only: constant probability
            arrays[f"coef_{side}"] = np.zeros(X.shape[1])
            arrays[f"b_{side}"] = np.array([20.0 if yb[0] else -20.0])
            continue
        lr = LogisticRegression(C=cfg["C"], max_iter=5000).fit(Xs, yb)
        arrays[f"coef_{side}"] = lr.coef_[0]
        arrays[f"b_{side}"] = lr.intercept_.astype(np.float64)
    ridge = Ridge(alpha=cfg["alpha"]).fit(embedding_design(E, F), strong - weak)
    arrays["coef_emb"] = ridge.coef_.astype(np.float64)
    arrays["b_emb"] = np.array([float(ridge.intercept_)])
    model = BlendModel(arrays, cfg)
    q = np.linspace(0.0, 1.0, GRID)
    # np.interp needs increasing x: quantiles are non-decreasing; nudge repeats apart
    for part, values in (("features", model.part_features(F)), ("embedding", model.part_embedding(E, F))):
        grid = np.quantile(values, q)
        grid = grid + np.arange(GRID) * 1e-12
        model.a[f"grid_{part}"] = grid
    return model


def save_blend(model: BlendModel, out: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Write ``router.json`` + ``weights.npz`` (float64: a few kB, and scores round-trip exactly)."""
    from routing.routers._checkpoint import save_arrays, write_config

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    arrays = dict(model.a)
    save_arrays(out, **arrays)
    write_config(out, {"router": NAME, "features": list(FEATURE_NAMES), **model.config, **(meta or {})})
    return out


def load_blend(directory: str | Path) -> BlendModel:
    from routing.routers._checkpoint import load_arrays, read_config

    cfg = read_config(directory, expect=NAME)
    if cfg.get("features") != list(FEATURE_NAMES):
        raise ValueError(f"{directory}: trained with a different feature set; retrain it")
    return BlendModel(load_arrays(directory), cfg)


def _check_pair(config: dict[str, Any], asked: dict[str, str | None]) -> None:
    """A blend checkpoint scores one pair; refuse a request for another one it knows nothing of."""
    for side, asked_model in asked.items():
        known = config.get(side)
        if asked_model and known and asked_model != known:
            raise ValueError(
                f"this blend checkpoint was trained for {side}={known!r}, not {asked_model!r}; train one on labels for your pair"
            )


class BlendRouter(EmbedderHolder, Router):
    """Router over a :class:`BlendModel` checkpoint (default: the shipped one for the embedder).

    Spec: ``blend`` or ``blend:CHECKPOINT_DIR``; options ``embedder=...``, ``cache=0``,
    ``templates=0`` (score prompts whole: no shared-template stripping, no head/tail windows).
    With templates on (the default), each scored batch goes through
    :func:`routing.templates.find_template` and the part that varies is scored (embedding
    and text features); :meth:`score_with_template` also returns what was stripped.
    Without a path the shipped checkpoint matching the embedder is used: ``embedder=`` if
    given, else ``$ROUTEBATCH_EMBEDDER``, else ``minilm`` where CUDA exists and ``static``
    otherwise. That last choice asks torch about CUDA, so it is made on first use (after a
    score worker forks), not here. A checkpoint refuses another embedder than its own.
    """

    name = NAME

    def __init__(
        self,
        path: str | None = None,
        *,
        embedder: str | None = None,
        cache: Any = True,
        model: BlendModel | None = None,
        strong: str | None = None,
        weak: str | None = None,
        batch_size: Any = None,
        device: str | None = None,
        num_threads: Any = None,
        templates: Any = True,
    ) -> None:
        import os

        from routing.embeddings import EMBEDDER_ENV
        from routing.routers._embedding_router import _flag

        self.templates = _flag(templates)
        self._path_arg = path
        self._asked_embedder = embedder if embedder not in (None, "", "auto") else None
        self._asked_pair = {"strong": strong, "weak": weak}
        self._embedder_kw = {"cache": cache, "batch_size": batch_size, "device": device, "num_threads": num_threads}
        self.path: Path | None = None
        self._model: BlendModel | None = model
        self._embedder = None
        self._resolved = False
        needs_cuda_probe = (
            model is None and path is None and self._asked_embedder is None and not os.environ.get(EMBEDDER_ENV, "").strip()
        )
        if not needs_cuda_probe:
            self._resolve()
            return
        # which shipped checkpoint is decided on first use; both score the same pair, so a
        # request for another pair is refused now
        from routing.routers._checkpoint import SHIPPED_SUFFIX, default_checkpoint, read_config

        for suffix in SHIPPED_SUFFIX.values():
            d = default_checkpoint(NAME + suffix)
            if (d / "router.json").exists():
                _check_pair(read_config(d, expect=NAME), self._asked_pair)

    def _resolve(self) -> None:
        """Pick and load the checkpoint, check its embedder, set up the embedder (once)."""
        if self._resolved:
            return
        from routing.embeddings import canonical_spec
        from routing.routers._checkpoint import check_embedder, resolve, shipped_for_embedder

        if self._model is None:
            if self._path_arg is not None:
                self.path = resolve(NAME, self._path_arg)
            else:
                asked = canonical_spec(self._asked_embedder or "auto")
                self.path = resolve(NAME, str(shipped_for_embedder(NAME, asked)))
            self._model = load_blend(self.path)
        model = self._model
        _check_pair(model.config, self._asked_pair)
        trained = str(model.config.get("embedder", "minilm"))
        if self._asked_embedder is not None:
            check_embedder(self.path or "(in-memory blend model)", trained, self._asked_embedder)
        kept = self._embedder  # use_embedder() before the first score keeps its embedder
        self._init_embedder(self._asked_embedder or trained, **self._embedder_kw)
        self._embedder = kept
        self.trained_embedder = trained
        self._resolved = True

    @property
    def model(self) -> BlendModel:
        self._resolve()
        assert self._model is not None
        return self._model

    @property
    def embedder(self) -> Any:
        self._resolve()
        emb = EmbedderHolder.embedder.fget(self)  # type: ignore[attr-defined]
        trained_id = self.model.config.get("embedder_model_id")
        if trained_id and not getattr(self, "_id_checked", False):
            self._id_checked = True
            got = getattr(emb, "model_id", None)
            same_kind = got is not None and str(got).split("|")[0] == str(trained_id).split("|")[0]
            if same_kind and got != trained_id:  # same embedder, other vectors (version, source)
                import warnings

                warnings.warn(
                    f"blend checkpoint {self.path} was trained on {trained_id!r} but scores with {got!r} "
                    "(another model2vec version or source model?); retrain it for these vectors",
                    stacklevel=2,
                )
        return emb

    def score(self, prompts: Sequence[str]) -> np.ndarray:
        return self.score_with_template(prompts)[0]

    def score_with_template(self, prompts: Sequence[str]) -> tuple[np.ndarray, TemplateInfo]:
        """Scores, and the shared template stripped from this batch before scoring."""
        from routing.templates import NO_TEMPLATE, template_views

        if len(prompts) == 0:
            return np.zeros(0, dtype=np.float64), NO_TEMPLATE
        self._resolve()
        if not self.templates:
            return self.score_embeddings(self.embed(prompts), prompts), NO_TEMPLATE
        for_embedding, for_features, info = template_views(prompts)
        return self.score_embeddings(self.embed_windowed(for_embedding), for_features), info

    def embed_windowed(self, prompts: Sequence[str]) -> np.ndarray:
        """Embeddings where a prompt longer than the embedder's window is the mean of its head
        and tail windows (instead of its head alone, which truncation would give)."""
        from routing.templates import windows

        prompts = list(prompts)
        emb = self.embedder
        limit = 4 * int(getattr(emb, "max_length", None) or getattr(getattr(emb, "inner", None), "max_length", 0) or 0)
        long = [(i, w) for i, p in enumerate(prompts) if len(p) > limit > 0 and (w := windows(p, limit)) is not None]
        if not long:
            return self.embed(prompts)
        texts = list(prompts)
        for i, (head, _) in long:
            texts[i] = head
        E = np.array(self.embed(texts), dtype=np.float32)
        tails = self.embed([tail for _, (_, tail) in long])
        idx = np.array([i for i, _ in long])
        pair = E[idx] + tails
        E[idx] = pair / np.maximum(np.linalg.norm(pair, axis=1, keepdims=True), 1e-12)
        return E

    def score_embeddings(self, embeddings: np.ndarray, prompts: Sequence[str]) -> np.ndarray:
        """Score with precomputed embeddings (evaluation reuses them across folds)."""
        from routing.routers._checkpoint import check_width

        E = np.asarray(embeddings)
        model = self.model
        if E.ndim == 2 and len(E):
            check_width(
                self.path or "(in-memory blend model)",
                self.trained_embedder,
                model.a["coef_emb"].size // 2,
                self.embedder_spec,
                E.shape[1],
            )
        return model.score_arrays(E, feature_matrix(prompts))

    def describe(self) -> dict:
        from routing.routers import _checkpoint

        model = self.model
        out = {
            "name": NAME,
            "checkpoint": str(self.path) if self.path else None,
            "embedder": self.embedder_spec,
            "trained_on": model.config.get("trained_on"),
            "strong": model.config.get("strong"),
            "weak": model.config.get("weak"),
            "templates": self.templates,
        }
        fingerprint = getattr(_checkpoint, "fingerprint", None)
        if self.path is not None and fingerprint is not None:
            out["fingerprint"] = fingerprint(self.path)
        return out


def train_blend(
    prompts: Sequence[str],
    strong: np.ndarray,
    weak: np.ndarray,
    out: str | Path | None = None,
    *,
    embedder: str = "minilm",
    cache: bool = True,
    embeddings: np.ndarray | None = None,
    meta: dict[str, Any] | None = None,
    **options: Any,
) -> BlendModel:
    """Embed (through the shared cache), fit, and optionally save a checkpoint."""
    meta = dict(meta or {})
    if embeddings is None:
        from routing.embeddings import get_embedder

        emb = get_embedder(embedder, cache=cache)
        embeddings = emb.embed(list(prompts))
        meta.setdefault("embedder_model_id", emb.model_id)  # provenance: exactly which vectors
    from routing.embeddings import canonical_spec

    embedder = canonical_spec(embedder)
    model = fit_blend(np.asarray(embeddings), feature_matrix(prompts), strong, weak, **options)
    model.config["embedder"] = embedder
    if out is not None:
        dim = int(np.asarray(embeddings).shape[1])
        save_blend(model, out, {"embedder": embedder, "embedding_dim": dim, "n_train": len(prompts), **meta})
    return model


def _register() -> None:
    """Put ``blend`` in the router table (idempotent; ``routing.routers`` may do it too)."""
    from routing.registry import register

    register(NAME, "routing.routers.blend:BlendRouter")


_register()


def main(argv: list[str] | None = None) -> int:
    """Train a blend checkpoint from labels JSONL files and/or a RouteLLM data directory.

    The shipped checkpoint is made by:
    ``python -m routing.routers.blend --routellm ../shared/data/routellm --arena ../shared/data/arena-bench-v1
    --out routing/checkpoints/blend``
    """
    import argparse

    from routing.data.labels import label_arrays, read_labels
    from routing.data.routellm import load_gsm8k, load_mmlu

    ap = argparse.ArgumentParser(prog="python -m routing.routers.blend", description=main.__doc__)
    ap.add_argument("labels", nargs="*", help="labels JSONL files ({prompt, strong, weak})")
    ap.add_argument("--routellm", help="a RouteLLM evals directory (mmlu/, gsm8k/): train on both")
    ap.add_argument("--arena", help="an arena-bench-v1 directory: add its chat prompts (the RouteLLM pair's judged wins)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--embedder", default="minilm")
    for key, value in DEFAULTS.items():
        ap.add_argument(f"--{key.replace('_', '-')}", dest=key, type=float, default=value)
    args = ap.parse_args(argv)
    if not args.labels and not args.routellm and not args.arena:
        ap.error("give labels files, --routellm DIR, --arena DIR, or several")
    records = [r for path in args.labels for r in read_labels(path)]
    sources = [Path(p).name for p in args.labels]
    pair: dict[str, str] = {}
    if args.routellm:
        from routing.data.routellm import STRONG_MODEL, WEAK_MODEL

        pair = {"strong": STRONG_MODEL, "weak": WEAK_MODEL}
        records += load_mmlu(args.routellm) + load_gsm8k(args.routellm)
        sources.append(
            "RouteLLM routellm/evals MMLU + GSM8K (commit 0b64fdafe049e596a3f5657c219329f24af24198), contaminated prompts dropped"
        )
    if args.arena:
        from routing.data.arena import SOURCE, load_arena_labels
        from routing.data.routellm import STRONG_MODEL, WEAK_MODEL

        pair = {"strong": STRONG_MODEL, "weak": WEAK_MODEL}
        records += load_arena_labels(args.arena, STRONG_MODEL, WEAK_MODEL)
        sources.append(f"arena-bench-v1 ({SOURCE}): judged wins of {STRONG_MODEL} vs {WEAK_MODEL}, ties as ties")
    prompts, strong, weak = label_arrays(records)
    opts = {k: getattr(args, k) for k in DEFAULTS}
    train_blend(prompts, strong, weak, args.out, embedder=args.embedder, meta={"trained_on": sources, **pair}, **opts)
    print(json.dumps({"out": args.out, "n_train": len(prompts)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
