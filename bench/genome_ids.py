"""Genome ids: hashing a generation's new genomes with ``genome_codec.identify`` (canonical
JSON through orjson, json where orjson would write other bytes) against the reference, the
same canonical JSON written by ``json.dumps`` and hashed the same way.

The genomes are CPPN genomes evolved for a number of generations (mutation and crossover),
so they have the size a running session hashes. Both encoders are timed in interleaved rounds
over the same genomes; the bench first checks that they give the same ids, then prints the
median time per genome of each and the ratio.

    python bench/genome_ids.py [--genomes 64] [--generations 12] [--repeats 50]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench.args import at_least  # noqa: E402
from bench.timing import interleaved  # noqa: E402
from imagery.cppn import CPPN  # noqa: E402
from spark_runtime.genome_codec import identify  # noqa: E402


def reference_id(genome: dict) -> str:
    """The id as ``json.dumps`` would make it (genomes here carry no tensors)."""
    text = json.dumps(genome, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def evolved_genomes(count: int, generations: int) -> list[dict]:
    cppn = CPPN.from_config({})
    rng = np.random.default_rng(0)
    genomes = cppn.random(rng, count)
    for _ in range(generations):
        genomes = [
            cppn.crossover(g, genomes[-1 - i], rng) if i % 4 == 0 else cppn.mutate(g, rng, 1.0)
            for i, g in enumerate(genomes)
        ]
    return genomes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--genomes", type=at_least(1), default=64)
    parser.add_argument("--generations", type=at_least(1), default=12)
    parser.add_argument("--repeats", type=at_least(1), default=50)
    args = parser.parse_args()
    genomes = evolved_genomes(args.genomes, args.generations)
    if [identify(g).id for g in genomes] != [reference_id(g) for g in genomes]:
        print("FAIL: identify and the json reference give different ids")
        return 1
    ways = {"identify (orjson)": lambda g: identify(g).id, "json.dumps reference": reference_id}
    rounds = interleaved({name: lambda w=way: [w(g) for g in genomes] for name, way in ways.items()}, args.repeats)
    times = {name: [seconds / len(genomes) for seconds in samples] for name, samples in rounds.items()}
    size = statistics.mean(len(json.dumps(g)) for g in genomes)
    print(f"{len(genomes)} evolved CPPN genomes (~{size / 1000:.1f} kB of JSON each), same ids both ways")
    for name, samples in times.items():
        print(f"   {name:<22} {statistics.median(samples) * 1e6:7.1f} us per genome")
    ratio = statistics.median(times["json.dumps reference"]) / statistics.median(times["identify (orjson)"])
    print(f"   identify is {ratio:.2f}x the reference's speed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
