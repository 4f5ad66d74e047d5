"""One way to print results: JSON for scripts (``--json``), rich for people."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

JsonOption = typer.Option(False, "--json", help="Print machine-readable JSON instead of a table.")


def console(stderr: bool = False) -> Console:
    return Console(stderr=stderr)


def emit(data: Any, as_json: bool, render: Callable[[Console], None] | None = None) -> None:
    """Print ``data`` as JSON on stdout, or call ``render`` with a rich console."""
    if as_json or render is None:
        sys.stdout.write(json.dumps(data, default=str, ensure_ascii=False) + "\n")
        sys.stdout.flush()
    else:
        render(console())


def print_error(message: str, as_json: bool = False) -> None:
    """One line: ``{"error": ...}`` on stdout for scripts, else a red line on stderr."""
    if as_json:
        sys.stdout.write(json.dumps({"error": message}) + "\n")
        sys.stdout.flush()
    else:
        console(stderr=True).print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def fail(message: str, as_json: bool = False, code: int = 1) -> NoReturn:
    """A one-line error and a non-zero exit, never a traceback."""
    print_error(message, as_json)
    raise typer.Exit(code)
