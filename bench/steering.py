"""Benchmark: how many ratings a person needs to steer CPPN to their taste, with and without
the agent, measured in one run.

A simulated rater has a hidden taste: closeness to a target picture they never reveal (a
picture of a random, somewhat evolved CPPN genome). Each generation they look at every
candidate shown, perceive its closeness with some noise, and score all of them 0..5 relative
to what is on screen (best 5, worst 0, rounded to whole stars, like a person with the number
keys). Every shown candidate costs one rating, both ways.

Both arms run the real loop (``Session`` on a store, CPPN, the same seed, the same rater): the
plain arm evolves from the ratings; the agent arm attaches ``evolve.agent.Agent``, which
breeds ``k`` times more children and chooses which ones the rater sees. An arm's cost is the
number of ratings given before the first generation that shows a candidate at least as close
as ``--closeness`` to the target. The script prints both costs per seed, their medians and
the ratio agent / plain (acceptance: at most 0.5).

Usage::

    python bench/steering.py [--seeds 7] [--population 12] [--size 64] [--k 8]
                             [--explore 0.1] [--closeness 0.9] [--generations 60]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evolve.agent import Agent, AgentConfig  # noqa: E402
from evolve.session import RunSpec, Session  # noqa: E402
from imagery.cppn import CPPN  # noqa: E402
from spark_runtime.image_codec import decode  # noqa: E402
from spark_runtime.store import Store  # noqa: E402

_COMPARE = 64


def pixels(images: list) -> np.ndarray:
    return (
        np.stack(
            [
                np.asarray(im.convert("RGB").resize((_COMPARE, _COMPARE)), dtype=np.float32)
                for im in images
            ]
        )
        / 255.0
    )


def hidden_target(seed: int, size: int) -> np.ndarray:
    """A picture the rater has in mind: a random CPPN genome, mutated a few times.

    Of four such genomes the one with the most contrast is taken, so that the target has
    something in it to be steered towards (a near-uniform target is met by chance).
    """
    generator = CPPN.from_config({})
    rng = np.random.default_rng(10_000 + seed)
    genomes = generator.random(rng, 4)
    for _ in range(4):
        genomes = [generator.mutate(g, rng, 0.5) for g in genomes]
    pictures = pixels(generator.render(genomes, size))
    return pictures[int(np.argmax(pictures.std(axis=(1, 2, 3))))]


class Rater:
    """Scores what it is shown by noisy closeness to its hidden target, relative to the grid."""

    def __init__(self, target: np.ndarray, noise: float, seed: int) -> None:
        self.target = target
        self.noise = noise
        self.rng = np.random.default_rng(20_000 + seed)

    def closeness(self, images: list) -> np.ndarray:
        return 1.0 - np.abs(pixels(images) - self.target[None]).mean(axis=(1, 2, 3))

    def scores(self, closeness: np.ndarray) -> dict[int, float]:
        seen = closeness + self.rng.normal(0.0, self.noise, len(closeness))
        spread = max(seen.max() - seen.min(), 1e-9)
        return {i: float(np.round(5.0 * (v - seen.min()) / spread)) for i, v in enumerate(seen)}


def goal_for(args: argparse.Namespace, start: float) -> float:
    """The closeness to reach: fixed, or a share of the gap between generation 0 and 1."""
    return args.closeness if args.closeness is not None else start + args.gap * (1.0 - start)


def steer(
    args: argparse.Namespace, seed: int, agent_config: AgentConfig | None, root: Path
) -> tuple[list[float], float]:
    """Steer one run; the best closeness shown so far after each generation (index = how
    many generations were rated before it), stopping once it reaches the goal."""
    store = Store(root)
    spec = RunSpec(name="steer", population=args.population, size=args.size, seed=seed)
    session = Session.create(store, spec)
    if agent_config is not None:
        Agent.for_session(session, agent_config)
    rater = Rater(hidden_target(seed, args.size), args.noise, seed)
    best, curve = 0.0, []
    start = time.perf_counter()
    for generation in range(args.generations + 1):
        head = session.head()
        closeness = rater.closeness([decode(store.objects.get(h)) for h in head.images])
        best = max(best, float(closeness.max()))
        curve.append(best)
        if best >= goal_for(args, curve[0]) or generation == args.generations:
            break
        session.rate(rater.scores(closeness))
        session.evolve()
    store.close()
    return curve, time.perf_counter() - start


def ratings_to_reach(curve: list[float], goal: float, population: int) -> int | None:
    """Ratings given before the first generation that showed the goal (None: never)."""
    for generation, best in enumerate(curve):
        if best >= goal:
            return generation * population
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=7)
    parser.add_argument("--population", type=int, default=12)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--k", type=int, default=8, help="offspring factor of the agent")
    parser.add_argument("--explore", type=float, default=0.1)
    parser.add_argument(
        "--gap", type=float, default=0.3, help="goal: close this share of the gap to the target"
    )
    parser.add_argument(
        "--closeness", type=float, default=None, help="a fixed goal instead of --gap"
    )
    parser.add_argument("--generations", type=int, default=60, help="budget per arm")
    parser.add_argument("--noise", type=float, default=0.01, help="rater's perception noise")
    parser.add_argument("--seed0", type=int, default=1)
    parser.add_argument(
        "--no-layout", action="store_true", help="ablation: no colour layout features"
    )
    parser.add_argument("--no-genome", action="store_true", help="ablation: no genome features")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: steady on a busy machine)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = AgentConfig(
        offspring_factor=args.k,
        explore=args.explore,
        layout=not args.no_layout,
        genome=not args.no_genome,
    )
    cap = args.population * args.generations
    print(
        f"CPPN, population {args.population}, {args.size} px, budget {cap} ratings "
        f"({args.generations} generations); agent k={args.k} explore={args.explore}"
    )
    plain_costs, agent_costs = [], []
    # A RAM disk when there is one: the store fsyncs every object, which is not what we measure.
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else None) as tmp:
        for seed in range(args.seed0, args.seed0 + args.seeds):
            plain_curve, t_plain = steer(args, seed, None, Path(tmp) / f"p{seed}")
            agent_curve, t_agent = steer(args, seed, config, Path(tmp) / f"a{seed}")
            start = plain_curve[0]
            goal = goal_for(args, start)
            plain = ratings_to_reach(plain_curve, goal, args.population)
            agent = ratings_to_reach(agent_curve, goal, args.population)
            plain_costs.append(cap if plain is None else plain)
            agent_costs.append(cap if agent is None else agent)

            def show(cost: int | None) -> str:
                return f"{cost:4d}" if cost is not None else f">{cap:3d}"

            print(
                f"seed {seed}: closeness {start:.3f} -> goal {goal:.3f}: ratings plain {show(plain)}, "
                f"agent {show(agent)}  ({t_plain:.0f} s / {t_agent:.0f} s)",
                flush=True,
            )
    plain_median, agent_median = statistics.median(plain_costs), statistics.median(agent_costs)
    ratios = [a / max(p, args.population) for a, p in zip(agent_costs, plain_costs, strict=True)]
    print(
        f"median ratings to reach the goal: plain {plain_median:g}, agent {agent_median:g}; "
        f"ratio agent/plain = {agent_median / max(plain_median, 1):.2f} "
        f"(runs that never reach it count as {cap}); median of per-seed ratios {statistics.median(ratios):.2f}"
    )


if __name__ == "__main__":
    main()
