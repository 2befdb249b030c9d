"""What the agent learns from: a person's rating events in the store, folded per generation.

Each snapshot a person rated becomes one ``RatingGroup``: their current scores and picks
(the store's fold: the latest event per session and position wins) and every pairwise
outcome. The agent's own scores (session ``AGENT_SESSION``, written by the autopilot) are left
out, so the model never learns from itself.

``Fitted`` is a fitted preference model plus the spread of its utilities over what it was
trained on; ``squash`` uses that spread to put utilities on the 0..5 scale without ever
saturating, which is what selection needs (a clipped scale would tie every candidate that
is better than anything rated).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from evolve.agent_blas import single_blas_thread
from evolve.preference import Comparisons, PreferenceModel, RatingGroup, comparisons_from_events
from spark_runtime.store import Store
from spark_runtime.store.ratings import fold_picks, fold_scores, pair_outcomes

#: The rating session the agent's own scores are stored under.
AGENT_SESSION = "agent"


@dataclass(frozen=True)
class RatedSnapshot:
    """One generation a person rated: the snapshot, what they said, and the events' ids."""

    snapshot: Any
    group: RatingGroup
    rating_ids: tuple[int, ...]


@dataclass(frozen=True)
class Fitted:
    """A fitted model and what it was fitted on.

    Attributes:
        model: the preference model.
        spread: standard deviation of its utilities over the training candidates (> 0).
        generations: rated generations it learned from.
        ratings: rating events it learned from.
    """

    model: PreferenceModel
    spread: float
    generations: int
    ratings: int

    def squash(self, utility: np.ndarray) -> np.ndarray:
        """Utilities on the 0..5 scale: 2.5 is the average rated candidate, never 0 or 5."""
        return 5.0 / (1.0 + np.exp(-np.asarray(utility, dtype=np.float64) / self.spread))


def person_group(store: Store, snapshot: Any, events: Sequence[Any] | None = None) -> RatedSnapshot | None:
    """The person's ratings of one snapshot, or None when they said nothing there.

    ``events``: the snapshot's rating events when the caller has just read them.
    """
    events = store.ratings(snapshot.id) if events is None else events
    rows = [r for r in events if r.session != AGENT_SESSION]
    if not rows:
        return None
    pairs: list[tuple[int, int | None]] = []
    both_bad: list[tuple[int, int]] = []
    for outcome in pair_outcomes(rows):
        if outcome.outcome == "first":
            pairs.append((outcome.first, outcome.second))
        elif outcome.outcome == "both_good":
            # Both were good: each weakly beats the rest of the generation.
            pairs.extend([(outcome.first, None), (outcome.second, None)])
        else:
            both_bad.append((outcome.first, outcome.second))
    group = RatingGroup(
        n=len(snapshot.population),
        scores=fold_scores(rows),
        picks=frozenset(fold_picks(rows)),
        pairs=tuple(pairs),
        both_bad=tuple(both_bad),
    )
    if not (group.scores or group.picks or group.pairs or group.both_bad):
        return None
    return RatedSnapshot(snapshot, group, tuple(r.id or 0 for r in rows))


def rated_snapshots(
    store: Store,
    snapshots: Sequence[Any],
    window: int,
    known: dict[str, RatedSnapshot | None] | None = None,
    live: frozenset[str] = frozenset(),
    read: dict[str, Sequence[Any]] | None = None,
) -> list[RatedSnapshot]:
    """The newest ``window`` rated snapshots among ``snapshots`` (oldest first).

    Args:
        store: where the rating events are.
        snapshots: candidates for training, oldest first.
        window: how many rated ones to keep.
        known: a memo of earlier reads by snapshot id, updated in place. People rate a
            generation while it is a branch head; once it has been evolved from, its
            ratings are settled, so only ``live`` snapshots are read again. Reading every
            generation each time would cost one query per generation of history.
        live: snapshot ids to read from the store even when ``known`` has them.
        read: rating events the caller has just read, by snapshot id: used, not read again.
    """
    found: list[RatedSnapshot] = []
    for snapshot in reversed(snapshots):
        if len(found) >= window:
            break
        if known is not None and snapshot.id in known and snapshot.id not in live:
            rated = known[snapshot.id]
        else:
            rated = person_group(store, snapshot, (read or {}).get(snapshot.id))
            if known is not None:
                known[snapshot.id] = rated
        if rated is not None:
            found.append(rated)
    return found[::-1]


def fit(
    rated: Sequence[RatedSnapshot],
    features: Callable[[RatedSnapshot], np.ndarray],
    l2: float,
    extractor: str,
    memo: dict[tuple[str, tuple[int, ...]], Comparisons] | None = None,
) -> Fitted:
    """Fit a preference model on the rated snapshots.

    Args:
        rated: what the person said, per generation.
        features: feature rows of a rated snapshot's population, in display order.
        l2: prior precision of the model.
        extractor: the feature kind's name, saved with the model.
        memo: comparisons of each generation by (snapshot id, rating ids), kept between
            fits so that only new ratings are turned into comparisons.
    """
    if not rated:
        return Fitted(PreferenceModel(l2=l2, extractor=extractor), 1.0, 0, 0)
    x = np.concatenate([features(r) for r in rated])
    comparisons = _stacked([_comparisons(r, memo) for r in rated])
    with single_blas_thread():
        model = PreferenceModel.fit(x, comparisons, l2=l2, extractor=extractor)
        utility = model.utility(x)
    spread = float(utility.std()) if model.is_fitted else 0.0
    return Fitted(
        model,
        spread if spread > 1e-6 else 1.0,
        generations=len(rated),
        ratings=sum(len(r.rating_ids) for r in rated),
    )


def _comparisons(
    rated: RatedSnapshot, memo: dict[tuple[str, tuple[int, ...]], Comparisons] | None
) -> Comparisons:
    key = (rated.snapshot.id, rated.rating_ids)
    if memo is not None and key in memo:
        return memo[key]
    found = comparisons_from_events([rated.group])
    if memo is not None:
        memo[key] = found
    return found


def _stacked(parts: Sequence[Comparisons]) -> Comparisons:
    """One generation's comparisons after another, rows offset as ``comparisons_from_events``
    would number them (each part has a score slot per candidate of its generation)."""
    offsets = np.concatenate([[0], np.cumsum([len(p.scores) for p in parts])[:-1]]).astype(np.int64)
    return Comparisons(
        winners=np.concatenate([p.winners + o for p, o in zip(parts, offsets, strict=True)]),
        losers=np.concatenate([p.losers + o for p, o in zip(parts, offsets, strict=True)]),
        weights=np.concatenate([p.weights for p in parts]),
        scores=np.concatenate([p.scores for p in parts]),
    )
