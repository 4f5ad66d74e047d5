"""Ledger database: schema, sessions, migrations."""
