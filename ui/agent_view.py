"""The agent as the browser shows it: plain data about a generation, no store and no requests.

``screening`` reads what the agent recorded in a snapshot's settings when it bred it (how many
children it screened, which positions it chose); ``score_bands`` puts the model's uncertainty
on the 0..5 scale the person scores on, so a badge can say "about 3.4, likely 2.6-4.2".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from evolve.preference import SCORE_MAX

DEFAULT_K = 4


def _count(settings: Mapping[str, Any], key: str, default: int) -> int:
    value = settings.get(key, default)
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def screening(settings: Mapping[str, Any] | None, n: int) -> dict[str, Any] | None:
    """What the agent did to make a generation, or None when no agent bred it.

    The engine places its elites first, then the children the agent chose from ``k`` times
    as many bred, then the newcomers; ``roles`` names each position that way.

    Args:
        settings: the snapshot's settings (``"engine"`` and, if an agent bred it, ``"agent"``).
        n: the population size.
    """
    settings = settings or {}
    record = settings.get("agent")
    if not isinstance(record, Mapping):
        return None
    engine = settings.get("engine") if isinstance(settings.get("engine"), Mapping) else {}
    k = _count(record, "k", 1)
    elite = min(max(0, _count(engine, "elite", 0)), n)
    newcomers = min(max(0, _count(engine, "newcomers", 0)), n - elite)
    children = n - elite - newcomers
    roles = (
        ["elite"] * elite + ["chosen" if k > 1 else "child"] * children + ["newcomer"] * newcomers
    )
    explore = record.get("explore", 0.0)
    return {
        "k": k,
        "explore": float(explore) if isinstance(explore, int | float) else 0.0,
        "comparisons": _count(record, "comparisons", 0),
        "bred": children * k,
        "chosen": children if k > 1 else 0,
        "roles": roles,
    }


def score_bands(
    scores: Sequence[float], utility: Sequence[float], std: Sequence[float]
) -> list[list[float]] | None:
    """A likely range on the 0..5 scale for each predicted score, or None when unknown.

    The model's uncertainty is in utility units; its score is a monotone map of the utility
    (linear, clipped, or a sigmoid). That map is read off this generation's own (utility,
    score) points: interpolated between them, extended by their overall slope beyond, so
    ``utility +- std`` lands on the score scale. Exact for the linear map; close for the
    sigmoid. Unknown (None) when fewer than two distinct unclipped points pin the map down,
    as before the agent has learned anything.

    Returns:
        ``[low, high]`` per position, within 0..5.
    """
    s = np.asarray(scores, dtype=np.float64)
    u = np.asarray(utility, dtype=np.float64)
    d = np.abs(np.asarray(std, dtype=np.float64))
    if not (len(s) == len(u) == len(d)) or not np.all(np.isfinite(np.r_[s, u, d])):
        return None
    inside = (s > 1e-6) & (s < SCORE_MAX - 1e-6)
    us, index = np.unique(u[inside], return_index=True)
    if len(us) < 2:
        return None
    ss = s[inside][index]
    slope = (ss[-1] - ss[0]) / (us[-1] - us[0])
    if not math.isfinite(slope) or slope <= 0:
        return None

    def to_score(v: np.ndarray) -> np.ndarray:
        inner = np.interp(v, us, ss)
        inner = np.where(v < us[0], ss[0] + slope * (v - us[0]), inner)
        inner = np.where(v > us[-1], ss[-1] + slope * (v - us[-1]), inner)
        return np.clip(inner, 0.0, SCORE_MAX)

    low, high = to_score(u - d), to_score(u + d)
    # The band always holds the shown score (clipping can move an end past it).
    low, high = np.minimum(low, s), np.maximum(high, s)
    return [[round(float(a), 2), round(float(b), 2)] for a, b in zip(low, high, strict=True)]


def agreement_value(value: float) -> float | None:
    """The agreement figure for JSON: None (shown as a dash) until there is data."""
    return None if not math.isfinite(value) else round(float(value), 3)
