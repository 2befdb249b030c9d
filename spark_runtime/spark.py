"""Sparks: workers that keep one generator loaded and render whole batches.

A spark is handed an import path (``"imagery.cppn:CPPN"``) and a JSON config; it never
imports ``imagery`` by name, so the runtime stays below the generators in the layering.
The in-process spark is the embedded default; process and Ray sparks share this interface.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import numpy as np
from PIL import Image

from spark_runtime.heap import keep_freed_memory
from spark_runtime.image_codec import rgb_pixels

T = TypeVar("T", list[Image.Image], np.ndarray)

ProgressCallback = Callable[[int, int], None]


class SparkError(RuntimeError):
    """A spark could not be built or could not render; the message is one line."""


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name when the message is empty)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def build_generator(target: str, config: dict[str, Any]) -> Any:
    """Import ``module:Class`` and build it from a JSON config via ``Class.from_config``."""
    module_name, sep, class_name = target.partition(":")
    if not sep or not module_name or not class_name:
        raise SparkError(f"generator target must look like 'package.module:Class', got {target!r}")
    # The config crosses process and machine boundaries: insist it is plain JSON.
    config = json.loads(json.dumps(config))
    try:
        module = importlib.import_module(module_name)
        cls = getattr(module, class_name)
    except (ImportError, AttributeError) as exc:
        raise SparkError(f"cannot load generator {target!r}: {exc}") from exc
    return cls.from_config(config)


def load_spark_generator(target: str, config: dict[str, Any]) -> Any:
    """``build_generator`` for a spark: the process renders from now on, so it keeps its
    freed heap between renders (``spark_runtime.heap``)."""
    keep_freed_memory()
    return build_generator(target, config)


class Spark(Protocol):
    """Renders batches of genomes with a generator it keeps loaded."""

    target: str
    config: dict[str, Any]

    def launch(self) -> None:
        """Begin loading the generator without waiting (several sparks then load in parallel)."""
        ...

    def start(self) -> None:
        """Load the generator now and wait for it; a bad target or config fails here."""
        ...

    def render(
        self,
        genomes: Sequence[dict[str, Any]],
        size: int,
        progress: ProgressCallback | None = None,
    ) -> list[Image.Image]: ...

    def close(self) -> None: ...


class InProcessSpark:
    """A spark in the calling process: no transfer cost, the generator built on first use."""

    def __init__(self, target: str, config: dict[str, Any]) -> None:
        self.target = target
        self.config = dict(config)
        self._generator: Any | None = None

    @property
    def generator(self) -> Any:
        if self._generator is None:
            self._generator = load_spark_generator(self.target, self.config)
        return self._generator

    def launch(self) -> None:
        """Nothing to begin in the background: ``start`` builds the generator here."""

    def start(self) -> None:
        """Build the generator now, so that a bad config fails before anything renders."""
        self.generator  # noqa: B018 - the property builds it

    def render(
        self,
        genomes: Sequence[dict[str, Any]],
        size: int,
        progress: ProgressCallback | None = None,
    ) -> list[Image.Image]:
        if not genomes:
            return []
        return one_per_genome(self.generator.render(list(genomes), size, progress=progress), genomes)

    def render_pixels(self, genomes: Sequence[dict[str, Any]], size: int) -> np.ndarray:
        """The batch as one ``[n, size, size, 3]`` uint8 array (the generator's own, when it
        can render to an array directly)."""
        direct = getattr(self.generator, "render_pixels", None)
        if direct is not None:
            return one_per_genome(direct(list(genomes), size), genomes)
        images = self.render(genomes, size)
        if not images:
            return np.zeros((0, size, size, 3), np.uint8)
        return np.stack([rgb_pixels(im) for im in images])

    def close(self) -> None:
        self._generator = None


def one_per_genome(images: T, genomes: Sequence[Any]) -> T:
    """``images`` (a list or an array), checked to hold one per genome (a generator that
    returns another count raises ``SparkError``)."""
    if len(images) != len(genomes):
        raise SparkError(f"generator returned {len(images)} images for {len(genomes)} genomes")
    return images
