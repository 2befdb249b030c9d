"""Sparks at scale: CPPN images per second on 1, 2 and 4 process sparks, and what the pool
and the store add to each generation.

1. Throughput: one generation (population 16 at 256 px by default) rendered through a pool of
   N process sparks (torch threads split evenly between them), median of several renders,
   printed as images/s and as a ratio against 1 process spark measured in the same run. The
   in-process render is printed too, as the floor the process sparks pay IPC on top of.
2. Overhead per generation: ``Session.evolve`` through a one-spark ``local`` pool, timing the
   generator's own render, the pool around it, and ``Store.commit_generation`` (object files
   with fsync + one DB transaction). Acceptance: (pool + store) < 10% of the render time.
   PNG/WebP encoding and the engine's ask/tell are printed separately.

    python bench/sparks.py [--population 16] [--size 256] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from evolve.session import RunSpec, Session  # noqa: E402
from spark_runtime.pool import SparkPool  # noqa: E402
from spark_runtime.spark import InProcessSpark, build_generator  # noqa: E402
from spark_runtime.sparks import make_pool  # noqa: E402

CPPN = "imagery.cppn:CPPN"


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def median_seconds(fn: Any, repeats: int) -> float:
    fn()  # warm-up: first render pays torch's one-off setup
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def throughput(genomes: list[dict], size: int, repeats: int) -> None:
    n = len(genomes)
    print(f"\n1. Throughput: CPPN, population {n} at {size} px, median of {repeats}")
    local = InProcessSpark(CPPN, {})
    floor = median_seconds(lambda: local.render(genomes, size), repeats)
    print(f"   in-process (no pool, no IPC)  {n / floor:7.1f} images/s  ({floor * 1000:6.0f} ms)")
    rates = {}
    for count in (1, 2, 4):
        with make_pool(f"process:{count}", CPPN, {}) as pool:
            threads = pool.sparks[0].threads
            seconds = median_seconds(lambda pool=pool: pool.render(genomes, size), repeats)
        rates[count] = n / seconds
        print(
            f"   process:{count} ({threads} torch thread(s) each)  {rates[count]:7.1f} images/s  "
            f"({seconds * 1000:6.0f} ms)  ratio vs process:1 {rates[count] / rates[1]:.2f}x"
        )
    print(
        f"   This machine has {cores()} CPU core(s): sparks beyond {cores()} share them, so "
        "more sparks cannot beat the core count here; on a cluster each spark gets its own "
        "GPU or cores."
    )


class Timed:
    """Wraps a spark or a function and adds up the seconds spent in it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.seconds = 0.0
        self.target = getattr(inner, "target", None)
        self.config = getattr(inner, "config", None)

    def render(self, genomes: Any, size: int, progress: Any = None) -> Any:
        start = time.perf_counter()
        try:
            return self.inner.render(genomes, size, progress)
        finally:
            self.seconds += time.perf_counter() - start

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return self.inner(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start

    def close(self) -> None:
        self.inner.close()


def overhead(population: int, size: int, repeats: int) -> bool:
    print(f"\n2. Overhead per generation: Session.evolve, population {population} at {size} px")
    generator = Timed(InProcessSpark(CPPN, {}))
    pool = Timed(SparkPool([generator]))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        session = Session.create(
            _store(tmp), RunSpec(name="bench", population=population, size=size, seed=3), spark=pool
        )
        store = session.store
        commit = Timed(store.commit_generation)
        store.commit_generation = commit  # type: ignore[method-assign]
        rng = np.random.default_rng(0)
        for _ in range(repeats + 1):
            for timer in (generator, pool, commit):
                timer.seconds = 0.0
            start = time.perf_counter()
            session.evolve(fitness=list(rng.random(population)))
            rows.append(
                (time.perf_counter() - start, generator.seconds, pool.seconds, commit.seconds)
            )
        store.close()
    wall, render, pooled, stored = (statistics.median(col) for col in zip(*rows[1:], strict=True))
    pool_cost = pooled - render
    rest = wall - pooled - stored
    share = (pool_cost + stored) / render
    print(f"   generator render   {render * 1000:7.1f} ms   (reference)")
    print(f"   pool               {pool_cost * 1000:7.2f} ms   {pool_cost / render:6.2%} of render")
    print(f"   store commit       {stored * 1000:7.2f} ms   {stored / render:6.2%} of render")
    print(
        f"   encode + engine    {rest * 1000:7.2f} ms   {rest / render:6.2%} of render (PNG, WebP, ask/tell)"
    )
    print(f"   whole generation   {wall * 1000:7.1f} ms")
    verdict = "PASS" if share < 0.10 else "FAIL"
    print(f"   pool + store = {share:.2%} of render time (acceptance < 10%): {verdict}")
    return share < 0.10


def _store(tmp: str) -> Any:
    from spark_runtime.store import Store

    return Store(Path(tmp) / "store")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--population", type=int, default=16)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    generator = build_generator(CPPN, {})
    genomes = generator.random(np.random.default_rng(0), args.population)
    print(f"sparks benchmark on {cores()} CPU core(s), torch CPU")
    throughput(genomes, args.size, args.repeats)
    ok = overhead(args.population, args.size, args.repeats)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
