"""docker-compose.yml parses, has the services the docs promise, and every routebatch
command in it exists in the CLI with the options it passes (checked against the typer app)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import typer.main

yaml = pytest.importorskip("yaml")

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
SERVICES = {"postgres", "redis", "migrate", "worker-score", "worker-generate", "flower", "sim-provider", "prometheus", "grafana"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def cli():
    from jobs.cli import app

    return typer.main.get_command(app)


def _argv(service: dict) -> list[str]:
    def words(v) -> list[str]:
        if v is None:
            return []
        return shlex.split(v) if isinstance(v, str) else [str(x) for x in v]

    return words(service.get("entrypoint")) + words(service.get("command"))


def _resolve(group, argv: list[str]):
    """Walk subcommands (``db upgrade``); return the command and its remaining arguments.

    Duck-typed: typer may ship its own copy of click, whose classes are not ``click``'s.
    """
    cmd = group
    rest = list(argv)
    while hasattr(cmd, "get_command") and rest and not rest[0].startswith("-"):
        sub = cmd.get_command(cmd.context_class(cmd), rest[0])
        assert sub is not None, f"routebatch has no command {rest[0]!r} (in {' '.join(argv)!r})"
        cmd, rest = sub, rest[1:]
    return cmd, rest


def _check_options(cmd, args: list[str], where: str) -> None:
    known = {opt for p in cmd.params for opt in getattr(p, "opts", []) + getattr(p, "secondary_opts", [])} | {"--help"}
    for arg in args:
        if arg.startswith("-"):
            assert arg.split("=", 1)[0] in known, f"{where}: option {arg} does not exist; known: {sorted(known)}"
    ctx = cmd.context_class(cmd)
    cmd.parse_args(ctx, list(args))  # raises on a bad value or a missing argument


def test_compose_parses_with_the_services(compose):
    assert SERVICES <= set(compose["services"])


def test_every_routebatch_command_exists_in_the_cli(compose, cli):
    checked = 0
    for name, service in compose["services"].items():
        argv = _argv(service)
        if not argv or argv[0] != "routebatch":
            continue
        cmd, rest = _resolve(cli, argv[1:])
        if rest == ["--help"]:
            continue
        _check_options(cmd, rest, f"service {name}")
        checked += 1
    assert checked >= 4


def test_services_run_the_documented_commands(compose):
    doc = (REPO / "docs" / "distributed.md").read_text()
    for name, service in compose["services"].items():
        argv = _argv(service)
        if argv[:1] == ["routebatch"] and argv[1:] != ["--help"]:
            assert " ".join(argv) in doc, f"service {name}: `{' '.join(argv)}` is not in docs/distributed.md"


def test_workers_and_flower_share_one_broker_and_database(compose):
    svc = compose["services"]
    env = svc["worker-generate"]["environment"]
    for name in ("migrate", "worker-score", "worker-generate", "sim-provider"):
        e = svc[name]["environment"]
        assert e["ROUTEBATCH_BROKER_URL"] == env["ROUTEBATCH_BROKER_URL"]
        assert e["ROUTEBATCH_DATABASE_URL"] == env["ROUTEBATCH_DATABASE_URL"]
    assert f"--broker={env['ROUTEBATCH_BROKER_URL']}" in _argv(svc["flower"])
    assert env["ROUTEBATCH_DATABASE_URL"].startswith("postgresql+psycopg://")


def test_migrate_runs_once_before_the_workers(compose):
    svc = compose["services"]
    assert _argv(svc["migrate"]) == ["routebatch", "db", "upgrade"]
    assert svc["migrate"]["restart"] == "no"
    for name in ("worker-score", "worker-generate"):
        assert svc[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_score_worker_reserves_a_gpu_and_generate_workers_scale(compose):
    svc = compose["services"]
    devices = svc["worker-score"]["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in d.get("capabilities", []) for d in devices)
    assert _argv(svc["worker-score"])[:4] == ["routebatch", "worker", "--queue", "score"]
    gen = svc["worker-generate"]
    assert "container_name" not in gen and "ports" not in gen  # `--scale worker-generate=N` works
    assert _argv(gen)[:4] == ["routebatch", "worker", "--queue", "generate"]


def test_prometheus_scrapes_the_port_the_workers_serve_and_grafana_is_provisioned(compose):
    import json
    import re

    gen = _argv(compose["services"]["worker-generate"])
    port = gen[gen.index("--metrics-port") + 1]
    prom = yaml.safe_load((REPO / "deploy" / "prometheus.yml").read_text())
    targets = [sd for job in prom["scrape_configs"] for sd in job.get("dns_sd_configs", [])]
    assert any(str(sd["port"]) == port and "worker-generate" in sd["names"] for sd in targets)
    mounts = {m.split(":")[0] for svc in ("prometheus", "grafana") for m in compose["services"][svc]["volumes"]}
    for mount in mounts:
        assert (REPO / mount).exists(), mount
    dashboard = json.loads((REPO / "deploy" / "grafana" / "dashboards" / "routebatch.json").read_text())
    exposed = set(re.findall(r'"(routebatch_\w+)"', (REPO / "jobs" / "metrics.py").read_text()))
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            for name in re.findall(r"routebatch_\w+", target["expr"]):
                base = name.removesuffix("_total")
                assert base in exposed, f"panel {panel['title']!r} queries {name}, which jobs/metrics.py does not expose"
