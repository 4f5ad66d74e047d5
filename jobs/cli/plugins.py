"""Commands contributed by other packages through the ``routebatch.cli`` entry point.

``worker`` adds ``routebatch worker`` this way, so the CLI can start Celery workers while
``jobs`` never imports ``worker``.
"""

from __future__ import annotations

from importlib.metadata import entry_points

import typer

CLI_ENTRY_POINTS = "routebatch.cli"


def load_plugins(app: typer.Typer) -> None:
    """Call each plugin's ``register(app)``."""
    for ep in entry_points(group=CLI_ENTRY_POINTS):
        ep.load()(app)
