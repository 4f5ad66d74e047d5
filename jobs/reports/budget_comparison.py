"""`eval --budget-share`: budget-optimal allocation against a fixed threshold at the same spend."""

from __future__ import annotations

from typing import Any

import numpy as np


def label_costs(records: list[Any], output_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-prompt cost of each model in micro-USD: the record's ``strong_cost``/``weak_cost``
    when it has them, else the config's prices for the prompt's tokens plus ``output_tokens``."""
    from jobs.config import load_config
    from jobs.money.pricing import PriceVersion
    from jobs.money.tokens import count_text_tokens
    from jobs.settings import get_settings

    cfg = load_config(get_settings().config_file())
    ps = PriceVersion.from_config(cfg.defaults.strong, cfg.model(cfg.defaults.strong))
    pw = PriceVersion.from_config(cfg.defaults.weak, cfg.model(cfg.defaults.weak))
    cs, cw = [], []
    for r in records:
        given_s, given_w = r.get("strong_cost"), r.get("weak_cost")
        tokens = count_text_tokens(r.prompt)
        cs.append(float(given_s) if given_s is not None else ps.cost_micro_usd(tokens, output_tokens))
        cw.append(float(given_w) if given_w is not None else pw.cost_micro_usd(tokens, output_tokens))
    return np.asarray(cs), np.asarray(cw)


def budget_comparison(
    records: list[Any], scores: np.ndarray, strong: np.ndarray, weak: np.ndarray, shares: str, output_tokens: int
) -> list[dict]:
    from routing.allocation import compare_at_spend

    cs, cw = label_costs(records, output_tokens)
    return compare_at_spend(scores, strong, weak, cs, cw, [float(x) for x in shares.split(",") if x.strip()])
