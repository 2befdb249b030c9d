"""Helpers shared by the evolve tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from evolve.session import RunSpec, Session
from spark_runtime.store import Store

POP, SIZE = 6, 32  # the session tests' runs: small and quick to render


def new_session(store: Store, name: str = "r", seed: int = 1) -> Session:
    return Session.create(store, RunSpec(name=name, population=POP, size=SIZE, seed=seed))


def object_files(root: Path) -> list[Path]:
    """Every file under a store's objects folder (published objects and staged temp files)."""
    return sorted(p for p in (root / "objects").rglob("*") if p.is_file())


def stored_and_committed(store: Store, session: Session, root: Path) -> tuple[set[str], set[str]]:
    """The names of the object files on disk, and the objects the branch's snapshots reference."""
    on_disk = {p.parent.name + p.name for p in object_files(root)}
    return on_disk, {sha for s in store.history(session.branch) for sha in (*s.images, *s.thumbs)}


def before_render(session: Session, call: int, action: Callable[[], Any]) -> None:
    """Wrap the session's spark so that ``action`` runs as its render call number ``call``
    (from 1) starts."""
    real, calls = session.spark.render, []

    def render(genomes, size, progress=None):
        calls.append(len(genomes))
        if len(calls) == call:
            action()
        return real(genomes, size, progress)

    session.spark.render = render  # type: ignore[method-assign]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (no ties expected): Pearson's r of the ranks."""
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])
