"""Fork cost must not grow with history: resolve + fork at generation 500 vs generation 10.

Builds a 500-generation chain directly through the store (small population, fake image bytes,
no rendering), then times ``snapshot_at(main, g)`` + ``fork`` at g = 10 and g = 500,
interleaved, and prints the medians and their ratio. Acceptance: fork@500 <= 1.5 x fork@10.

    python bench/fork.py [--generations 500] [--repeats 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spark_runtime.store import Store  # noqa: E402

POPULATION = 4


def build_chain(store: Store, generations: int) -> str:
    """Commit generations 0..``generations`` on a new run's main branch; returns its id."""
    run = store.create_run(
        name="bench-fork",
        generator="fake",
        target="bench.fake:Fake",
        generator_config={},
        population_size=POPULATION,
        size=8,
        seed=0,
    )
    main = store.get_branch(run.id)
    parent = None
    for g in range(generations + 1):
        individuals = [
            ({"g": g, "i": i}, [] if parent is None else [parent.population[i]])
            for i in range(POPULATION)
        ]
        images = [f"img-{g}-{i}".encode() for i in range(POPULATION)]
        parent = store.commit_generation(
            branch_id=main.id,
            parent_id=None if parent is None else parent.id,
            generation=g,
            individuals=individuals,
            images=images,
            thumbs=[b"t" + img for img in images],
            rng_state={"g": g},
            settings={},
            consumed_ratings=[],
            generator_config={},
        )
    return main.id


def resolve_and_fork(store: Store, branch_id: str, generation: int, name: str) -> float:
    start = time.perf_counter()
    snapshot = store.snapshot_at(branch_id, generation)
    store.fork(snapshot.id, name)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generations", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Store(tmp) as store:
        t0 = time.perf_counter()
        branch_id = build_chain(store, args.generations)
        build_s = time.perf_counter() - t0
        early, late = 10, args.generations
        times: dict[int, list[float]] = {early: [], late: []}
        for k in range(args.repeats):
            # Interleave so drift in disk or CPU load hits both sides alike.
            order = (early, late) if k % 2 == 0 else (late, early)
            for g in order:
                times[g].append(resolve_and_fork(store, branch_id, g, f"f{g}-{k}"))
        med_early = statistics.median(times[early])
        med_late = statistics.median(times[late])
    ratio = med_late / med_early
    print(f"chain: {args.generations + 1} generations x {POPULATION} built in {build_s:.1f} s")
    print(f"resolve+fork @ generation {early:>4}: median {med_early * 1e3:.3f} ms")
    print(f"resolve+fork @ generation {late:>4}: median {med_late * 1e3:.3f} ms")
    verdict = "PASS" if ratio <= 1.5 else "FAIL"
    print(f"ratio fork@{late} / fork@{early}: {ratio:.2f} (acceptance <= 1.5: {verdict})")


if __name__ == "__main__":
    main()
