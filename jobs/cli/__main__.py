"""``python -m jobs.cli``: the same as the ``routebatch`` console script."""

from jobs.cli import main

main()
