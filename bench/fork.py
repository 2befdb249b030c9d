"""Fork cost must not grow with history: forking the head of a 500-generation run vs the head
of a 10-generation one.

Builds a 500-generation chain and a 10-generation chain directly through the store (small
population, fake image bytes, no rendering), then times ``snapshot_at(main, g)`` + ``fork``
at the head of each, interleaved, and prints the medians and their ratio. Acceptance: the
500-generation fork <= 1.5 x the 10-generation one. A third case, for information, forks deep
in the long history (generation 10 of 500, the most skip hops) against the same reference.

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

from bench.args import at_least  # noqa: E402
from spark_runtime.store import Store  # noqa: E402

POPULATION = 4


def build_chain(store: Store, generations: int, name: str = "bench-fork") -> str:
    """Commit generations 0..``generations`` on a new run's main branch; returns its id."""
    run = store.create_run(
        name=name,
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
    parser.add_argument("--generations", type=at_least(1), default=500)
    parser.add_argument("--repeats", type=at_least(1), default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Store(tmp) as store:
        t0 = time.perf_counter()
        long_id = build_chain(store, args.generations)
        build_s = time.perf_counter() - t0
        short_id = build_chain(store, 10, name="bench-short")
        cases = {
            "fork@10 of a 10-generation run (head)": (short_id, 10),
            f"fork@{args.generations} of a {args.generations}-generation run (head)": (
                long_id,
                args.generations,
            ),
            f"fork@10 of a {args.generations}-generation run (deep)": (long_id, 10),
        }
        times: dict[str, list[float]] = {label: [] for label in cases}
        labels = list(cases)
        for k in range(args.repeats):
            # Rotate the order so drift in disk or CPU load hits every case alike.
            for label in labels[k % 3 :] + labels[: k % 3]:
                branch_id, g = cases[label]
                times[label].append(
                    resolve_and_fork(store, branch_id, g, f"f{labels.index(label)}-{k}")
                )
    medians = {label: statistics.median(t) for label, t in times.items()}
    print(f"chain: {args.generations + 1} generations x {POPULATION} built in {build_s:.1f} s")
    for label, median in medians.items():
        print(f"resolve+fork {label:<44} median {median * 1e3:.3f} ms")
    base = medians[labels[0]]
    ratio = medians[labels[1]] / base
    verdict = "PASS" if ratio <= 1.5 else "FAIL"
    print(
        f"ratio fork at the head, {args.generations} vs 10 generations of history: {ratio:.2f} (acceptance <= 1.5: {verdict})"
    )
    # Informational: the fork itself is one row; finding generation g deep in a long history
    # walks O(log n) skip pointers, one indexed lookup each.
    print(
        f"ratio deep resolve (generation 10 of {args.generations}) vs head of 10: {medians[labels[2]] / base:.2f}"
    )


if __name__ == "__main__":
    main()
