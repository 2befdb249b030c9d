"""Helpers shared by the evolve tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def object_files(root: Path) -> list[Path]:
    """Every file under a store's objects folder (published objects and staged temp files)."""
    return sorted(p for p in (root / "objects").rglob("*") if p.is_file())


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (no ties expected): Pearson's r of the ranks."""
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])
