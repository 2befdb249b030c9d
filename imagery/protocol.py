"""The generator protocol: the one seam between the GA and image generators.

A generator is built from a JSON-serialisable config (``Generator.from_config``) and owns
its genome kind. ``evolve/`` only ever talks to generators through this protocol, and
``spark_runtime`` builds them from an import path plus that config, so neither needs to
know which generator it is driving.

A genome is a plain dict of JSON-serialisable values. A generator that needs tensors
(diffusion latents) puts them under the reserved key ``"tensors"`` as a
``dict[str, torch.Tensor]``; the store writes those as safetensors, never as pickles.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image

Genome = dict[str, Any]
TENSORS_KEY = "tensors"

# progress(done, total): called as images of a batch finish (done counts images).
ProgressCallback = Callable[[int, int], None]

MIN_SIZE = 16
MAX_SIZE = 2048


class GeneratorError(ValueError):
    """Bad generator config or genome; the message is one line meant for the user."""


@runtime_checkable
class Generator(Protocol):
    """What the engine and the sparks need from an image generator."""

    #: Names of the gene groups a user may lock (kept unchanged by ``mutate``).
    lockable: tuple[str, ...]

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Generator: ...

    @property
    def config(self) -> dict[str, Any]:
        """The JSON-serialisable config this generator was built from (normalised)."""
        ...

    def random(self, rng: np.random.Generator, n: int) -> list[Genome]: ...

    def mutate(
        self,
        genome: Genome,
        rng: np.random.Generator,
        strength: float,
        locks: frozenset[str] = frozenset(),
    ) -> Genome: ...

    def crossover(self, a: Genome, b: Genome, rng: np.random.Generator) -> Genome: ...

    def render(
        self,
        genomes: Sequence[Genome],
        size: int,
        progress: ProgressCallback | None = None,
    ) -> list[Image.Image]:
        """Render the whole batch in one call; RGB images of ``size`` x ``size``."""
        ...


def check_size(size: int) -> int:
    """Validate an image edge length, raising a one-line ``GeneratorError``."""
    if not isinstance(size, int) or isinstance(size, bool) or not MIN_SIZE <= size <= MAX_SIZE:
        raise GeneratorError(f"image size must be a whole number from {MIN_SIZE} to {MAX_SIZE}, got {size!r}")
    return size
