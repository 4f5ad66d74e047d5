"""README's command table names every option of every command (issue 15: "README's command
table lists every new flag"): a flag added without its documentation fails here."""

from __future__ import annotations

from pathlib import Path

from typing import Any

import typer.main

from jobs.cli import app

ROOT = Path(__file__).resolve().parents[3]
README = ROOT / "README.md"
JOB_COMMANDS = {"run", "submit", "status", "list", "cancel", "resume", "export", "plan"}


def _options(command: Any, path: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """(command path, --option) of every command; typer vendors its own click, so by duck type."""
    if hasattr(command, "commands"):
        return [o for name, sub in command.commands.items() for o in _options(sub, (*path, name))]
    return [
        (" ".join(path), opt)
        for p in command.params
        if p.param_type_name == "option"
        for opt in p.opts
        if opt.startswith("--")
    ]


def test_every_job_command_option_is_in_the_readme_and_every_option_is_documented() -> None:
    options = _options(typer.main.get_command(app))
    assert len({cmd for cmd, _ in options}) >= 15 and any(opt == "--completion-window" for _, opt in options)
    readme = README.read_text()
    docs = readme + "".join(p.read_text() for p in sorted((ROOT / "docs").glob("*.md")))
    not_in_readme = sorted({(c, o) for c, o in options if c in JOB_COMMANDS and o not in readme})
    assert not not_in_readme, f"job command options missing from README.md: {not_in_readme}"
    undocumented = sorted({(c, o) for c, o in options if o not in docs})
    assert not undocumented, f"options in neither README.md nor docs/: {undocumented}"
