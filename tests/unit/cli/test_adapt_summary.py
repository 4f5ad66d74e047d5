"""Issue 11's last line: ``routebatch run examples/prompts.jsonl --adapt 0.1`` in embedded mode,
with the simulated providers judging, ends with the quality estimate in its summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import text as sa_text

from tests.unit.cli.helpers import rb

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "prompts.jsonl"


def test_the_readme_adapt_command_shows_the_estimate_next_to_the_cost(tmp_path: Path) -> None:
    done = rb(["run", str(EXAMPLE), "--adapt", "0.1"], tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for row in ("adapted scorer", "quality vs strong", "90% interval", "adapting cost", "savings"):
        assert row in out, out
    st = json.loads(rb(["list", "--json"], tmp_path).stdout)[0]
    full = json.loads(rb(["status", st["job_id"], "--json"], tmp_path).stdout)
    q = full["quality_vs_strong"]
    assert 0.0 <= q["low"] <= q["estimate"] <= q["high"]
    assert f"{q['estimate']:.3f}" in out and full["adaptation"]["judged"] == 25


def test_a_job_too_small_to_adapt_says_so_in_its_summary(tmp_path: Path) -> None:
    data = tmp_path / "few.jsonl"
    data.write_text("".join(json.dumps({"custom_id": f"q{i}", "prompt": f"question {i}"}) + "\n" for i in range(8)))
    done = rb(["run", str(data), "--adapt", "0.1"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "not adapted: 8 items: too few to adapt; routed as usual" in " ".join(done.stdout.split()), done.stdout
    assert "quality vs strong" not in done.stdout


def test_the_all_strong_baseline_of_an_adapted_job_does_not_pay_for_adapting(tmp_path: Path) -> None:
    """The sample's weak twins and judge calls are charged to their items, but an all-strong
    job would not have made them: its baseline counts a sampled item at its strong answer's
    cost, whichever answer it kept. ``status`` and the ``savings`` view agree on it."""
    import sqlite3

    done = rb(["run", str(EXAMPLE), "--adapt", "0.1"], tmp_path)
    assert done.returncode == 0, done.stderr
    job_id = json.loads(rb(["list", "--json"], tmp_path).stdout)[0]["job_id"]
    full = json.loads(rb(["status", job_id, "--json"], tmp_path).stdout)
    db = sqlite3.connect(tmp_path / "rb.db")
    (strong_model,) = db.execute("SELECT strong_model FROM jobs WHERE id = ?", (job_id,)).fetchone()
    extras, kept_weak = db.execute(
        "SELECT SUM(j.weak_cost_micro_usd + j.judge_cost_micro_usd), SUM(it.model <> ?) "
        "FROM judgements j JOIN items it ON it.id = j.item_id WHERE it.job_id = ? AND it.state = 'succeeded'",
        (strong_model, job_id),
    ).fetchone()
    assert extras > 0
    sampled_strong = db.execute(
        "SELECT SUM(it.cost_micro_usd - j.weak_cost_micro_usd - j.judge_cost_micro_usd) "
        "FROM judgements j JOIN items it ON it.id = j.item_id WHERE it.job_id = ? AND it.state = 'succeeded'",
        (job_id,),
    ).fetchone()[0]
    price_in, price_out = db.execute(
        "SELECT input_micro_per_mtok, output_micro_per_mtok FROM prices WHERE model = ? ORDER BY valid_from DESC LIMIT 1",
        (strong_model,),
    ).fetchone()
    rest = 0
    for model, cost, p_toks, c_toks in db.execute(
        "SELECT model, cost_micro_usd, prompt_tokens, completion_tokens FROM items it "
        "WHERE job_id = ? AND state = 'succeeded' AND NOT EXISTS (SELECT 1 FROM judgements j WHERE j.item_id = it.id)",
        (job_id,),
    ):
        rest += cost if model == strong_model else (p_toks * price_in + c_toks * price_out + 999_999) // 1_000_000
    view = db.execute("SELECT all_strong_micro_usd, cost_micro_usd FROM savings WHERE job_id = ?", (job_id,)).fetchone()
    assert view[0] == sampled_strong + rest, (view, sampled_strong, rest, extras, kept_weak)
    assert round(full["all_strong_cost_usd"] * 1e6) == view[0]
    assert view[1] == full["cost_micro_usd"]  # what was spent still counts every call
    assert full["savings_pct"] == round(100.0 * (1 - view[1] / view[0]), 2)


def test_adapt_max_cost_stops_a_sample_that_would_cost_more_than_it_allows(tmp_path: Path) -> None:
    """The README example's sample is half the job: with ``--adapt-max-cost 0.25`` it is priced,
    found over the limit and never sent; the job routes as usual and its summary says why."""
    done = rb(["run", str(EXAMPLE), "--adapt", "0.1", "--adapt-max-cost", "0.25", "--json"], tmp_path)
    assert done.returncode == 0, done.stderr
    st = json.loads(done.stdout)
    a = st["adaptation"]
    assert a["stage"] == "skipped" and "over --adapt-max-cost 25.0%" in a["reason"]
    assert a["estimated_cost"]["share"] > 0.25 and st["quality_vs_strong"] is None
    assert st["succeeded"] == 50 and st["attempts"] == 50  # no twin, no judge call
    refused = rb(["run", str(EXAMPLE), "--adapt-max-cost", "0.25"], tmp_path)
    assert refused.returncode != 0 and "go with --adapt" in refused.stdout + refused.stderr


def test_the_sample_is_priced_again_once_its_answers_are_in(tmp_path: Path) -> None:
    """On a ledger with no answers of the job's models the first estimate prices every answer
    at ``max_tokens``: it put the README example's adapting cost at 57% of the job where it
    was 75%, so ``--adapt-max-cost`` let through a sample over its limit. Once the sample's
    strong answers are in (before any twin or judge call) it is priced again on their lengths,
    and a limit between the two estimates now stops it there."""
    first = tmp_path / "first"
    first.mkdir()
    done = rb(["run", str(EXAMPLE), "--adapt", "0.1", "--json"], first)
    assert done.returncode == 0, done.stderr
    st = json.loads(done.stdout)
    before, answered = st["adaptation"]["estimated_cost"], st["adaptation"]["estimated_cost_answered"]
    assert before["basis"] == "max_tokens" and answered["basis"] == "proxy"
    realised = st["adapt_cost_share"]
    assert abs(answered["share"] - realised) < abs(before["share"] - realised)
    assert abs(answered["share"] - realised) < 0.05, (answered, realised)
    assert before["share"] < answered["share"], "the case this test is about: the first estimate was short"

    limit = round((before["share"] + answered["share"]) / 2, 3)
    second = tmp_path / "second"
    second.mkdir()
    done = rb(["run", str(EXAMPLE), "--adapt", "0.1", "--adapt-max-cost", str(limit), "--json"], second)
    assert done.returncode == 0, done.stderr
    st = json.loads(done.stdout)
    a = st["adaptation"]
    assert a["stage"] == "skipped" and a["reason"].startswith("with the sample's answers in,"), a
    assert st["succeeded"] == 50 and st["attempts"] == 50, "the sample kept its strong answers; no twin, no judge call"
    assert st["quality_vs_strong"] is None


@pytest.mark.parametrize("lost", ["judge", "twin"])
def test_an_adapting_call_the_reaper_charged_stays_out_of_the_baseline(tmp_path: Path, lost: str) -> None:
    """A twin or judge call whose worker died after sending is charged by the reaper at its
    hold (a ``LostInFlight`` attempt). The baseline used to be the item's cost minus the
    twin and judge costs in ``judgements``, which never hear of that charge: the all-strong
    cost, and the savings, grew by it. A lost twin's item has no verdict row yet (the step
    that buys the twin again writes it)."""
    import uuid
    from datetime import timedelta

    from sqlalchemy import insert, select

    from jobs.ledger.models import Attempt, Judgement, Reservation
    from jobs.ledger.session import session_scope
    from jobs.ledger.types import utcnow
    from jobs.lifecycle.recovery import recover_lost

    done = rb(["run", str(EXAMPLE), "--adapt", "0.1"], tmp_path)
    assert done.returncode == 0, done.stderr
    job_id = json.loads(rb(["list", "--json"], tmp_path).stdout)[0]["job_id"]
    db_url = f"sqlite:///{tmp_path / 'rb.db'}"

    def savings() -> tuple[int, int]:
        with session_scope(db_url) as s:
            row = s.execute(
                sa_text("SELECT all_strong_micro_usd, cost_micro_usd FROM savings WHERE job_id = :j"), {"j": job_id}
            ).one()
            return int(row[0]), int(row[1])

    baseline, cost = savings()
    amount = 5_000
    past = utcnow() - timedelta(minutes=1)
    with session_scope(db_url) as s:
        verdict = s.scalars(select(Judgement).where(Judgement.job_id == job_id).order_by(Judgement.item_id).limit(1)).one()
        row = {c.name: getattr(verdict, c.name) for c in Judgement.__table__.columns}
        if lost == "twin":
            s.delete(verdict)
        s.add(
            Reservation(
                id=uuid.uuid4().hex, job_id=job_id, item_id=row["item_id"], model=row["weak_model"] if lost == "twin" else "judge",
                amount_micro_usd=amount, state="open", created_at=past, lease_until=past, sent_at=past,
            )
        )  # fmt: skip
    with session_scope(db_url) as s:
        assert recover_lost(s, job_id=job_id)["settled_at_reserved"] == 1
        if lost == "twin":  # the twin bought again: its verdict row, as the judge step writes it
            s.execute(insert(Judgement).values(**row))
    assert savings() == (baseline, cost + amount), "spent counts the lost call; the all-strong baseline does not"
    with session_scope(db_url) as s:
        assert set(s.scalars(select(Attempt.purpose).where(Attempt.error_class == "LostInFlight"))) == {lost}


def test_the_judge_calls_of_an_adapted_job_are_not_answers_in_the_length_history(tmp_path: Path) -> None:
    """``plan``, ``--allocate budget`` and the adapt cost estimate price answers from the
    ledger's recent answers of each model. The judge (the strong model by default) writes a
    short verdict on a long read; counted as answers of the strong model to the items'
    prompts, its calls made every later estimate of that model's answers too short."""
    import sqlite3

    from jobs.money.estimates import load_history

    done = rb(["run", str(EXAMPLE), "--adapt", "0.1"], tmp_path)
    assert done.returncode == 0, done.stderr
    db = sqlite3.connect(tmp_path / "rb.db")
    (strong,) = db.execute("SELECT strong_model FROM jobs").fetchone()
    answers, judge_calls = db.execute(
        "SELECT SUM(purpose = 'answer'), SUM(purpose = 'judge') FROM attempts WHERE model = ? AND status_code = 200",
        (strong,),
    ).fetchone()
    assert judge_calls > 0
    history = load_history(f"sqlite:///{tmp_path / 'rb.db'}", strong)
    assert history.answers == answers
