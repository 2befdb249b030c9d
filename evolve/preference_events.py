"""Rating events -> weighted pairwise comparisons, the data a preference model learns from.

Ratings only compare within what a person saw together: a 4 in one generation is not a 4 in
the next, so every event (a score, a pick, a pairwise choice, a "both bad") is turned into
comparisons between candidates of its own generation. ``comparisons_from_events`` stacks the
generations one after another, so that row ``i`` of the comparisons is row ``i`` of the
features the caller stacks in the same order.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "BOTH_BAD_WEIGHT",
    "LONE_WIN_WEIGHT",
    "SCORE_MAX",
    "Comparisons",
    "RatingGroup",
    "comparisons_from_events",
]

SCORE_MAX = 5.0
#: Total weight with which a "both bad" candidate loses against the rest of its generation.
BOTH_BAD_WEIGHT = 0.5
#: Total weight with which a lone winner (pair with no loser) beats the rest of its generation.
LONE_WIN_WEIGHT = 0.5


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
