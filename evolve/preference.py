"""The agent's model of one person's taste, learned from their ratings.

Ratings only compare within what a person saw together: a 4 in one generation is not a 4 in
the next, so every event is turned into pairwise comparisons inside its generation
(``comparisons_from_events``). A Bradley-Terry model then explains them: each candidate has a
utility ``u = z . theta`` over its standardised features ``z``, and ``P(a beats b) =
sigmoid(u_a - u_b)``. That is a logistic regression on feature differences; with a Gaussian
prior on ``theta`` it is fitted by Newton's method, and the inverse Hessian at the optimum (a
Laplace approximation) gives each candidate's utility an uncertainty, which screening uses to
explore.

Everything is numpy: 2000 comparisons over 40 features fit in a few milliseconds. A model
saves to and loads from plain JSON (``to_dict``/``from_dict``), never a pickle.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "Comparisons",
    "PreferenceModel",
    "RatingGroup",
    "comparisons_from_events",
    "kendall_tau",
]

FORMAT = "imagery.preference/1"
SCORE_MAX = 5.0
#: Total weight with which a "both bad" candidate loses against the rest of its generation.
BOTH_BAD_WEIGHT = 0.5
#: Total weight with which a lone winner (pair with no loser) beats the rest of its generation.
LONE_WIN_WEIGHT = 0.5
_MAX_NEWTON_STEPS = 50


# ---- rating events -> comparisons ---------------------------------------------------------


@dataclass(frozen=True)
class RatingGroup:
    """What one person said about one generation, as shown to them.

    Positions ``0..n-1`` index the candidates the person was shown in this generation, in the
    order their feature rows are stacked for ``PreferenceModel.fit``.

    Attributes:
        n: number of candidates shown.
        scores: position -> score 0..5; ``None`` (or NaN) marks a cleared score and is ignored.
        picks: positions the person picked; each beats every unpicked position.
        pairs: ``(winner, loser)`` outcomes of pairwise choices; ``(winner, None)`` means the
            winner was chosen with no single loser and weakly beats the rest of the generation.
        both_bad: pairs the person rejected together; both weakly lose against the rest of the
            generation (against its average, spread over its members).
    """

    n: int
    scores: Mapping[int, float | None] = field(default_factory=dict)
    picks: frozenset[int] = frozenset()
    pairs: tuple[tuple[int, int | None], ...] = ()
    both_bad: tuple[tuple[int, int], ...] = ()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RatingGroup:
        """Build from ``{"n", "scores", "picks", "pairs", "both_bad"}`` (all but ``n`` optional).

        Score keys may be strings of digits, as after a JSON round trip.
        """
        if "n" not in data:
            raise ValueError("a rating group needs 'n', the number of candidates shown")
        scores = {}
        for key, value in dict(data.get("scores") or {}).items():
            try:
                scores[int(key)] = value
            except (TypeError, ValueError):
                raise ValueError(f"score position {key!r} is not a whole number") from None
        return cls(
            n=data["n"],
            scores=scores,
            picks=frozenset(data.get("picks") or ()),
            pairs=tuple(tuple(p) for p in data.get("pairs") or ()),
            both_bad=tuple(tuple(p) for p in data.get("both_bad") or ()),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "scores": {str(k): v for k, v in sorted(self.scores.items())},
            "picks": sorted(self.picks),
            "pairs": [list(p) for p in self.pairs],
            "both_bad": [list(p) for p in self.both_bad],
        }


@dataclass(frozen=True)
class Comparisons:
    """Weighted ``winner beats loser`` comparisons between rows of a flat feature array.

    Attributes:
        winners: ``int64`` row indices of the winners.
        losers: ``int64`` row indices of the losers, same length.
        weights: ``float64`` weight of each comparison.
        scores: ``float64`` ``[n_items]`` observed score per row, NaN where unscored.
    """

    winners: np.ndarray
    losers: np.ndarray
    weights: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.winners)

    @property
    def n_items(self) -> int:
        return len(self.scores)

    def pairs(self) -> list[tuple[int, int]]:
        """The comparisons as ``(winner, loser)`` tuples."""
        return list(zip(self.winners.tolist(), self.losers.tolist(), strict=True))


def comparisons_from_events(groups: Iterable[RatingGroup | Mapping[str, Any]]) -> Comparisons:
    """Turn each generation's ratings into weighted comparisons within that generation.

    Group ``g`` covers flat rows ``offset_g .. offset_g + n_g - 1`` where ``offset_g`` is the
    sum of the earlier groups' ``n``: stack each generation's feature rows in the same order
    to get the matching ``features`` array. Within a group:

    - scores: every pair with different scores gives higher beats lower (equal scores say
      nothing); picks: every picked position beats every unpicked one. So that a big grid
      does not outweigh a few deliberate choices, each of these families is down-weighted to
      a total weight of about the number of candidates involved: ``min(1, k / pairs)`` each.
    - pairs: ``(winner, loser)`` weight 1; ``(winner, None)`` beats every other position with
      total weight ``LONE_WIN_WEIGHT``.
    - both_bad ``(a, b)``: each of ``a`` and ``b`` loses against every other position with
      total weight ``BOTH_BAD_WEIGHT``.

    Args:
        groups: ``RatingGroup``s or dicts in the ``RatingGroup.from_dict`` format.

    Returns:
        The comparisons, and the observed scores per flat row (for score calibration).

    Raises:
        ValueError: a position is out of range, a score is outside 0..5, or a pair is
            malformed.
    """
    winners: list[np.ndarray] = []
    losers: list[np.ndarray] = []
    weights: list[np.ndarray] = []
    scores: list[np.ndarray] = []
    offset = 0
    for raw in groups:
        group = raw if isinstance(raw, RatingGroup) else RatingGroup.from_dict(raw)
        n = _group_size(group.n)
        parts, group_scores = _group_comparisons(group, n)
        for w, lo, wt in parts:
            winners.append(w + offset)
            losers.append(lo + offset)
            weights.append(wt)
        scores.append(group_scores)
        offset += n

    def joined(chunks: list[np.ndarray], dtype: Any) -> np.ndarray:
        return np.concatenate(chunks).astype(dtype) if chunks else np.zeros(0, dtype=dtype)

    return Comparisons(
        winners=joined(winners, np.int64),
        losers=joined(losers, np.int64),
        weights=joined(weights, np.float64),
        scores=joined(scores, np.float64),
    )


def _group_size(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise ValueError(f"a rating group's n must be a whole number >= 0, got {n!r}")
    return int(n)


def _position(pos: Any, n: int, what: str) -> int:
    if isinstance(pos, bool) or not isinstance(pos, int | np.integer) or not 0 <= pos < n:
        raise ValueError(f"{what} position {pos!r} is not in 0..{n - 1}")
    return int(pos)


def _group_comparisons(
    group: RatingGroup, n: int
) -> tuple[list[tuple[np.ndarray, np.ndarray, np.ndarray]], np.ndarray]:
    parts = []
    scores = np.full(n, np.nan)
    for pos, value in group.scores.items():
        p = _position(pos, n, "score")
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue  # cleared
        if isinstance(value, bool) or not isinstance(value, int | float | np.number):
            raise ValueError(f"score at position {p} must be a number, got {value!r}")
        if not 0.0 <= float(value) <= SCORE_MAX:
            raise ValueError(f"score at position {p} must be within 0..5, got {value!r}")
        scores[p] = float(value)
    rated = np.flatnonzero(np.isfinite(scores))
    better = scores[rated][:, None] > scores[rated][None, :]
    parts.append(_all_pairs(rated[np.nonzero(better)[0]], rated[np.nonzero(better)[1]], len(rated)))

    picked = np.array(sorted({_position(p, n, "pick") for p in group.picks}), dtype=np.int64)
    unpicked = np.setdiff1d(np.arange(n), picked)
    w, lo = np.meshgrid(picked, unpicked, indexing="ij")
    parts.append(_all_pairs(w.ravel(), lo.ravel(), n))

    for pair in group.pairs:
        if len(pair) != 2:
            raise ValueError(f"a pair outcome must be (winner, loser or None), got {pair!r}")
        win = _position(pair[0], n, "pair winner")
        if pair[1] is None:
            rest = np.setdiff1d(np.arange(n), [win])
            parts.append(_spread(np.full(len(rest), win), rest, LONE_WIN_WEIGHT))
            continue
        lose = _position(pair[1], n, "pair loser")
        if lose == win:
            raise ValueError(f"a pair outcome compares position {win} with itself")
        parts.append((np.array([win]), np.array([lose]), np.ones(1)))

    for pair in group.both_bad:
        if len(pair) != 2:
            raise ValueError(f"a both-bad outcome must be two positions, got {pair!r}")
        bad = [_position(p, n, "both-bad") for p in pair]
        rest = np.setdiff1d(np.arange(n), bad)
        for b in bad:
            parts.append(_spread(rest, np.full(len(rest), b), BOTH_BAD_WEIGHT))
    return [p for p in parts if len(p[0])], scores


def _all_pairs(w: np.ndarray, lo: np.ndarray, involved: int) -> tuple[np.ndarray, ...]:
    weight = min(1.0, involved / len(w)) if len(w) else 1.0
    return w.astype(np.int64), lo.astype(np.int64), np.full(len(w), weight)


def _spread(w: np.ndarray, lo: np.ndarray, total: float) -> tuple[np.ndarray, ...]:
    return w.astype(np.int64), lo.astype(np.int64), np.full(len(w), total / max(1, len(w)))


class PreferenceModel:
    """A Bradley-Terry utility over standardised features, with a Laplace posterior.

    ``PreferenceModel()`` is the model with no ratings: every utility is 0 with the prior's
    uncertainty. Fitted models come from ``PreferenceModel.fit`` or ``from_dict``.

    Args:
        l2: precision of the Gaussian prior on the weights (larger = more cautious).
        extractor: name of the features the model expects (``EmbeddingExtractor.name``),
            saved with it so that a caller can refuse to mix feature kinds.
    """

    def __init__(self, l2: float = 1.0, extractor: str = "") -> None:
        if not (isinstance(l2, int | float) and math.isfinite(l2) and l2 > 0):
            raise ValueError(f"l2 must be a positive number, got {l2!r}")
        self.l2 = float(l2)
        self.extractor = extractor
        self.n_comparisons = 0
        self._mean: np.ndarray | None = None
        self._scale: np.ndarray | None = None
        self._theta: np.ndarray | None = None
        self._cov: np.ndarray | None = None
        # Display calibration: ("linear", a, b) -> clip(a + b * u, 0, 5);
        # ("logistic", c, 0) -> 5 * sigmoid(u - c).
        self._calibration: tuple[str, float, float] = ("logistic", 0.0, 0.0)

    # ---- fitting --------------------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        features: np.ndarray,
        comparisons: Comparisons
        | Sequence[tuple[int, int]]
        | tuple[Sequence[int] | np.ndarray, Sequence[int] | np.ndarray],
        weights: Sequence[float] | np.ndarray | None = None,
        *,
        scores: Sequence[float] | np.ndarray | None = None,
        l2: float = 1.0,
        extractor: str = "",
    ) -> PreferenceModel:
        """Fit the model to comparisons between rows of ``features``.

        Args:
            features: ``[n, d]`` feature rows of every candidate the comparisons refer to.
            comparisons: a ``Comparisons`` from ``comparisons_from_events`` (its weights and
                scores are used unless given here), a list (or ``[m, 2]`` array) of
                ``(winner, loser)`` row indices, or a tuple of two index arrays
                ``(winners, losers)`` (a tuple is always read this way).
            weights: optional non-negative weight per comparison (default 1).
            scores: optional ``[n]`` observed scores 0..5 (NaN where unscored), only used to
                calibrate ``score()`` to the person's own scale.
            l2: prior precision on the weights.
            extractor: name of the features, stored with the model.

        Returns:
            A new fitted model; with no comparisons, the empty model.

        Raises:
            ValueError: shapes or lengths disagree, an index is out of range, or a value is
                not finite.
        """
        model = cls(l2=l2, extractor=extractor)
        x = _as_matrix(features, "features")
        winners, losers, w, s = _unpack(comparisons, weights, scores, len(x))
        if len(winners) == 0:
            return model
        mean = x.mean(axis=0)
        scale = x.std(axis=0)
        # Constant features carry no taste; scale 1 keeps them at 0 instead of dividing by 0.
        scale = np.where(scale > 1e-9 * np.maximum(1.0, np.abs(mean)), scale, 1.0)
        z = (x - mean) / scale
        theta, cov = _newton(z[winners] - z[losers], w, model.l2)
        model._mean, model._scale, model._theta, model._cov = mean, scale, theta, cov
        model.n_comparisons = len(winners)
        model._calibration = _calibrate(z @ theta, s)
        return model

    # ---- prediction -----------------------------------------------------------------------

    @property
    def is_fitted(self) -> bool:
        """True once the model has seen at least one comparison."""
        return self._theta is not None

    @property
    def dim(self) -> int | None:
        """Number of features the model expects, or None before any fit."""
        return None if self._theta is None else len(self._theta)

    @property
    def scale(self) -> np.ndarray | None:
        """Per-feature spread of the training features (for distances in screening)."""
        return None if self._scale is None else self._scale.copy()

    def predict(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Utility mean and standard deviation per row of ``features``.

        Utilities are relative: 0 is the average candidate the model was fitted on, and a
        difference of 1 means the person picks the higher one about 73% of the time. The std
        is likewise relative to that average, so it grows with a candidate's distance from
        what has been rated in directions the ratings have not pinned down. Without ratings,
        means are 0 and the std is the prior's, ``sqrt(d / l2)``, the same for every row.

        Raises:
            ValueError: ``features`` is not a finite ``[n, d]`` array of the model's width.
        """
        x = _as_matrix(features, "features")
        if self._theta is None:
            return np.zeros(len(x)), np.full(len(x), math.sqrt(x.shape[1] / self.l2))
        z = self._standardise(x)
        var = np.einsum("ij,jk,ik->i", z, self._cov, z)
        return z @ self._theta, np.sqrt(np.maximum(var, 0.0))

    def score(self, features: np.ndarray) -> np.ndarray:
        """Predicted score on the 0..5 scale, for display as "predicted score".

        Calibrated by a linear fit of the person's observed scores on the utilities when
        there were scores; otherwise (picks and pairs only) ``5 * sigmoid(u)``, so an average
        candidate shows 2.5. Without any ratings every candidate shows 2.5.
        """
        mean, _ = self.predict(features)
        kind, a, b = self._calibration
        if kind == "linear":
            return np.clip(a + b * mean, 0.0, SCORE_MAX)
        return SCORE_MAX / (1.0 + np.exp(-(mean - a)))

    def _standardise(self, x: np.ndarray) -> np.ndarray:
        if x.shape[1] != len(self._theta):
            raise ValueError(
                f"features have {x.shape[1]} columns but the model was fitted on {len(self._theta)}"
            )
        return (x - self._mean) / self._scale

    # ---- persistence ----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict that ``from_dict`` turns back into an equal model."""

        def listed(a: np.ndarray | None) -> list | None:
            return None if a is None else a.tolist()

        kind, a, b = self._calibration
        return {
            "format": FORMAT,
            "l2": self.l2,
            "extractor": self.extractor,
            "n_comparisons": self.n_comparisons,
            "mean": listed(self._mean),
            "scale": listed(self._scale),
            "theta": listed(self._theta),
            "cov": listed(self._cov),
            "calibration": {"kind": kind, "a": a, "b": b},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreferenceModel:
        """Rebuild a model saved by ``to_dict``.

        Raises:
            ValueError: the dict is not a saved preference model or its arrays disagree.
        """
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"not a saved preference model (expected format {FORMAT!r})")
        try:
            model = cls(l2=data["l2"], extractor=str(data.get("extractor", "")))
            cal = data["calibration"]
            kind, a, b = str(cal["kind"]), float(cal["a"]), float(cal["b"])
            theta = data["theta"]
            if theta is not None:
                model._theta = _finite(np.asarray(theta, dtype=np.float64), "theta", 1)
                d = len(model._theta)
                model._mean = _finite(np.asarray(data["mean"], dtype=np.float64), "mean", 1)
                model._scale = _finite(np.asarray(data["scale"], dtype=np.float64), "scale", 1)
                model._cov = _finite(np.asarray(data["cov"], dtype=np.float64), "cov", 2)
                if model._mean.shape != (d,) or model._scale.shape != (d,):
                    raise ValueError("mean/scale length differs from theta")
                if model._cov.shape != (d, d) or np.any(model._scale <= 0):
                    raise ValueError("cov shape or scale values are wrong")
                model.n_comparisons = int(data["n_comparisons"])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"saved preference model is incomplete: {exc}") from None
        except ValueError as exc:
            raise ValueError(f"saved preference model is invalid: {exc}") from None
        if kind not in ("linear", "logistic") or not (math.isfinite(a) and math.isfinite(b)):
            raise ValueError("saved preference model is invalid: bad calibration")
        model._calibration = (kind, a, b)
        return model


def kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall rank correlation (tau-a) of two equal-length vectors; NaN under 2 items.

    Handy for reporting how well predictions order candidates the person has rated.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(
            f"kendall_tau needs two vectors of one length, got {a.shape} and {b.shape}"
        )
    n = len(a)
    if n < 2:
        return float("nan")
    i, j = np.triu_indices(n, k=1)
    return float(np.sum(np.sign(a[i] - a[j]) * np.sign(b[i] - b[j])) / len(i))


# ---- helpers ------------------------------------------------------------------------------


def _finite(a: np.ndarray, name: str, ndim: int) -> np.ndarray:
    if a.ndim != ndim or not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be a finite {ndim}-d array")
    return a


def _as_matrix(features: Any, name: str) -> np.ndarray:
    try:
        x = np.asarray(features, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a numeric [n, d] array") from None
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"{name} must be a 2-d [n, d] array with d >= 1, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contain NaN or infinite values")
    return x


def _unpack(
    comparisons: Any, weights: Any, scores: Any, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Normalise the accepted comparison forms to index arrays, weights and scores."""
    if isinstance(comparisons, Comparisons):
        winners, losers = comparisons.winners, comparisons.losers
        weights = comparisons.weights if weights is None else weights
        scores = comparisons.scores if scores is None else scores
    elif isinstance(comparisons, tuple):
        if len(comparisons) != 2:
            raise ValueError("comparisons given as a tuple must be (winners, losers)")
        winners, losers = comparisons
    else:
        pairs = np.asarray(list(comparisons))
        if pairs.size == 0:
            pairs = np.zeros((0, 2), dtype=np.int64)
        if pairs.ndim != 2 or pairs.shape[1] != 2:
            raise ValueError("comparisons must be (winner, loser) pairs")
        winners, losers = pairs[:, 0], pairs[:, 1]
    winners = _indices(winners, n, "winner")
    losers = _indices(losers, n, "loser")
    if len(winners) != len(losers):
        raise ValueError(f"{len(winners)} winners but {len(losers)} losers")
    if np.any(winners == losers):
        raise ValueError("a candidate cannot be compared with itself")
    w = np.ones(len(winners)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != winners.shape:
        raise ValueError(f"{len(w)} weights for {len(winners)} comparisons")
    if not np.all(np.isfinite(w) & (w >= 0)):
        raise ValueError("comparison weights must be finite and non-negative")
    s = None
    if scores is not None:
        s = np.asarray(scores, dtype=np.float64)
        if s.shape != (n,):
            raise ValueError(f"scores must have one entry per feature row ({n}), got {s.shape}")
    return winners, losers, w, s


def _indices(values: Any, n: int, what: str) -> np.ndarray:
    idx = np.asarray(values)
    if idx.size == 0:
        return np.zeros(0, dtype=np.int64)
    if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"{what} indices must be a 1-d sequence of integers")
    if idx.min() < 0 or idx.max() >= n:
        raise ValueError(f"{what} index out of range for {n} feature rows")
    return idx.astype(np.int64)


def _log_posterior(diff: np.ndarray, w: np.ndarray, theta: np.ndarray, l2: float) -> float:
    return float(-(w @ np.logaddexp(0.0, -(diff @ theta))) - 0.5 * l2 * theta @ theta)


def _newton(diff: np.ndarray, w: np.ndarray, l2: float) -> tuple[np.ndarray, np.ndarray]:
    """MAP weights of the L2-regularised logistic model and the Laplace covariance."""
    d = diff.shape[1]
    theta = np.zeros(d)
    eye = np.eye(d)
    current = _log_posterior(diff, w, theta, l2)
    for _ in range(_MAX_NEWTON_STEPS):
        p = 1.0 / (1.0 + np.exp(-(diff @ theta)))  # P(winner beats loser)
        grad = diff.T @ (w * (1.0 - p)) - l2 * theta
        hess = (diff * (w * p * (1.0 - p))[:, None]).T @ diff + l2 * eye
        step = np.linalg.solve(hess, grad)
        # The objective is concave, so Newton converges; halving guards the first big steps.
        for _ in range(30):
            candidate = _log_posterior(diff, w, theta + step, l2)
            if candidate >= current - 1e-12:
                break
            step *= 0.5
        theta, current = theta + step, candidate
        if np.max(np.abs(step)) < 1e-8:
            break
    p = 1.0 / (1.0 + np.exp(-(diff @ theta)))
    hess = (diff * (w * p * (1.0 - p))[:, None]).T @ diff + l2 * eye
    cov = np.linalg.inv(hess)
    return theta, 0.5 * (cov + cov.T)


def _calibrate(utility: np.ndarray, scores: np.ndarray | None) -> tuple[str, float, float]:
    """Map utilities to the 0..5 scale: least squares on observed scores, else a sigmoid."""
    if scores is not None:
        seen = np.isfinite(scores)
        u, s = utility[seen], scores[seen]
        if len(s) >= 2:
            var = u.var()
            # A non-positive slope would show the person's favourites as disliked; flat is honest.
            slope = (
                max(0.0, float(np.mean((u - u.mean()) * (s - s.mean())) / var))
                if var > 1e-12
                else 0.0
            )
            return ("linear", float(s.mean() - slope * u.mean()), slope)
    return ("logistic", 0.0, 0.0)
