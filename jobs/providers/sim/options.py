"""Options of the simulated provider: latency distribution, faults, replay.

Parsed from the ``simulated`` table of a provider in the config (or CLI flags), with an
error naming the key for anything unknown, because a typo in a fault fraction would
otherwise silently give a fault-free run that "passes".
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

from jobs.providers.sim.judge import JudgeRule

FAULT_KINDS = ("429", "500", "503", "hang", "drop", "malformed", "no_usage")
"""Injectable faults. ``hang`` answers after ``hang_s`` (past the client timeout), ``drop``
closes the connection without a response, ``malformed`` sends a 200 whose body is not JSON,
``no_usage`` a correct answer without the ``usage`` object."""

USAGE_FAULT_KINDS = ("negative_usage", "huge_usage")
"""A correct answer whose ``usage`` lies: negative counts, or a billion completion tokens
(a hostile or broken provider; the ledger must cap it). Never part of ``fault_rate``'s
default split: name them in ``faults`` or ``fault_kinds``."""

OVERLOAD_FAULT_KINDS = ("529",)
"""Anthropic's ``529 overloaded_error`` (transient). Only when named, so that ``fault_rate``'s
split (and every seeded run that uses it) stays as it was; on ``/v1/messages`` the ``503``
fault answers 529 too, since that is how Anthropic reports an overloaded service."""

ALL_FAULT_KINDS = FAULT_KINDS + USAGE_FAULT_KINDS + OVERLOAD_FAULT_KINDS

LATENCY_KINDS = ("fixed", "uniform", "lognormal")


@dataclass(frozen=True)
class SimOptions:
    latency: str = "fixed"
    latency_ms: float = 20.0
    latency_min_ms: float | None = None
    latency_max_ms: float | None = None
    latency_sigma: float = 0.5
    seed: int = 0
    faults: dict[str, float] = field(default_factory=dict)
    retry_after_s: float = 1.0
    hang_s: float = 3600.0
    api_key: str | None = None
    models: tuple[str, ...] = ()
    replay_file: str | None = None
    replay_models: dict[str, str] = field(default_factory=dict)
    replay_miss: str = "error"
    rate_limit_requests: int | None = None
    rate_limit_tokens: int | None = None
    rate_limit_window_s: float = 60.0
    batch_complete_s: float = 2.0
    """How long a provider batch (``/v1/batches``, ``/v1/messages/batches``) takes to complete."""
    batch_expire_s: float | None = None
    """When set below ``batch_complete_s``: batches expire part-way at this age."""
    judge: dict[str, Any] = field(default_factory=dict)
    """The simulated judge's rule (:class:`jobs.providers.sim.judge.JudgeRule`'s fields)."""

    @classmethod
    def from_dict(cls, options: dict[str, Any] | None) -> SimOptions:
        """Accepts the config's ``simulated`` table.

        Faults may be given as ``faults = {"429" = 0.05, ...}``, as flat ``fault_429 = 0.05``
        keys, or as ``fault_rate = 0.2`` (the total, split evenly over ``fault_kinds``,
        default all kinds).
        """
        opts = dict(options or {})
        faults: dict[str, float] = {}
        rate = opts.pop("fault_rate", None)
        kinds = opts.pop("fault_kinds", None) or list(FAULT_KINDS)
        if rate:
            for k in kinds:
                faults[str(k)] = float(rate) / len(kinds)
        for k, v in dict(opts.pop("faults", None) or {}).items():
            faults[str(k)] = float(v)
        for key in [k for k in opts if k.startswith("fault_")]:
            faults[key[len("fault_") :]] = float(opts.pop(key))
        for k, v in faults.items():
            if k not in ALL_FAULT_KINDS:
                raise ValueError(f"simulated.faults: unknown fault {k!r}; known: {', '.join(ALL_FAULT_KINDS)}")
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"simulated.faults.{k}: fraction must be within [0, 1], got {v}")
        if sum(faults.values()) > 1.0 + 1e-9:
            raise ValueError("simulated.faults: fractions add up to more than 1")
        known = {f for f in cls.__dataclass_fields__ if f != "faults"}
        unknown = sorted(set(opts) - known)
        if unknown:
            raise ValueError(f"simulated: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        if "models" in opts:
            opts["models"] = tuple(opts["models"])
        if "replay_models" in opts:
            opts["replay_models"] = dict(opts["replay_models"])
        if "judge" in opts:
            opts["judge"] = dict(opts["judge"])
            JudgeRule.from_dict(opts["judge"])  # a bad judge option fails at start, not on each judge request
        out = cls(faults={k: v for k, v in faults.items() if v > 0}, **opts)
        if out.latency not in LATENCY_KINDS:
            raise ValueError(f"simulated.latency: {out.latency!r} is not one of {', '.join(LATENCY_KINDS)}")
        if out.replay_miss not in ("error", "generate"):
            raise ValueError("simulated.replay_miss: must be 'error' or 'generate'")
        for key in ("rate_limit_requests", "rate_limit_tokens"):
            v = getattr(out, key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"simulated.{key}: must be an integer >= 1")
        if not out.rate_limit_window_s > 0:
            raise ValueError("simulated.rate_limit_window_s: must be > 0")
        if not (isinstance(out.batch_complete_s, int | float) and 0 <= out.batch_complete_s < math.inf):
            raise ValueError("simulated.batch_complete_s: must be a number >= 0")
        if out.batch_expire_s is not None and not (isinstance(out.batch_expire_s, int | float) and out.batch_expire_s > 0):
            raise ValueError("simulated.batch_expire_s: must be a number > 0")
        return out

    def draw_latency_s(self, rng: random.Random) -> float:
        """One latency sample in seconds. ``lognormal`` has median ``latency_ms``."""
        if self.latency == "fixed":
            ms = self.latency_ms
        elif self.latency == "uniform":
            lo = self.latency_min_ms if self.latency_min_ms is not None else 0.0
            hi = self.latency_max_ms if self.latency_max_ms is not None else 2 * self.latency_ms
            ms = rng.uniform(lo, hi)
        else:
            ms = math.exp(rng.gauss(math.log(max(self.latency_ms, 1e-3)), self.latency_sigma))
            if self.latency_max_ms is not None:
                ms = min(ms, self.latency_max_ms)
        return max(ms, 0.0) / 1000.0

    def draw_fault(self, rng: random.Random) -> str | None:
        if not self.faults:
            return None
        x = rng.random()
        for kind, frac in self.faults.items():
            if x < frac:
                return kind
            x -= frac
        return None
