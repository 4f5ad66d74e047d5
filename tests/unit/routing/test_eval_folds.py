"""Cross-fitting: a router is never scored on a prompt it was trained on."""

from __future__ import annotations

import numpy as np
import pytest

from routing.evaluation import cross_fit_scores, make_folds


def test_random_folds_are_balanced_and_keep_duplicates_together() -> None:
    prompts = [f"q{i}" for i in range(100)] + ["q3", "q3", "q50"]
    folds = make_folds(prompts, 5, seed=0)
    assert set(folds) == set(range(5))
    assert folds[100] == folds[101] == folds[3] and folds[102] == folds[50]
    sizes = np.bincount(folds)
    assert sizes.max() - sizes.min() <= 3
    assert np.array_equal(folds, make_folds(prompts, 5, seed=0))
    assert not np.array_equal(folds, make_folds(prompts, 5, seed=1))


def test_group_folds_never_split_a_group() -> None:
    groups = [f"s{i % 7}" for i in range(140)]
    prompts = [f"q{i}" for i in range(140)]
    folds = make_folds(prompts, 5, groups=groups)
    for g in set(groups):
        assert len({folds[i] for i in range(140) if groups[i] == g}) == 1
    with pytest.raises(ValueError):
        make_folds(prompts, 8, groups=groups)
    with pytest.raises(ValueError):
        make_folds(prompts, 1)


def test_group_folds_keep_a_prompt_repeated_across_groups_in_one_fold() -> None:
    prompts = ["same"] + [f"q{i}" for i in range(30)] + ["same"]
    groups = ["a"] + [f"g{i % 6}" for i in range(30)] + ["b"]
    folds = make_folds(prompts, 3, groups=groups)
    assert folds[0] == folds[-1]


def test_out_of_fold_never_scores_a_training_prompt() -> None:
    prompts = [f"p{i % 80}" for i in range(100)]  # 20 duplicates
    folds = make_folds(prompts, 4)
    seen_in_training: list[set[str]] = []

    def fit(train: np.ndarray):
        trained = {prompts[i] for i in train}
        seen_in_training.append(trained)

        def score(test: np.ndarray) -> np.ndarray:
            assert not trained & {prompts[i] for i in test}
            return np.full(test.size, float(len(seen_in_training)))

        return score

    out = cross_fit_scores(len(prompts), folds, fit)
    assert len(seen_in_training) == 4 and np.all(np.isfinite(out))
    for f in range(4):  # each fold scored by the model of its own round
        assert len(set(out[folds == f])) == 1


def test_always_train_rows_are_trained_on_and_never_scored() -> None:
    folds = np.array([-1, -1, 0, 0, 1, 1])
    trained: list[list[int]] = []

    def fit(train: np.ndarray):
        trained.append(sorted(train.tolist()))
        return lambda test: np.zeros(test.size)

    out = cross_fit_scores(6, folds, fit, always_train=np.array([1, 1, 0, 0, 0, 0], bool))
    assert trained == [[0, 1, 4, 5], [0, 1, 2, 3]]
    assert np.isnan(out[:2]).all() and np.isfinite(out[2:]).all()
