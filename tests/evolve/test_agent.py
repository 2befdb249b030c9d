"""The agent in the loop: screening through Session.evolve, recorded predictions, autopilot,
a learned taste as batch fitness, and a simulated rater whose hidden taste it must learn."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest

from evolve.agent import (
    AGENT_SESSION,
    Agent,
    AgentConfig,
    AgentError,
    PreferenceFitness,
    autopilot,
)
from evolve.engine import Candidate
from evolve.fitness import FitnessError
from evolve.session import RunSpec, Session
from spark_runtime.image_codec import decode
from spark_runtime.store import RatingInput, Store, StoreError
from tests.evolve.conftest import spearman

POP, SIZE = 8, 32


def new_session(store: Store, name: str = "r", seed: int = 3) -> Session:
    return Session.create(store, RunSpec(name=name, population=POP, size=SIZE, seed=seed))


def images(store: Store, snapshot) -> list:
    return [decode(store.objects.get(h)) for h in snapshot.images]


def redness(imgs: list) -> np.ndarray:
    """A hidden taste: how much red dominates the picture."""
    x = np.stack([np.asarray(im.convert("RGB"), dtype=np.float64) / 255.0 for im in imgs])
    return x[..., 0].mean(axis=(1, 2)) - 0.5 * (x[..., 1] + x[..., 2]).mean(axis=(1, 2))


def rate_by_taste(session: Session, snapshot=None) -> None:
    """Score every shown candidate 0..5 by redness relative to the grid, like a person."""
    snapshot = snapshot or session.head()
    taste = redness(images(session.store, snapshot))
    spread = max(float(taste.max() - taste.min()), 1e-9)
    session.rate(
        {i: round(5 * (v - taste.min()) / spread) for i, v in enumerate(taste)}, snapshot=snapshot
    )


class AgentRun(NamedTuple):
    store: Store
    session: Session
    agent: Agent
    head: Any  # generation 1, as ``evolve`` returned it


@pytest.fixture
def agent_run(tmp_path: Path) -> Iterator[AgentRun]:
    """A run with the agent on (default settings): generation 0 rated by taste, then evolved."""
    with Store(tmp_path) as store:
        session = new_session(store)
        agent = Agent.for_session(session)
        rate_by_taste(session)
        head = session.evolve()
        yield AgentRun(store, session, agent, head)


def test_screening_shows_the_requested_number_from_k_times_more_and_is_reproducible(
    tmp_path: Path,
) -> None:
    heads, bred = [], []
    for copy in ("a", "b"):
        store = Store(tmp_path / copy)
        session = new_session(store)
        agent = Agent.for_session(session, AgentConfig(offspring_factor=3))
        screener = agent.screener

        def spy(s, head, screener=screener, **kwargs):
            choose, k = screener(s, head, **kwargs)

            def counted(children, places):
                bred.append((len(children), places))
                return choose(children, places)

            return counted, k

        agent.screener = spy
        for _ in range(3):
            rate_by_taste(session)
            session.evolve()
        heads.append(session.head())
    a, b = heads
    assert len(a.population) == POP
    # Elite 2 and 1 newcomer of 8 leave 5 places; the engine bred 3 x 5 for the agent.
    assert set(bred) == {(15, 5)}
    assert a.population == b.population  # same store state, same generation


def test_predictions_for_the_shown_generation_are_recorded_and_read_back(
    agent_run: AgentRun,
) -> None:
    store, session, agent, head = agent_run
    record = head.settings["agent"]
    assert len(record["predicted"]) == len(record["std"]) == len(record["utility"]) == POP
    assert all(0.0 <= s <= 5.0 for s in record["predicted"])
    assert record["k"] == 4 and record["comparisons"] > 0
    prediction = agent.predict_for_snapshot(session)
    assert prediction.recorded and list(prediction.scores) == record["predicted"]
    # Generation 0 was made before any rating: the agent has no opinion of it yet.
    first = agent.predict_for_snapshot(session, store.snapshot_at(session.branch, 0))
    assert not first.recorded and set(first.scores) == {2.5}


def test_the_agents_hooks_leave_hashing_to_the_commit_and_reread_no_ratings(
    agent_run: AgentRun,
) -> None:
    store, session, agent, _ = agent_run
    rate_by_taste(session)
    agent.prefit(session)  # as the UI does while the person rates
    reads: list[str] = []
    real_ratings = store.ratings

    def counted(snapshot_id: str, *args: Any, **kwargs: Any) -> list:
        reads.append(snapshot_id)
        return real_ratings(snapshot_id, *args, **kwargs)

    store.ratings = counted  # type: ignore[method-assign]
    record = agent.record
    unhashed: list[int] = []

    def spy(s: Session, head: Any, population: list[Candidate]) -> dict:
        entry = record(s, head, population)
        # Children and newcomers: ids are hashed by the commit, once the render is over.
        unhashed.append(sum(c.known_id is None for c in population))
        return entry

    agent.record = spy  # type: ignore[method-assign]
    head = session.evolve()
    assert reads == []  # the evolve's own read of the head's ratings served the agent
    assert unhashed and unhashed[0] >= POP - 2  # all but the 2 elites
    assert len(head.settings["agent"]["predicted"]) == POP

    def never(*_: Any) -> Any:
        pytest.fail("rows of the shown generation should be known by id, without a render")

    rows = agent.features.get(head.population, never, never)
    assert rows.shape[0] == POP


def test_new_ratings_on_the_head_reach_the_model_and_the_next_evolve_screens_by_them(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path)
    session = new_session(store)
    agent = Agent.for_session(session, AgentConfig(offspring_factor=2))
    session.rate({0: 5, 1: 0})
    assert agent.fit(session).ratings == 2
    session.rate({2: 4})
    assert agent.fit(session).ratings == 3
    shown = []
    head = session.evolve(on_image=lambda position, *_: shown.append(position))
    assert sorted(shown) == list(range(POP)) and len(head.settings["agent"]["predicted"]) == POP


def test_the_agent_learns_a_hidden_taste_from_a_simulated_rater(tmp_path: Path) -> None:
    store = Store(tmp_path)
    session = new_session(store, seed=11)
    agent = Agent.for_session(session, AgentConfig(offspring_factor=2, explore=0.25))
    for _ in range(5):
        rate_by_taste(session)
        session.evolve()
    rate_by_taste(session)
    fitted = agent.fit(session)
    # Unseen candidates: fresh random genomes the rater never saw.
    rng = np.random.default_rng(99)
    fresh = [Candidate.of(g) for g in session.generator.random(rng, 40)]
    prediction = agent.predict(session, fitted, fresh)
    truth = redness(session.spark.render([c.genome for c in fresh], SIZE))
    assert spearman(np.array(prediction.utility), truth) > 0.5
    assert agent.agreement(session) > 0.6  # the rater's favourites were in the agent's top half


def test_autopilot_evolves_on_its_own_as_ordinary_snapshots(agent_run: AgentRun) -> None:
    store, session, agent, _ = agent_run
    session.rate({0: 5})  # the person's own score on the head is kept, not overwritten
    before = session.head()
    learned = agent.fit(session).ratings
    done = []
    head = autopilot(session, 3, progress=lambda d, t: done.append((d, t)))
    assert head.generation == before.generation + 3 and done[-1] == (3, 3)
    line = store.history(session.branch)[-4:]
    assert [s.id for s in line[:1]] == [before.id]
    for snapshot in line[:3]:
        agent_scores = store.current_scores(snapshot.id, session=AGENT_SESSION)
        assert len(agent_scores) >= POP - 1 and all(0 < v < 5 for v in agent_scores.values())
    assert 0 not in store.current_scores(before.id, session=AGENT_SESSION)
    assert all("agent" in s.settings for s in line[1:])
    assert session.agent is agent  # handed back
    assert agent.fit(session).ratings == learned  # it never learns from its own scores


def test_a_learned_taste_scores_a_batch_run(tmp_path: Path) -> None:
    store = Store(tmp_path)
    rated = new_session(store, "taste")
    for _ in range(3):
        rate_by_taste(rated)
        rated.evolve()
    fitness = PreferenceFitness.from_store(store, "taste:main")
    assert fitness.spec == "preference:taste:main"
    pictures = images(store, rated.head())
    scores, state = fitness.evaluate(pictures, {})
    assert len(scores) == POP and all(0 < s < 5 for s in scores) and state == {}
    assert spearman(np.array(scores), redness(pictures)) > 0.5
    batch = new_session(store, "batch", seed=5)
    head = batch.run_auto(fitness, 2)
    assert head.generation == 2 and head.settings["fitness"]["spec"] == "preference:taste:main"


def test_a_run_without_ratings_cannot_be_a_preference_fitness(tmp_path: Path) -> None:
    store = Store(tmp_path)
    new_session(store, "unrated")
    with pytest.raises(FitnessError, match="no ratings to learn a preference from") as info:
        PreferenceFitness.from_store(store, "unrated")
    assert "\n" not in str(info.value)
    with pytest.raises(StoreError):
        PreferenceFitness.from_store(store, "nosuchrun")


def test_a_run_scope_agent_learns_from_every_branch(tmp_path: Path) -> None:
    store = Store(tmp_path)
    session = new_session(store)
    rate_by_taste(session)
    session.evolve()
    fork = session.fork(1, "alt")
    fork.evolve()
    rate_by_taste(fork)
    branch_only = Agent(AgentConfig(scope="branch")).fit(session)
    whole_run = Agent(AgentConfig(scope="run")).fit(session)
    assert (branch_only.generations, whole_run.generations) == (1, 2)


def test_agreement_is_nan_until_the_person_chooses_in_an_agent_generation(
    agent_run: AgentRun,
) -> None:
    _, session, agent, _ = agent_run
    assert math.isnan(agent.agreement(session))
    session.rate({}, picks={2: True})
    assert agent.agreement(session) in (0.0, 0.5, 1.0)


def test_the_model_only_breaks_ties_between_equal_ratings(
    agent_run: AgentRun, tmp_path: Path
) -> None:
    _, session, agent, _ = agent_run
    head = session.head()
    fitness = [3.0, 3.0, 3.0, 3.0, 1.0, 5.0, 0.0, 3.0]
    broken = agent.tie_break(session, head, fitness)
    utility = agent.predict(session, agent.fit(session), session.candidates(head)).utility
    assert np.argsort(broken)[[0, 1, -1]].tolist() == [6, 4, 5]  # distinct ratings keep order
    tied = [0, 1, 2, 3, 7]
    assert sorted(tied, key=lambda i: broken[i]) == sorted(tied, key=lambda i: utility[i])
    with Store(tmp_path / "unrated") as other:
        unrated = new_session(other)
        assert Agent().tie_break(unrated, unrated.head(), fitness) == fitness  # no opinion yet


def test_pairwise_choices_feed_the_model_and_the_next_pair_is_a_new_one(
    agent_run: AgentRun,
) -> None:
    store, session, agent, _ = agent_run
    first = agent.suggest_pair(session)
    assert first[0] != first[1] and agent.suggest_pair(session) == first  # reproducible
    before = agent.fit(session).ratings
    store.add_ratings(
        session.head().id,
        [RatingInput(kind="pair", position=first[0], other_position=first[1], value=1.0)],
        session="person",
    )
    assert agent.fit(session).ratings == before + 1
    assert set(agent.suggest_pair(session)) != set(first)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"offspring_factor": 0}, "offspring factor k"),
        ({"explore": 1.5}, "explore share"),
        ({"feature_size": 20}, "feature size"),
        ({"scope": "world"}, "scope"),
        ({"colour": 1}, "unknown agent setting"),
    ],
)
def test_bad_agent_settings_are_one_line_errors(changes: dict, message: str) -> None:
    with pytest.raises(AgentError, match=message) as info:
        AgentConfig.from_dict(changes)
    assert "\n" not in str(info.value)


def test_autopilot_needs_at_least_one_generation(tmp_path: Path) -> None:
    session = new_session(Store(tmp_path))
    with pytest.raises(AgentError, match="at least 1 generation"):
        autopilot(session, 0)
    assert session.head().generation == 0
