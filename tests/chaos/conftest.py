"""Chaos tests kill real processes and restart servers; run them alone with ``-m chaos``."""

from tests.chaos.harness import private_redis, sim  # noqa: F401
