"""CPPN image generator in the Picbreeder tradition: evolve small networks, not pixels.

A compositional pattern-producing network maps each pixel's coordinates (x, y, distance
from the centre, bias) through a small feed-forward graph of smooth functions (sin,
gaussian, sigmoid, ...) to a colour. Genomes grow by NEAT-style mutation; the genome
format and crossover live in ``imagery.cppn_genome``, mutation in ``imagery.cppn_mutation``,
the batched torch renderer in ``imagery.cppn_render``. No model weights are involved, so the generator is cheap to build.

Config keys (all optional)::

    {"color": "hsv" | "rgb",              # how the three outputs become a colour (hsv)
     "hidden": 4,                          # hidden nodes in a fresh random genome (0..16)
     "device": "auto" | "cpu" | "cuda",    # auto: CUDA when available, else CPU
     "max_nodes": 64}                      # cap on hidden nodes that mutation may grow to

HSV is the default: hue wraps and |value| draws dark contour lines where the value output
crosses zero, which gives the Picbreeder look; RGB maps each output linearly.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
from PIL import Image

from imagery import cppn_genome, cppn_mutation
from imagery.protocol import GeneratorError, Genome, ProgressCallback, check_size

DEVICES = ("auto", "cpu", "cuda")
COLOR_MODES = ("hsv", "rgb")
MAX_INITIAL_HIDDEN = 16
MAX_NODES_LIMIT = 256


def _whole(value: Any, key: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise GeneratorError(
            f"CPPN config {key!r} must be a whole number from {low} to {high}, got {value!r}"
        )
    return value


def _choice(value: Any, key: str, options: tuple[str, ...]) -> str:
    if value not in options:
        raise GeneratorError(
            f"CPPN config {key!r} must be one of {', '.join(options)}, got {value!r}"
        )
    return value


@dataclass(frozen=True)
class CPPNConfig:
    """Validated CPPN settings; ``to_dict`` is the normalised JSON config."""

    color: str = "hsv"
    hidden: int = 4
    device: str = "auto"
    max_nodes: int = 64

    def __post_init__(self) -> None:
        _choice(self.color, "color", COLOR_MODES)
        _choice(self.device, "device", DEVICES)
        _whole(self.max_nodes, "max_nodes", 1, MAX_NODES_LIMIT)
        _whole(self.hidden, "hidden", 0, min(MAX_INITIAL_HIDDEN, self.max_nodes))

    @classmethod
    def from_dict(cls, config: dict[str, Any] | None) -> CPPNConfig:
        """Build from a JSON dict, raising a one-line ``GeneratorError`` on bad keys or values."""
        config = {} if config is None else config
        if not isinstance(config, dict):
            raise GeneratorError(f"CPPN config must be a JSON object, got {type(config).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise GeneratorError(
                f"unknown CPPN config key {unknown[0]!r}; known keys: {', '.join(sorted(known))}"
            )
        return cls(**config)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class CPPN:
    """The CPPN generator: implements ``imagery.protocol.Generator``."""

    lockable: tuple[str, ...] = cppn_genome.LOCKABLE

    def __init__(self, settings: CPPNConfig) -> None:
        self.settings = settings

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> CPPN:
        """Build from a JSON config (see the module docstring); cheap, touches no device."""
        return cls(CPPNConfig.from_dict(config))

    @property
    def config(self) -> dict[str, Any]:
        """The normalised JSON config: every key present, defaults filled in."""
        return self.settings.to_dict()

    def random(self, rng: np.random.Generator, n: int) -> list[Genome]:
        """``n`` fresh genomes, each with ``hidden`` nodes fed by random subsets of the inputs."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise GeneratorError(f"number of genomes must be a whole number >= 0, got {n!r}")
        return [cppn_genome.random_genome(rng, self.settings.hidden) for _ in range(n)]

    def mutate(
        self,
        genome: Genome,
        rng: np.random.Generator,
        strength: float,
        locks: Iterable[str] = frozenset(),
    ) -> Genome:
        """A mutated copy; ``strength`` 0..1 scales how much changes, ``locks`` freeze gene groups."""
        return cppn_mutation.mutate(genome, rng, strength, locks, self.settings.max_nodes)

    def crossover(self, a: Genome, b: Genome, rng: np.random.Generator) -> Genome:
        """A child with ``a``'s structure, shared genes from either parent and some of ``b``'s own."""
        return cppn_genome.crossover(a, b, rng, self.settings.max_nodes)

    def render(
        self,
        genomes: Sequence[Genome],
        size: int,
        progress: ProgressCallback | None = None,
    ) -> list[Image.Image]:
        """Render the whole batch in one torch computation; RGB images of ``size`` x ``size``."""
        return [Image.fromarray(pixels, "RGB") for pixels in self.render_pixels(genomes, size, progress)]

    def render_pixels(
        self,
        genomes: Sequence[Genome],
        size: int,
        progress: ProgressCallback | None = None,
    ) -> np.ndarray:
        """``render`` as one ``[n, size, size, 3]`` uint8 array, for callers that compute on
        the pixels (the agent's small renders): no image objects made and read back."""
        check_size(size)
        for genome in genomes:
            cppn_genome.validate(genome)
        # torch is imported here, not at module import, so building a generator stays cheap.
        import torch

        from imagery import cppn_render

        device = self.settings.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        elif device == "cuda" and not torch.cuda.is_available():
            raise GeneratorError("CPPN config asks for device 'cuda' but no CUDA GPU is available")
        return cppn_render.render_pixels(
            list(genomes), size, self.settings.color, torch.device(device), progress
        )
