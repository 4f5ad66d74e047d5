"""``routebatch sim-provider`` in the foreground: prints its URL as JSON and serves it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[3]


def test_sim_provider_command_serves_until_stopped(tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text('prompt,big,big_response\n"Hi?",True,"Hello!"\n')
    cmd = [sys.executable, "-m", "jobs.cli", "sim-provider", "--port", "0", "--latency-ms", "0", "--json",
           "--replay", str(labels), "--replay-model", "sim-strong=big"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        info = json.loads(proc.stdout.readline())
        assert info["base_url"].startswith("http://127.0.0.1:") and info["port"] > 0
        r = httpx.post(f"{info['base_url']}/chat/completions", timeout=5,
                       json={"model": "sim-strong", "messages": [{"role": "user", "content": "Hi?"}]})
        assert r.json()["choices"][0]["message"]["content"] == "Hello!"
    finally:
        proc.terminate()
        proc.wait(10)


def test_sim_provider_bad_option_is_one_line_error() -> None:
    cmd = [sys.executable, "-m", "jobs.cli", "sim-provider", "--port", "0", "--fault", "504=0.1", "--json"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "unknown fault '504'" in json.loads(out.stdout)["error"]
    assert "Traceback" not in out.stderr
