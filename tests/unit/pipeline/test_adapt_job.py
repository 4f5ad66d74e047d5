"""``--adapt F`` end to end in the embedded default (issue 11): a judged sample on both models,
a per-job router fitted on the verdicts, the rest routed with the scorer the sample chose,
and a quality estimate with its interval; every call in the ledger and on the budget."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func, select

from jobs.ledger.models import Attempt, Item, Judgement, Reservation
from jobs.ledger.session import session_scope
from jobs.lifecycle import service
from jobs.lifecycle.service import JobSpec


@pytest.fixture(autouse=True)
def _fresh_settings():
    """The CLI reads settings once per process (lru_cache): each test's environment is its own."""
    from jobs.settings import get_settings

    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


N = 300


def _data(tmp_path: Path) -> tuple[Path, Path]:
    """Prompts whose need for the strong model is learnable (the 'proof' ones) but invisible
    to a random prior; the labels say which."""
    data, labels = tmp_path / "in.jsonl", tmp_path / "labels.jsonl"
    with data.open("w") as fh, labels.open("w") as lb:
        for i in range(N):
            hard = i % 3 == 0
            prompt = (f"prove theorem {i} rigorously, step by step" if hard else f"say hello to person {i}") + " ." * (i % 7)
            fh.write(json.dumps({"custom_id": f"q{i}", "prompt": prompt}) + "\n")
            lb.write(json.dumps({"prompt": prompt, "strong": 1.0, "weak": 0.0 if hard else 1.0}) + "\n")
    return data, labels


@pytest.fixture
def adapted(tmp_path: Path, runtime_factory):
    data, labels = _data(tmp_path)
    rt = runtime_factory(f"sqlite:///{tmp_path / 'ledger.db'}")
    st = service.run(
        rt,
        JobSpec(
            input_file=str(data),
            router="random:seed=3",
            strong_share=0.4,
            adapt=0.15,
            adapt_min=20,
            judge=f"labels:{labels}",
            budget_usd=5.0,
        ),
    )
    return rt.db_url, st


def test_the_sample_is_judged_and_the_rest_routed_by_what_it_learned(adapted) -> None:
    db, st = adapted
    assert st.status == "completed" and st.succeeded == N
    with session_scope(db) as s:
        sample = s.scalar(select(func.count()).select_from(Judgement))
        verdicts = dict(s.execute(select(Judgement.verdict, func.count()).group_by(Judgement.verdict)).all())
        twins = s.scalar(
            select(func.count())
            .select_from(Attempt)
            .where(Attempt.model == "sim-weak", Attempt.item_id.in_(select(Judgement.item_id)))
        )
        reasons = dict(s.execute(select(Item.route_reason, func.count()).group_by(Item.route_reason)).all())
        hard_strong = s.scalar(select(func.count()).select_from(Item).where(Item.prompt.like("prove%"), Item.route == "strong"))
        hard = s.scalar(select(func.count()).select_from(Item).where(Item.prompt.like("prove%")))
    assert sample == round(0.15 * N) and twins == sample
    assert set(verdicts) <= {"weak_better", "strong_better", "tie"} and verdicts.get("strong_better", 0) > 0
    adaptation = st.adaptation
    assert adaptation["stage"] == "adapted" and adaptation["judged"] == sample
    assert adaptation["chosen"] != "prior" and adaptation["cv_apgr"]["prior"] is not None
    assert any(r.startswith("adapted:") for r in reasons if r)
    # 40% strong share, a third of the items hard: the random prior would send 40% of them strong. The sample
    # (drawn per job id) usually picks the adapted router, which sends nearly all; sometimes `length` (hard
    # prompts are longer), which sends about two thirds: either is far above the prior.
    assert hard_strong >= 0.6 * hard
    if adaptation["chosen"] == "adapted":
        assert hard_strong >= 0.8 * hard
    q = st.quality_vs_strong
    assert q is not None and 0.0 <= q["low"] <= q["high"] <= 1.0 and 0.0 <= q["estimate"] <= 1.0


