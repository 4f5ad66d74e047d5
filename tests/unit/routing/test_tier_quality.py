"""Task-mixture quality heads (issue 13 item 3): per-task priors the allocator can trust."""

from __future__ import annotations

import numpy as np
import pytest

from routing.tier_quality import fit_task_quality, fit_tier_quality, out_of_fold_task_quality
from routing.tiers import allocate_tiers


def _two_tasks(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two tasks told apart by feature 0; model 0 is right on task a, model 1 on task b: the
    ranking of the models flips between tasks, which one global linear head cannot express
    once the task signal is a nonlinear function of the features."""
    task = rng.integers(0, 2, n)
    X = rng.normal(size=(n, 6))
    X[:, 0] = np.where(task == 0, 1.0, -1.0) * np.abs(X[:, 0]) * 3 + 0.2 * rng.normal(size=n)
    X[:, 1] = X[:, 0] ** 2  # noise the tasks share
    p = np.where(task[:, None] == 0, [0.9, 0.2], [0.3, 0.8])
    Y = (rng.uniform(size=(n, 2)) < p).astype(float)
    return X, Y, np.where(task == 0, "a", "b")


def test_the_mixture_recovers_each_tasks_ranking_from_the_prompt_alone() -> None:
    rng = np.random.default_rng(0)
    X, Y, tasks = _two_tasks(rng, 600)
    heads = fit_task_quality(X, Y, tasks)
    Xt, _, tt = _two_tasks(np.random.default_rng(1), 400)
    q = heads.predict(Xt)  # no task labels at prediction
    assert heads.tasks == ("a", "b")
    assert (heads.task_probabilities(Xt).argmax(axis=1) == (tt == "b")).mean() > 0.95
    on_a, on_b = q[tt == "a"].mean(axis=0), q[tt == "b"].mean(axis=0)
    assert on_a[0] > on_a[1] + 0.5 and on_b[1] > on_b[0] + 0.3
    assert on_a[0] == pytest.approx(0.9, abs=0.06) and on_b[1] == pytest.approx(0.8, abs=0.06)
    assert ((q >= 0) & (q <= 1)).all()


def test_it_scores_better_than_one_ridge_head_when_the_ranking_flips() -> None:
    X, Y, tasks = _two_tasks(np.random.default_rng(2), 800)
    Xt, Yt, _ = _two_tasks(np.random.default_rng(3), 800)
    mixture = ((fit_task_quality(X, Y, tasks).predict(Xt) - Yt) ** 2).mean()
    ridge = ((fit_tier_quality(X, Y).predict(Xt) - Yt) ** 2).mean()
    assert mixture < ridge - 0.01


def test_out_of_fold_rows_never_see_their_own_label_or_task() -> None:
    X, Y, tasks = _two_tasks(np.random.default_rng(4), 300)
    folds = np.arange(300) % 3
    oof = out_of_fold_task_quality(X, Y, tasks, folds)
    Y2, t2 = Y.copy(), tasks.copy()
    Y2[0] = 1 - Y2[0]
    t2[0] = "b" if t2[0] == "a" else "a"
    assert np.allclose(out_of_fold_task_quality(X, Y2, t2, folds)[folds == 0][0], oof[0])
    with pytest.raises(ValueError):
        out_of_fold_task_quality(X, Y, tasks, np.zeros(300))


def test_a_small_task_keeps_its_prior_and_one_task_is_refused() -> None:
    X, Y, tasks = _two_tasks(np.random.default_rng(5), 300)
    tasks = tasks.astype(object)
    tasks[:5] = "tiny"
    heads = fit_task_quality(X, Y, tasks)
    assert heads.residual[heads.tasks.index("tiny")] is None
    assert heads.prior[heads.tasks.index("tiny")] == pytest.approx(Y[:5].mean(axis=0))
    with pytest.raises(ValueError):
        fit_task_quality(X, Y, ["a"] * 300)
    with pytest.raises(ValueError):
        fit_task_quality(X, Y, ["a", "b"] * 10)


def test_three_tiers_on_the_mixture_beat_every_pair_when_each_task_has_its_own_best_model() -> None:
    """Three tasks, each won by a different tier: the N-model allocation must beat the best of
    the three two-model routings at the same cap, on true outcomes."""
    rng = np.random.default_rng(6)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        task = rng.integers(0, 3, n)
        X = rng.normal(size=(n, 5))
        X[:, 0] += 4 * (task == 0)
        X[:, 1] += 4 * (task == 1)
        p = np.array([[0.9, 0.3, 0.3], [0.4, 0.9, 0.4], [0.6, 0.6, 0.6]])[task]
        return X, (rng.uniform(size=(n, 3)) < p).astype(float), np.array(["top", "mid", "any"])[task], p

    X, Y, tasks, _ = draw(900)
    Xt, _, _, Yt = draw(600)  # judged on each test prompt's true expected score
    q = fit_task_quality(X, Y, tasks).predict(Xt)
    c = np.tile([10.0, 3.0, 1.0], (600, 1))
    cap = float(c[:, 0].sum()) * 0.4
    rows = np.arange(600)
    three = allocate_tiers(q, c, cap)
    pairs = []
    for a, b in ((0, 1), (0, 2), (1, 2)):
        two = allocate_tiers(q[:, [a, b]], c[:, [a, b]], cap)
        pairs.append(Yt[rows, np.where(two.choice == 0, a, b)].mean())
    assert Yt[rows, three.choice].mean() > max(pairs) + 0.02
