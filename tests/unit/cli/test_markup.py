"""Data that looks like rich markup prints as itself: ids, roles and paths never crash the CLI."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.unit.cli.helpers import one_line_error, rb, write_jsonl

ROWS = [
    {"custom_id": "[/bold]", "prompt": "first [/x] prompt"},
    {"custom_id": "b", "messages": [{"role": "[/x]", "content": "hi"}]},  # an invalid row: its reason quotes the role
    {"custom_id": "[red]c:smile:", "prompt": "ok"},
]


@pytest.fixture(scope="module")
def marked(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, subprocess.CompletedProcess]:
    cwd = tmp_path_factory.mktemp("markup")
    data = write_jsonl(cwd / "d[/x]" / "in[/b].jsonl", ROWS)
    done = rb(["run", str(data.relative_to(cwd)), "--router", "length"], cwd)
    job_id = json.loads(rb(["list", "--json"], cwd).stdout)[0]["job_id"]
    return cwd, job_id, done


def test_run_on_markup_data_prints_its_summary_and_exits_0(marked) -> None:
    _, job_id, done = marked
    assert done.returncode == 0, done.stderr
    assert "MarkupError" not in done.stderr and "Traceback" not in done.stderr
    assert f"job {job_id}" in done.stdout
    assert "unknown role '[/x]'" in done.stdout


def test_status_and_list_print_markup_literally(marked) -> None:
    cwd, job_id, _ = marked
    st = rb(["status", job_id], cwd)
    assert st.returncode == 0, st.stderr
    assert "unknown role '[/x]'" in st.stdout and "completed" in st.stdout
    listed = rb(["list"], cwd)
    assert listed.returncode == 0, listed.stderr
    assert "d[/x]" in listed.stdout
    assert job_id in listed.stdout, "the id people copy is never shortened"


def test_cancel_of_a_finished_job_is_one_line(marked) -> None:
    cwd, job_id, _ = marked
    done = rb(["cancel", job_id], cwd)
    assert "Traceback" not in done.stderr and "MarkupError" not in done.stderr


def test_an_error_quoting_markup_is_one_line(tmp_path: Path) -> None:
    line = one_line_error(rb(["status", "[/bold]"], tmp_path))
    assert "no job '[/bold]'" in line


def test_console_parses_no_markup_or_emoji() -> None:
    from rich.table import Table

    from jobs.cli.output import console

    con = console()
    table = Table(title="job [/x]")
    table.add_column("[/y]")
    table.add_row("[/bold] :smile:")
    with con.capture() as cap:
        con.print(table)
        con.print("[bold]x[/] [/z]")
    text = cap.get()
    assert "[/bold] :smile:" in text and "[bold]x[/] [/z]" in text and "job [/x]" in text


def test_watch_renders_a_markup_job_without_error(capsys: pytest.CaptureFixture[str]) -> None:
    from jobs.cli.watch import watch

    st = {
        "job_id": "[/x]",
        "status": "failed",
        "phase": "done",
        "total": 1,
        "counts": {"failed": 1},
        "cost_usd": 0.0,
        "cost_micro_usd": 0,
        "error": "bad [/bold] row",
        "budgets": {"job": {"name": "[/b]", "cap_usd": 1.0, "spent_usd": 0.0, "reserved_usd": 0.0}},
    }
    assert watch(lambda: st, interval=0.0)["status"] == "failed"
    assert "bad [/bold] row" in capsys.readouterr().out