def test_every_call_is_charged_and_held(adapted) -> None:
    db, st = adapted
    with session_scope(db) as s:
        attempts = s.scalar(select(func.sum(Attempt.cost_micro_usd)))
        items = s.scalar(select(func.sum(Item.cost_micro_usd)))
        open_holds = s.scalar(select(func.count()).select_from(Reservation).where(Reservation.state == "open"))
    assert attempts == items == st.cost_micro_usd and open_holds == 0
    assert st.adaptation["sample_cost_micro_usd"] > 0
    assert 0 < st.adapt_cost_share < 1


def test_adapt_refuses_rules_it_cannot_honour(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--strong-share"):
        JobSpec(input_file="x.jsonl", adapt=0.1, threshold=0.5)
    with pytest.raises(ValueError, match="--judge, --memory and --adapt-max-cost go with --adapt"):
        JobSpec(input_file="x.jsonl", judge="llm")


@pytest.mark.parametrize("judge", ["llm", "sim"])
def test_model_and_simulated_judges_label_the_sample(tmp_path: Path, runtime_factory, judge: str) -> None:
    """The simulated provider answers the pairwise prompt by its hidden difficulty (longer
    prompts are harder): ``llm`` asks it in both orders, each call charged to the item; ``sim``
    applies the same rule without calls."""
    data, _ = _data(tmp_path)
    rt = runtime_factory(f"sqlite:///{tmp_path / 'ledger.db'}")
    st = service.run(
        rt, JobSpec(input_file=str(data), router="random:seed=3", strong_share=0.4, adapt=0.15, adapt_min=20, judge=judge)
    )
    assert st.status == "completed" and st.succeeded == N
    a = st.adaptation
    assert a["stage"] == "adapted" and a["judged"] == round(0.15 * N)
    assert sum(a["verdicts"].values()) == a["judged"] and set(a["verdicts"]) <= {"strong_better", "weak_better", "tie"}
    with session_scope(rt.db_url) as s:
        judge_calls = s.scalar(
            select(func.count())
            .select_from(Attempt)
            .where(Attempt.model == "sim-strong", Attempt.item_id.in_(select(Judgement.item_id)))
        )
        attempts = s.scalar(select(func.sum(Attempt.cost_micro_usd)))
        items = s.scalar(select(func.sum(Item.cost_micro_usd)))
    sample = a["judged"]
    if judge == "llm":
        assert judge_calls == sample + 2 * sample and a["judge_cost_micro_usd"] > 0  # the answer, then both orders
    else:
        assert judge_calls == sample and a["judge_cost_micro_usd"] == 0
    assert attempts == items == st.cost_micro_usd


def test_memory_carries_the_judged_pairs_to_the_next_job_of_that_name(tmp_path: Path, runtime_factory) -> None:
    from typer.testing import CliRunner

    from jobs.cli import app

    data, labels = _data(tmp_path)
    rt = runtime_factory(f"sqlite:///{tmp_path / 'ledger.db'}")
    spec = dict(input_file=str(data), router="random:seed=3", strong_share=0.4, adapt=0.15, adapt_min=20)
    first = service.run(rt, JobSpec(**spec, judge=f"labels:{labels}", memory="nightly"))  # type: ignore[arg-type]
    second = service.run(rt, JobSpec(**spec, judge=f"labels:{labels}", memory="nightly"))  # type: ignore[arg-type]
    other = service.run(rt, JobSpec(**spec, judge=f"labels:{labels}", memory="elsewhere"))  # type: ignore[arg-type]
    n1, n2 = first.adaptation["judged"], second.adaptation["judged"]
    assert second.adaptation["remembered"] == n1 and n2 < n1 and second.adaptation["memory_used"] == n1
    assert other.adaptation["judged"] == n1 and "memory_used" not in other.adaptation
    assert second.status == "completed" and second.succeeded == N
    env = {"ROUTEBATCH_DATABASE_URL": rt.db_url}
    listed = CliRunner().invoke(app, ["memory", "list", "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    rows = {m["name"]: m for m in __import__("json").loads(listed.stdout)["memories"]}
    assert rows["nightly"]["pairs"] == n1 + n2 and rows["nightly"]["jobs"] == 2
    shown = CliRunner().invoke(app, ["memory", "show", "nightly", "--json"], env=env)
    assert shown.exit_code == 0 and __import__("json").loads(shown.stdout)["pairs"] == n1 + n2
    dropped = CliRunner().invoke(app, ["memory", "drop", "nightly", "--json"], env=env)
    assert dropped.exit_code == 0 and __import__("json").loads(dropped.stdout)["dropped"] == n1 + n2
    again = CliRunner().invoke(app, ["memory", "list", "--json"], env=env)
    assert "nightly" not in {m["name"] for m in __import__("json").loads(again.stdout)["memories"]}


def test_report_draws_the_sample_curves_and_the_operating_point(adapted, tmp_path: Path) -> None:
    import json as _json

    from typer.testing import CliRunner

    from jobs.cli import app

    db, st = adapted
    png = tmp_path / "curve.png"
    got = CliRunner().invoke(app, ["report", st.job_id, "--plot", str(png), "--json"], env={"ROUTEBATCH_DATABASE_URL": db})
    assert got.exit_code == 0, got.output
    data = _json.loads(got.stdout)
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert set(data["curves"]) >= {"prior", "length", data["chosen"]}
    chosen = data["curves"][data["chosen"]]["quality_vs_strong"]
    assert chosen[0] <= chosen[-1] == 1.0  # all strong keeps all of the strong quality
    # the hard prompts are learnable: the chosen scorer is above random (the prior) on the sample
    mid = len(chosen) // 2
    assert chosen[mid] > data["curves"]["prior"]["quality_vs_strong"][mid]
    assert data["operating_point"]["quality_vs_strong"]["estimate"] == st.quality_vs_strong["estimate"]
    assert 0 < data["cost_share"][0] < data["cost_share"][-1] == 1.0


class Killed(BaseException):
    """The process dying mid-judging."""


def test_a_job_killed_while_judging_resumes_without_calling_the_twins_again(tmp_path: Path, runtime_factory, monkeypatch) -> None:
    from jobs.pipeline import adapt_judge
    from jobs.pipeline.tasks import InlineQueue

    data, labels = _data(tmp_path)
    rt = runtime_factory(f"sqlite:///{tmp_path / 'ledger.db'}")

    def die(*args: object, **kwargs: object) -> None:
        raise Killed("judging")

    monkeypatch.setattr(adapt_judge.SampleJudge, "judge", die)
    spec = JobSpec(
        input_file=str(data), router="random:seed=3", strong_share=0.4, adapt=0.15, adapt_min=20, judge=f"labels:{labels}"
    )
    with pytest.raises(Killed):
        service.run(rt, spec)
    monkeypatch.undo()
    with session_scope(rt.db_url) as s:
        job_id = s.scalars(select(Judgement.job_id)).first()
        twins_before = s.scalar(select(func.count()).select_from(Attempt).where(Attempt.model == "sim-weak"))
        assert s.scalar(select(func.count()).select_from(Judgement).where(Judgement.verdict.is_(None))) == twins_before > 0
    queue = InlineQueue()
    with service.hold(rt, job_id) as lease:
        service.resume(rt, job_id, queue, force=True, lease=lease)
        service.drain_inline(rt, queue, job_id, runner_id=lease.runner_id)
    st = service.status(rt, job_id)
    assert st.status == "completed" and st.succeeded == N and st.adaptation["stage"] == "adapted"
    with session_scope(rt.db_url) as s:
        sample_ids = select(Judgement.item_id)
        twins_after = s.scalar(
            select(func.count()).select_from(Attempt).where(Attempt.model == "sim-weak", Attempt.item_id.in_(sample_ids))
        )
        unjudged = s.scalar(select(func.count()).select_from(Judgement).where(Judgement.verdict.is_(None)))
    assert twins_after == twins_before and unjudged == 0  # the twins were recorded once; only the judging was redone


def _first_items_adapted(tmp_path: Path, runtime_factory, n: int, fraction: float):
    """A job of the first ``n`` items, adapting with the default minimum and the labels judge."""
    data, labels = _data(tmp_path)
    head = tmp_path / f"first{n}.jsonl"
    head.write_text("".join(data.read_text().splitlines(keepends=True)[:n]))
    rt = runtime_factory(f"sqlite:///{tmp_path / 'ledger.db'}")
    spec = JobSpec(input_file=str(head), router="random:seed=3", strong_share=0.4, adapt=fraction, judge=f"labels:{labels}")
    return rt, service.run(rt, spec)


def test_a_job_under_twice_the_minimum_samples_half_of_itself_and_estimates(tmp_path: Path, runtime_factory) -> None:
    """50 items with the default minimum of 100: before, the job skipped adapting and reported
    no estimate; now half of it is judged and the rest routed with what that half says."""
    rt, st = _first_items_adapted(tmp_path, runtime_factory, 50, 0.1)
    assert st.status == "completed" and st.succeeded == 50
    assert st.adaptation["stage"] == "adapted" and st.adaptation["judged"] == 25 and st.adaptation["min_count"] == 25
    q = st.quality_vs_strong
    assert q is not None and q["low"] <= q["estimate"] <= q["high"]
    assert any("the sample is half the job" in n for n in st.notes)
    with session_scope(rt.db_url) as s:
        assert s.scalar(select(func.count()).select_from(Judgement)) == 25


def test_a_job_too_small_to_judge_ten_items_is_routed_as_usual(tmp_path: Path, runtime_factory) -> None:
    rt, st = _first_items_adapted(tmp_path, runtime_factory, 19, 0.5)
    assert st.status == "completed" and st.succeeded == 19 and st.quality_vs_strong is None
    assert st.adaptation["stage"] == "skipped"
    assert any("too few to sample (at least 20)" in n for n in st.notes)
    with session_scope(rt.db_url) as s:
        assert s.scalar(select(func.count()).select_from(Judgement)) == 0


def test_generate_workers_without_the_score_extra_run_an_adapting_job(tmp_path: Path, runtime_factory, monkeypatch) -> None:
    """A lean generate worker (the Dockerfile's ``EXTRAS=``) has no embedder. Every step is
    run here as the worker of its queue would: on the generate queue the embedder cannot be
    imported. Before the ``adapt`` step rode the score queue, the generate step that ended
    the sample judged and fitted there, and the job's rest failed on the import. Judging
    (provider calls, no embedder) stays on the generate queue: the ``judge`` step."""
    import routing.embeddings as embeddings
    from jobs.pipeline import runner
    from worker.app import QUEUE_OF

    real_run, real_embedder = runner._run, embeddings.get_embedder
    queues: list[tuple[str, str]] = []

    def not_installed(*args: object, **kwargs: object) -> None:
        raise ModuleNotFoundError("No module named 'model2vec'")

    def on_its_queue(rt, queue, task, job_id, chunk) -> None:
        queues.append((QUEUE_OF[task], task))
        monkeypatch.setattr(embeddings, "get_embedder", not_installed if QUEUE_OF[task] == "generate" else real_embedder)
        real_run(rt, queue, task, job_id, chunk)

    monkeypatch.setattr(runner, "_run", on_its_queue)
    data, labels = _data(tmp_path)
    rt = runtime_factory(f"sqlite:///{tmp_path / 'ledger.db'}")
    spec = JobSpec(
        input_file=str(data), router="random:seed=3", strong_share=0.4, adapt=0.15, adapt_min=20, judge=f"labels:{labels}"
    )
    st = service.run(rt, spec)
    assert st.status == "completed" and st.succeeded == N and st.failed == 0
    assert st.adaptation["stage"] == "adapted" and st.adaptation["judged"] == round(0.15 * N)
    assert ("score", "adapt") in queues and ("generate", "judge") in queues and ("generate", "generate") in queues


@pytest.mark.parametrize("broken_step", ["adapt", "judge"])
def test_an_adapt_step_that_raises_the_same_error_twice_routes_the_rest_as_usual(
    tmp_path: Path, runtime_factory, monkeypatch, broken_step: str
) -> None:
    """Before, every resume (and in distributed mode every reaper pass) raised again and the
    job stayed in ``scoring`` for good; the second time it now stops adapting instead. A
    judging that raised used to be the generate step's error: twice, and the chunk's scored
    items (the rest of the job) ended failed."""
    import routing.adapt
    from jobs.errors import JobFailed
    from jobs.pipeline import adapt_judge
    from jobs.pipeline.tasks import InlineQueue

    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("a bug in fitting")

    if broken_step == "adapt":
        monkeypatch.setattr(routing.adapt, "adapt", broken)
    else:
        monkeypatch.setattr(adapt_judge.SampleJudge, "judge", broken)
    data, labels = _data(tmp_path)
    rt = runtime_factory(f"sqlite:///{tmp_path / 'ledger.db'}")
    spec = JobSpec(
        input_file=str(data), router="random:seed=3", strong_share=0.4, adapt=0.15, adapt_min=20, judge=f"labels:{labels}"
    )
    with pytest.raises(JobFailed, match="ValueError: a bug in fitting"):
        service.run(rt, spec)  # the first time: the job fails with the error, to be resumed
    with session_scope(rt.db_url) as s:
        job_id = s.scalars(select(Item.job_id)).first()
    queue = InlineQueue()
    with service.hold(rt, job_id) as lease:
        service.resume(rt, job_id, queue, force=True, lease=lease)
        service.drain_inline(rt, queue, job_id, runner_id=lease.runner_id)
    st = service.status(rt, job_id)
    assert st.status == "completed" and st.succeeded == N and st.failed == 0
    assert st.adaptation["stage"] == "skipped" and "ValueError: a bug in fitting" in st.adaptation["reason"]
    assert st.quality_vs_strong is None
    assert any("failed twice with ValueError: a bug in fitting" in n for n in st.notes)
    with session_scope(rt.db_url) as s:
        judged = s.scalar(select(func.count()).select_from(Judgement).where(Judgement.verdict.is_not(None)))
        reasons = dict(s.execute(select(Item.route_reason, func.count()).group_by(Item.route_reason)).all())
    assert reasons["adapt_sample"] == round(0.15 * N)  # what the sample bought is kept
    assert judged == (round(0.15 * N) if broken_step == "adapt" else 0)


def _submitted(tmp_path: Path, runtime_factory):
    """An adapting job submitted, its first steps on a :class:`_Steps` queue."""
    data, labels = _data(tmp_path)
    rt = runtime_factory(f"sqlite:///{tmp_path / 'ledger.db'}")
    spec = JobSpec(
        input_file=str(data), router="random:seed=3", strong_share=0.4, adapt=0.15, adapt_min=20, judge=f"labels:{labels}"
    )
    queue = _Steps()
    return rt, service.submit(rt, spec, queue), queue


class _Steps:
    """A queue that only records the steps, so a test runs them one by one as workers would."""

    def __init__(self) -> None:
        self.tasks: list[tuple[str, str, int | None]] = []

    def enqueue(self, task: str, job_id: str, chunk: int | None = None, delay_s: float = 0.0) -> None:
        self.tasks.append((task, job_id, chunk))


def test_a_judging_that_raised_does_not_hold_its_lease(tmp_path: Path, runtime_factory, monkeypatch) -> None:
    """A ``judge`` step whose judging raised used to keep its 30-minute lease: its retry (a
    Celery retry, or the reaper's next pass) found the lease held and did nothing, so the job
    sat in ``scoring`` for half an hour per error. Steps are run one by one, as workers would."""
    from jobs.pipeline import adapt_judge
    from jobs.pipeline.runner import run_task

    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("the judge's provider hiccuped")

    monkeypatch.setattr(adapt_judge.SampleJudge, "judge", broken)
    rt, job_id, queue = _submitted(tmp_path, runtime_factory)
    raised = 0
    while queue.tasks:
        task, jid, chunk = queue.tasks.pop(0)
        try:
            run_task(rt, queue, task, jid, chunk)
        except ValueError:
            raised += 1
            monkeypatch.undo()
            run_task(rt, queue, task, jid, chunk)  # the retry, at once
    assert raised == 1
    st = service.status(rt, job_id)
    assert st.status == "completed" and st.succeeded == N and st.adaptation["stage"] == "adapted"
    with session_scope(rt.db_url) as s:
        assert s.scalar(select(func.count()).select_from(Judgement).where(Judgement.verdict.is_(None))) == 0


def test_a_large_sample_is_judged_over_several_steps_each_recording_its_batches(
    tmp_path: Path, runtime_factory, monkeypatch
) -> None:
    """A sample whose calls outlast one step's time limit: before, the judge step recorded
    nothing until every twin and verdict was in, so a step cut short lost what it had paid
    for and its retry bought it again. Here every step's clock runs out after one batch."""
    from jobs.pipeline import adapt
    from jobs.pipeline.runner import run_task

    class Clock:  # each reading 1,000 s after the last: the deadline passes after every batch
        t = 0.0

        def monotonic(self) -> float:
            self.t += 1000.0
            return self.t

    monkeypatch.setattr(adapt, "JUDGE_BATCH", 4)
    monkeypatch.setattr(adapt, "time", Clock())
    rt, job_id, queue = _submitted(tmp_path, runtime_factory)
    judge_steps = 0
    while queue.tasks:
        task, jid, chunk = queue.tasks.pop(0)
        judge_steps += task == "judge"
        run_task(rt, queue, task, jid, chunk)
    sampled = round(0.15 * N)
    assert judge_steps >= 2 * sampled // 4  # one batch of twins or of verdicts per step
    st = service.status(rt, job_id)
    assert st.status == "completed" and st.succeeded == N and st.adaptation["stage"] == "adapted"
    with session_scope(rt.db_url) as s:
        twins = s.scalar(
            select(func.count())
            .select_from(Attempt)
            .where(Attempt.model == "sim-weak", Attempt.item_id.in_(select(Judgement.item_id)))
        )
        judgements = s.scalar(select(func.count()).select_from(Judgement))
        unjudged = s.scalar(select(func.count()).select_from(Judgement).where(Judgement.verdict.is_(None)))
    assert twins == judgements == sampled and unjudged == 0  # every twin bought once


def _run_steps(rt, queue, until_raises: type[BaseException] | None = None) -> int:
    """Run the queued steps in order; the number that raised ``until_raises`` (then stops)."""
    from jobs.pipeline.runner import run_task

    while queue.tasks:
        task, jid, chunk = queue.tasks.pop(0)
        try:
            run_task(rt, queue, task, jid, chunk)
        except BaseException as exc:
            if until_raises is None or not isinstance(exc, until_raises):
                raise
            queue.tasks.insert(0, (task, jid, chunk))  # the step is retried, as Celery would
            return 1
    return 0


def test_a_time_limit_while_estimating_is_not_taken_for_an_estimate_that_cannot_be_made(
    tmp_path: Path, runtime_factory, monkeypatch
) -> None:
    """The quality estimate's guard caught every Exception, a worker's soft time limit too
    (Celery's ``SoftTimeLimitExceeded`` is one): the step then routed the rest and recorded
    "not estimated" instead of stopping to be retried. Only the estimate's own errors (bad
    numbers) are a "not estimated" now; the step is redone when anything else stops it."""
    import routing.adapt

    class SoftTimeLimitExceeded(Exception):
        pass

    real = routing.adapt.estimate_quality

    def cut_short(*args: object, **kwargs: object) -> None:
        raise SoftTimeLimitExceeded("soft time limit exceeded")

    monkeypatch.setattr(routing.adapt, "estimate_quality", cut_short)
    rt, job_id, queue = _submitted(tmp_path, runtime_factory)
    assert _run_steps(rt, queue, SoftTimeLimitExceeded) == 1
    st = service.status(rt, job_id)
    assert st.adaptation["stage"] == "judged" and st.quality_vs_strong is None, "nothing routed: the step is redone"
    monkeypatch.setattr(routing.adapt, "estimate_quality", real)
    _run_steps(rt, queue)
    st = service.status(rt, job_id)
    assert st.status == "completed" and st.adaptation["stage"] == "adapted"
    assert st.quality_vs_strong is not None and "quality_error" not in st.adaptation


def test_an_estimate_that_cannot_be_made_is_said_and_the_job_goes_on(tmp_path: Path, runtime_factory, monkeypatch) -> None:
    import routing.adapt

    def degenerate(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("no weight in any stratum")

    monkeypatch.setattr(routing.adapt, "estimate_quality", degenerate)
    rt, job_id, queue = _submitted(tmp_path, runtime_factory)
    _run_steps(rt, queue)
    st = service.status(rt, job_id)
    assert st.status == "completed" and st.succeeded == N and st.quality_vs_strong is None
    assert st.adaptation["quality_error"] == "ZeroDivisionError: no weight in any stratum"


def test_a_judge_step_whose_worker_keeps_dying_stops_adapting(tmp_path: Path, runtime_factory, monkeypatch) -> None:
    """A worker killed outright (out of memory) in a judge step runs no error handler: its
    lease lapses and the step is delivered again, and again, if the same batch kills it each
    time. Twice with nothing recorded in between now counts as a step that failed twice: the
    rest of the job is routed as usual."""
    from datetime import timedelta

    from jobs.pipeline import adapt

    class Killed(BaseException):  # stands in for SIGKILL: nothing after it runs in that worker
        pass

    def dies(*args: object, **kwargs: object) -> bool:
        raise Killed

    monkeypatch.setattr(adapt, "judging_lease", lambda rt: timedelta(seconds=-1))  # lapsed at once, as after the kill
    monkeypatch.setattr(adapt, "_release_judging", lambda *args: None)  # a killed worker gives nothing back
    monkeypatch.setattr(adapt, "_judge_sample", dies)
    rt, job_id, queue = _submitted(tmp_path, runtime_factory)
    deaths = 0
    while _run_steps(rt, queue, Killed):  # the step is redelivered (acks_late), or re-enqueued by the reaper
        deaths += 1
        assert deaths <= 2, "the step was delivered again after two deaths"
    assert deaths == 2
    st = service.status(rt, job_id)
    assert st.status == "completed" and st.succeeded == N
    assert st.adaptation["stage"] == "skipped" and "WorkerLost" in st.adaptation["reason"]
    assert not any(k.startswith("judging_") for k in st.adaptation)


def test_the_judging_lease_outlasts_the_step(tmp_path: Path, runtime_factory) -> None:
    """A fixed 30-minute lease under a longer step time limit lapsed while the step still ran:
    a second worker then judged the same items, buying their twins again."""
    from jobs.pipeline.adapt import judging_lease

    rt = runtime_factory(f"sqlite:///{tmp_path / 'ledger.db'}")
    rt.settings.generate_time_limit_s = 3600.0
    assert judging_lease(rt).total_seconds() > 3600.0


def _llm_judged(tmp_path: Path, runtime_factory, **extra):
    data, _ = _data(tmp_path)
    rt = runtime_factory(f"sqlite:///{tmp_path / 'ledger.db'}")
    spec = JobSpec(input_file=str(data), router="random:seed=3", strong_share=0.4, adapt=0.15, adapt_min=20, **extra)
    return rt, service.run(rt, spec)


def test_a_sample_over_the_cost_limit_is_never_sent(tmp_path: Path, runtime_factory) -> None:
    """``--adapt-max-cost``: the drawn sample's twins and judge calls are priced before any of
    them is made; over the limit, the job routes as usual and says why."""
    rt, st = _llm_judged(tmp_path, runtime_factory, adapt_max_cost=0.02)
    assert st.status == "completed" and st.succeeded == N
    a = st.adaptation
    assert a["stage"] == "skipped" and "--adapt-max-cost 2.0%" in a["reason"]
    assert a["estimated_cost"]["share"] > 0.02 and a["estimated_cost"]["judge_micro_usd"] > 0
    with session_scope(rt.db_url) as s:
        assert s.scalar(select(func.count()).select_from(Judgement)) == 0
        assert s.scalar(select(func.count()).select_from(Attempt)) == N  # one answer per item, no twin, no judge
        reasons = dict(s.execute(select(Item.route_reason, func.count()).group_by(Item.route_reason)).all())
    assert not any(r and r.startswith("adapt") for r in reasons)
    assert any("over --adapt-max-cost" in n for n in st.notes)


def test_the_estimated_adapting_cost_is_kept_and_near_what_it_cost(tmp_path: Path, runtime_factory) -> None:
    """With answers of both models in the ledger (an earlier job), the estimate prices answers
    at their recorded lengths, so it lands near the share the job then reports."""
    data, _ = _data(tmp_path)
    rt = runtime_factory(f"sqlite:///{tmp_path / 'ledger.db'}")
    service.run(rt, JobSpec(input_file=str(data), router="random:seed=3", strong_share=0.5))
    st = service.run(
        rt, JobSpec(input_file=str(data), router="random:seed=3", strong_share=0.4, adapt=0.15, adapt_min=20, adapt_max_cost=0.95)
    )
    a = st.adaptation
    assert a["stage"] == "adapted"
    est = a["estimated_cost"]
    assert est["from_history"] and est["extra_micro_usd"] == est["twin_micro_usd"] + est["judge_micro_usd"] > 0
    assert 0.8 * st.adapt_cost_share <= est["share"] <= 1.25 * st.adapt_cost_share


def test_both_judge_calls_of_an_item_are_charged_to_it_on_postgres(tmp_path: Path, runtime_factory, pg_url: str) -> None:
    """The llm judge asks in both orders and the two calls of an item are recorded in one
    write. On Postgres the cost went through a staged ``UPDATE ... FROM``, which applies one
    staged row per item: half the judge cost never reached ``items.cost_micro_usd``."""
    data, _ = _data(tmp_path)
    rt = runtime_factory(pg_url)
    st = service.run(
        rt, JobSpec(input_file=str(data), router="random:seed=3", strong_share=0.4, adapt=0.15, adapt_min=20, judge="llm")
    )
    assert st.status == "completed" and st.adaptation["judge_cost_micro_usd"] > 0
    with session_scope(rt.db_url) as s:
        attempts = dict(s.execute(select(Attempt.item_id, func.sum(Attempt.cost_micro_usd)).group_by(Attempt.item_id)).all())
        items = dict(s.execute(select(Item.id, Item.cost_micro_usd)).all())
        counts = dict(s.execute(select(Attempt.item_id, func.count()).group_by(Attempt.item_id)).all())
        counted = dict(s.execute(select(Item.id, Item.attempts_count)).all())
    assert {i: int(c) for i, c in attempts.items()} == items
    assert counts == counted


def test_a_twin_bought_again_and_lost_after_its_verdict_is_booked_as_a_twin(adapted, monkeypatch) -> None:
    """The reaper charges a stamped twin or judge call whose worker died as lost in flight,
    booked by purpose so that it stays out of the all-strong baseline. It guessed the
    purpose from the item's verdict row, so a twin lost after its item was judged (a second
    delivery of the step buying it again) was booked as a judge call. The hold's note now
    says which call it was."""
    from jobs.ledger.models import Job
    from jobs.lifecycle.recovery import recover_lost
    from jobs.money.pricing import sync_prices
    from jobs.pipeline.adapt import call_and_record
    from jobs.providers import ProviderPool
    from jobs.providers.types import ChatRequest

    from tests.conftest import make_runtime

    db, _ = adapted
    rt = make_runtime(db)
    with session_scope(db) as s:
        job = s.scalars(select(Job)).one()
        item_id = s.scalars(select(Judgement.item_id).where(Judgement.verdict.is_not(None))).first()
        prompt = s.get_one(Item, item_id).prompt
        prices = sync_prices(s, rt.config, [job.weak_model])
        job_id, weak = job.id, job.weak_model

    async def dies(self, request):  # noqa: ANN001
        raise Killed("after sending")

    monkeypatch.setattr(ProviderPool, "complete", dies)
    twin = ChatRequest(custom_id="again", model=weak, messages=[{"role": "user", "content": prompt}], max_tokens=64)
    with pytest.raises(Killed):
        call_and_record(rt, job_id, [(item_id, twin)], prices, purpose="twin")
    with session_scope(db) as s:
        assert recover_lost(s, job_id=job_id, force=True)["settled_at_reserved"] == 1
        lost = s.scalars(select(Attempt.purpose).where(Attempt.error_class == "LostInFlight")).all()
    assert lost == ["twin"]
