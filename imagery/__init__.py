"""Image generators behind one protocol: ``cppn`` (no weights) and ``diffusion`` (diffusers).

Generators know no GA, store or UI. Each is named by an import path so a spark can build it
from a JSON config without importing this package's registry.
"""

from __future__ import annotations

from imagery.protocol import MAX_SIZE, MIN_SIZE, Generator, GeneratorError, Genome, check_size

GENERATORS = {
    "cppn": "imagery.cppn:CPPN",
    "diffusion": "imagery.diffusion:DiffusionGenerator",
}

__all__ = ["GENERATORS", "Generator", "GeneratorError", "Genome", "MAX_SIZE", "MIN_SIZE", "check_size"]
