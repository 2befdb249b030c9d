"""Benchmark: how many ratings a person needs to steer CPPN to their taste, with and without
the agent, measured in one run.

A simulated rater has a hidden taste: closeness to a target picture they never reveal (of
four random, somewhat evolved CPPN genomes, the picture with the most contrast). Each
generation they look at every candidate shown, perceive its closeness (1 - mean absolute
colour difference at 64 px) with some noise, and score all of them 0..5 relative to what is
on screen (best 5, worst 0, rounded to whole stars, like a person with the number keys).
Every shown candidate costs one rating, both ways.

Both arms run the real loop (``Session`` on a store, CPPN, the same seed, the same rater): the
plain arm evolves from the ratings alone; the agent arm attaches ``evolve.agent.Agent``, which
breeds ``k`` times more children and chooses which ones the rater sees.

The goal of each seed is a closeness the person reaches without the agent: by default 90% of
the way from generation 0's best to the best the plain arm shows within the budget
(``--share``), or a fixed ``--closeness``. An arm's cost is the number of ratings given before
the first generation that shows a candidate at least that close; an arm that never gets there
costs the whole budget. The script prints both costs per seed, their medians, and the ratio
agent / plain of the medians (the acceptance: at most 0.5), plus the median per-seed ratio.

Usage::

    python bench/steering.py [--seeds 21] [--population 12] [--size 64] [--generations 40]
                             [--k 4] [--explore 0.1] [--beta 0.5] [--l2 0.3]
                             [--share 0.9 | --closeness C]
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

from bench.args import at_least  # noqa: E402
from bench.genomes import mutated  # noqa: E402
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
    genomes = mutated(generator, generator.random(rng, 4), 4, 0.5, rng)
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


def steer(
    args: argparse.Namespace,
    seed: int,
    agent_config: AgentConfig | None,
    root: Path,
    goal: float = float("inf"),
) -> tuple[list[float], float]:
    """Steer one run; the best closeness shown so far after each generation (index = how
    many generations were rated before it), stopping early once it reaches ``goal``."""
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
        if best >= goal or generation == args.generations:
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
    parser.add_argument("--seeds", type=at_least(1), default=21)
    parser.add_argument("--seed0", type=at_least(0), default=1)
    parser.add_argument("--population", type=at_least(1), default=12)
    parser.add_argument("--size", type=at_least(1), default=64)
    parser.add_argument("--generations", type=at_least(1), default=40, help="budget per arm")
    defaults = AgentConfig()
    parser.add_argument("--k", type=at_least(1), default=defaults.offspring_factor, help="offspring factor")
    parser.add_argument("--explore", type=float, default=defaults.explore, help="explore share")
    parser.add_argument("--beta", type=float, default=defaults.beta, help="optimism (UCB)")
    parser.add_argument("--l2", type=float, default=defaults.l2, help="prior precision")
    parser.add_argument("--feature-size", type=at_least(1), default=defaults.feature_size)
    parser.add_argument("--share", type=float, default=0.9, help="goal: share of plain's gain")
    parser.add_argument("--closeness", type=float, default=None, help="a fixed goal instead")
    parser.add_argument("--noise", type=float, default=0.01, help="rater's perception noise")
    parser.add_argument("--layout", type=at_least(1), default=defaults.layout, help="layout cells a side")
    parser.add_argument("--genome", action="store_true", help="add the genome features")
    parser.add_argument("--threads", type=at_least(1), default=1, help="torch threads (1: steady)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = AgentConfig(
        offspring_factor=args.k,
        explore=args.explore,
        beta=args.beta,
        l2=args.l2,
        feature_size=args.feature_size,
        layout=args.layout,
        genome=args.genome,
    )
    cap = args.population * args.generations
    print(
        f"CPPN, population {args.population}, {args.size} px, budget {cap} ratings "
        f"({args.generations} generations); agent k={args.k} "
        f"explore={args.explore} beta={args.beta} l2={args.l2}"
    )
    plain_costs, agent_costs = [], []
    started = time.perf_counter()
    # A RAM disk when there is one: the store fsyncs every object, which is not what we measure.
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else None) as tmp:
        for seed in range(args.seed0, args.seed0 + args.seeds):
            plain_curve, t_plain = steer(args, seed, None, Path(tmp) / f"p{seed}")
            start, end = plain_curve[0], plain_curve[-1]
            goal = (
                args.closeness if args.closeness is not None else start + args.share * (end - start)
            )
            agent_curve, t_agent = steer(args, seed, config, Path(tmp) / f"a{seed}", goal)
            plain = ratings_to_reach(plain_curve, goal, args.population)
            agent = ratings_to_reach(agent_curve, goal, args.population)
            plain_costs.append(cap if plain is None else plain)
            agent_costs.append(cap if agent is None else agent)

            def show(cost: int | None) -> str:
                return f"{cost:5d}" if cost is not None else "never"

            print(
                f"seed {seed:2d}: closeness {start:.3f} -> goal {goal:.3f}: ratings "
                f"plain {show(plain)}, agent {show(agent)}   ({t_plain:.0f} s / {t_agent:.0f} s)",
                flush=True,
            )
    plain_median, agent_median = statistics.median(plain_costs), statistics.median(agent_costs)
    ratios = [a / max(p, args.population) for a, p in zip(agent_costs, plain_costs, strict=True)]
    print(
        f"median ratings to reach the goal over {args.seeds} seeds: plain {plain_median:g}, "
        f"agent {agent_median:g} (a run that never gets there counts {cap})"
    )
    print(
        f"ratio agent/plain = {agent_median / max(plain_median, 1):.2f} (acceptance: <= 0.5); "
        f"median per-seed ratio {statistics.median(ratios):.2f}; "
        f"{time.perf_counter() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
