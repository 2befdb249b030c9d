"""Benchmark: what the agent adds to the time of a generation, measured in one run.

Two sessions of the same run spec (CPPN, population 16, 256 px by default) are steered by
the same simulated rater, generation by generation in alternation so both see the same load
on the machine. One evolves plainly; the other has an agent attached (k = 4 by default),
which fits its preference model on the branch's ratings, breaks ties between equal ratings,
renders k times more children small, screens them and records its predictions. As in the
UI, the model is fitted as the ratings arrive (``Agent.prefit``, timed apart: the person is
still looking at the grid then), so the evolve finds it ready; ``--fit-at-enter`` leaves
the fit to the evolve instead. The script
prints the median time of a plain generation, the median time the agent spends per
generation (timed inside its hooks: fit, tie-breaking, small renders, features, screening,
recording), the extra time the engine takes to breed k times more children, and the ratios
of both to the plain generation; the acceptance is a ratio under 0.20. It also prints the
time of a whole generation with the agent, which renders other pictures than the plain run
and so varies with their complexity.

Usage::

    python bench/agent_cost.py [--population 16] [--size 256] [--k 4]
                               [--warmup 15] [--generations 30] [--threads 1] [--fit-at-enter]
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
from evolve.agent import Agent, AgentConfig  # noqa: E402
from evolve.engine import Engine  # noqa: E402
from evolve.session import RunSpec, Session  # noqa: E402
from spark_runtime.image_codec import decode  # noqa: E402
from spark_runtime.store import Store  # noqa: E402


def rate(session: Session) -> None:
    """A rater who likes warm, bright pictures, scoring everything shown relative to the grid."""
    head = session.head()
    thumbs = [decode(session.store.objects.get(h)).resize((32, 32)) for h in head.thumbs]
    x = np.stack([np.asarray(t, dtype=np.float64) / 255.0 for t in thumbs])
    taste = x[..., 0].mean(axis=(1, 2)) + 0.5 * x.mean(axis=(1, 2, 3)) - x[..., 2].mean(axis=(1, 2))
    spread = max(float(taste.max() - taste.min()), 1e-9)
    session.rate({i: round(5 * (v - taste.min()) / spread) for i, v in enumerate(taste)})


class TimedAgent(Agent):
    """An agent that adds up the wall time spent in its session hooks, by stage."""

    def __init__(self, config: AgentConfig) -> None:
        super().__init__(config)
        self.stages = {"ties": 0.0, "screen": 0.0, "record": 0.0}

    @property
    def spent(self) -> float:
        return sum(self.stages.values())

    def tie_break(self, session, head, fitness, ratings=None):  # type: ignore[no-untyped-def]
        # The first call of a generation: with --fit-at-enter it also fits the model, which
        # otherwise ``prefit`` did while the person rated.
        start = time.perf_counter()
        try:
            return super().tie_break(session, head, fitness, ratings)
        finally:
            self.stages["ties"] += time.perf_counter() - start

    def screener(self, session, head, **kwargs):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        choose, k = super().screener(session, head, **kwargs)
        self.stages["ties"] += time.perf_counter() - start

        def timed(children, places):  # type: ignore[no-untyped-def]
            start = time.perf_counter()
            try:
                return choose(children, places)
            finally:
                self.stages["screen"] += time.perf_counter() - start

        return timed, k

    def record(self, session, head, population):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        try:
            return super().record(session, head, population)
        finally:
            self.stages["record"] += time.perf_counter() - start


class TimedEngine:
    """Adds up the wall time of ``Engine.tell`` (breeding, and the agent's screen inside it)."""

    spent = 0.0

    def __enter__(self) -> TimedEngine:
        self._tell = Engine.tell

        def tell(engine, *args, **kwargs):  # type: ignore[no-untyped-def]
            start = time.perf_counter()
            try:
                return self._tell(engine, *args, **kwargs)
            finally:
                self.spent += time.perf_counter() - start

        Engine.tell = tell  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        Engine.tell = self._tell  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--population", type=at_least(1), default=16)
    parser.add_argument("--size", type=at_least(1), default=256)
    parser.add_argument("--k", type=at_least(1), default=4)
    parser.add_argument("--warmup", type=at_least(1), default=15, help="rated generations before timing")
    parser.add_argument("--generations", type=at_least(1), default=30, help="generations timed")
    parser.add_argument("--threads", type=at_least(1), default=1, help="torch threads")
    parser.add_argument(
        "--fit-at-enter", action="store_true",
        help="no background fit as ratings arrive: the model is fitted inside evolve",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    spec = RunSpec(name="cost", population=args.population, size=args.size, seed=7)
    timed: dict[str, list[float]] = {"plain": [], "with agent": [], "tell plain": [], "tell": [], "prefit": []}
    with tempfile.TemporaryDirectory() as tmp, TimedEngine() as engine:
        plain = Session.create(Store(Path(tmp) / "plain"), spec)
        screened = Session.create(Store(Path(tmp) / "agent"), spec)
        agent = TimedAgent(AgentConfig(offspring_factor=args.k))
        screened.agent = agent
        stages: dict[str, list[float]] = {name: [] for name in agent.stages}
        for generation in range(args.warmup + args.generations):
            for session, name in ((plain, "plain"), (screened, "with agent")):
                rate(session)
                if session is screened and not args.fit_at_enter:
                    # What the UI does as the ratings arrive, while the person still looks.
                    start = time.perf_counter()
                    agent.prefit(session)
                    if generation >= args.warmup:
                        timed["prefit"].append(time.perf_counter() - start)
                agent.stages = dict.fromkeys(agent.stages, 0.0)
                engine.spent = 0.0
                start = time.perf_counter()
                session.evolve()
                if generation >= args.warmup:
                    timed[name].append(time.perf_counter() - start)
                    if session is plain:
                        timed["tell plain"].append(engine.spent)
                        continue
                    # Breeding k times more children happens inside tell, around the screen.
                    timed["tell"].append(engine.spent - agent.stages["screen"])
                    for stage, value in agent.stages.items():
                        stages[stage].append(value)
    median = {name: statistics.median(values) if values else 0.0 for name, values in timed.items()}
    own = {name: statistics.median(values) for name, values in stages.items()}
    breeding = median["tell"] - median["tell plain"]
    base = median["plain"]
    print(
        f"CPPN population {args.population}, {args.size} px, k={args.k}, timed after "
        f"{args.warmup}..{args.warmup + args.generations} rated generations, "
        f"torch threads {args.threads}"
    )
    print(f"plain generation:                {1000 * base:7.1f} ms (median of {args.generations})")
    if not args.fit_at_enter:
        print(f"  agent fit while the person rates {1000 * median['prefit']:7.1f} ms (before Enter, not counted)")
    for stage, value in own.items():
        print(f"  agent {stage:9s}               {1000 * value:7.1f} ms")
    print(f"  engine breeding {args.k - 1} x more children {1000 * breeding:7.1f} ms")
    print(f"whole generation with the agent: {1000 * median['with agent']:7.1f} ms")
    agent_only = sum(own.values())
    when = "fit at Enter" if args.fit_at_enter else "fit done while rating, as in the UI"
    print(
        f"{when}: agent's own work / plain generation = {agent_only / base:.3f}; "
        f"with the extra breeding = {(agent_only + breeding) / base:.3f} (acceptance: < 0.20)"
    )
    # The two runs drift apart (the agent's run breeds other, often bigger, genomes), so also
    # against its own generation less what the agent added: the same pictures without it.
    own_run = median["with agent"] - agent_only - breeding
    print(
        f"against the agent run's own generation without the agent's work ({1000 * own_run:.1f} ms): "
        f"{(agent_only + breeding) / own_run:.3f} with the extra breeding"
    )


if __name__ == "__main__":
    main()
