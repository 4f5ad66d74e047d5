"""Run the console script as a user does (a subprocess), on a ledger in ``cwd``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def rb(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("ROUTEBATCH_BROKER_URL", "ROUTEBATCH_CONFIG")}
    full_env = {**base, "ROUTEBATCH_DATABASE_URL": f"sqlite:///{cwd / 'rb.db'}", "COLUMNS": "100", **env}
    return subprocess.run(
        [sys.executable, "-m", "jobs.cli.__main__", *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=120
    )


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def one_line_error(done: subprocess.CompletedProcess) -> str:
    """The error a command printed: exactly one line on stderr, exit 1, no traceback."""
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    lines = [x for x in done.stderr.splitlines() if x.strip() and " INFO " not in x and " DEBUG " not in x]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ")
    return lines[0]
