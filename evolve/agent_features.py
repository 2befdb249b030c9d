"""What the agent sees of a candidate: image statistics, colour layout and a genome summary.

Image statistics (``evolve.features`` or a pluggable extractor) say *what kind* of picture it
is: colourful, contrasty, symmetric, busy. The colour layout says *where* things are: the
mean colour of each cell of a coarse grid, and its square. The squares are there because a
person's taste is often "this colour there": with them, a utility that is linear in the
features can express "close to some colour in that cell" (``-(x - t)^2 = -x^2 + 2tx - t^2``),
not only "more red is better".

Features of a candidate depend only on its picture (and genome), so ``FeatureCache`` keeps
them by individual id: a content hash, so the same genome always gets the same row.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image

from evolve.embeddings import EmbeddingExtractor
from evolve.features import GENOME_FEATURE_NAMES, genome_features, image_features, thumbnails

LAYOUT_GRID = 4
_CACHE_SIZE = 50_000

# Renders genomes at a small size, one batched call: (genomes, size) -> PIL images, or their
# pixels as one [n, size, size, 3] uint8 array.
Images = Sequence[Image.Image] | np.ndarray
Render = Callable[[Sequence[dict[str, Any]], int], Images]
# Genomes in the order of their ids, or a function that reads them when they are needed.
GenomeSource = Sequence[dict[str, Any]] | Callable[[], Sequence[dict[str, Any]]]


def layout_features(images: Sequence[Image.Image] | np.ndarray, grid: int = LAYOUT_GRID) -> np.ndarray:
    """Mean colour (0..1) of each cell of a ``grid`` x ``grid`` layout, then their squares.

    ``images`` are PIL images, or ``[n, s, s, 3]`` uint8 pixels (``features.thumbnails``).

    Returns:
        ``float64`` ``[len(images), 2 * 3 * grid * grid]``.
    """
    if len(images) == 0:
        return np.zeros((0, 6 * grid * grid))
    if isinstance(images, np.ndarray) and images.shape[1] % grid == 0 and images.shape[2] % grid == 0:
        # Whole pixels per cell: the cell means of the whole batch in one reduction.
        n, h, w, _ = images.shape
        cells = images.reshape(n, grid, h // grid, grid, w // grid, 3).mean(axis=(2, 4), dtype=np.float64)
        x = cells.reshape(n, -1) / 255.0
    else:
        rows = []
        for img in images if not isinstance(images, np.ndarray) else map(Image.fromarray, images):
            rgb = img if img.mode == "RGB" else img.convert("RGB")
            # BOX averages every pixel of a cell, so the result barely depends on the
            # resolution the picture was rendered at.
            small = rgb.resize((grid, grid), Image.Resampling.BOX)
            rows.append(np.asarray(small, dtype=np.float64).reshape(-1) / 255.0)
        x = np.stack(rows)
    return np.concatenate([x, x * x], axis=1)


class FeatureMaker:
    """Turns pictures (and genomes) into the agent's feature rows.

    Args:
        size: edge in pixels the image statistics are computed at.
        extractor: image features; None for the built-in statistics at ``size``.
        layout: cells per side of the colour layout (0: none).
        genome: add ``genome_features`` (only where genomes are known).
    """

    def __init__(
        self,
        size: int = 32,
        extractor: EmbeddingExtractor | None = None,
        layout: int = LAYOUT_GRID,
        genome: bool = True,
    ) -> None:
        self.size = size
        self.extractor = extractor
        self.layout = layout
        self.genome = genome

    @property
    def name(self) -> str:
        parts = [self.extractor.name if self.extractor else f"stats{self.size}"]
        if self.layout:
            parts.append(f"layout{self.layout}")
        if self.genome:
            parts.append("genome")
        return "+".join(parts)

    def image_part(self, images: Images) -> np.ndarray:
        """Rows of the image-only features (statistics and layout)."""
        if self.extractor is None:
            images = thumbnails(images, self.size)  # converted once for both kinds of features
            stats = image_features(images, size=self.size)
        else:
            if isinstance(images, np.ndarray):  # extractors take images
                images = [Image.fromarray(pixels, "RGB") for pixels in images]
            stats = np.asarray(self.extractor(images), dtype=np.float64)
        parts = [stats]
        if self.layout:
            parts.append(layout_features(images, self.layout))
        return np.concatenate(parts, axis=1)

    def rows(self, images: Images, genomes: Sequence[dict[str, Any]]) -> np.ndarray:
        """Full feature rows: the image part, then the genome summary if enabled."""
        x = self.image_part(images)
        if self.genome:
            x = np.concatenate([x, genome_features(genomes)], axis=1)
        return x

    def image_columns(self, width: int) -> slice:
        """The columns of a full row that describe the picture (for near-duplicate tests)."""
        if not self.genome:
            return slice(0, width)
        return slice(0, width - len(GENOME_FEATURE_NAMES))


class FeatureCache:
    """Feature rows by individual id, computed on first use with one batched render.

    Args:
        maker: how pictures become rows.
        capacity: rows kept (least recently used dropped first).
    """

    def __init__(self, maker: FeatureMaker, capacity: int = _CACHE_SIZE) -> None:
        self.maker = maker
        self.capacity = capacity
        self._rows: OrderedDict[str, np.ndarray] = OrderedDict()
        # Rows of screened children whose ids are not known yet: keyed by id() with the
        # candidate kept alive, so an id() is never reused while its entry stands.
        self._unnamed: dict[int, tuple[Any, np.ndarray]] = {}
        # Shared by the agents of every tab on a run, whose fits may run at once.
        self._lock = threading.RLock()

    def fill(
        self,
        wanted: Sequence[tuple[Sequence[str], GenomeSource]],
        render: Render,
    ) -> None:
        """Compute the rows missing for several id lists with ONE batched render.

        Args:
            wanted: ``(ids, genomes)`` pairs: individual ids and their genomes in the same
                order, or a function returning them (only called when some row is missing,
                so a warm cache never reads genomes from the store).
            render: the small renderer.
        """
        with self._lock:
            self._fill(wanted, render)

    def _fill(self, wanted: Sequence[tuple[Sequence[str], GenomeSource]], render: Render) -> None:
        if self._unnamed and any(key not in self._rows for ids, _ in wanted for key in ids):
            self._name_deferred()  # by now the commit has usually worked their ids out
        todo: dict[str, dict[str, Any]] = {}
        for ids, genomes in wanted:
            if all(key in self._rows or key in todo for key in ids):
                continue
            listed = genomes() if callable(genomes) else genomes
            for key, genome in zip(ids, listed, strict=True):
                if key not in self._rows:
                    todo.setdefault(key, genome)
        if not todo:
            return
        keys = list(todo)
        images = render([todo[k] for k in keys], self.maker.size)
        self._put(keys, self.maker.rows(images, [todo[k] for k in keys]))

    def compute(self, genomes: Sequence[dict[str, Any]], render: Render) -> np.ndarray:
        """Rows for genomes with no id yet (bred children), with one batched render; not kept
        (``defer`` the ones that turn out to matter)."""
        if not genomes:
            return np.zeros((0, 0))
        return self.maker.rows(render(list(genomes), self.maker.size), genomes)

    def defer(self, candidates: Sequence[Any], rows: np.ndarray) -> None:
        """Keep rows for candidates (``evolve.engine.Candidate``) whose ids may not be known
        yet; they are filed under their ids on the next lookup.

        A child's id is a hash of its canonical JSON. The session's commit works it out
        anyway, once the generation has rendered; asking for it here, in the breeding step,
        would put that hashing in front of the render.
        """
        with self._lock:
            for candidate, row in zip(candidates, rows, strict=True):
                self._unnamed[id(candidate)] = (candidate, row)
            if len(self._unnamed) > self.capacity:
                self._name_deferred()

    def candidate_rows(self, candidates: Sequence[Any], render: Render) -> np.ndarray:
        """Rows for candidates in order: deferred rows by candidate, rows of candidates with
        a known id by id, and the rest computed from their genomes (and deferred)."""
        with self._lock:
            rows: list[np.ndarray | None] = []
            for c in candidates:
                deferred = self._unnamed.get(id(c))
                rows.append(None if deferred is None else deferred[1])
            unnamed = [i for i, c in enumerate(candidates) if rows[i] is None and c.known_id is None]
            if unnamed:
                fresh = self.compute([candidates[i].genome for i in unnamed], render)
                self.defer([candidates[i] for i in unnamed], fresh)
                for i, row in zip(unnamed, fresh, strict=True):
                    rows[i] = row
            named = [i for i, row in enumerate(rows) if row is None]
            if named:
                ids = [candidates[i].id for i in named]
                found = self.get(ids, [candidates[i].genome for i in named], render)
                for i, row in zip(named, found, strict=True):
                    rows[i] = row
        return np.stack(rows) if rows else np.zeros((0, 0))

    def _name_deferred(self) -> None:
        pending, self._unnamed = self._unnamed, {}
        if pending:
            self._put([c.id for c, _ in pending.values()], [row for _, row in pending.values()])

    def _put(self, ids: Sequence[str], rows: Sequence[np.ndarray] | np.ndarray) -> None:
        for key, row in zip(ids, rows, strict=True):
            self._rows[key] = row
            self._rows.move_to_end(key)
        while len(self._rows) > self.capacity:
            self._rows.popitem(last=False)

    def get(self, ids: Sequence[str], genomes: GenomeSource, render: Render) -> np.ndarray:
        """Rows for ``ids`` in order, rendering the missing ones first (see ``fill``)."""
        with self._lock:
            self._fill([(ids, genomes)], render)
            out = []
            for key in ids:
                self._rows.move_to_end(key)
                out.append(self._rows[key])
        return np.stack(out) if out else np.zeros((0, 0))
