"""The typer application object; command modules attach themselves to it.

Errors: every ``RoutebatchError`` that escapes a command becomes one line on stderr (or
``{"error": ...}`` on stdout with ``--json``) and exit code 1, in one place, here; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import typer
from typer.core import TyperGroup

from jobs.errors import RoutebatchError


class RoutebatchGroup(TyperGroup):
    def main(self, args: Sequence[str] | None = None, *rest: Any, **kwargs: Any) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        try:
            return super().main(argv, *rest, **kwargs)
        except RoutebatchError as exc:
            from jobs.cli.output import print_error

            print_error(str(exc), as_json="--json" in argv)
            sys.exit(1)


app = typer.Typer(
    cls=RoutebatchGroup,
    name="routebatch",
    help="Route large offline prompt datasets between a strong and a weak LLM, with budgets and an SQL ledger.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _print_version(value: bool) -> None:
    if value:
        from jobs.cli.version_cmds import print_version

        print_version(value)


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", is_eager=True, callback=_print_version, expose_value=True, help="Print the version and exit."
    ),
) -> None:
    """Route large offline prompt datasets between a strong and a weak LLM, with budgets and an SQL ledger."""
