"""Memory commands: list, show, drop (the judged pairs ``--adapt --memory NAME`` keeps)."""

from __future__ import annotations

import typer
from rich.table import Table

from jobs.cli.app import app
from jobs.cli.output import JsonOption, emit, ledger_url

memory_app = typer.Typer(help="Judged pairs kept across adapting jobs (--adapt F --memory NAME).", no_args_is_help=True)
app.add_typer(memory_app, name="memory")


def _db_url() -> str:
    return ledger_url()


@memory_app.command("list")
def list_cmd(as_json: bool = JsonOption) -> None:
    """Every memory: judged pairs, jobs and model pairs."""
    from jobs.ledger.memories import list_memories
    from jobs.ledger.session import session_scope

    with session_scope(_db_url()) as s:
        memories = list_memories(s)

    def render(con) -> None:
        table = Table(title="memories")
        for col in ("name", "pairs", "jobs", "model pairs", "last"):
            table.add_column(col)
        for m in memories:
            pairs = ", ".join(f"{p['strong']} / {p['weak']}: {p['pairs']}" for p in m["model_pairs"])
            table.add_row(m["name"], str(m["pairs"]), str(m["jobs"]), pairs, str(m["last"]))
        con.print(table)

    emit({"memories": memories}, as_json, render)


@memory_app.command("show")
def show_cmd(name: str = typer.Argument(...), as_json: bool = JsonOption) -> None:
    """One memory: its pairs by verdict and the jobs that judged them."""
    from jobs.ledger.memories import show_memory
    from jobs.ledger.session import session_scope

    with session_scope(_db_url()) as s:
        shown = show_memory(s, name)

    def render(con) -> None:
        con.print(f"memory {shown['name']}: {shown['pairs']} judged pairs from {shown['jobs']} jobs")
        for p in shown["model_pairs"]:
            con.print(f"  {p['strong']} / {p['weak']}: {p['pairs']}")
        con.print("  verdicts: " + ", ".join(f"{k}={v}" for k, v in shown["verdicts"].items()))

    emit(shown, as_json, render)


@memory_app.command("drop")
def drop_cmd(name: str = typer.Argument(...), as_json: bool = JsonOption) -> None:
    """Forget a memory: later jobs no longer learn from it (the judgements stay in the ledger)."""
    from jobs.ledger.memories import drop_memory
    from jobs.ledger.session import session_scope

    with session_scope(_db_url()) as s:
        dropped = drop_memory(s, name)
    emit({"name": name, "dropped": dropped}, as_json, lambda con: con.print(f"memory {name}: {dropped} pairs forgotten"))
