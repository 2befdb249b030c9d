"""Fitness: from human ratings, or automatic for headless batch runs.

Automatic fitness functions score a rendered population on the same 0..5 scale people use,
so a batch run stores its judgements as ordinary rating events and every generation reads the
same way whoever scored it. Stateful fitness (novelty's archive) returns its new state, which
the session saves in the snapshot so a resumed run scores exactly as an unbroken one.
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image, UnidentifiedImageError

from spark_runtime.store.ratings import fold_picks, fold_scores

# An unrated candidate sits between an explicit 0 ("bad") and a 1: people rate what they like
# and skip the rest, so skipping must not rank below a thumbs-down.
UNRATED_FITNESS = 0.5
# A pick ranks one above the best score: picked candidates are parents first.
PICK_MARGIN = 1.0
_COMPARE_SIZE = 64


class FitnessError(ValueError):
    """Bad fitness spec or unreadable target; the message is one line for the user."""


def fitness_from_ratings(n: int, scores: Mapping[int, float], picks: set[int] | frozenset[int] = frozenset()) -> list[float]:
    """Fitness per position from folded ratings: a score 0..5, picks above any score."""
    values = [float(scores.get(i, UNRATED_FITNESS)) for i in range(n)]
    for i in picks:
        if 0 <= i < n:
            values[i] = max(values[i], 5.0) + PICK_MARGIN
    return values


def fitness_from_events(n: int, events: Sequence[Any]) -> list[float]:
    """Fitness per position from a snapshot's rating events (every session's)."""
    return fitness_from_ratings(n, fold_scores(events), fold_picks(events))


class AutoFitness(Protocol):
    spec: str

    def evaluate(self, images: Sequence[Image.Image], state: dict[str, Any]) -> tuple[list[float], dict[str, Any]]:
        """Scores 0..5 per image and the fitness state to save with the snapshot."""
        ...


def _resized(images: Sequence[Image.Image], size: int) -> np.ndarray:
    """The images as RGB, shrunk to ``size`` x ``size``: ``[n, size, size, 3]`` 8-bit levels."""
    return np.stack([np.asarray(im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8) for im in images])


def _pixels(images: Sequence[Image.Image], size: int = _COMPARE_SIZE) -> np.ndarray:
    return _resized(images, size).astype(np.float32) / 255.0


class TargetFitness:
    """Closeness to a target image: 5 for identical, 0 for the opposite colours."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            with Image.open(self.path) as im:
                self.target = _pixels([im])[0]
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            reason = "no such file" if not self.path.exists() else "not a readable image"
            raise FitnessError(f"cannot read target image {str(self.path)!r}: {reason}") from exc
        self.spec = f"target:{self.path}"

    def closeness(self, images: Sequence[Image.Image]) -> np.ndarray:
        """1 - mean absolute colour difference at 64 px, in 0..1."""
        diff = np.abs(_pixels(images) - self.target[None])
        return 1.0 - diff.mean(axis=(1, 2, 3))

    def evaluate(self, images: Sequence[Image.Image], state: dict[str, Any]) -> tuple[list[float], dict[str, Any]]:
        return [float(5.0 * c) for c in self.closeness(images)], state


class NoveltyFitness:
    """Novelty search: distance to the k nearest in an archive of past images and the batch.

    An image's descriptor is its 16 x 16 thumbnail, whose channels are whole 8-bit levels;
    the archive keeps them as such, deflated and in base64, in the snapshot. As JSON numbers
    a full archive took over a megabyte per generation, which every later read of the
    snapshot parsed again.
    """

    spec = "novelty"
    _SIDE = 16

    def __init__(self, k: int = 5, archive_size: int = 256, per_generation: int = 2) -> None:
        self.k, self.archive_size, self.per_generation = k, archive_size, per_generation

    @classmethod
    def levels(cls, images: Sequence[Image.Image]) -> np.ndarray:
        """One row of 8-bit levels per image: its thumbnail, flattened."""
        return _resized(images, cls._SIDE).reshape(len(images), -1)

    def evaluate(self, images: Sequence[Image.Image], state: dict[str, Any]) -> tuple[list[float], dict[str, Any]]:
        levels = self.levels(images)
        past = archive_levels(state, levels.shape[1])
        batch = levels.astype(np.float32) / 255.0
        others = np.concatenate([past.astype(np.float32) / 255.0, batch])
        dist = np.sqrt(((batch[:, None, :] - others[None, :, :]) ** 2).mean(axis=2))
        # Skip each image's zero distance to itself (it sits at index len(archive) + i).
        dist[np.arange(len(batch)), len(past) + np.arange(len(batch))] = np.inf
        k = max(1, min(self.k, others.shape[0] - 1))
        novelty = np.sort(dist, axis=1)[:, :k]
        novelty = np.where(np.isfinite(novelty), novelty, 0.0).mean(axis=1)
        scores = 5.0 * np.clip(novelty / 0.5, 0.0, 1.0)
        best = np.argsort(-novelty, kind="stable")[: self.per_generation]
        kept = np.concatenate([past, levels[best]])[-self.archive_size :]
        return [float(s) for s in scores], {"archive": _archive_to_state(kept)}


def _archive_to_state(levels: np.ndarray) -> dict[str, Any]:
    data = zlib.compress(np.ascontiguousarray(levels, dtype=np.uint8).tobytes(), 6)
    return {"rows": int(levels.shape[0]), "width": int(levels.shape[1]), "deflated": base64.b64encode(data).decode("ascii")}


def archive_levels(state: dict[str, Any], width: int) -> np.ndarray:
    """The archive's levels, ``[rows, width]`` uint8, from a snapshot's fitness state.

    Runs stored before the compact form kept each entry as its levels / 255 rounded to four
    places, which rounds back to the exact level; any other shape starts a fresh archive
    rather than failing a resumed run.
    """
    archive = state.get("archive")
    levels = None
    try:
        if isinstance(archive, dict):
            data = zlib.decompress(base64.b64decode(archive["deflated"], validate=True))
            levels = np.frombuffer(data, dtype=np.uint8).reshape(int(archive["rows"]), int(archive["width"]))
        elif isinstance(archive, list) and archive:
            levels = np.rint(np.asarray(archive, dtype=np.float64) * 255.0).clip(0, 255).astype(np.uint8)
    except (KeyError, TypeError, ValueError, zlib.error):
        levels = None
    if levels is None or levels.ndim != 2 or levels.shape[1] != width:
        return np.zeros((0, width), np.uint8)
    return levels


def parse_fitness(spec: str, preference_loader: Any = None) -> AutoFitness:
    """``novelty`` | ``target:IMAGE.png`` | ``preference:RUN`` (with a loader from the session)."""
    kind, _, arg = spec.partition(":")
    if kind == "novelty" and not arg:
        return NoveltyFitness()
    if kind == "target" and arg:
        return TargetFitness(arg)
    if kind == "preference" and arg and preference_loader is not None:
        return preference_loader(arg)
    raise FitnessError(f"unknown fitness {spec!r}: use novelty, target:IMAGE.png or preference:RUN")
