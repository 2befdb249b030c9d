"""The history strip of a long branch: its ratings read in one query against one a generation.

Builds a branch of ``--generations`` generations straight through the store (``fork.py``'s
chain: small population, fake image bytes, no rendering), rates two candidates of each, then
times ``browse.history``'s read of every generation's ratings both ways, interleaved:
``Store.ratings`` per snapshot (what the strip did) and one ``Store.ratings_of``. Prints the
medians and their ratio; both give the same events.

    python bench/history.py [--generations 300] [--repeats 15]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.args import at_least  # noqa: E402
from bench.fork import build_chain  # noqa: E402
from bench.timing import interleaved_medians  # noqa: E402
from spark_runtime.store import RatingInput, Store  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generations", type=at_least(1), default=300)
    parser.add_argument("--repeats", type=at_least(1), default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp)) as store:
        snapshots = store.history(build_chain(store, args.generations, "bench-history"))
        for snap in snapshots:
            store.add_ratings(snap.id, [RatingInput("score", 0, 5), RatingInput("pick", 1)], "ann")
        ids = [snap.id for snap in snapshots]
        assert {sid: [r.id for r in store.ratings(sid)] for sid in ids} == {
            k: [r.id for r in v] for k, v in store.ratings_of(ids).items()
        }
        times = interleaved_medians(
            {"each": lambda: {sid: store.ratings(sid) for sid in ids}, "once": lambda: store.ratings_of(ids)},
            args.repeats,
        )
    slow, fast = times["each"], times["once"]
    print(f"ratings of a {len(ids)}-generation branch (SQLite), median of {args.repeats}:")
    print(f"  one query a generation  {slow * 1000:8.1f} ms")
    print(f"  one read for all        {fast * 1000:8.1f} ms")
    print(f"  ratio {slow / fast:.1f}x")


if __name__ == "__main__":
    main()
