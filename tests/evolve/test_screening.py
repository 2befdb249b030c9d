from __future__ import annotations

import math

import numpy as np
import pytest

from evolve.preference import PreferenceModel
from evolve.screening import agreement, far_from, screen


def _rms(z: np.ndarray, i: int, j: int) -> float:
    return float(np.sqrt(np.mean((z[i] - z[j]) ** 2)))


def _clusters(rng: np.random.Generator, n_clusters: int, copies: int, d: int = 6) -> np.ndarray:
    """``n_clusters`` distinct looks, each rendered ``copies`` times with tiny variations."""
    centres = rng.normal(size=(n_clusters, d))
    return np.repeat(centres, copies, axis=0) + 1e-3 * rng.normal(size=(n_clusters * copies, d))


def test_returns_exactly_n_show_distinct_indices_deterministically() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 5))
    mean, std = rng.normal(size=32), rng.uniform(0.1, 1, size=32)
    first = screen(mean, std, x, 8, np.random.default_rng(42))
    again = screen(mean, std, x, 8, np.random.default_rng(42))
    assert first == again
    assert len(first) == 8 == len(set(first))
    assert all(0 <= i < 32 for i in first)
    assert screen(mean, std, x, 0, np.random.default_rng(1)) == []
    assert sorted(screen(mean, std, x, 32, np.random.default_rng(1))) == list(range(32))


def test_without_exploration_the_best_predicted_are_shown_best_first() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(20, 4))
    mean = rng.normal(size=20)
    chosen = screen(mean, np.ones(20), x, 5, rng, explore=0.0)
    assert chosen == np.argsort(-mean)[:5].tolist()


def test_exploration_shows_the_most_uncertain_candidates() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(40, 4))
    mean = np.linspace(1.0, 0.0, 40)  # candidate 0 is the best predicted ...
    std = np.full(40, 0.1)
    std[[37, 39]] = [2.0, 3.0]  # ... 39 and 37, predicted poor, are the least understood
    shown = screen(mean, std, x, 8, np.random.default_rng(5), explore=0.25)
    assert shown[:6] == list(range(6))
    assert shown[6:] == [39, 37]
    assert 39 not in screen(mean, std, x, 8, np.random.default_rng(5), explore=0.0)
    # Even one exploration slot is kept for a small grid.
    assert 39 in screen(mean, std, x, 3, np.random.default_rng(5), explore=0.1)


def test_upper_confidence_bound_prefers_promising_uncertain_candidates() -> None:
    x = np.random.default_rng(3).normal(size=(3, 2))
    mean, std = np.array([1.0, 0.9, 0.0]), np.array([0.0, 1.0, 0.0])
    assert screen(mean, std, x, 1, np.random.default_rng(0), explore=0.0) == [0]
    assert screen(mean, std, x, 1, np.random.default_rng(0), explore=0.0, beta=0.5) == [1]


def test_near_duplicates_are_never_shown_together() -> None:
    rng = np.random.default_rng(4)
    x = _clusters(rng, n_clusters=10, copies=5)
    cluster = np.arange(50) // 5
    mean = rng.normal(size=50) + 5 * (cluster < 2)  # two looks dominate the predictions
    std = rng.uniform(size=50)
    shown = screen(mean, std, x, 8, np.random.default_rng(6))
    assert len(set(cluster[shown].tolist())) == 8
    z = x / x.std(axis=0)
    assert min(_rms(z, i, j) for i in shown for j in shown if i < j) >= 0.1


def test_far_from_marks_the_rows_that_copy_none_of_the_others() -> None:
    rng = np.random.default_rng(5)
    x = _clusters(rng, n_clusters=6, copies=2)  # rows 2c and 2c + 1 look alike
    kept = x[[0, 4]]  # one of clusters 0 and 2
    far = far_from(x, kept)
    assert far.tolist() == [c not in (0, 2) for c in np.arange(12) // 2]
    assert far_from(x, x[:0]).all()  # nothing kept: nothing is a copy


def test_too_few_distinct_candidates_still_fill_the_grid_with_the_most_different() -> None:
    rng = np.random.default_rng(7)
    x = _clusters(rng, n_clusters=3, copies=4)
    cluster = np.arange(12) // 4
    shown = screen(np.zeros(12), np.ones(12), x, 6, np.random.default_rng(8))
    assert len(shown) == 6 == len(set(shown))
    assert set(cluster[shown[:3]].tolist()) == {0, 1, 2}  # every look before any repeat
    identical = np.ones((5, 3))
    assert sorted(screen(np.zeros(5), np.zeros(5), identical, 5, rng)) == [0, 1, 2, 3, 4]


def test_with_no_ratings_the_choice_is_random_but_reproducible() -> None:
    x = np.random.default_rng(9).normal(size=(64, 5))
    mean, std = PreferenceModel().predict(x)
    picks = {tuple(screen(mean, std, x, 8, np.random.default_rng(seed))) for seed in range(5)}
    assert len(picks) == 5


def test_distances_can_use_the_models_feature_scale() -> None:
    # Two candidates differ by 0.05 in a feature whose usual spread (the model's scale) is 1:
    # near-duplicates, even though among these three candidates that feature varies little.
    x = np.array([[0.0, 0.0], [0.05, 0.0], [0.0, 0.5]])
    mean = np.array([1.0, 0.9, 0.0])
    own_scale = screen(mean, np.zeros(3), x, 2, np.random.default_rng(0), explore=0.0)
    model_scale = screen(
        mean, np.zeros(3), x, 2, np.random.default_rng(0), explore=0.0, scale=np.ones(2)
    )
    assert own_scale == [0, 1]
    assert model_scale == [0, 2]


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((np.zeros(3), np.zeros(3), np.zeros((3, 2)), 4), {}, "n_show"),
        ((np.zeros(3), np.zeros(3), np.zeros((3, 2)), -1), {}, "n_show"),
        ((np.zeros(3), np.zeros(2), np.zeros((3, 2)), 1), {}, "one length"),
        ((np.zeros(3), np.zeros(3), np.zeros((4, 2)), 1), {}, "to match"),
        ((np.full(3, np.nan), np.zeros(3), np.zeros((3, 2)), 1), {}, "NaN"),
        ((np.zeros(3), np.zeros(3), np.zeros((3, 2)), 1), {"explore": 1.5}, "explore"),
        ((np.zeros(3), np.zeros(3), np.zeros((3, 2)), 1), {"min_distance": -1.0}, "min_distance"),
        ((np.zeros(3), np.zeros(3), np.zeros((3, 2)), 1), {"scale": np.ones(3)}, "scale"),
        ((np.zeros(0), np.zeros(0), np.zeros((0, 2)), 1), {}, "n_show"),
    ],
)
def test_bad_screening_inputs_raise_one_line_errors(args, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message) as err:
        screen(*args, rng=np.random.default_rng(0), **kwargs)
    assert "\n" not in str(err.value)


def test_agreement_counts_picks_in_the_agents_top_half() -> None:
    pred = np.array([0.9, 0.1, 0.8, 0.2, 0.7, 0.3])
    assert agreement([0, 2], pred) == 1.0
    assert agreement([1, 3], pred) == 0.0
    assert agreement([0, 1], pred) == 0.5
    assert agreement([1], np.zeros(4)) == 0.5  # an agent with no opinion is at chance
    assert math.isnan(agreement([], pred))
    with pytest.raises(ValueError, match="within 0..5"):
        agreement([6], pred)
