"""The agent's first pass: choose which of many candidates a person gets to see.

The engine renders ``k * n`` candidates; ``screen`` shows ``n`` of them. Most are the ones
the preference model rates best; a share are the ones it is least sure about, because those
ratings teach it the most; and no two shown candidates are near-duplicates, because a grid of
eight copies wastes the person's time. ``agreement`` says afterwards how often the person's
choices fell in the agent's top half, a plain number the UI can show.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

__all__ = ["agreement", "far_from", "screen"]

#: Default near-duplicate threshold: RMS distance, in units of each feature's spread.
MIN_DISTANCE = 0.1


def screen(
    mean: np.ndarray,
    std: np.ndarray,
    features: np.ndarray,
    n_show: int,
    rng: np.random.Generator,
    explore: float = 0.25,
    min_distance: float = MIN_DISTANCE,
    *,
    beta: float = 0.0,
    scale: np.ndarray | None = None,
) -> list[int]:
    """Pick ``n_show`` distinct candidates to show, best first, then the explorers.

    ``n_show - n_explore`` slots go to the highest ``mean + beta * std`` and ``n_explore =
    round(explore * n_show)`` (at least 1 when ``explore > 0`` and ``n_show >= 2``) to the
    highest ``std``. A candidate is skipped while it lies within ``min_distance`` of one
    already chosen; distance is the root-mean-square difference of features divided by
    ``scale``. When too few distinct candidates remain, the rest are filled by the candidate
    farthest from those chosen, so the result always has ``n_show`` distinct indices.
    Ties are broken by ``rng``, so the result is a deterministic function of its inputs and
    the generator's state (with no ratings yet, all means tie and the choice is random).

    Args:
        mean: predicted utility per candidate, ``[k]``.
        std: predicted uncertainty per candidate, ``[k]``.
        features: feature rows ``[k, d]`` used for the near-duplicate test.
        n_show: how many to show, ``0 <= n_show <= k``.
        rng: source of tie-breaking randomness.
        explore: share of slots for the most uncertain candidates, 0..1.
        min_distance: candidates closer than this count as near-duplicates.
        beta: optimism of the exploit ranking (0 = by mean, > 0 = upper confidence bound).
        scale: per-feature spread for distances (e.g. ``PreferenceModel.scale``, stable across
            generations); default the spread among these candidates.

    Returns:
        Indices into the candidates, exploit picks first in rank order, then explore picks.

    Raises:
        ValueError: lengths disagree, values are not finite, or a parameter is out of range.
    """
    mean, std, x = _check(mean, std, features)
    k = len(mean)
    if isinstance(n_show, bool) or not isinstance(n_show, int | np.integer) or not 0 <= n_show <= k:
        raise ValueError(f"n_show must be a whole number from 0 to {k}, got {n_show!r}")
    if not 0.0 <= explore <= 1.0:
        raise ValueError(f"explore must be within 0..1, got {explore!r}")
    if not (math.isfinite(min_distance) and min_distance >= 0):
        raise ValueError(f"min_distance must be a non-negative number, got {min_distance!r}")
    if not math.isfinite(beta):
        raise ValueError(f"beta must be a finite number, got {beta!r}")
    n_explore = int(round(explore * n_show))
    if explore > 0 and n_explore == 0 and n_show >= 2:
        n_explore = 1
    z = _normalised(x, scale)
    # One random permutation decides every tie, in both rankings.
    tiebreak = rng.permutation(k)
    exploit_order = np.lexsort((tiebreak, -(mean + beta * std)))
    explore_order = np.lexsort((tiebreak, -std))

    chosen: list[int] = []
    nearest = np.full(k, np.inf)  # distance from each candidate to the closest chosen one

    def take(i: int) -> None:
        chosen.append(int(i))
        np.minimum(nearest, np.sqrt(np.mean((z - z[i]) ** 2, axis=1)), out=nearest)

    def fill(order: np.ndarray, until: int) -> None:
        for i in order:
            if len(chosen) >= until:
                return
            # nearest == 0 covers the chosen themselves and exact copies, even at min_distance 0.
            if not chosen or (nearest[i] >= min_distance and nearest[i] > 0):
                take(i)

    fill(exploit_order, n_show - n_explore)
    fill(explore_order, n_show)
    fill(exploit_order, n_show)  # explorers ran out of distinct candidates
    while len(chosen) < n_show:
        # Too few distinct candidates: the least redundant one left, best mean on ties.
        free = np.ones(k, dtype=bool)
        free[chosen] = False
        left = np.flatnonzero(free)
        best = left[np.lexsort((tiebreak[left], -mean[left], -nearest[left]))[0]]
        take(best)
    return chosen


def agreement(picked_positions: Iterable[int], predicted_mean_of_shown: np.ndarray) -> float:
    """Share of the person's picks that the agent ranked in the top half of what was shown.

    A pick counts 1 when its predicted mean is above the median of the shown candidates, 1/2
    when equal to it, 0 below; so an agent that knows nothing scores 0.5 on average and a
    perfect one 1.0. Returns NaN when there are no picks.

    Args:
        picked_positions: positions (into the shown list) the person picked or scored highest.
        predicted_mean_of_shown: the agent's predicted utility of each shown candidate.

    Raises:
        ValueError: a position is out of range or the predictions are not a finite vector.
    """
    pred = np.asarray(predicted_mean_of_shown, dtype=np.float64)
    if pred.ndim != 1 or not np.all(np.isfinite(pred)):
        raise ValueError("predicted means must be a finite 1-d array")
    picks = [int(p) for p in picked_positions]
    if not picks:
        return float("nan")
    if min(picks) < 0 or max(picks) >= len(pred):
        raise ValueError(f"picked positions must be within 0..{len(pred) - 1}")
    median = float(np.median(pred))
    hits = [1.0 if pred[p] > median else 0.5 if pred[p] == median else 0.0 for p in picks]
    return float(np.mean(hits))


def _check(mean: np.ndarray, std: np.ndarray, features: np.ndarray) -> tuple[np.ndarray, ...]:
    mean = np.asarray(mean, dtype=np.float64)
    std = np.asarray(std, dtype=np.float64)
    x = np.asarray(features, dtype=np.float64)
    if mean.ndim != 1 or std.shape != mean.shape:
        raise ValueError(
            f"mean and std must be vectors of one length, got {mean.shape} and {std.shape}"
        )
    if x.ndim != 2 or len(x) != len(mean):
        raise ValueError(
            f"features must be [{len(mean)}, d] to match the predictions, got {x.shape}"
        )
    for name, a in (("mean", mean), ("std", std), ("features", x)):
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} contain NaN or infinite values")
    return mean, std, x


def far_from(
    features: np.ndarray,
    others: np.ndarray,
    min_distance: float = MIN_DISTANCE,
    scale: np.ndarray | None = None,
) -> np.ndarray:
    """Which rows of ``features`` are not near-duplicates of any row of ``others``, by the
    measure of ``screen`` (``scale`` default: the spread among ``features``).

    Returns:
        A boolean mask over the rows of ``features``.
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(others, dtype=np.float64)
    if len(y) == 0:
        return np.ones(len(x), dtype=bool)
    diff = (x[:, None, :] - y[None, :, :]) / _spread(x, scale)
    nearest = np.sqrt(np.mean(diff * diff, axis=2)).min(axis=1)
    return (nearest >= min_distance) & (nearest > 0)


def _normalised(x: np.ndarray, scale: np.ndarray | None) -> np.ndarray:
    return x / _spread(x, scale)


def _spread(x: np.ndarray, scale: np.ndarray | None) -> np.ndarray:
    if scale is None:
        spread = x.std(axis=0) if len(x) else np.ones(x.shape[1])
    else:
        spread = np.asarray(scale, dtype=np.float64)
        if spread.shape != (x.shape[1],) or not np.all(np.isfinite(spread)):
            raise ValueError(f"scale must be a finite vector of length {x.shape[1]}")
    # A feature that does not vary here cannot tell candidates apart; scale 1 keeps it inert.
    return np.where(spread > 1e-12, spread, 1.0)
