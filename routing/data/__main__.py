"""``python -m routing.data ROUTELLM_DIR OUT_DIR``: RouteLLM files -> labels and battles JSONL."""

from routing.data.routellm import main

raise SystemExit(main())
