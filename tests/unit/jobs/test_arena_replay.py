"""Whole jobs over recorded arena-bench-v1 answers (examples/replay-arena.toml): every answer
is the routed model's real one, `run --grade` reports the realised mean judged score, and the
simulated judge of an ``--adapt`` job replays GPT-4's scores as verdicts."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from sqlalchemy import select

from jobs.config import load_config
from jobs.ledger.export import export_job
from jobs.ledger.models import Attempt, Item, Judgement
from jobs.ledger.session import session_scope
from jobs.lifecycle.service import JobSpec, run
from jobs.providers.answers import answer_text
from jobs.reports.job_grading import grade_job
from jobs.runtime import Runtime
from jobs.settings import Settings
from routing.data.arena import read_answers, write_replay_csv
from tests.unit.data.arena_sample import sample_rows

ROOT = Path(__file__).resolve().parents[3]
SAMPLE = ROOT / "tests" / "fixtures" / "arena_sample"
EXAMPLE = ROOT / "examples" / "replay-arena.toml"
GPT4 = "gpt-4-1106-preview"
MIXTRAL = "mistralai/Mixtral-8x7B-Instruct-v0.1"
COLUMN = {"gpt-4": GPT4, "mixtral": MIXTRAL}  # model key -> the example's replay column
N = 39  # 40 sample questions, one without a Mixtral score


@pytest.fixture(autouse=True)
def _fresh_settings():
    """The CLI reads settings once per process (lru_cache): each test's environment is its own."""
    from jobs.settings import get_settings

    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


class Arena:
    """The sample's truth by prompt (stripped, as the replay file holds it): each model's
    recorded answer and judged score."""

    def __init__(self) -> None:
        prompts, cells = sample_rows()
        answers = {m: read_answers(SAMPLE, m) for m in (GPT4, MIXTRAL)}
        self.score: dict[str, dict[str, float]] = {}
        self.answer: dict[str, dict[str, str]] = {}
        for qid, prompt in prompts.items():
            if cells[qid][GPT4] and cells[qid][MIXTRAL]:
                self.score[prompt.strip()] = {m: float(cells[qid][m]) for m in (GPT4, MIXTRAL)}
                self.answer[prompt.strip()] = {m: answers[m][qid] for m in (GPT4, MIXTRAL)}


@pytest.fixture(scope="module")
def arena() -> Arena:
    return Arena()


def _setup(tmp_path: Path) -> tuple[Path, Path, Path]:
    """The replay CSV made as the example's header says, its prompts as a job input, and the
    example config pointed at the CSV."""
    replay = tmp_path / "arena_replay.csv"
    assert write_replay_csv(SAMPLE, [GPT4, MIXTRAL], replay) == N
    with replay.open(newline="", encoding="utf-8") as fh:
        prompts = [r["prompt"] for r in csv.DictReader(fh)]
    data = tmp_path / "prompts.jsonl"
    with data.open("w", encoding="utf-8") as fh:
        for i, p in enumerate(prompts):
            fh.write(json.dumps({"custom_id": f"a{i}", "prompt": p}) + "\n")
    text = EXAMPLE.read_text()
    assert 'replay_file = "arena_replay.csv"' in text
    cfg = tmp_path / "replay-arena.toml"
    cfg.write_text(text.replace('replay_file = "arena_replay.csv"', f'replay_file = "{replay}"'))
    return replay, data, cfg


def _runtime(tmp_path: Path, cfg: Path) -> Runtime:
    return Runtime(Settings(database_url=f"sqlite:///{tmp_path / 'l.db'}", broker_url=None), load_config(cfg))


