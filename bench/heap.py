"""CPPN renders with the C heap kept between renders (``spark_runtime.heap``) against glibc's
default thresholds, in two worker processes side by side.

Each worker builds the CPPN generator; one first calls ``keep_freed_memory()``, as every spark
does now. They render the same populations (``--sets`` random populations of 16 at 256 px,
in turn) in alternating requests, so a busy spell on the machine hits both alike. Prints the
median render and its quartiles, the page faults per render in each worker, and the ratio.

    python bench/heap.py [--population 16] [--size 256] [--sets 6] [--rounds 6]
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.args import at_least  # noqa: E402

CPPN = "imagery.cppn:CPPN"


def worker(conn: Any, kept: bool, population: int, size: int, sets: int) -> None:
    import numpy as np

    from spark_runtime.heap import keep_freed_memory
    from spark_runtime.spark import build_generator

    if kept and not keep_freed_memory():
        conn.send(None)  # not glibc on Linux: nothing to compare
        return
    generator = build_generator(CPPN, {})
    rng = np.random.default_rng(7)
    populations = [generator.random(rng, population) for _ in range(sets)]
    for genomes in populations:  # warm-up: torch sets up, the heap takes its working shape
        generator.render_pixels(genomes, size)
    conn.send("ready")
    while (index := conn.recv()) is not None:
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        generator.render_pixels(populations[index], size)
        conn.send((time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--population", type=at_least(1), default=16)
    parser.add_argument("--size", type=at_least(1), default=256)
    parser.add_argument("--sets", type=at_least(1), default=6, help="random populations rendered in turn")
    parser.add_argument("--rounds", type=at_least(1), default=6)
    args = parser.parse_args()
    spawn = multiprocessing.get_context("spawn")
    workers = {}
    for name, kept in (("heap kept", True), ("glibc default", False)):
        mine, theirs = spawn.Pipe()
        process = spawn.Process(target=worker, args=(theirs, kept, args.population, args.size, args.sets), daemon=True)
        process.start()
        workers[name] = (mine, process)
    if any(conn.recv() is None for conn, _ in workers.values()):
        print("the heap thresholds are glibc's on Linux only: nothing to compare here")
        return 0
    times: dict[str, list[float]] = {name: [] for name in workers}
    faults: dict[str, list[int]] = {name: [] for name in workers}
    for _ in range(args.rounds):
        for index in range(args.sets):
            for name, (conn, _) in workers.items():
                conn.send(index)
                seconds, faulted = conn.recv()
                times[name].append(seconds)
                faults[name].append(faulted)
    for conn, process in workers.values():
        conn.send(None)
        process.join()
    print(f"CPPN render, population {args.population} at {args.size} px, one torch thread, {len(times['heap kept'])} renders each")
    medians = {}
    for name in workers:
        q1, medians[name], q3 = statistics.quantiles(times[name], n=4)
        print(
            f"  {name:<14} median {medians[name] * 1000:7.1f} ms (quartiles {q1 * 1000:.1f} .. {q3 * 1000:.1f}), "
            f"{statistics.median(faults[name]):8.0f} page faults a render"
        )
    print(f"  the default heap takes {medians['glibc default'] / medians['heap kept']:.2f}x the time of the kept heap")
    return 0


if __name__ == "__main__":
    sys.exit(main())
