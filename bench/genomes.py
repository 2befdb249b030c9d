"""Genomes the benchmarks share: CPPN networks grown by mutation, as a run grows them."""

from __future__ import annotations

from typing import Any

import numpy as np


def mutated(generator: Any, genomes: list[dict], rounds: int, strength: float, rng: np.random.Generator) -> list[dict]:
    """``genomes`` mutated ``rounds`` times over (each genome once a round, at ``strength``),
    drawing from ``rng``: bigger networks than random ones, like those of a run under way."""
    for _ in range(rounds):
        genomes = [generator.mutate(g, rng, strength) for g in genomes]
    return genomes
