"""Router checkpoints: a directory with ``router.json`` (config) and weights beside it.

``router.json`` (not ``config.json``) so that a checkpoint can hold an HF model directory
and a plain HF model directory is never mistaken for a router checkpoint. Small routers
keep their arrays in ``weights.npz``; HF-based routers keep a ``model/`` subdirectory
(safetensors) written by ``save_pretrained``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

CONFIG_NAME = "router.json"
WEIGHTS_NAME = "weights.npz"
FORMAT_VERSION = 1


def default_checkpoint(name: str) -> Path:
    """Where the shipped checkpoint for router ``name`` lives: ``routing/checkpoints/<name>``."""
    return Path(__file__).resolve().parent.parent / "checkpoints" / name


def resolve(name: str, path: str | Path | None) -> Path:
    """The checkpoint directory for a spec: the given path, or the shipped default."""
    p = Path(path).expanduser() if path else default_checkpoint(name)
    if not (p / CONFIG_NAME).exists():
        if path is None:
            raise FileNotFoundError(
                f"no shipped {name} checkpoint at {p}; train one with `routebatch train {name} --data FILE --out DIR` "
                f"and use the spec {name}:DIR"
            )
        raise FileNotFoundError(f"{p} is not a {name} checkpoint (no {CONFIG_NAME})")
    return p


def read_config(directory: str | Path, expect: str | None = None) -> dict[str, Any]:
    cfg = json.loads((Path(directory) / CONFIG_NAME).read_text(encoding="utf-8"))
    if expect is not None and cfg.get("router") != expect:
        raise ValueError(f"{directory}: a {cfg.get('router')!r} checkpoint, not {expect!r}")
    return cfg


def write_config(directory: str | Path, cfg: dict[str, Any]) -> Path:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    cfg = {"format_version": FORMAT_VERSION, **cfg}
    path = d / CONFIG_NAME
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def save_arrays(directory: str | Path, **arrays: np.ndarray) -> Path:
    path = Path(directory) / WEIGHTS_NAME
    np.savez_compressed(path, allow_pickle=True, **arrays)  # numpy's default, explicit so ** cannot fill it
    return path


def load_arrays(directory: str | Path) -> dict[str, np.ndarray]:
    with np.load(Path(directory) / WEIGHTS_NAME, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def pick_pair(cfg: dict[str, Any], strong: str | None, weak: str | None) -> tuple[str, str]:
    """Strong/weak names: the overrides, else the checkpoint's; both must be known models."""
    s = strong or cfg["strong"]
    w = weak or cfg["weak"]
    models = cfg.get("models")
    if models is not None:
        for m in (s, w):
            if m not in models:
                raise ValueError(f"model {m!r} not in this checkpoint; models: {', '.join(models)}")
    if s == w:
        raise ValueError("strong and weak must differ")
    return s, w


def fingerprint(directory: str | Path) -> str:
    """A short content hash of a checkpoint, for the audit trail (which weights scored a job).

    Small files (config, npz weights) are hashed whole; large model files by name and size,
    so that describing a multi-GB causal LM does not read it.
    """
    import hashlib

    h = hashlib.sha256()
    root = Path(directory)
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = f.relative_to(root).as_posix()
        size = f.stat().st_size
        h.update(f"{rel}\0{size}\0".encode())
        if size <= 8_000_000:
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))


#: shipped checkpoint directory per embedder: ``<router>`` for MiniLM, ``<router>_static`` for the static one
SHIPPED_SUFFIX = {"minilm": "", "static": "_static"}


def shipped_for_embedder(name: str, embedder: str) -> Path:
    """The shipped ``name`` checkpoint trained on ``embedder`` (canonical spec), or a ValueError."""
    suffix = SHIPPED_SUFFIX.get(embedder)
    if suffix is None or not (default_checkpoint(name + suffix) / CONFIG_NAME).exists():
        raise ValueError(
            f"no shipped {name} checkpoint for embedder {embedder!r}; "
            f"train one with `routebatch train {name} --embedder {embedder} ...` and use {name}:DIR"
        )
    return default_checkpoint(name + suffix)


def check_embedder(directory: Any, trained: str, asked: str) -> None:
    """Refuse to score a checkpoint with another embedder than the one it was trained on."""
    from routing.embeddings import canonical_spec

    if canonical_spec(trained) != canonical_spec(asked):
        raise ValueError(
            f"checkpoint {directory} was trained on embedder {trained!r}, not {asked!r}: its weights would read "
            f"the wrong vectors; drop embedder= to use {trained!r}, or use a checkpoint trained on {asked!r}"
        )


def check_width(directory: Any, trained: str, expected: int | None, embedder: str, got: int) -> None:
    """Refuse embeddings whose width differs from the checkpoint's (naming both embedders)."""
    if expected is not None and int(expected) != int(got):
        raise ValueError(
            f"embedding width {got} does not match: checkpoint {directory} expects {expected}-d embeddings from "
            f"{trained!r}, but embedder {embedder!r} gives {got}-d vectors; score it with the embedder it was trained on"
        )
