"""Spark-runtime fixtures: the store URL parametrised over SQLite and PostgreSQL, and a fake
generator that sparks in other processes (spawned children, Ray actors) can import by path."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

FAKE = "tests.spark_runtime.conftest:FakeGenerator"


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL for a fresh store: the default SQLite file, or an empty PostgreSQL DB."""
    if request.param == "sqlite":
        (tmp_path / "data").mkdir(exist_ok=True)
        return f"sqlite:///{(tmp_path / 'data' / 'imagery.db').as_posix()}"
    return request.getfixturevalue("postgres_url")


class FakeGenerator:
    """A deterministic stand-in generator, cheap to build in any process.

    Genome ``{"value": v}`` renders as a solid colour made from ``v``; config ``{"delay": s}``
    sleeps ``s`` seconds per image and reports progress after each. A genome with ``"exit"``
    ends the worker process with that code (a crash); one with ``"bad"`` is refused with a
    ``ValueError``, as a generator refuses a malformed genome.
    """

    lockable: tuple[str, ...] = ()

    def __init__(self, delay: float) -> None:
        self.delay = delay

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> FakeGenerator:
        unknown = sorted(set(config) - {"delay"})
        if unknown:
            raise ValueError(f"unknown fake config key {unknown[0]!r}")
        return cls(float(config.get("delay", 0.0)))

    @property
    def config(self) -> dict[str, Any]:
        return {"delay": self.delay}

    def render(
        self, genomes: Sequence[dict[str, Any]], size: int, progress: Any = None
    ) -> list[Image.Image]:
        images = []
        for i, genome in enumerate(genomes):
            if "exit" in genome:
                os._exit(int(genome["exit"]))
            if "bad" in genome:
                raise ValueError(f"fake genome {i} is bad")
            time.sleep(self.delay)
            images.append(fake_image(genome, size))
            if progress is not None:
                progress(i + 1, len(genomes))
        return images


def fake_image(genome: dict[str, Any], size: int) -> Image.Image:
    v = int(genome["value"])
    return Image.new("RGB", (size, size), (v % 256, (v // 256) % 256, 7))


def fake_genomes(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"value": start + i} for i in range(n)]


def fake_values(images: Sequence[Image.Image]) -> list[int]:
    """The genome values back from fake images (the red channel; values under 256)."""
    return [im.getpixel((0, 0))[0] for im in images]
