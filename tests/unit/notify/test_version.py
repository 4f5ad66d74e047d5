"""``routebatch --version`` and ``version --json`` describe this installation."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from importlib.metadata import version


def _rb(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobs.cli", *args], capture_output=True, text=True, timeout=60)


def test_version_flag_prints_the_installed_version() -> None:
    done = _rb("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"routebatch {version('routebatch')}"


def test_version_json_has_schema_head_and_router_fingerprints() -> None:
    from jobs.ledger.migrate import head_revision

    done = _rb("version", "--json")
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["routebatch"] == version("routebatch")
    assert info["schema_revision"] == head_revision("sqlite://") and info["schema_revision"]
    assert set(info["routers"]) >= {"blend", "mf"}
    assert all(len(fp) == 16 for fp in info["routers"].values())


def test_a_changed_checkpoint_changes_its_fingerprint(tmp_path: Path, monkeypatch) -> None:
    import routing
    from jobs import version as v

    fake = tmp_path / "routing"
    shutil.copytree(Path(routing.__file__).parent / "checkpoints", fake / "checkpoints")
    monkeypatch.setattr(routing, "__file__", str(fake / "__init__.py"))
    before = v.router_fingerprints()
    (fake / "checkpoints" / "mf" / "router.json").write_text("{}")
    after = v.router_fingerprints()
    assert before["blend"] == after["blend"] and before["mf"] != after["mf"]
