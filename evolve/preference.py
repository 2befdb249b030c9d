"""The agent's model of one person's taste, learned from their ratings.

Ratings only compare within what a person saw together, so every event is first turned into
pairwise comparisons inside its generation (``evolve.preference_events``, re-exported here). A
Bradley-Terry model then explains them: each candidate has a utility ``u = z . theta`` over
its standardised features ``z``, and ``P(a beats b) = sigmoid(u_a - u_b)``. That is a
logistic regression on feature differences; with a Gaussian prior on ``theta`` it is fitted
by Newton's method, and the inverse Hessian at the optimum (a Laplace approximation) gives
each candidate's utility an uncertainty, which screening uses to explore.

Everything is numpy (``bench/agent_cost.py`` times a whole fit as the agent makes it). A
model saves to and loads from plain JSON (``to_dict``/``from_dict``), never a pickle.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from evolve.preference_events import (
    BOTH_BAD_WEIGHT,
    LONE_WIN_WEIGHT,
    SCORE_MAX,
    Comparisons,
    RatingGroup,
    comparisons_from_events,
)

__all__ = [
    "BOTH_BAD_WEIGHT",
    "LONE_WIN_WEIGHT",
    "SCORE_MAX",
    "Comparisons",
    "PreferenceModel",
    "RatingGroup",
    "comparisons_from_events",
    "kendall_tau",
]

FORMAT = "imagery.preference/1"
_MAX_NEWTON_STEPS = 50
_DECREMENT_TOLERANCE = 1e-10


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

    def utility(self, features: np.ndarray) -> np.ndarray:
        """The mean of ``predict`` alone, without the cost of the uncertainty."""
        x = _as_matrix(features, "features")
        if self._theta is None:
            return np.zeros(len(x))
        return self._standardise(x) @ self._theta

    def score(self, features: np.ndarray) -> np.ndarray:
        """Predicted score on the 0..5 scale, for display as "predicted score".

        Calibrated by a linear fit of the person's observed scores on the utilities when
        there were scores; otherwise (picks and pairs only) ``5 * sigmoid(u)``, so an average
        candidate shows 2.5. Without any ratings every candidate shows 2.5.
        """
        mean = self.utility(features)
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
    """MAP weights of the L2-regularised logistic model and the Laplace covariance.

    The Hessian only chooses the direction of each step; where the iteration stops is set by
    the gradient, which stays in double precision. So the Hessian of the steps is formed in
    single precision, which halves the cost of the one large product per step (the agent
    refits every generation); the covariance at the optimum is formed in double precision.
    """
    d = diff.shape[1]
    theta = np.zeros(d)
    eye = np.eye(d)
    diff32 = diff.astype(np.float32)
    current = _log_posterior(diff, w, theta, l2)
    for _ in range(_MAX_NEWTON_STEPS):
        p = 1.0 / (1.0 + np.exp(-(diff @ theta)))  # P(winner beats loser)
        grad = diff.T @ (w * (1.0 - p)) - l2 * theta
        curvature = (w * p * (1.0 - p)).astype(np.float32)
        hess = ((diff32 * curvature[:, None]).T @ diff32).astype(np.float64) + l2 * eye
        step = np.linalg.solve(hess, grad)
        # Newton decrement: twice the objective still to gain; below this the fit is done.
        if float(grad @ step) < _DECREMENT_TOLERANCE:
            break
        # The objective is concave, so Newton converges; halving guards the first big steps.
        for _ in range(30):
            candidate = _log_posterior(diff, w, theta + step, l2)
            if candidate >= current - 1e-12:
                break
            step *= 0.5
        # Far from the optimum of near-separable ratings, full steps undershoot: doubling
        # while the objective still improves saves about a third of the iterations.
        for _ in range(8):
            further = _log_posterior(diff, w, theta + 2.0 * step, l2)
            if further <= candidate:
                break
            step, candidate = 2.0 * step, further
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
