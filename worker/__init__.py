"""Celery glue: thin tasks over ``routing`` and ``jobs`` (distributed-execution issue)."""
