"""Quantile thresholds survive ties (RouteLLM's pd.qcut does not)."""

from __future__ import annotations

import numpy as np
import pytest

from routing import get_router, route_strong, threshold_for_strong_share


def test_share_is_respected_without_ties() -> None:
    scores = np.linspace(0, 1, 1000)
    for share in (0.1, 0.25, 0.5, 0.9):
        t = threshold_for_strong_share(scores, share)
        assert route_strong(scores, t).mean() == pytest.approx(share, abs=0.002)


def test_ties_do_not_raise_and_go_the_same_way() -> None:
    scores = np.array([0.2] * 50 + [0.8] * 50)
    t = threshold_for_strong_share(scores, 0.3)
    mask = route_strong(scores, t)
    assert mask[50:].all() and not mask[:50].any()
    assert route_strong(scores, threshold_for_strong_share(scores, 0.0)).sum() == 0
    assert route_strong(scores, threshold_for_strong_share(scores, 1.0)).all()


def test_baseline_routers_are_deterministic() -> None:
    prompts = ["short", "a much longer prompt " * 20]
    assert np.array_equal(get_router("random:seed=1").score(prompts), get_router("random:seed=1").score(prompts))
    assert not np.array_equal(get_router("random:seed=1").score(prompts), get_router("random:seed=2").score(prompts))
    length = get_router("length").score(prompts)
    assert length[1] > length[0]
    with pytest.raises(ValueError, match="unknown router"):
        get_router("nonsense")
