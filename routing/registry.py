"""Name -> router table, and router specs like ``mf``, ``mf:PATH``, ``random:seed=3``.

Routers are imported lazily so that ``random`` never pays for importing torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from routing.base import Router

# name -> "module:factory"; the factory takes (arg: str | None, **options) and returns a Router
_TABLE: dict[str, str] = {
    "random": "routing.baselines:RandomRouter",
    "length": "routing.baselines:LengthRouter",
    "blend": "routing.routers.blend:BlendRouter",
}


_LOADED = False


def _load_builtin() -> None:
    """Import the learned routers' registrations once (cheap: no torch at import)."""
    global _LOADED
    if not _LOADED:
        _LOADED = True
        importlib.import_module("routing.routers")


def register(name: str, target: str) -> None:
    """Add a router: ``target`` is "module:callable"."""
    _TABLE[name] = target


def available() -> list[str]:
    _load_builtin()
    return sorted(_TABLE)


def validate_spec(spec: str) -> None:
    """Fail early (at submit, before any ingestion) on an unknown router or a missing checkpoint."""
    from pathlib import Path

    name, path, _ = parse_spec(spec)
    _load_builtin()
    if name not in _TABLE:
        raise ValueError(f"unknown router {name!r}; available: {', '.join(available())}")
    if path is not None and not Path(path).exists():
        raise ValueError(f"router {name}: checkpoint {path!r} does not exist")


def parse_spec(spec: str) -> tuple[str, str | None, dict[str, str]]:
    """``name[:path][,key=value...]`` -> (name, path, options).

    ``random:seed=3`` and ``length:scale=50`` put key=value pairs in options; anything
    else after the colon is a checkpoint path.
    """
    name, _, rest = spec.partition(":")
    path: str | None = None
    options: dict[str, str] = {}
    for part in filter(None, rest.split(",")):
        key, eq, value = part.partition("=")
        if eq and key.isidentifier():
            options[key] = value
        elif path is None:
            path = part
        else:
            raise ValueError(f"router spec {spec!r}: more than one path")
    return name.strip(), path, options


def get_router(spec: str, **overrides: object) -> Router:
    """Build the router a spec names; raises ValueError for an unknown name."""
    name, path, options = parse_spec(spec)
    _load_builtin()
    if name not in _TABLE:
        raise ValueError(f"unknown router {name!r}; available: {', '.join(available())}")
    module_name, _, attr = _TABLE[name].partition(":")
    factory: Callable[..., Router] = getattr(importlib.import_module(module_name), attr)
    kwargs: dict[str, object] = {**options, **overrides}
    if path is not None:
        kwargs["path"] = path
    return factory(**kwargs)
