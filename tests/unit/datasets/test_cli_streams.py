"""The console script on streamed inputs: ``-`` and process substitution read every row."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "prompts.jsonl"


def _env(cwd: Path) -> dict[str, str]:
    env = {**os.environ, "ROUTEBATCH_DATABASE_URL": f"sqlite:///{cwd / 'rb.db'}"}
    env.pop("ROUTEBATCH_BROKER_URL", None)
    return env


def _summary(done: subprocess.CompletedProcess) -> dict:
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_run_dash_reads_stdin(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "jobs.cli.__main__", "run", "-", "--format", "jsonl", "--router", "length", "--json"],
        input=EXAMPLE.read_bytes(),
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        timeout=120,
    )
    summary = _summary(subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(), done.stderr.decode()))
    assert summary["status"] == "completed" and summary["total"] == 50 and summary["invalid"] == 0


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash for <(...)")
def test_run_process_substitution_reads_every_row(tmp_path: Path) -> None:
    """The reproduction from the issue: 11 of 50 rows ran."""
    cmd = f"{shlex.quote(sys.executable)} -m jobs.cli.__main__ run <(cat {shlex.quote(str(EXAMPLE))}) --format jsonl --router length --json"
    done = subprocess.run(["bash", "-c", cmd], cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    summary = _summary(done)
    assert summary["status"] == "completed" and summary["total"] == 50
