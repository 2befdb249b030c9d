"""Sparks at scale: CPPN images per second on 1, 2 and 4 process sparks, and what the pool
and the store add to each generation.

1. Throughput: one generation (population 16 at 256 px by default) rendered through a pool of
   N process sparks with one torch thread each (so the ratio measures sparks, not torch's
   own threading), in interleaved rounds, median per setup, printed as images/s and as a
   ratio against 1 process spark measured in the same run. The in-process render (same thread count) is the
   floor that process sparks add IPC to.
2. Overhead per generation: ``Session.evolve`` through a one-spark ``local`` pool. The
   render is timed inside the spark; everything else on the generation's critical path that
   is not the GA (the pool, reading the head, encoding and writing the batch still in the
   writer threads when the last render ends, and the commit transaction) is the overhead.
   Acceptance: (pool + store) < 10% of the render time.

    python bench/sparks.py [--population 16] [--size 256] [--repeats 9] [--store-dir DIR]
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
import torch  # noqa: E402

from evolve.session import RunSpec, Session  # noqa: E402
from spark_runtime.pool import SparkPool  # noqa: E402
from spark_runtime.process_spark import ProcessSpark  # noqa: E402
from spark_runtime.spark import InProcessSpark, build_generator  # noqa: E402
from spark_runtime.store import Store  # noqa: E402

CPPN = "imagery.cppn:CPPN"


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def throughput(genomes: list[dict], size: int, repeats: int) -> None:
    n = len(genomes)
    print(f"\n1. Throughput: CPPN, population {n} at {size} px, 1 torch thread per spark")
    pools = {
        count: SparkPool([ProcessSpark(CPPN, {}, threads=1) for _ in range(count)])
        for count in (1, 2, 4)
    }
    for pool in pools.values():
        for spark in pool.sparks:
            spark.launch()
    local = InProcessSpark(CPPN, {})
    renders = {"in-process": local.render, **{f"process:{c}": p.render for c, p in pools.items()}}
    times: dict[str, list[float]] = {name: [] for name in renders}
    for render in renders.values():
        render(genomes, size)  # warm-up: the sparks load and torch sets up
    # Interleaved rounds, so a burst of load elsewhere on the machine hits every setup alike.
    for _ in range(repeats):
        for name, render in renders.items():
            start = time.perf_counter()
            render(genomes, size)
            times[name].append(time.perf_counter() - start)
    for pool in pools.values():
        pool.close()
    base = n / statistics.median(times["process:1"])
    for name, samples in times.items():
        seconds = statistics.median(samples)
        ratio = "" if name == "in-process" else f"  ratio vs 1 spark {n / seconds / base:.2f}x"
        print(
            f"   {name:<11} {n / seconds:7.1f} images/s  ({seconds * 1000:6.0f} ms, median of {repeats}){ratio}"
        )
    print(
        f"   This machine has {cores()} CPU core(s): sparks beyond {cores()} share them, so the "
        f"ratio cannot pass {cores()}x here; on a cluster each spark brings its own GPU or cores."
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


def overhead(population: int, size: int, repeats: int, store_dir: str | None) -> bool:
    print(f"\n2. Overhead per generation: Session.evolve, population {population} at {size} px")
    generator = Timed(InProcessSpark(CPPN, {}))
    pool = Timed(SparkPool([generator]))
    rows = []
    with tempfile.TemporaryDirectory(dir=store_dir) as tmp:
        print(f"   store in {tmp} (SQLite + object files, durable writes as in production)")
        spec = RunSpec(name="bench", population=population, size=size, seed=3)
        session = Session.create(_store(tmp), spec, spark=pool)
        store = session.store
        commit = Timed(store.commit_generation)
        store.commit_generation = commit  # type: ignore[method-assign]
        tell = Timed(session._tell)
        session._tell = tell  # type: ignore[method-assign]
        rng = np.random.default_rng(0)
        for _ in range(repeats + 1):
            for timer in (generator, pool, commit, tell):
                timer.seconds = 0.0
            start = time.perf_counter()
            session.evolve(fitness=list(rng.random(population)))
            wall = time.perf_counter() - start
            rows.append((wall, generator.seconds, pool.seconds, commit.seconds, tell.seconds))
        store.close()
    wall, render, pooled, stored, told = (
        statistics.median(col) for col in zip(*rows[1:], strict=True)
    )
    pool_cost = pooled - render
    # Everything on the generation's critical path that is neither rendering nor the GA:
    # the pool, reading the head, encoding and writing what the writer thread had not
    # finished when the last batch rendered, and the commit transaction.
    store_cost = wall - pooled - told

    def line(label: str, seconds: float) -> None:
        print(f"   {label:<40} {seconds * 1000:8.2f} ms  {seconds / render:7.2%} of render")

    print(f"   {'generator render (reference)':<40} {render * 1000:8.2f} ms")
    line("pool", pool_cost)
    line("store: read head, encode+write tail, commit", store_cost)
    line("  of which the commit (rows only)", stored)
    line("engine ask/tell (the GA, not counted)", told)
    print(f"   {'whole generation':<40} {wall * 1000:8.2f} ms")
    share = (pool_cost + store_cost) / render
    verdict = "PASS" if share < 0.10 else "FAIL"
    print(f"   pool + store overhead: {share:7.2%} of render: {verdict} (acceptance < 10%)")
    return share < 0.10


def _store(tmp: str) -> Store:
    return Store(Path(tmp) / "store")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--population", type=int, default=16)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=1, help="torch threads in this process")
    parser.add_argument("--store-dir", help="where the benchmark store goes (default: system temp)")
    args = parser.parse_args()
    # One thread by default: the same per-spark budget as the process sparks, and the
    # shortest render, so the overhead ratio is measured at its least flattering.
    torch.set_num_threads(args.threads)
    generator = build_generator(CPPN, {})
    genomes = generator.random(np.random.default_rng(0), args.population)
    print(
        f"sparks benchmark on {cores()} CPU core(s), torch CPU, {args.threads} thread(s) in-process"
    )
    throughput(genomes, args.size, args.repeats)
    ok = overhead(args.population, args.size, args.repeats, args.store_dir)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
