"""The dependency rules of docs/architecture.md, checked on the source (ast), not by review."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    tree = ast.parse(path.read_text(), str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module, [a.name for a in node.names]))
    return out


def _violations(package: str, forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for line, module, _ in _imports(path):
            if module.split(".")[0] in forbidden:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return bad


def test_jobs_never_imports_worker() -> None:
    assert _violations("jobs", ("worker",)) == []


def test_routing_stays_free_of_jobs_worker_celery_and_the_database() -> None:
    assert _violations("routing", ("jobs", "worker", "celery", "sqlalchemy")) == []


def test_migrations_import_no_application_code() -> None:
    assert _violations("migrations", ("jobs", "routing", "worker")) == []


def test_private_names_of_the_session_module_stay_inside_the_ledger() -> None:
    bad = []
    for package in ("jobs", "worker", "routing"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.parent == ROOT / "jobs" / "ledger":
                continue
            for line, module, names in _imports(path):
                if module == "jobs.ledger.session" and any(n.startswith("_") for n in names):
                    bad.append(f"{path.relative_to(ROOT)}:{line}")
            text = path.read_text()
            if "session._" in text and "jobs.ledger import session" in text:
                bad.append(f"{path.relative_to(ROOT)}: reaches into jobs.ledger.session")
    assert bad == []
