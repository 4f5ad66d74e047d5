"""``routebatch version`` and ``routebatch --version``."""

from __future__ import annotations

import typer

from jobs.cli.app import app
from jobs.cli.output import JsonOption, emit


@app.command("version")
def version_cmd(as_json: bool = JsonOption) -> None:
    """The package version, the ledger schema revision it migrates to, and the shipped routers' fingerprints."""
    from jobs.version import version_info

    info = version_info()

    def render(con) -> None:
        con.print(f"routebatch {info['routebatch']} (schema {info['schema_revision']})")
        for name, fp in info["routers"].items():
            con.print(f"  router {name}: {fp}")

    emit(info, as_json, render)


def print_version(value: bool) -> None:
    """The ``--version`` flag: print ``routebatch X.Y.Z`` and stop."""
    if value:
        from jobs.version import package_version

        typer.echo(f"routebatch {package_version()}")
        raise typer.Exit()
