from __future__ import annotations

import random

import numpy as np
import pytest

from evolve.engine import Candidate, Engine, EngineError, EngineSettings, rng_from_state


class ToyGenerator:
    """A generator whose genome is one number, so selection pressure is easy to see."""

    lockable = ("value",)

    def random(self, rng, n):
        return [{"v": float(rng.uniform(0, 1))} for _ in range(n)]

    def mutate(self, genome, rng, strength, locks=frozenset()):
        if "value" in locks:
            return {**genome, "tag": int(rng.integers(1 << 30))}
        return {"v": float(genome["v"] + rng.normal(0, 0.1 * strength + 1e-3))}

    def crossover(self, a, b, rng):
        return {"v": (a["v"] + b["v"]) / 2}


def make(seed=1, **kw):
    settings = EngineSettings(population_size=12, **kw)
    return Engine(ToyGenerator(), settings, np.random.Generator(np.random.PCG64(seed)))


def test_selection_pushes_population_towards_higher_fitness():
    engine = make()
    for _ in range(15):
        pop = engine.ask()
        engine.tell([c.genome["v"] for c in pop])
    assert np.median([c.genome["v"] for c in engine.ask()]) > 1.0


def test_elites_survive_unchanged_and_children_record_parents():
    engine = make(elite=2, newcomers=1)
    pop = engine.ask()
    fitness = [c.genome["v"] for c in pop]
    best = {pop[i].id for i in np.argsort(fitness)[-2:]}
    children = engine.tell(fitness)
    assert best <= {c.id for c in children[:2]}
    ids = {c.id for c in pop}
    bred = children[2:-1]
    assert all(c.parent_ids and set(c.parent_ids) <= ids for c in bred)
    assert children[-1].parent_ids == ()  # the newcomer has no parents


def test_same_state_same_next_generation_and_global_random_untouched():
    a, b = make(seed=7), make(seed=7)
    random.seed(123)
    before = random.random()
    random.seed(123)
    fitness = list(range(12))
    a.ask(), b.ask()
    assert [c.id for c in a.tell(fitness)] == [c.id for c in b.tell(fitness)]
    assert random.random() == before


def test_resume_from_saved_rng_state_matches_unbroken_run():
    unbroken = make(seed=3)
    unbroken.ask()
    unbroken.tell(list(range(12)))
    population, state = unbroken.ask(), unbroken.rng_state
    expected = [c.id for c in unbroken.tell(list(range(12)))]
    resumed = Engine(ToyGenerator(), unbroken.settings, rng_from_state(state), population)
    resumed.ask()
    assert [c.id for c in resumed.tell(list(range(12)))] == expected


def test_locks_are_passed_to_the_generator():
    engine = make(locks=("value",), newcomers=0, crossover_rate=0.0)
    pop = engine.ask()
    values = {c.genome["v"] for c in pop}
    assert {c.genome["v"] for c in engine.tell([1.0] * 12)} <= values


def test_tell_before_ask_and_bad_fitness_are_clear_errors():
    engine = make()
    with pytest.raises(RuntimeError, match="before ask"):
        engine.tell([0] * 12)
    engine.ask()
    with pytest.raises(EngineError, match="expected 12"):
        engine.tell([1.0])
    with pytest.raises(EngineError, match="finite"):
        engine.tell([float("nan")] * 12)


@pytest.mark.parametrize(
    "kw, message",
    [({"population_size": 0}, "at least 1"), ({"population_size": 4, "mutation_strength": 2}, "0..1")],
)
def test_bad_settings(kw, message):
    with pytest.raises(EngineError, match=message):
        EngineSettings(**kw)


def test_unknown_lock_is_refused():
    with pytest.raises(EngineError, match="cannot lock"):
        Engine(ToyGenerator(), EngineSettings(population_size=2, locks=("colour",)), np.random.default_rng(0))


def test_settings_round_trip():
    s = EngineSettings(population_size=5, locks=("value",), mutation_strength=0.7)
    assert EngineSettings.from_dict(s.to_dict()) == s
    assert Candidate.of({"v": 1.0}).id == Candidate.of({"v": 1.0}).id


def test_screening_breeds_k_times_more_children_and_keeps_the_chosen():
    engine = make(elite=2, newcomers=1)
    pop = engine.ask()
    seen = {}

    def keep_largest(children, places):
        seen["bred"] = len(children)
        order = sorted(range(len(children)), key=lambda i: -children[i].genome["v"])
        return order[:places]

    children = engine.tell([c.genome["v"] for c in pop], screen=keep_largest, offspring_factor=4)
    assert seen["bred"] == 4 * (12 - 2 - 1)
    assert len(children) == 12


def test_screen_that_returns_wrong_count_is_an_error():
    engine = make()
    engine.ask()
    with pytest.raises(EngineError, match="distinct"):
        engine.tell([1.0] * 12, screen=lambda children, places: [0] * places, offspring_factor=2)


def test_a_bred_childs_id_is_worked_out_only_when_asked() -> None:
    from spark_runtime.genome_codec import genome_id, identify

    genome = {"v": 2.5, "w": [1, 2]}
    child = Candidate.of(genome, ("p1",))
    assert child.known_id is None  # nothing hashed yet: a screened-out child never is
    assert child.id == genome_id(genome)
    assert child.identity == identify(genome)
    assert child == Candidate(id=child.id, genome=dict(genome), parent_ids=("p1",))
    assert child != Candidate.of(genome, ("p2",))
    assert len({child, Candidate.of(genome, ("p1",))}) == 1
    known = Candidate(id="stored-id", genome=genome)
    assert known.id == "stored-id" and known.identity is None
    with pytest.raises(TypeError, match="needs a genome"):
        Candidate(id="x")
