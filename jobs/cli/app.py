"""The typer application object; command modules attach themselves to it."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="routebatch",
    help="Route large offline prompt datasets between a strong and a weak LLM, with budgets and an SQL ledger.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
