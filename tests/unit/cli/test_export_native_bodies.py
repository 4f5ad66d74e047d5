"""``routebatch export --native-bodies`` (issue 14): by default an Anthropic provider's answers
are exported as OpenAI ``chat.completion`` bodies; the flag writes the provider's Messages.
To be placed at tests/unit/cli/test_export_native_bodies.py with the job_cmds.py patch."""

from __future__ import annotations

import json
from pathlib import Path

from anthropic.types import Message
from openai.types.chat import ChatCompletion

from tests.unit.cli.helpers import rb, write_jsonl

ROOT = Path(__file__).resolve().parents[3]


def test_export_writes_chat_completions_and_native_messages_on_request(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", [{"custom_id": f"c{i}", "prompt": f"question {i}"} for i in range(6)])
    env = {"ROUTEBATCH_CONFIG": str(ROOT / "examples" / "anthropic.toml")}
    done = rb(["run", str(data), "--router", "length", "--strong-share", "0.5", "--json"], tmp_path, **env)
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)["job_id"]
    default, native = tmp_path / "r.jsonl", tmp_path / "n.jsonl"
    for out, extra in ((default, []), (native, ["--native-bodies"])):
        got = rb(["export", job, "--out", str(out), "--json", *extra], tmp_path, **env)
        assert got.returncode == 0, got.stderr
        assert json.loads(got.stdout)["results"] == 6
    for line in default.read_text().splitlines():
        assert ChatCompletion.model_validate(json.loads(line)["response"]["body"]).choices[0].message.content
    for line in native.read_text().splitlines():
        assert Message.model_validate(json.loads(line)["response"]["body"]).content[0].text
