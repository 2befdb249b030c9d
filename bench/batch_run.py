"""A headless batch run (novelty fitness, CPPN): what a generation costs, and what the store
work the run no longer does would add to it.

Runs ``Session.run_auto`` for ``--generations`` generations (population 16 at 256 px by
default), timing the last ``--timed`` of them, with the time spent rendering, scoring
(``fitness``) and on the store thread (storing the parent's scores and committing the
generation, beside the next render). Then, at the head, measured in this run, interleaved
(median of ``--repeats``):

1. reading the head's images back from the store and decoding them, which every generation
   did before it scored the pictures it had just rendered, kept in memory;
2. the novelty archive in the snapshot: its JSON size and parse time as 8-bit levels,
   deflated (now) against the same entries as numbers rounded to four places (before);
3. the snapshot lookup behind storing a rating: run id and population only (now) against
   the whole snapshot row, settings and archive included (before).

    python bench/batch_run.py [--generations 60] [--timed 10] [--population 16] [--size 256] [--repeats 9]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench.args import at_least  # noqa: E402
from bench.timing import Timed, interleaved_medians  # noqa: E402
from evolve import batch  # noqa: E402
from evolve.fitness import NoveltyFitness, archive_levels  # noqa: E402
from evolve.session import RunSpec, Session  # noqa: E402
from spark_runtime.image_codec import decode  # noqa: E402
from spark_runtime.store import Store  # noqa: E402
from spark_runtime.store import queries as q  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generations", type=at_least(2), default=60, help="at least one to warm up and one to time")
    parser.add_argument("--timed", type=at_least(1), default=10)
    parser.add_argument("--population", type=at_least(1), default=16)
    parser.add_argument("--size", type=at_least(1), default=256)
    parser.add_argument("--repeats", type=at_least(1), default=9)
    args = parser.parse_args()
    warm = max(1, args.generations - args.timed)
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "store") as store:
        spec = RunSpec(name="bench", population=args.population, size=args.size, seed=5)
        session = Session.create(store, spec)
        fitness = NoveltyFitness()
        session.run_auto(fitness, warm)
        parts = {"render": Timed(session.spark), "fitness": Timed(fitness.evaluate), "store thread": Timed(batch._store)}
        session._spark, fitness.evaluate, batch._store = parts["render"], parts["fitness"], parts["store thread"]  # type: ignore[assignment, method-assign]
        timed = args.generations - warm
        start = time.perf_counter()
        head = session.run_auto(fitness, timed)
        per_generation = (time.perf_counter() - start) / timed
        print(f"batch run, novelty, population {args.population} at {args.size} px, CPPN, in-process spark")
        print(f"  generation {head.generation}: {per_generation * 1000:7.1f} ms each (mean of the last {timed})")
        for label, part in parts.items():
            print(f"    {label:<13} {part.seconds / timed * 1000:7.1f} ms")
        print("    (the store thread waits for the writer's encoding, and all of it overlaps the next render)")

        print("\n1. the head's images read back from the store and decoded (no longer done)")
        read_back = interleaved_medians({"read": lambda: [decode(store.objects.get(h)) for h in head.images]}, args.repeats)["read"]
        print(f"  {read_back * 1000:7.1f} ms a generation = {read_back / per_generation:.1%} of the generation it is spared")

        state = head.settings["fitness"]["state"]
        levels = archive_levels(state, state["archive"]["width"])
        compact = json.dumps(head.settings)
        as_numbers = json.dumps({**head.settings, "fitness": {**head.settings["fitness"], "state": {"archive": np.round(levels / 255.0, 4).tolist()}}})
        print(f"\n2. snapshot settings with a novelty archive of {len(levels)} entries")
        parse = interleaved_medians({"compact": lambda: json.loads(compact), "numbers": lambda: json.loads(as_numbers)}, args.repeats)
        print(f"  as deflated levels (now)   {len(compact) / 1e3:9.1f} kB, parsed in {parse['compact'] * 1000:6.2f} ms")
        print(
            f"  as rounded numbers (before) {len(as_numbers) / 1e3:8.1f} kB, parsed in {parse['numbers'] * 1000:6.2f} ms"
            f"  ({len(as_numbers) / len(compact):.1f}x the size, {parse['numbers'] / parse['compact']:.1f}x the parse)"
        )

        print("\n3. the snapshot lookup behind each stored rating (this snapshot, compact archive)")
        with store._session() as s:  # noqa: SLF001 - the two lookups themselves, inside one read
            lookups = interleaved_medians(
                {
                    "members": lambda: q.members(s, head.id),
                    "whole": lambda: (q.snapshot(s, head.id), s.expunge_all()),
                },
                args.repeats,
            )
        print(
            f"  run id and population (now) {lookups['members'] * 1000:6.2f} ms, whole row (before) "
            f"{lookups['whole'] * 1000:6.2f} ms ({lookups['whole'] / lookups['members']:.1f}x)"
        )
        print(
            "  with the archive as rounded numbers, the whole row would also parse the "
            f"{len(as_numbers) / 1e3:.0f} kB above"
        )


if __name__ == "__main__":
    main()
