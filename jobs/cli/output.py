"""One way to print results: JSON for scripts (``--json``), rich for people.

Rendered text comes from data (custom ids, roles, file names, error messages), so the
console parses no markup and no emoji codes: a ``custom_id`` of ``[/bold]`` prints as
itself instead of raising ``MarkupError``. Styling is done with ``rich.text.Text`` (see
``styled``), never with markup in a formatted string.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.text import Text

JsonOption = typer.Option(False, "--json", help="Print machine-readable JSON instead of a table.")


def console(stderr: bool = False) -> Console:
    """A console that prints strings literally: no markup, no ``:emoji:`` codes."""
    return Console(stderr=stderr, markup=False, emoji=False)


def styled(*parts: str | tuple[str, str]) -> Text:
    """Plain and ``(text, style)`` parts as one ``Text``: styling without markup parsing."""
    return Text.assemble(*parts)


def _strict(data: Any) -> Any:
    """``data`` with NaN and infinities as ``null``: undefined figures (an APGR with no
    strong-weak gap) stay undefined, and the line stays JSON that strict parsers (jq,
    JavaScript, Go) accept; ``json.dumps`` alone writes a bare ``NaN``."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: _strict(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_strict(v) for v in data]
    return data


def json_line(data: Any) -> str:
    """One strict JSON line (no ``NaN``); values it cannot encode are written as strings."""
    return json.dumps(_strict(data), default=str, ensure_ascii=False, allow_nan=False)


def emit(data: Any, as_json: bool, render: Callable[[Console], None] | None = None) -> None:
    """Print ``data`` as JSON on stdout, or call ``render`` with a rich console."""
    if as_json or render is None:
        sys.stdout.write(json_line(data) + "\n")
        sys.stdout.flush()
    else:
        render(console())


def print_error(message: str, as_json: bool = False) -> None:
    """One line: ``{"error": ...}`` on stdout for scripts, else a red line on stderr."""
    if as_json:
        sys.stdout.write(json.dumps({"error": message}) + "\n")
        sys.stdout.flush()
    else:
        console(stderr=True).print(styled(("error:", "bold red"), " ", message), highlight=False, soft_wrap=True)


def fail(message: str, as_json: bool = False, code: int = 1) -> NoReturn:
    """A one-line error and a non-zero exit, never a traceback."""
    print_error(message, as_json)
    raise typer.Exit(code)


def ledger_url() -> str:
    """The configured ledger, reachable and migrated: what a command that reads it needs first."""
    from jobs.ledger.migrate import ensure_schema
    from jobs.ledger.session import check_database
    from jobs.settings import get_settings

    url = get_settings().database_url
    check_database(url)
    ensure_schema(url)
    return url
