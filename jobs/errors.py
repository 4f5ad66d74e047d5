"""Every error routebatch raises on purpose, in one tree.

::

    RoutebatchError            anything the user can fix; the CLI prints it as one line
    ├── ConfigError            the config file, a flag or a setting is invalid
    │   └── ExportRefused      an export would overwrite the ledger, the input or a file, or the job is still running
    ├── DatasetError           the input file as a whole cannot be read
    │   └── RowError           one row is invalid (readers turn it into an invalid row)
    ├── BudgetError            a budget is missing, or a cap cannot be set as asked
    ├── ProviderError          a provider cannot be used (missing key, 401, dead endpoint)
    ├── InfrastructureError    the database or the broker cannot be reached
    ├── JobNotFound            no job with that id
    ├── MemoryNotFound         no judged pairs are kept under that --memory name
    ├── JobFailed              a step of an inline job raised; the job is marked failed
    ├── JobBusy                another live runner holds the job (its lease has not expired)
    └── IllegalTransition      a state change the transition table does not allow

Anything else that escapes is a bug and surfaces with its traceback.
"""

from __future__ import annotations


class RoutebatchError(Exception):
    """Base of every deliberate error; its message is meant for the user."""


class ConfigError(RoutebatchError):
    """The config file is missing, unreadable or invalid; the message names file and key."""


class ExportRefused(ConfigError):
    """An export would destroy data (the ledger, the input, the other output, an existing
    file without ``--force``) or the job is not finished (without ``--partial``)."""


class DatasetError(RoutebatchError):
    """The file as a whole cannot be read (missing, unreadable, unknown format)."""


class RowError(DatasetError):
    """A row is invalid; ``field`` names the offending field (None for the whole line)."""

    def __init__(self, field: str | None, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


class BudgetError(RoutebatchError):
    """A named budget is missing or cannot be created or raised as asked."""


class ProviderError(RoutebatchError):
    """A configured provider cannot be used at all (not one failed call: those are attempts)."""


class InfrastructureError(RoutebatchError):
    """The ledger database or the broker is unreachable or misconfigured."""


class JobNotFound(RoutebatchError):
    """No job has this id."""


class MemoryNotFound(RoutebatchError):
    """No judged pair is kept under that ``--memory`` name."""


class JobFailed(RoutebatchError):
    """A step of an inline job raised; the job is marked failed with this message."""


class JobBusy(RoutebatchError):
    """Another runner (``run``/``resume`` elsewhere) holds the job's lease and is alive."""


class IllegalTransition(RoutebatchError):
    """The transition table does not allow this job state change."""


class SendRefused(RoutebatchError):
    """A call withdrawn at the last moment, before it went on the wire: raised by the
    provider pool's ``before_send`` hook (the call's budget hold was closed meanwhile), and
    turned by the pool into an unsent result with this message as its error."""


__all__ = [
    "BudgetError",
    "ConfigError",
    "DatasetError",
    "ExportRefused",
    "IllegalTransition",
    "InfrastructureError",
    "JobBusy",
    "JobFailed",
    "JobNotFound",
    "MemoryNotFound",
    "ProviderError",
    "RoutebatchError",
    "RowError",
    "SendRefused",
]
