"""The browser's preview of each new image: the thumbnail the writer encodes for the store,
handed to the stream (``Session.evolve(on_thumb=...)``, what the UI does), against a JPEG of
its own encoded on the render thread as each image renders (what the UI did before).

Generations of one run, CPPN population 16 at 256 px by default, evolved in pairs, one each
way in alternating order, on the in-process spark, durable writes as in production. Printed:
the median generation time and the time to the last preview each way, and the median of the
paired differences as a ratio against the render-thread way.

    python bench/previews.py [--population 16] [--size 256] [--pairs 40]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench.args import at_least  # noqa: E402
from evolve.session import RunSpec, Session  # noqa: E402
from spark_runtime.image_codec import THUMB_SIZE, encode_jpeg  # noqa: E402
from spark_runtime.store import Store  # noqa: E402
from ui.live import data_url  # noqa: E402  (the UI's own, so the preview costs what it costs there)

WARM_UP = 2  # generations before timing: torch and the store settle


def generation(session: Session, way: str, fitness: list[float]) -> tuple[float, float]:
    """One generation with its previews made ``way``; (seconds, seconds to the last preview)."""
    start = time.perf_counter()
    last = 0.0

    def on_image(position: int, image: Any, thumb: str | None) -> None:
        nonlocal last
        if image is not None and way == "render thread":
            data_url(encode_jpeg(image, THUMB_SIZE, quality=85))  # the preview the UI encoded before
            last = time.perf_counter() - start

    def on_thumb(position: int, jpeg: bytes) -> None:
        nonlocal last
        data_url(jpeg)
        last = time.perf_counter() - start

    extra = {"on_thumb": on_thumb} if way == "stored thumbnail" else {}
    session.evolve(fitness=fitness, on_image=on_image, **extra)
    return time.perf_counter() - start, last


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--population", type=at_least(1), default=16)
    parser.add_argument("--size", type=at_least(16), default=256)
    parser.add_argument("--pairs", type=at_least(1), default=40)
    args = parser.parse_args()
    ways = ("stored thumbnail", "render thread")
    rows: dict[str, list[tuple[float, float]]] = {way: [] for way in ways}
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "store") as store:
        spec = RunSpec(name="previews", population=args.population, size=args.size, seed=3)
        session = Session.create(store, spec)
        for _ in range(WARM_UP):
            session.evolve(fitness=list(rng.random(args.population)))
        for pair in range(args.pairs):
            for way in ways if pair % 2 else reversed(ways):
                rows[way].append(generation(session, way, list(rng.random(args.population))))
    print(f"previews of new images, CPPN population {args.population} at {args.size} px, {args.pairs} pairs of generations")
    for way, timed in rows.items():
        whole, last = (statistics.median(column) * 1000 for column in zip(*timed, strict=True))
        print(f"   {way:<18} generation {whole:7.2f} ms, last preview at {last:7.2f} ms (medians)")
    now, before = (rows[way] for way in ways)
    saved = statistics.median(b[0] - n[0] for n, b in zip(now, before, strict=True))
    reference = statistics.median(b[0] for b in before)
    print(
        f"   paired median: the stored thumbnail saves {saved * 1000:.2f} ms a generation, "
        f"{saved / reference:.1%} of the render-thread way (ratio {1 - saved / reference:.3f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
