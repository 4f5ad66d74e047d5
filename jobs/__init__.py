"""Jobs: settings, ledger schema, datasets, job lifecycle, budgets, providers, CLI."""
