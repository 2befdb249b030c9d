"""The GA engine: ask/tell over DEAP selection, with the generator's own variation operators.

The engine is a pure step function wrapped in ask/tell: ``ask()`` hands out the current
population as candidates, ``tell(fitness)`` turns their fitness into the next population.
Every random draw comes from one ``numpy.random.Generator`` whose state the caller stores in
the snapshot, so a resumed or forked run makes exactly the same next generation.

DEAP's selection operators draw from the global ``random`` module; ``_seeded_random`` seeds it
from the engine's generator for the duration of one call and then puts the caller's state back,
so the engine neither depends on nor disturbs global state.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from deap import base, creator, tools

from spark_runtime.genome_codec import Identity, identify

# creator.create writes into DEAP's module globals: do it once, guarded.
if not hasattr(creator, "ImageryFitness"):
    creator.create("ImageryFitness", base.Fitness, weights=(1.0,))
if not hasattr(creator, "ImageryIndividual"):
    creator.create("ImageryIndividual", list, fitness=creator.ImageryFitness)


# The agent's first pass: (bred children, places) -> indices of the children to show.
Screen = Callable[[Sequence["Candidate"], int], Sequence[int]]


class EngineError(ValueError):
    """Misuse of the engine or bad settings; the message is one line for the user."""


@dataclass(frozen=True)
class EngineSettings:
    """How one generation turns into the next. Stored with every snapshot."""

    population_size: int
    mutation_strength: float = 0.35
    elite: int = 2
    newcomers: int = 1
    crossover_rate: float = 0.3
    tournament_size: int = 3
    locks: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.population_size, int) or self.population_size < 1:
            raise EngineError(f"population must be at least 1, got {self.population_size!r}")
        if self.population_size > 1024:
            raise EngineError(f"population must be at most 1024, got {self.population_size}")
        if not 0.0 <= float(self.mutation_strength) <= 1.0:
            raise EngineError(f"mutation strength must be in 0..1, got {self.mutation_strength}")
        if not 0.0 <= float(self.crossover_rate) <= 1.0:
            raise EngineError(f"crossover rate must be in 0..1, got {self.crossover_rate}")
        if self.elite < 0 or self.newcomers < 0 or self.tournament_size < 1:
            raise EngineError("elite and newcomers must be >= 0 and tournament size >= 1")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["locks"] = list(self.locks)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EngineSettings:
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in known}
        values["locks"] = tuple(values.get("locks", ()))
        return cls(**values)

    def replace(self, **changes: Any) -> EngineSettings:
        return EngineSettings.from_dict({**self.to_dict(), **changes})


class Candidate:
    """One member of a population: its genome, its content id and who it came from.

    The id of a bred child is worked out on first use: with an agent screening, most
    children are passed over unseen and never need one.
    """

    __slots__ = ("_id", "_identity", "genome", "parent_ids")

    def __init__(
        self,
        id: str | None = None,
        genome: dict[str, Any] | None = None,
        parent_ids: Sequence[str] = (),
    ) -> None:
        if genome is None:
            raise TypeError("a candidate needs a genome")
        self.genome = genome
        self.parent_ids = tuple(parent_ids)
        self._identity: Identity | None = None
        self._id = id

    @classmethod
    def of(cls, genome: dict[str, Any], parent_ids: Sequence[str] = ()) -> Candidate:
        return cls(genome=genome, parent_ids=parent_ids)

    @property
    def id(self) -> str:
        if self._id is None:
            self._identity = identify(self.genome)
            self._id = self._identity.id
        return self._id

    @property
    def known_id(self) -> str | None:
        """The id if it has been worked out (or was given), else None; never hashes."""
        return self._id

    @property
    def identity(self) -> Identity | None:
        """The canonical JSON the id was hashed from, for the store (None: not known here)."""
        _ = self.id  # works both out if not known yet
        return self._identity

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Candidate):
            return NotImplemented
        return (self.id, self.parent_ids) == (other.id, other.parent_ids) and self.genome == other.genome

    def __hash__(self) -> int:
        return hash((self.id, self.parent_ids))

    def __repr__(self) -> str:
        return f"Candidate(id={self.id[:12]!r}, parent_ids={self.parent_ids!r})"


def elite_indices(fitness: Sequence[float] | np.ndarray, count: int) -> list[int]:
    """The ``count`` fittest positions, fittest first; equals keep their display order, so
    the choice is deterministic. The engine keeps these; the agent reads the same choice."""
    return [int(i) for i in np.argsort(-np.asarray(fitness, dtype=np.float64), kind="stable")[:count]]


def rng_from_state(state: dict[str, Any]) -> np.random.Generator:
    """Rebuild a numpy Generator from ``bit_generator.state`` (a JSON-safe dict)."""
    name = state.get("bit_generator", "PCG64")
    if name != "PCG64":
        raise EngineError(f"unsupported random generator {name!r}")
    bit_generator = np.random.PCG64()
    bit_generator.state = state
    return np.random.Generator(bit_generator)


def rng_state(rng: np.random.Generator) -> dict[str, Any]:
    return rng.bit_generator.state


@contextlib.contextmanager
def _seeded_random(rng: np.random.Generator) -> Iterator[None]:
    saved = random.getstate()
    random.seed(int(rng.integers(0, 2**63)))
    try:
        yield
    finally:
        random.setstate(saved)


class Engine:
    """Ask/tell genetic algorithm over any generator that follows the imagery protocol.

    Args:
        generator: builds, mutates and crosses genomes (``imagery.protocol.Generator``).
        settings: population size, mutation strength, elitism, newcomers, locks.
        rng: the one source of randomness; its state is what a snapshot saves.
        population: the current population (from a snapshot); None starts from random genomes.
    """

    def __init__(
        self,
        generator: Any,
        settings: EngineSettings,
        rng: np.random.Generator,
        population: Sequence[Candidate] | None = None,
    ) -> None:
        self.generator = generator
        self.settings = settings
        self.rng = rng
        unknown = set(settings.locks) - set(getattr(generator, "lockable", ()))
        if unknown:
            raise EngineError(f"this generator cannot lock {sorted(unknown)}; it offers {list(generator.lockable)}")
        if population is None:
            genomes = generator.random(rng, settings.population_size)
            population = [Candidate.of(g) for g in genomes]
        self._population = list(population)
        self._asked = False

    @property
    def rng_state(self) -> dict[str, Any]:
        return rng_state(self.rng)

    def ask(self) -> list[Candidate]:
        """The candidates to score, in display order."""
        self._asked = True
        return list(self._population)

    def tell(
        self,
        fitness: Sequence[float],
        screen: Screen | None = None,
        offspring_factor: int = 1,
    ) -> list[Candidate]:
        """Turn the fitness of the asked candidates into the next population.

        Args:
            fitness: one number per candidate from ``ask()``, same order; higher is better.
            screen: the agent's first pass: given ``offspring_factor`` times more children than
                there are places, returns the indices of the ones to keep (exactly ``places``).
            offspring_factor: how many children to breed per place when screening (k).

        Returns:
            The next population (also what the next ``ask()`` returns).

        Raises:
            RuntimeError: ``tell`` before ``ask``.
            EngineError: wrong number of fitness values or a non-finite value.
        """
        if not self._asked:
            raise RuntimeError("tell() called before ask(): ask for the candidates first")
        values = np.asarray(list(fitness), dtype=float)
        if values.shape != (len(self._population),):
            raise EngineError(f"expected {len(self._population)} fitness values, got {values.size}")
        if not np.all(np.isfinite(values)):
            raise EngineError("fitness values must be finite numbers")
        if offspring_factor < 1:
            raise EngineError(f"offspring factor must be at least 1, got {offspring_factor}")
        self._population = self._next_population(values, screen, offspring_factor if screen else 1)
        self._asked = False
        return list(self._population)

    def _next_population(self, values: np.ndarray, screen: Screen | None, factor: int) -> list[Candidate]:
        s = self.settings
        n = s.population_size
        pool = []
        for index, value in enumerate(values):
            ind = creator.ImageryIndividual([index])
            ind.fitness.values = (float(value),)
            pool.append(ind)
        elite_count = min(s.elite, n, len(pool))
        newcomer_count = min(s.newcomers, n - elite_count)
        child_count = n - elite_count - newcomer_count
        bred_count = child_count * factor
        with _seeded_random(self.rng):
            parents = tools.selTournament(pool, 2 * bred_count, tournsize=s.tournament_size)
        next_population = [self._population[i] for i in elite_indices(values, elite_count)]
        children = []
        for i in range(bred_count):
            first = self._population[parents[2 * i][0]]
            second = self._population[parents[2 * i + 1][0]]
            if first.id != second.id and self.rng.random() < s.crossover_rate:
                genome = self.generator.crossover(first.genome, second.genome, self.rng)
                parent_ids: tuple[str, ...] = (first.id, second.id)
            else:
                genome, parent_ids = first.genome, (first.id,)
            genome = self.generator.mutate(genome, self.rng, s.mutation_strength, frozenset(s.locks))
            children.append(Candidate.of(genome, parent_ids))
        if factor > 1 and screen is not None and child_count:
            chosen = list(screen(children, child_count))
            if len(chosen) != child_count or len(set(chosen)) != child_count:
                raise EngineError(f"screening must choose {child_count} distinct children, got {chosen}")
            children = [children[i] for i in chosen]
        next_population.extend(children)
        if newcomer_count:
            next_population.extend(Candidate.of(g) for g in self.generator.random(self.rng, newcomer_count))
        return next_population
