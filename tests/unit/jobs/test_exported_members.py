"""The public API is exactly ``jobs.__all__`` (httpx's tests/test_exported_members.py is the model)."""

from __future__ import annotations

import jobs

EXPECTED = {
    "BudgetError", "ConfigError", "DatasetError", "IllegalTransition", "InfrastructureError", "InlineQueue",
    "ItemState", "JobFailed", "JobNotFound", "JobSpec", "JobState", "JobStatus", "Phase", "ProviderError",
    "RoutebatchError", "Runtime", "TaskQueue", "cancel", "export", "list_jobs", "queue_for", "resume", "run",
    "status", "submit",
}  # fmt: skip


def test_all_is_pinned() -> None:
    assert set(jobs.__all__) == EXPECTED
    assert len(jobs.__all__) == len(EXPECTED)


def test_every_exported_name_resolves_and_names_its_home() -> None:
    for name in jobs.__all__:
        member = getattr(jobs, name)
        assert member is not None
        module = getattr(member, "__module__", "")
        assert module.startswith("jobs."), (name, module)


def test_errors_share_one_root() -> None:
    for name in jobs.__all__:
        member = getattr(jobs, name)
        if isinstance(member, type) and issubclass(member, Exception):
            assert issubclass(member, jobs.RoutebatchError), name


def test_unknown_names_raise_attribute_error() -> None:
    try:
        jobs.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("jobs.no_such_name resolved")
