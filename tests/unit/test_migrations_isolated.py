"""migrations/ never imports the application: an old migration must not change when the app does."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from jobs.ledger.migrate import head_revision

REPO = Path(__file__).resolve().parents[2]
MIGRATIONS = REPO / "migrations"
APP_PACKAGES = {"jobs", "routing", "worker"}


def _python_files() -> list[Path]:
    return sorted(p for p in MIGRATIONS.rglob("*.py") if "__pycache__" not in p.parts)


def _app_imports(path: Path, root: Path = REPO) -> list[str]:
    """``import jobs...``, ``from routing... import``, ``importlib.import_module("worker...")`` in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            fname = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if fname in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                names = [node.args[0].value]
        found += [f"{path.relative_to(root)}:{node.lineno}: {n}" for n in names if n.split(".")[0] in APP_PACKAGES]
    return found


def test_the_check_sees_the_migration_files():
    files = {p.relative_to(MIGRATIONS).as_posix() for p in _python_files()}
    assert {"env.py", "_types.py", "versions/0001_initial_ledger_schema.py"} <= files
    assert len([f for f in files if f.startswith("versions/")]) >= 4


@pytest.mark.parametrize("path", _python_files(), ids=lambda p: p.relative_to(MIGRATIONS).as_posix())
def test_no_migration_file_imports_the_app(path: Path):
    assert _app_imports(path) == []


def test_the_revision_template_imports_no_app_code():
    """script.py.mako is not Python (``${...}``), so its import lines are read as text."""
    text = (MIGRATIONS / "script.py.mako").read_text()
    bad = re.findall(r"^\s*(?:import|from)\s+((?:jobs|routing|worker)\b\S*)", text, flags=re.M)
    assert bad == []
    assert "import migrations._types" in text


def test_the_check_catches_an_app_import(tmp_path: Path):
    sample = tmp_path / "m.py"
    sample.write_text(
        "import os\nimport jobs.ledger.types\nfrom routing import x\n\n"
        "def f():\n    from worker.app import y\n    importlib.import_module('jobs.settings')\n"
    )
    hits = sorted(_app_imports(sample, tmp_path), key=lambda h: int(h.split(":")[1]))
    assert [h.split(": ", 1)[1] for h in hits] == ["jobs.ledger.types", "routing", "worker.app", "jobs.settings"]


def test_migrations_run_with_the_app_unimportable(tmp_path: Path):
    """Upgrade to head and back down in a process where importing jobs/routing/worker fails."""
    db = tmp_path / "iso.db"
    code = textwrap.dedent(
        f"""
        import sys

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {sorted(APP_PACKAGES)!r}:
                    raise ImportError(f"migrations imported the app: {{name}}")
                return None

        sys.meta_path.insert(0, Block())
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", {str(MIGRATIONS)!r})
        cfg.set_main_option("sqlalchemy.url", "sqlite:///{db}")
        command.upgrade(cfg, "head")
        command.downgrade(cfg, "0003")
        command.upgrade(cfg, "head")
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in {sorted(APP_PACKAGES)!r})
        assert not loaded, loaded
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"

    import sqlite3

    with sqlite3.connect(db) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")}
        assert {"jobs", "items", "attempts", "budgets", "reservations", "job_summary", "alembic_version"} <= tables
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [(head_revision(f"sqlite:///{db}"),)]
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_url_comes_from_the_environment_when_the_ini_has_none(tmp_path: Path):
    """alembic.ini's sqlalchemy.url is empty: a developer's ``alembic upgrade head`` reads ROUTEBATCH_DATABASE_URL."""
    db = tmp_path / "env.db"
    code = (
        "from alembic import command\nfrom alembic.config import Config\n"
        f"cfg = Config({str(REPO / 'alembic.ini')!r})\n"
        f"cfg.set_main_option('script_location', {str(MIGRATIONS)!r})\n"
        "command.upgrade(cfg, 'head')\n"
    )
    env = {"PATH": "/usr/bin:/bin", "ROUTEBATCH_DATABASE_URL": f"sqlite:///{db}"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    assert db.exists() and not (tmp_path / "routebatch.db").exists()


def test_upgrading_a_ledger_with_rows_keeps_them(tmp_path: Path):
    """0002 rebuilds `jobs` on SQLite (batch mode): with foreign keys on, that DROP would cascade to items."""
    from sqlalchemy import text

    from jobs.ledger.migrate import upgrade
    from jobs.ledger.session import get_engine

    url = f"sqlite:///{tmp_path / 'rows.db'}"
    upgrade(url, "0001")
    with get_engine(url).begin() as conn:
        conn.execute(
            text(
                "INSERT INTO jobs (id, created_at, input_file, input_format, spec, router, strong_model, weak_model, state)"
                " VALUES ('j1', '2026-01-01 00:00:00', 'in.jsonl', 'jsonl', '{}', 'length', 's', 'w', 'completed')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO items (job_id, line_no, chunk, custom_id, prompt, state) VALUES ('j1', 1, 0, 'c1', 'hi', 'succeeded')"
            )
        )
        conn.execute(text("INSERT INTO invalid_rows (job_id, line_no, reason) VALUES ('j1', 2, 'bad json')"))
    upgrade(url)
    with get_engine(url).connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM jobs")).scalar() == 1
        assert conn.execute(text("SELECT count(*) FROM items")).scalar() == 1
        assert conn.execute(text("SELECT count(*) FROM invalid_rows")).scalar() == 1
        assert conn.execute(text("PRAGMA foreign_key_check")).all() == []
        assert conn.execute(text("SELECT on_exhausted FROM jobs")).scalar() == "downgrade"
