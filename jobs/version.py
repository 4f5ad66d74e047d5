"""What this installation is: the package version, the schema it migrates to, the routers it ships.

Fingerprints let a team check that every worker of a cluster scores with the same shipped
checkpoints (a changed checkpoint changes its fingerprint, not the package version).
"""

from __future__ import annotations

import hashlib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any


def package_version() -> str:
    try:
        return version("routebatch")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


def router_fingerprints() -> dict[str, str]:
    """sha256 (first 16 hex) over each shipped checkpoint folder's files, by router name."""
    import routing

    root = Path(routing.__file__).resolve().parent / "checkpoints"
    out: dict[str, str] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()) if root.exists() else []:
        digest = hashlib.sha256()
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                digest.update(f.relative_to(folder).as_posix().encode() + b"\0" + f.read_bytes())
        out[folder.name] = digest.hexdigest()[:16]
    return out


def version_info() -> dict[str, Any]:
    from jobs.ledger.migrate import head_revision

    return {
        "routebatch": package_version(),
        "schema_revision": head_revision("sqlite://"),
        "routers": router_fingerprints(),
    }
