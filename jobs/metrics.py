"""Prometheus metrics read from the ledger at scrape time.

Why from the ledger and not from in-process counters: a job's work is spread over many
worker processes (Celery prefork children, other machines), and the ledger already holds
every item state, attempt, token and micro-dollar. One collector that aggregates it on each
scrape gives the same numbers from whichever worker is scraped, survives restarts, and needs
no multiprocess bookkeeping. The queries use the ledger's indexes and aggregate; they are
meant for a scrape every 15-60 s.

Exposed (all prefixed ``routebatch_``): items by job state and item state (open jobs),
attempts, retries, tokens and spend by provider/model/status (counters), items scored
(counter: its rate is the scoring rate), jobs by state, and queue depth per Celery queue.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import case, func, select

log = logging.getLogger(__name__)

Backlog = Callable[[str], int]


class LedgerCollector:
    """A ``prometheus_client`` collector over the ledger at ``db_url`` (and the broker's queues)."""

    def __init__(self, db_url: str, backlog: Backlog | None = None, queues: tuple[str, ...] = ("score", "generate")) -> None:
        self.db_url = db_url
        self.backlog = backlog
        self.queues = queues

    def describe(self) -> list[Any]:
        return []  # collected lazily; no metric exists before the first scrape

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        from jobs.ledger.models import Attempt, Item, Job
        from jobs.ledger.session import session_scope
        from jobs.lifecycle.states import JOB_TERMINAL, ItemState

        up = GaugeMetricFamily("routebatch_ledger_up", "1 when the ledger could be read for this scrape.")
        try:
            with session_scope(self.db_url) as s:
                jobs = s.execute(select(Job.state, func.count()).group_by(Job.state)).all()
                open_ids = select(Job.id).where(Job.state.not_in([st.value for st in JOB_TERMINAL]))
                items = s.execute(select(Item.state, func.count()).where(Item.job_id.in_(open_ids)).group_by(Item.state)).all()
                scored = s.scalar(select(func.count()).select_from(Item).where(Item.score.is_not(None))) or 0
                ok = case((Attempt.error_class.is_(None), "ok"), else_=Attempt.error_class)
                attempts = s.execute(
                    select(
                        Attempt.provider,
                        Attempt.model,
                        ok,
                        func.count(),
                        func.coalesce(func.sum(case((Attempt.attempt_no > 1, 1), else_=0)), 0),
                        func.coalesce(func.sum(Attempt.prompt_tokens), 0),
                        func.coalesce(func.sum(Attempt.completion_tokens), 0),
                        func.coalesce(func.sum(Attempt.cost_micro_usd), 0),
                    ).group_by(Attempt.provider, Attempt.model, ok)
                ).all()
        except Exception as exc:
            log.warning("metrics: cannot read the ledger (%s)", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up

        g_jobs = GaugeMetricFamily("routebatch_jobs", "Jobs by state.", labels=["state"])
        for state, n in jobs:
            g_jobs.add_metric([str(state)], n)
        yield g_jobs

        g_items = GaugeMetricFamily(
            "routebatch_open_job_items", "Items of jobs not yet finished, by item state.", labels=["state"]
        )
        by_state = dict(items)
        for st in ItemState:
            g_items.add_metric([st.value], by_state.get(st.value, 0))
        yield g_items

        c_scored = CounterMetricFamily("routebatch_items_scored", "Items that have a router score (rate = scoring rate).")
        c_scored.add_metric([], scored)
        yield c_scored

        labels = ["provider", "model", "status"]
        c_att = CounterMetricFamily("routebatch_attempts", "Provider calls.", labels=labels)
        c_retry = CounterMetricFamily(
            "routebatch_retries", "Provider calls that were retries of an earlier attempt.", labels=labels
        )
        c_tok = CounterMetricFamily("routebatch_tokens", "Tokens billed.", labels=[*labels, "kind"])
        c_spend = CounterMetricFamily("routebatch_spend_micro_usd", "Money charged, integer micro-USD.", labels=labels)
        for provider, model, status, n, retries, prompt, completion, cost in attempts:
            key = [provider or "", model or "", str(status)]
            c_att.add_metric(key, n)
            c_retry.add_metric(key, int(retries))
            c_tok.add_metric([*key, "prompt"], int(prompt))
            c_tok.add_metric([*key, "completion"], int(completion))
            c_spend.add_metric(key, int(cost))
        yield from (c_att, c_retry, c_tok, c_spend)

        if self.backlog is not None:
            g_q = GaugeMetricFamily("routebatch_queue_depth", "Messages waiting in each Celery queue.", labels=["queue"])
            for q in self.queues:
                try:
                    g_q.add_metric([q], self.backlog(q))
                except Exception as exc:
                    log.warning("metrics: cannot read queue %s (%s)", q, type(exc).__name__)
            yield g_q


def serve_metrics(port: int, db_url: str, backlog: Backlog | None = None, addr: str = "0.0.0.0") -> Any:
    """Serve ``/metrics`` on ``port`` from a daemon thread; returns the HTTP server."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry()
    registry.register(LedgerCollector(db_url, backlog))
    server, _thread = start_http_server(port, addr=addr, registry=registry)
    return server
