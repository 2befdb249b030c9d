from __future__ import annotations

import json
import math

import numpy as np
import pytest

from evolve.features import FEATURE_NAMES
from evolve.preference import (
    BOTH_BAD_WEIGHT,
    LONE_WIN_WEIGHT,
    Comparisons,
    PreferenceModel,
    RatingGroup,
    comparisons_from_events,
    kendall_tau,
)
from tests.evolve.conftest import spearman

D = len(FEATURE_NAMES)


def _world(seed: int, n: int = 400) -> tuple[np.ndarray, np.ndarray, np.random.Generator]:
    """Candidates with correlated features on wildly different scales, and a hidden taste.

    The person's utility is linear in the features (std 3: they mostly, not always, agree
    with themselves).
    """
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, D)) @ (np.eye(D) + 0.3 * rng.normal(size=(D, D)))
    features = base * 10.0 ** rng.uniform(-2, 1, D) + rng.normal(size=D) * 5
    utility = base @ rng.normal(size=D)
    return features, 3.0 * utility / utility.std(), rng


def _rater_pairs(utility: np.ndarray, rows: np.ndarray, m: int, rng: np.random.Generator):
    """``m`` pairwise choices between random rows, won with Bradley-Terry probability."""
    a = rng.choice(rows, m)
    b = rng.choice(rows[:-1], m)
    b = np.where(b == a, rows[-1], b)
    a_wins = rng.random(m) < 1.0 / (1.0 + np.exp(-(utility[a] - utility[b])))
    return list(zip(np.where(a_wins, a, b).tolist(), np.where(a_wins, b, a).tolist(), strict=True))


@pytest.mark.parametrize("seed", range(4))
def test_sixty_comparisons_rank_unseen_candidates_like_the_person(seed: int) -> None:
    features, utility, rng = _world(seed)
    train, test = np.arange(200), np.arange(200, 400)
    model = PreferenceModel.fit(features[train], _rater_pairs(utility, train, 60, rng))
    assert model.n_comparisons == 60
    mean, _ = model.predict(features[test])
    assert spearman(mean, utility[test]) > 0.6
    assert kendall_tau(mean, utility[test]) > 0.45


def test_scored_generations_teach_taste_and_a_predicted_score_on_the_0_to_5_scale() -> None:
    features, utility, rng = _world(7)
    groups, rows = [], []
    for gen in range(10):  # ten generations of eight shown candidates, scored 0..5
        shown = np.arange(gen * 8, gen * 8 + 8)
        noisy = utility[shown] + rng.normal(scale=0.5, size=8)
        scores = np.clip(np.round(2.5 + noisy * 0.8), 0, 5)
        groups.append({"n": 8, "scores": {i: float(s) for i, s in enumerate(scores)}})
        rows.append(shown)
    comps = comparisons_from_events(groups)
    model = PreferenceModel.fit(features[np.concatenate(rows)], comps)
    test = np.arange(200, 400)
    mean, _ = model.predict(features[test])
    assert spearman(mean, utility[test]) > 0.6
    predicted = model.score(features[test])
    assert predicted.min() >= 0.0 and predicted.max() <= 5.0
    # Candidates the person would love show a clearly higher predicted score.
    best, worst = test[np.argsort(utility[test])[-20:]], test[np.argsort(utility[test])[:20]]
    assert model.score(features[best]).mean() > model.score(features[worst]).mean() + 1.5


def test_uncertainty_shrinks_as_ratings_accumulate() -> None:
    features, utility, rng = _world(3, n=600)
    train, test = np.arange(400), np.arange(400, 600)
    empty_std = PreferenceModel().predict(features[test])[1].mean()
    stds = []
    for m in (10, 40, 160, 640):
        model = PreferenceModel.fit(features[train], _rater_pairs(utility, train, m, rng))
        stds.append(model.predict(features[test])[1].mean())
    assert empty_std > stds[0]
    assert all(a > b for a, b in zip(stds, stds[1:], strict=False)), stds


def test_a_model_without_ratings_predicts_zero_with_the_prior_uncertainty() -> None:
    features = np.random.default_rng(0).normal(size=(5, 7))
    for model in (PreferenceModel(l2=4.0), PreferenceModel.fit(features, [], l2=4.0)):
        mean, std = model.predict(features)
        assert not model.is_fitted and model.n_comparisons == 0 and model.dim is None
        assert np.all(mean == 0.0)
        np.testing.assert_allclose(std, math.sqrt(7 / 4.0))
        np.testing.assert_allclose(model.score(features), 2.5)