def test_replayed_arena_job_serves_the_recorded_answers_and_is_graded(tmp_path: Path, arena: Arena) -> None:
    replay, data, cfg = _setup(tmp_path)
    rt = _runtime(tmp_path, cfg)
    try:
        st = run(rt, JobSpec(input_file=str(data), router="random:seed=0", strong_share=0.5))
        grade = grade_job(rt, st.job_id, replay)
        out = tmp_path / "results.jsonl"
        counts = export_job(rt.db_url, st.job_id, out)
        with session_scope(rt.db_url) as s:
            items = s.execute(select(Item.custom_id, Item.prompt, Item.model, Item.route, Item.state, Item.response)).all()
            attempts = s.execute(select(Attempt.model, Attempt.status_code)).all()
    finally:
        rt.close()
    assert st.status == "completed" and st.succeeded == N and st.strong_calls + st.weak_calls == N
    assert 0 < st.strong_calls < N  # both models served some
    assert len(attempts) == N and {code for _, code in attempts} == {200}  # no retries, no replay misses

    # the ledger: every answer is the recorded answer of the model the item was routed to
    prompt_of = {}
    model_of = {}
    for cid, prompt, model, route, state, response in items:
        assert state == "succeeded" and model == {"strong": "gpt-4", "weak": "mixtral"}[route]
        assert answer_text(response) == arena.answer[prompt][COLUMN[model]]
        prompt_of[cid], model_of[cid] = prompt, model
    assert len(prompt_of) == N and set(prompt_of.values()) == set(arena.answer)
    # the export says the same, line by line
    lines = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert counts["results"] == len(lines) == N
    assert [x["custom_id"] for x in lines] == [f"a{i}" for i in range(N)]
    for line in lines:
        cid, meta = line["custom_id"], line["routebatch"]
        assert meta["model"] == model_of[cid] and line["response"]["status_code"] == 200
        body = line["response"]["body"]
        assert body["model"] == COLUMN[meta["model"]]
        assert body["choices"][0]["message"]["content"] == arena.answer[prompt_of[cid]][COLUMN[meta["model"]]]
        assert body["choices"][0]["finish_reason"] == "stop"  # max_tokens = 4096 cut nothing

    # grading: the mean judged score of the model each prompt went to, computed by hand
    by_hand = [arena.score[prompt_of[c]][COLUMN[model_of[c]]] for c in prompt_of]
    assert grade["graded"] == N and grade["all_exact"] and grade["mismatches"] == 0
    assert grade["missing_prompt"] == grade["unmapped_model"] == 0
    assert grade["accuracy"] == pytest.approx(sum(by_hand) / N)
    for key, column in COLUMN.items():
        mine = [arena.score[prompt_of[c]][column] for c in prompt_of if model_of[c] == key]
        assert grade["per_model"][key]["answered"] == len(mine)
        assert grade["per_model"][key]["accuracy"] == pytest.approx(sum(mine) / len(mine))
        assert grade["reference"][key] == pytest.approx(sum(s[column] for s in arena.score.values()) / N)
    # the sample's means (README of the fixture): GPT-4 is judged far better than Mixtral
    assert grade["reference"]["gpt-4"] == pytest.approx(333 / 39)
    assert grade["reference"]["mixtral"] == pytest.approx(258 / 39)


def test_run_grade_cli_on_the_example(tmp_path: Path, arena: Arena) -> None:
    from typer.testing import CliRunner

    from jobs.cli import app

    replay, data, cfg = _setup(tmp_path)
    env = {
        "ROUTEBATCH_CONFIG": str(cfg),
        "ROUTEBATCH_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
        "ROUTEBATCH_BROKER_URL": None,
    }
    args = ["run", str(data), "--router", "random:seed=1", "--strong-share", "1.0", "--grade", str(replay), "--json"]
    got = CliRunner().invoke(app, args, env=env)
    assert got.exit_code == 0, got.output
    summary = json.loads(got.stdout)
    assert summary["status"] == "completed" and summary["succeeded"] == N and summary["strong_calls"] == N
    grade = summary["grade"]
    assert grade["graded"] == N and grade["all_exact"]
    # everything to GPT-4: the realised score is GPT-4's mean
    assert grade["accuracy"] == pytest.approx(sum(s[GPT4] for s in arena.score.values()) / N)


def test_adapt_with_the_sim_judge_replays_the_arena_scores(tmp_path: Path, arena: Arena) -> None:
    _, data, cfg = _setup(tmp_path)
    rt = _runtime(tmp_path, cfg)
    try:
        st = run(
            rt,
            JobSpec(input_file=str(data), router="random:seed=0", strong_share=0.5, adapt=0.5, adapt_min=10, judge="sim"),
        )
        with session_scope(rt.db_url) as s:
            judged = s.execute(
                select(Item.prompt, Item.model, Item.response, Judgement)
                .join(Judgement, Judgement.item_id == Item.id)
                .where(Judgement.job_id == st.job_id)
            ).all()
            states = s.scalars(select(Item.state).where(Item.job_id == st.job_id)).all()
    finally:
        rt.close()
    assert st.status == "completed" and st.succeeded == N and set(states) == {"succeeded"}
    a = st.adaptation
    assert a["stage"] == "adapted" and a["judged"] == len(judged) >= 10 and a["judge_cost_micro_usd"] == 0
    expected_counts = {"strong_better": 0, "weak_better": 0, "tie": 0}
    for prompt, model, response, j in judged:
        # the sample item was sent to both models: both recorded answers, and the item keeps the
        # better one (the weak twin's only when the judge preferred it)
        assert j.strong_model == "gpt-4" and j.weak_model == "mixtral" and j.judge == "sim"
        s, w = arena.score[prompt][GPT4], arena.score[prompt][MIXTRAL]
        want = "strong_better" if s > w else "weak_better" if w > s else "tie"
        kept = "mixtral" if want == "weak_better" else "gpt-4"
        assert model == kept and answer_text(response) == arena.answer[prompt][COLUMN[kept]]
        assert answer_text(j.weak_response) == arena.answer[prompt][MIXTRAL]
        assert j.verdict == want, (prompt[:60], s, w, j.verdict, j.reason)
        assert j.weak_good == (0.0 if s > w else 1.0)
        expected_counts[want] += 1
    assert {k: v for k, v in a["verdicts"].items() if v} == {k: v for k, v in expected_counts.items() if v}
    assert expected_counts["strong_better"] > 0 and expected_counts["tie"] > 0  # the comparison is exercised both ways
