"""A score worker loads the default router before its first task (issue 12: the first call
of a job should not wait for the router's weights)."""

from __future__ import annotations

import pytest

pytest.importorskip("celery")

from worker import launch, process


@pytest.fixture
def fresh_runtime(tmp_path, monkeypatch):
    monkeypatch.setenv("ROUTEBATCH_DATABASE_URL", f"sqlite:///{tmp_path / 'l.db'}")
    monkeypatch.setattr(process, "_runtime", None)
    yield
    process.close_runtime()


def test_preload_caches_the_default_router_in_the_process_runtime(fresh_runtime, monkeypatch) -> None:
    loaded: list[str] = []
    real = process.Runtime.router

    def router(self, spec):
        loaded.append(spec)
        return real(self, "length")  # the built-in default is blend: keep the test light

    monkeypatch.setattr(process.Runtime, "router", router)
    process.preload_default_router().join(timeout=60)
    assert loaded == ["blend"] and process._runtime is not None


def test_a_router_that_cannot_load_is_logged_not_raised(fresh_runtime, monkeypatch, caplog) -> None:
    def broken(self, spec):
        raise RuntimeError("no weights here")

    monkeypatch.setattr(process.Runtime, "router", broken)
    process.preload_default_router().join(timeout=60)
    assert "could not preload the default router" in caplog.text


@pytest.mark.parametrize(("queue", "preloads"), [("score", True), ("generate", False)])
def test_only_score_workers_preload(monkeypatch, queue: str, preloads: bool) -> None:
    calls: list[str] = []
    monkeypatch.setattr(process, "preload_default_router", lambda: calls.append("preload"))

    class App:
        steps = {"worker": set()}

        def worker_main(self, argv):
            calls.append("main")

    monkeypatch.setattr("worker.app.make_app", lambda settings: App())
    monkeypatch.setattr(process, "connect_signals", lambda: None)
    launch.run_worker(None, queue, reaper=False)  # type: ignore[arg-type]
    assert calls == (["preload", "main"] if preloads else ["main"])


def test_warm_imports_leaves_the_mappers_configured() -> None:
    from sqlalchemy.orm import Mapper

    from jobs.ledger.models import Base

    process.warm_imports()
    assert all(isinstance(m, Mapper) and m.configured for m in Base.registry.mappers)