def test_save_and_load_predict_identically() -> None:
    features, utility, rng = _world(5)
    model = PreferenceModel.fit(
        features[:100], _rater_pairs(utility, np.arange(100), 80, rng), l2=2.0, extractor="stats"
    )
    loaded = PreferenceModel.from_dict(json.loads(json.dumps(model.to_dict())))
    for a, b in zip(model.predict(features), loaded.predict(features), strict=True):
        assert np.array_equal(a, b)
    assert np.array_equal(model.score(features), loaded.score(features))
    assert (loaded.l2, loaded.extractor, loaded.n_comparisons) == (2.0, "stats", 80)
    empty = PreferenceModel.from_dict(json.loads(json.dumps(PreferenceModel().to_dict())))
    assert not empty.is_fitted


@pytest.mark.parametrize(
    "mangle",
    [
        lambda d: {**d, "format": "pickle"},
        lambda d: {**d, "theta": d["theta"][:-1]},
        lambda d: {**d, "cov": [[1.0]]},
        lambda d: {**d, "scale": [0.0] * len(d["scale"])},
        lambda d: {k: v for k, v in d.items() if k != "calibration"},
        lambda d: {**d, "calibration": {"kind": "cubic", "a": 0, "b": 1}},
    ],
)
def test_damaged_saved_models_are_refused_in_one_line(mangle) -> None:
    features, utility, rng = _world(6)
    saved = PreferenceModel.fit(
        features[:50], _rater_pairs(utility, np.arange(50), 30, rng)
    ).to_dict()
    with pytest.raises(ValueError) as err:
        PreferenceModel.from_dict(mangle(saved))
    assert "\n" not in str(err.value)


def test_comparison_forms_agree_and_weights_count_like_repeats() -> None:
    features, utility, rng = _world(8)
    pairs = _rater_pairs(utility, np.arange(60), 40, rng)
    winners, losers = (np.array(c) for c in zip(*pairs, strict=True))
    as_list = PreferenceModel.fit(features[:60], pairs)
    as_arrays = PreferenceModel.fit(features[:60], (winners, losers))
    as_matrix = PreferenceModel.fit(features[:60], np.array(pairs))
    as_object = PreferenceModel.fit(
        features[:60], Comparisons(winners, losers, np.ones(40), np.full(60, np.nan))
    )
    doubled = PreferenceModel.fit(features[:60], pairs + pairs)
    weighted = PreferenceModel.fit(features[:60], pairs, weights=np.full(40, 2.0))
    mean = as_list.predict(features)[0]
    assert np.array_equal(mean, as_arrays.predict(features)[0])
    assert np.array_equal(mean, as_matrix.predict(features)[0])
    assert np.array_equal(mean, as_object.predict(features)[0])
    np.testing.assert_allclose(
        doubled.predict(features)[0], weighted.predict(features)[0], atol=1e-9
    )


@pytest.mark.parametrize(
    ("features", "comparisons", "kwargs", "message"),
    [
        (np.zeros((4, 3)), ([0, 1], [2]), {}, "winners but"),
        (np.zeros((4, 3)), [(0, 9)], {}, "out of range"),
        (np.zeros((4, 3)), [(-1, 2)], {}, "out of range"),
        (np.zeros((4, 3)), [(2, 2)], {}, "itself"),
        (np.zeros((4, 3)), [(0, 1)], {"weights": [1.0, 2.0]}, "weights for"),
        (np.zeros((4, 3)), [(0, 1)], {"weights": [-1.0]}, "non-negative"),
        (np.zeros((4, 3)), [(0, 1)], {"scores": [1.0]}, "one entry per feature row"),
        (np.zeros(4), [(0, 1)], {}, "2-d"),
        (np.zeros((0, 3)), [(0, 1)], {}, "out of range"),
        (np.full((4, 3), np.nan), [(0, 1)], {}, "NaN"),
        (np.zeros((4, 3)), ([0.5], [1.5]), {}, "integers"),
        (np.zeros((4, 3)), [(0.0, 1.5)], {}, "integers"),
        (np.zeros((4, 3)), [(0, 1, 2)], {}, "pairs"),
        (np.zeros((4, 3)), ([0], [1], [2]), {}, "tuple"),
        (np.zeros((4, 3)), [(0, 1)], {"l2": 0.0}, "l2"),
    ],
)
def test_bad_fit_inputs_raise_one_line_errors(features, comparisons, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message) as err:
        PreferenceModel.fit(features, comparisons, **kwargs)
    assert "\n" not in str(err.value)


def test_predict_refuses_features_of_another_width() -> None:
    model = PreferenceModel.fit(np.eye(3), [(0, 1)])
    with pytest.raises(ValueError, match="3"):
        model.predict(np.zeros((2, 4)))


# ---- comparisons_from_events --------------------------------------------------------------


def _triples(comps: Comparisons) -> set[tuple[int, int, float]]:
    return {
        (w, lo, round(x, 6))
        for w, lo, x in zip(
            comps.winners.tolist(), comps.losers.tolist(), comps.weights.tolist(), strict=True
        )
    }


