"""Batch runs: each generation's store work runs while the next renders, and a run that
stops leaves every generation it rendered before the failure, whole, and nothing after."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from evolve.fitness import NoveltyFitness
from evolve.session import Session, SessionError
from imagery import GeneratorError
from spark_runtime.image_codec import decode
from spark_runtime.store import Store, StoreError
from tests.conftest import needs_syncfs
from tests.evolve.conftest import (
    POP,
    before_render,
    new_session,
    stored_and_committed,
)


def step_by_step(session: Session, fitness: NoveltyFitness, generations: int) -> Any:
    """The reference a batch run must equal: rate + evolve, one generation at a time, each
    scored from its stored PNGs with the fitness state stored in its snapshot; returns the
    last snapshot."""
    snapshot = session.head()
    for _ in range(generations):
        images = [decode(session.store.objects.get(sha)) for sha in snapshot.images]
        scores, state = fitness.evaluate(images, snapshot.settings.get("fitness", {}).get("state", {}))
        session.rate({i: round(min(5.0, max(0.0, s)), 4) for i, s in enumerate(scores)}, snapshot=snapshot)
        snapshot = session.evolve(extra={"fitness": {"spec": fitness.spec, "state": state}})
    return snapshot


def failing_prepare(store: Store, generation: int, message: str) -> Any:
    """Make the store's check of ``generation`` fail with ``message``; returns the real check."""
    real = store.prepare_generation

    def prepare(**kwargs):
        if kwargs["generation"] == generation:
            raise StoreError(message)
        return real(**kwargs)

    store.prepare_generation = prepare  # type: ignore[method-assign]
    return real


def test_novelty_run_stores_scores_as_ratings_and_continues(tmp_path: Path) -> None:
    store = Store(tmp_path)
    session = new_session(store)
    head = session.run_auto(NoveltyFitness(), generations=3)
    assert head.generation == 3
    for snapshot in store.history(session.branch)[:-1]:
        assert len(store.current_scores(snapshot.id)) == POP
    assert "archive" in head.settings["fitness"]["state"]


def test_a_batch_run_scores_what_it_rendered_without_reading_it_back(tmp_path: Path) -> None:
    kept = new_session(Store(tmp_path / "kept"))
    reads: list[str] = []
    real_get = kept.store.objects.get
    kept.store.objects.get = lambda sha: reads.append(sha) or real_get(sha)  # type: ignore[method-assign]
    head = kept.run_auto(NoveltyFitness(), generations=3)
    assert sorted(reads) == sorted(kept.store.snapshot_at(kept.branch, 0).images)  # the start only

    # The same run scored from the stored PNGs, generation by generation, ends identical.
    snapshot = step_by_step(new_session(Store(tmp_path / "stored")), NoveltyFitness(), 3)
    assert head.population == snapshot.population and head.images == snapshot.images
    assert head.settings["fitness"] == snapshot.settings["fitness"]
    assert len(set(head.images) & set(kept.store.get_snapshot(head.parent_id).images)) >= 1  # elites


def test_a_generation_commits_while_the_next_one_renders(tmp_path: Path) -> None:
    # The commit of generation g waits until the render of generation g + 1 has started:
    # a run that committed before rendering on would wait in vain.
    store = Store(tmp_path)
    session = new_session(store)
    started = [threading.Event() for _ in range(6)]  # started[g]: generation g's render began
    overlapped = []
    real_commit, real_render = store.commit_generation, session.spark.render
    renders = []

    def render(genomes, size, progress=None):
        renders.append(len(genomes))
        started[len(renders)].set()
        return real_render(genomes, size, progress)

    def commit(**kwargs):
        # On the store thread, not this one: a loop that rendered on and then committed
        # here would also see the next render started.
        overlapped.append(threading.current_thread() is not threading.main_thread())
        if kwargs["generation"] < 4:
            overlapped.append(started[kwargs["generation"] + 1].wait(5))
        return real_commit(**kwargs)

    store.commit_generation = commit  # type: ignore[method-assign]
    session.spark.render = render  # type: ignore[method-assign]
    head = session.run_auto(NoveltyFitness(), generations=4)
    assert head.generation == 4 and len(renders) == 4 and overlapped == [True] * 7
    assert all(count <= POP - 2 for count in renders)  # the two elites are never rendered again
    assert session.head().id == head.id
    history = store.history(session.branch)
    # Every generation but the last was scored, and the next one consumed exactly those scores.
    for parent, child in zip(history[:-1], history[1:], strict=True):
        scores = store.ratings(parent.id)
        assert len(scores) == POP and sorted(child.consumed_ratings) == sorted(r.id for r in scores)


