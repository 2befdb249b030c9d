"""Rating events in, current state out: validation and the fold over the append-only log.

Scores and picks are folded per ``(session, position)``: the latest event wins, so two
sessions never overwrite each other and undo is simply a later event. Pairwise comparisons
are not folded; each one is evidence for a later preference model.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from spark_runtime.store.errors import StoreError
from spark_runtime.store.models import RATING_KINDS, Rating

MAX_SCORE = 5.0
PAIR_PREFERRED = 1.0
PAIR_BOTH_GOOD = 0.5
PAIR_BOTH_BAD = 0.0
_PAIR_VALUES = (PAIR_PREFERRED, PAIR_BOTH_GOOD, PAIR_BOTH_BAD)


@dataclass(frozen=True)
class RatingInput:
    """One rating a person or the agent gives to a snapshot.

    Args:
        kind: ``score`` | ``clear`` | ``pick`` | ``unpick`` | ``pair``.
        position: index into the snapshot's population.
        value: the score (0..5) for ``score``; for ``pair`` one of ``PAIR_PREFERRED``
            (``position`` beats ``other_position``), ``PAIR_BOTH_GOOD``, ``PAIR_BOTH_BAD``
            (default ``PAIR_PREFERRED``); unused by the other kinds.
        other_position: the second individual of a ``pair``.
    """

    kind: str
    position: int
    value: float | None = None
    other_position: int | None = None


@dataclass(frozen=True)
class PairOutcome:
    """A pairwise comparison: ``first`` preferred over ``second``, or a tie of two goods/bads."""

    rating_id: int
    session: str
    first: int
    second: int
    outcome: str  # "first" | "both_good" | "both_bad"


def _check_position(i: int, label: str, position: Any, n: int) -> int:
    if isinstance(position, bool) or not isinstance(position, int):
        raise StoreError(f"rating {i}: {label} must be an integer, got {position!r}")
    if not 0 <= position < n:
        raise StoreError(f"rating {i}: {label} {position} is out of range 0..{n - 1}")
    return position


def _check_number(i: int, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise StoreError(f"rating {i}: value must be a finite number, got {value!r}")
    return float(value)


def normalise(events: Sequence[RatingInput], population_size: int) -> list[RatingInput]:
    """Validate events against a population; returns them with defaults filled in.

    Raises:
        StoreError: naming the first bad event by its index.
    """
    out = []
    for i, ev in enumerate(events):
        if not isinstance(ev, RatingInput):
            raise StoreError(f"rating {i}: expected a RatingInput, got {type(ev).__name__}")
        if ev.kind not in RATING_KINDS:
            raise StoreError(f"rating {i}: unknown kind {ev.kind!r} (one of {RATING_KINDS})")
        pos = _check_position(i, "position", ev.position, population_size)
        value, other = None, None
        if ev.kind == "score":
            if ev.value is None:
                raise StoreError(f"rating {i}: a score needs a value 0..{MAX_SCORE:g}")
            value = _check_number(i, ev.value)
            if not 0.0 <= value <= MAX_SCORE:
                raise StoreError(f"rating {i}: score {value:g} is out of range 0..{MAX_SCORE:g}")
        elif ev.kind == "pair":
            if ev.other_position is None:
                raise StoreError(f"rating {i}: a pair needs other_position")
            other = _check_position(i, "other_position", ev.other_position, population_size)
            if other == pos:
                raise StoreError(f"rating {i}: a pair compares two different positions")
            value = PAIR_PREFERRED if ev.value is None else _check_number(i, ev.value)
            if value not in _PAIR_VALUES:
                raise StoreError(f"rating {i}: pair value must be 1.0, 0.5 or 0.0, got {value:g}")
        if ev.kind != "pair" and ev.other_position is not None:
            raise StoreError(f"rating {i}: other_position is only for pairs")
        out.append(RatingInput(ev.kind, pos, value, other))
    return out


def _latest(ratings: Iterable[Rating], kinds: tuple[str, ...]) -> dict[tuple[str, int], Rating]:
    latest: dict[tuple[str, int], Rating] = {}
    for r in sorted(ratings, key=lambda r: r.id or 0):
        if r.kind in kinds:
            latest[(r.session, r.position)] = r
    return latest


def fold_scores(ratings: Iterable[Rating]) -> dict[int, float]:
    """Current score per position: each session's latest score (a clear withdraws it),
    averaged across the sessions that have one."""
    per_position: dict[int, list[float]] = {}
    for (_, position), r in _latest(ratings, ("score", "clear")).items():
        if r.kind == "score" and r.value is not None:
            per_position.setdefault(position, []).append(r.value)
    return {p: sum(v) / len(v) for p, v in sorted(per_position.items())}


def fold_picks(ratings: Iterable[Rating]) -> set[int]:
    """Positions that some session currently picks (its latest pick/unpick is a pick)."""
    latest = _latest(ratings, ("pick", "unpick"))
    return {position for (_, position), r in latest.items() if r.kind == "pick"}


def pair_outcomes(ratings: Iterable[Rating]) -> list[PairOutcome]:
    """Every pairwise comparison in id order, with the outcome spelled out."""
    names = {PAIR_PREFERRED: "first", PAIR_BOTH_GOOD: "both_good", PAIR_BOTH_BAD: "both_bad"}
    out = []
    for r in sorted(ratings, key=lambda r: r.id or 0):
        if r.kind == "pair" and r.other_position is not None and r.value is not None:
            out.append(
                PairOutcome(r.id or 0, r.session, r.position, r.other_position, names[r.value])
            )
    return out
