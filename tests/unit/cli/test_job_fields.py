"""The CLI of issue 15 item 3: --name, --metadata, --completion-window, list filters,
resume --reopen, notes in the status table."""

from __future__ import annotations

import json
from pathlib import Path

from tests.unit.cli.helpers import one_line_error, rb, write_jsonl


def _data(tmp_path: Path, n: int = 8) -> Path:
    return write_jsonl(tmp_path / "in.jsonl", [{"custom_id": f"k{i}", "prompt": f"q {i}"} for i in range(n)])


def test_run_stores_name_metadata_and_window_and_status_shows_them(tmp_path: Path) -> None:
    data = _data(tmp_path)
    args = ["run", str(data), "--router", "length", "--name", "nightly", "--metadata", "team=search"]
    done = rb([*args, "--metadata", "env=dev", "--completion-window", "90m", "--json"], tmp_path)
    assert done.returncode == 0, done.stderr
    st = json.loads(done.stdout)
    assert st["name"] == "nightly" and st["metadata"] == {"team": "search", "env": "dev"}
    assert st["completion_window"] == "90m" and st["expires_at"] - st["openai_timestamps"]["created_at"] in (5399, 5400)
    table = rb(["status", st["job_id"]], tmp_path)
    assert table.returncode == 0, table.stderr
    assert "nightly" in table.stdout and "team=search, env=dev" in table.stdout and "90m, expires 20" in table.stdout


def test_bad_metadata_and_windows_are_one_line_errors(tmp_path: Path) -> None:
    data = str(_data(tmp_path, 2))
    many = [x for i in range(17) for x in ("--metadata", f"k{i}=v")]
    cases = {
        "metadata: 17 pairs given; at most 16 are allowed": many,
        "at most 64": ["--metadata", "k" * 65 + "=v"],
        "at most 512": ["--metadata", "k=" + "v" * 513],
        "metadata: 'team' is not key=value": ["--metadata", "team"],
        "completion_window: completion window '24' is not a duration": ["--completion-window", "24"],
    }
    for message, extra in cases.items():
        line = one_line_error(rb(["run", data, "--router", "length", *extra], tmp_path))
        assert message in line, line
    assert not (tmp_path / "rb.db").exists() or "batch_" not in rb(["list", "--json"], tmp_path).stdout  # no job made


def test_list_filters_by_name_and_state(tmp_path: Path) -> None:
    data = str(_data(tmp_path, 3))
    a = json.loads(rb(["run", data, "--router", "length", "--name", "a", "--json"], tmp_path).stdout)["job_id"]
    b = json.loads(rb(["submit", data, "--router", "length", "--name", "b", "--json"], tmp_path).stdout)["job_id"]
    by_name = json.loads(rb(["list", "--name", "b", "--json"], tmp_path).stdout)
    assert [j["job_id"] for j in by_name] == [b] and by_name[0]["name"] == "b"
    by_state = json.loads(rb(["list", "--state", "completed", "--json"], tmp_path).stdout)
    assert [j["job_id"] for j in by_state] == [a]
    assert json.loads(rb(["list", "--name", "a", "--state", "in_progress", "--json"], tmp_path).stdout) == []
    table = rb(["list", "--state", "in_progress"], tmp_path)
    assert b in table.stdout and a not in table.stdout
    err = rb(["list", "--state", "finished", "--json"], tmp_path)
    assert err.returncode == 1 and "unknown job state 'finished'" in json.loads(err.stdout)["error"]


def test_resume_of_a_cancelled_job_is_refused_until_reopen(tmp_path: Path) -> None:
    data = str(_data(tmp_path, 6))
    job_id = json.loads(rb(["submit", data, "--router", "length", "--json"], tmp_path).stdout)["job_id"]
    assert rb(["cancel", job_id], tmp_path).returncode == 0
    line = one_line_error(rb(["resume", job_id], tmp_path))
    assert f"job {job_id} is cancelled and a cancel is final" in line and f"routebatch resume {job_id} --reopen" in line
    refused = rb(["resume", job_id, "--json"], tmp_path)
    assert refused.returncode == 1 and "--reopen" in json.loads(refused.stdout)["error"]
    done = rb(["resume", job_id, "--reopen", "--json"], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    st = json.loads(done.stdout)
    assert st["status"] == "completed" and st["succeeded"] == 6


def test_status_shows_the_jobs_notes(tmp_path: Path) -> None:
    from jobs.ledger.session import session_scope
    from jobs.money.budgets import add_event

    job_id = json.loads(rb(["run", str(_data(tmp_path, 2)), "--router", "length", "--json"], tmp_path).stdout)["job_id"]
    with session_scope(f"sqlite:///{tmp_path / 'rb.db'}") as s:
        add_event(s, "job_note", "template: 1,091 chars shared prefix stripped [bold]", job_id=job_id)
        add_event(s, "job_note", "streaming: generation starts as chunks are scored", job_id=job_id)
    st = json.loads(rb(["status", job_id, "--json"], tmp_path).stdout)
    assert st["notes"][-2:] == [  # after the notes the pipeline wrote itself, oldest first
        "template: 1,091 chars shared prefix stripped [bold]",
        "streaming: generation starts as chunks are scored",
    ]
    table = rb(["status", job_id], tmp_path).stdout
    assert "notes" in table and "shared prefix stripped [bold]" in table and "generation starts" in table
