"""An unreachable or misspelt database or broker is one line (JSON with --json), never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobs.errors import ConfigError, InfrastructureError
from tests.unit.cli.helpers import one_line_error, rb, write_jsonl

DOWN = "postgresql+psycopg://rb:s3cret-pw@127.0.0.1:1/ledger"  # nothing listens on port 1


@pytest.mark.parametrize("args", [["list"], ["status", "batch_x"], ["run", "in.jsonl"], ["submit", "in.jsonl"]])
def test_unreachable_database_is_one_line_without_the_password(tmp_path: Path, args: list[str]) -> None:
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": "hi"}])
    line = one_line_error(rb(args, tmp_path, ROUTEBATCH_DATABASE_URL=DOWN))
    assert "cannot reach the database postgresql+psycopg://rb:***@127.0.0.1:1/ledger" in line
    assert "s3cret-pw" not in line


def test_unreachable_database_under_json_is_a_json_error(tmp_path: Path) -> None:
    done = rb(["list", "--json"], tmp_path, ROUTEBATCH_DATABASE_URL=DOWN)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert json.loads(done.stdout)["error"].startswith("cannot reach the database ")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("foo://x/y", "bad database URL foo://x/y"),
        ("routebatch.db", "ROUTEBATCH_DATABASE_URL: is not a database URL"),
        ("sqlite:////nonexistent-dir/sub/x.db", "cannot reach the database sqlite:////nonexistent-dir/sub/x.db"),
    ],
)
def test_wrong_database_urls_are_named(tmp_path: Path, url: str, message: str) -> None:
    assert message in one_line_error(rb(["list"], tmp_path, ROUTEBATCH_DATABASE_URL=url))


def test_postgres_scheme_aliases_mean_psycopg(pg_url: str, tmp_path: Path) -> None:
    from jobs.settings import Settings

    assert Settings(database_url="postgres://u:p@h:5/db").database_url == "postgresql+psycopg://u:p@h:5/db"
    assert Settings(database_url="postgresql://u@h/db").database_url == "postgresql+psycopg://u@h/db"
    assert Settings(database_url="sqlite:///x.db").database_url == "sqlite:///x.db"
    alias = pg_url.replace("postgresql+psycopg://", "postgres://", 1)
    done = rb(["list", "--json"], tmp_path, ROUTEBATCH_DATABASE_URL=alias)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


def test_invalid_setting_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from jobs.settings import load_settings

    monkeypatch.setenv("ROUTEBATCH_SEND_LEASE_S", "-1")
    with pytest.raises(ConfigError, match="ROUTEBATCH_SEND_LEASE_S: Input should be greater than 0"):
        load_settings()


def test_check_database_and_get_engine_translate_only_infrastructure(tmp_path: Path) -> None:
    from sqlalchemy import text

    from jobs.ledger.session import check_database, get_engine, session_scope

    with pytest.raises(InfrastructureError, match="bad database URL nosuchdialect://h/d"):
        get_engine("nosuchdialect://h/d")
    with pytest.raises(InfrastructureError, match=r"cannot reach the database .*: unable to open database file"):
        check_database(f"sqlite:///{tmp_path}/missing/x.db")
    url = f"sqlite:///{tmp_path}/ok.db"
    check_database(url)
    from sqlalchemy.exc import OperationalError

    with pytest.raises(OperationalError), session_scope(url) as s:  # a bug in SQL keeps the driver's error
        s.execute(text("SELEC 1"))


def test_config_error_under_json_is_json(tmp_path: Path) -> None:
    cfg = tmp_path / "rb.toml"
    cfg.write_text("[defaults]\nstrong = 'a'\n")
    done = rb(["list", "--json"], tmp_path, ROUTEBATCH_CONFIG=str(cfg))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "providers: Field required" in json.loads(done.stdout)["error"]


def test_worker_with_a_bad_database_exits_before_celery(tmp_path: Path, redis_url: str) -> None:
    done = rb(["worker", "--queue", "generate"], tmp_path, ROUTEBATCH_DATABASE_URL=DOWN, ROUTEBATCH_BROKER_URL=redis_url)
    line = one_line_error(done)
    assert "cannot reach the database" in line and "s3cret-pw" not in line
    assert "ready" not in done.stdout + done.stderr
    js = rb(["worker", "--queue", "generate", "--json"], tmp_path, ROUTEBATCH_DATABASE_URL=DOWN, ROUTEBATCH_BROKER_URL=redis_url)
    assert js.returncode == 1 and json.loads(js.stdout.splitlines()[-1])["error"].startswith("cannot reach the database")


def test_worker_with_a_dead_broker_exits_before_celery(tmp_path: Path) -> None:
    done = rb(["worker", "--queue", "generate"], tmp_path, ROUTEBATCH_BROKER_URL="redis://:pw123@127.0.0.1:1/0")
    line = one_line_error(done)
    assert "cannot reach the broker redis://:***@127.0.0.1:1/0" in line
    assert "ready" not in done.stdout + done.stderr