def test_progress_counts_generations_once_they_are_stored(tmp_path: Path) -> None:
    store = Store(tmp_path)
    session = new_session(store)
    calls = []

    def progress(done: int, total: int) -> None:
        head = store.get_branch_by_id(session.branch.id).head_snapshot_id
        calls.append((done, total, store.get_snapshot(head).generation))

    session.run_auto(NoveltyFitness(), generations=3, progress=progress)
    assert calls == [(1, 3, 1), (2, 3, 2), (3, 3, 3)]


def test_ratings_already_on_the_starting_head_count_as_in_a_step_by_step_run(tmp_path: Path) -> None:
    # A person scored and picked on the head before the batch run: the first generation is
    # bred from those and the run's scores together, exactly as rate + evolve would.
    def rated(root: Path) -> Session:
        session = new_session(Store(root))
        person = Session(session.store, "r", session_id="s-browser")
        person.rate({0: 1.0, 3: 5.0}, picks={5: True})
        return session

    batch = rated(tmp_path / "batch")
    head = batch.run_auto(NoveltyFitness(), generations=3)
    snapshot = step_by_step(rated(tmp_path / "steps"), NoveltyFitness(), 3)
    assert head.population == snapshot.population and head.images == snapshot.images
    first = batch.store.snapshot_at(batch.branch, 1)
    assert len(first.consumed_ratings) == POP + 3  # the run's scores and the person's three


@needs_syncfs
def test_a_store_failure_stops_the_run_and_keeps_what_was_committed(tmp_path: Path) -> None:
    store = Store(tmp_path)
    session = new_session(store)
    failing_prepare(store, 3, "branch 'main' moved: another session changed its head first")
    with pytest.raises(StoreError, match="moved"):
        session.run_auto(NoveltyFitness(), generations=5)
    head = session.head()
    assert head.generation == 2
    # The objects on disk are exactly those of the committed generations: generation 3's
    # and the one rendering beside its commit went.
    on_disk, referenced = stored_and_committed(store, session, tmp_path)
    assert on_disk == referenced


@needs_syncfs
def test_a_render_failure_lets_the_commit_under_way_land(tmp_path: Path) -> None:
    store = Store(tmp_path)
    session = new_session(store)

    def fail() -> None:
        raise GeneratorError("the spark ran out of memory")

    before_render(session, 3, fail)  # generation 3
    with pytest.raises(SessionError, match="out of memory"):
        session.run_auto(NoveltyFitness(), generations=5)
    assert session.head().generation == 2  # generation 2 was committing beside the failure
    on_disk, referenced = stored_and_committed(store, session, tmp_path)
    assert on_disk == referenced
    head = session.run_auto(NoveltyFitness(), generations=1)  # and the run carries on
    assert head.generation == 3


@needs_syncfs
def test_storing_the_scores_failing_on_the_store_thread_leaves_no_trace(tmp_path: Path) -> None:
    store = Store(tmp_path)
    session = new_session(store)
    real = store.add_ratings
    calls = []

    def add_ratings(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # generation 1's scores, stored beside generation 3's render
            raise StoreError("disk full")
        return real(*args, **kwargs)

    store.add_ratings = add_ratings  # type: ignore[method-assign]
    with pytest.raises(StoreError, match="disk full"):
        session.run_auto(NoveltyFitness(), generations=5)
    assert session.head().generation == 1
    on_disk, referenced = stored_and_committed(store, session, tmp_path)
    assert on_disk == referenced


def test_a_batch_run_with_the_agent_attached_is_refused(tmp_path: Path) -> None:
    store = Store(tmp_path)
    session = new_session(store)
    session.agent = object()
    with pytest.raises(SessionError, match="detach the agent"):
        session.run_auto(NoveltyFitness(), generations=2)
    assert session.head().generation == 0 and store.ratings(session.head().id) == []


@needs_syncfs
def test_a_run_resumed_after_a_failed_commit_does_not_score_its_head_twice(tmp_path: Path) -> None:
    store = Store(tmp_path / "stopped")
    session = new_session(store)
    real_prepare = failing_prepare(store, 3, "database error: terminating connection")
    with pytest.raises(StoreError, match="terminating"):
        session.run_auto(NoveltyFitness(), generations=5)
    head = session.head()
    assert head.generation == 2 and len(store.ratings(head.id)) == POP  # scored, then stopped
    store.prepare_generation = real_prepare  # type: ignore[method-assign]
    resumed = session.run_auto(NoveltyFitness(), generations=2)
    assert len(store.ratings(head.id)) == POP  # the same scores are not stored again
    assert len(store.snapshot_at(session.branch, 3).consumed_ratings) == POP
    unbroken = new_session(Store(tmp_path / "unbroken")).run_auto(NoveltyFitness(), generations=4)
    assert resumed.population == unbroken.population and resumed.images == unbroken.images