def test_scores_become_comparisons_within_their_generation_only() -> None:
    comps = comparisons_from_events(
        [
            {"n": 4, "scores": {0: 5, 1: 3, 2: 3, 3: None}},  # 3 was scored, then cleared
            {"n": 3, "scores": {0: 1, 2: 4, 1: float("nan")}},
        ]
    )
    # Equal scores say nothing; cleared scores are ignored; the second group starts at row 4.
    assert _triples(comps) == {(0, 1, 1.0), (0, 2, 1.0), (6, 4, 1.0)}
    np.testing.assert_array_equal(comps.scores, [5, 3, 3, np.nan, 1, np.nan, 4])
    assert comps.n_items == 7 and len(comps) == 3


def test_many_scores_in_one_generation_are_down_weighted() -> None:
    comps = comparisons_from_events([{"n": 20, "scores": {i: i / 4 for i in range(20)}}])
    assert len(comps) == 190  # every pair of distinct scores
    assert comps.weights.sum() == pytest.approx(20.0)


def test_picks_beat_everything_unpicked_in_their_generation() -> None:
    comps = comparisons_from_events([{"n": 2}, {"n": 4, "picks": {1, 3}}])
    assert {(w, lo) for w, lo in comps.pairs()} == {(3, 2), (3, 4), (5, 2), (5, 4)}
    np.testing.assert_allclose(comps.weights, 1.0)  # 4 pairs among 4 candidates
    assert np.all(np.isnan(comps.scores))


def test_pair_outcomes_and_both_bad() -> None:
    group = RatingGroup(n=4, pairs=((2, 0), (1, None)), both_bad=((0, 3),))
    lone = round(LONE_WIN_WEIGHT / 3, 6)  # 1 weakly beats the other three
    bad = round(BOTH_BAD_WEIGHT / 2, 6)  # 0 and 3 each weakly lose to the other two
    assert _triples(comparisons_from_events([group])) == {
        (2, 0, 1.0),
        (1, 0, lone),
        (1, 2, lone),
        (1, 3, lone),
        (1, 0, bad),
        (2, 0, bad),
        (1, 3, bad),
        (2, 3, bad),
    }


def test_json_round_trip_of_a_group_gives_the_same_comparisons() -> None:
    group = RatingGroup(n=5, scores={0: 4.0, 3: 1.0}, picks=frozenset({2}), pairs=((4, 1),))
    direct = comparisons_from_events([group])
    via_json = comparisons_from_events([json.loads(json.dumps(group.to_dict()))])
    assert _triples(direct) == _triples(via_json)
    np.testing.assert_array_equal(direct.scores, via_json.scores)


def test_rejecting_images_together_teaches_the_model_to_avoid_them() -> None:
    rng = np.random.default_rng(11)
    groups, rows = [], []
    for _ in range(6):  # the person keeps rejecting the two reddest of each generation
        redness = rng.uniform(size=(8, 1))
        other = rng.normal(size=(8, 2))
        reddest = np.argsort(redness[:, 0])[-2:]
        groups.append({"n": 8, "both_bad": [reddest.tolist()]})
        rows.append(np.hstack([redness, other]))
    model = PreferenceModel.fit(np.vstack(rows), comparisons_from_events(groups))
    mean, _ = model.predict(np.array([[0.95, 0.0, 0.0], [0.05, 0.0, 0.0]]))
    assert mean[0] < mean[1]


@pytest.mark.parametrize(
    ("group", "message"),
    [
        ({"n": 3, "scores": {3: 2}}, "not in 0..2"),
        ({"n": 3, "scores": {0: 7}}, "within 0..5"),
        ({"n": 3, "scores": {0: "high"}}, "must be a number"),
        ({"n": 3, "scores": {"first": 2}}, "whole number"),
        ({"n": 3, "picks": [5]}, "not in 0..2"),
        ({"n": 3, "pairs": [[1, 1]]}, "with itself"),
        ({"n": 3, "pairs": [[1, 2, 0]]}, "pair outcome"),
        ({"n": 3, "both_bad": [[0]]}, "both-bad"),
        ({"n": -1}, "n must be"),
        ({"scores": {0: 1}}, "needs 'n'"),
    ],
)
def test_bad_rating_groups_raise_one_line_errors(group: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message) as err:
        comparisons_from_events([group])
    assert "\n" not in str(err.value)


def test_kendall_tau_of_orderings() -> None:
    assert kendall_tau(np.arange(5), np.arange(5) * 3.0) == 1.0
    assert kendall_tau(np.arange(5), -np.arange(5)) == -1.0
    assert math.isnan(kendall_tau(np.ones(1), np.ones(1)))
    with pytest.raises(ValueError, match="one length"):
        kendall_tau(np.ones(3), np.ones(4))
