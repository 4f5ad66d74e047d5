"""routebatch's job runner: the public Python API.

Everything a library caller needs is importable from here; the packages below are the
implementation (``lifecycle``, ``pipeline``, ``money``, ``ledger``, ``datasets``,
``providers``, ``reports``, ``cli``) and may change between versions.

    from jobs import JobSpec, Runtime, run
    status = run(Runtime.from_settings(), JobSpec(input_file="prompts.jsonl"))

Names are loaded on first use, so ``import jobs`` stays cheap for the CLI and the workers.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jobs.errors import (
        BudgetError,
        ConfigError,
        DatasetError,
        IllegalTransition,
        InfrastructureError,
        JobFailed,
        JobNotFound,
        ProviderError,
        RoutebatchError,
    )
    from jobs.lifecycle.service import JobSpec, cancel, export, list_jobs, resume, run, status, submit
    from jobs.lifecycle.states import ItemState, JobState, Phase
    from jobs.lifecycle.status import JobStatus
    from jobs.pipeline.tasks import InlineQueue, TaskQueue, queue_for
    from jobs.runtime import Runtime

_WHERE = {
    "JobSpec": "jobs.lifecycle.service",
    "submit": "jobs.lifecycle.service",
    "run": "jobs.lifecycle.service",
    "status": "jobs.lifecycle.service",
    "list_jobs": "jobs.lifecycle.service",
    "cancel": "jobs.lifecycle.service",
    "resume": "jobs.lifecycle.service",
    "export": "jobs.lifecycle.service",
    "JobStatus": "jobs.lifecycle.status",
    "JobState": "jobs.lifecycle.states",
    "ItemState": "jobs.lifecycle.states",
    "Phase": "jobs.lifecycle.states",
    "Runtime": "jobs.runtime",
    "TaskQueue": "jobs.pipeline.tasks",
    "InlineQueue": "jobs.pipeline.tasks",
    "queue_for": "jobs.pipeline.tasks",
    "RoutebatchError": "jobs.errors",
    "ConfigError": "jobs.errors",
    "DatasetError": "jobs.errors",
    "BudgetError": "jobs.errors",
    "ProviderError": "jobs.errors",
    "InfrastructureError": "jobs.errors",
    "JobNotFound": "jobs.errors",
    "JobFailed": "jobs.errors",
    "IllegalTransition": "jobs.errors",
}

__all__ = [
    "BudgetError",
    "ConfigError",
    "DatasetError",
    "IllegalTransition",
    "InfrastructureError",
    "InlineQueue",
    "ItemState",
    "JobFailed",
    "JobNotFound",
    "JobSpec",
    "JobState",
    "JobStatus",
    "Phase",
    "ProviderError",
    "RoutebatchError",
    "Runtime",
    "TaskQueue",
    "cancel",
    "export",
    "list_jobs",
    "queue_for",
    "resume",
    "run",
    "status",
    "submit",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'jobs' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
