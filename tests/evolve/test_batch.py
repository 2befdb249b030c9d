"""Batch runs: each generation's store work runs while the next renders, and a run that
stops leaves every generation it rendered before the failure, whole, and nothing after."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from evolve.fitness import NoveltyFitness
from evolve.session import RunSpec, Session, SessionError
from imagery import GeneratorError
from spark_runtime.store import Store, StoreError
from tests.conftest import needs_syncfs

POP, SIZE = 6, 32


def new_session(store: Store) -> Session:
    return Session.create(store, RunSpec(name="r", population=POP, size=SIZE, seed=1))


def object_files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "objects").rglob("*") if p.is_file())


def test_a_generation_commits_while_the_next_one_renders(tmp_path: Path) -> None:
    store = Store(tmp_path)
    session = new_session(store)
    commits: list[int] = []
    committed = threading.Event()
    real_commit, real_render = store.commit_generation, session.spark.render
    seen = []

    def commit(**kwargs):
        snapshot = real_commit(**kwargs)
        commits.append(snapshot.generation)
        committed.set()
        return snapshot

    def render(genomes, size, progress=None):
        # From the second generation on, the render (one call a generation) waits for the
        # commit of the generation before: it can only arrive if it runs beside it.
        if seen:
            assert committed.wait(10), "the previous generation did not commit during the render"
            committed.clear()
        seen.append(len(genomes))
        return real_render(genomes, size, progress)

    store.commit_generation = commit  # type: ignore[method-assign]
    session.spark.render = render  # type: ignore[method-assign]
    head = session.run_auto(NoveltyFitness(), generations=4)
    assert head.generation == 4 and commits == [1, 2, 3, 4] and len(seen) == 4
    assert session.head().id == head.id
    history = store.history(session.branch)
    # Every generation but the last was scored, and the next one consumed exactly those scores.
    for parent, child in zip(history[:-1], history[1:], strict=True):
        scores = store.ratings(parent.id)
        assert len(scores) == POP and sorted(child.consumed_ratings) == sorted(r.id for r in scores)


def test_progress_counts_generations_once_they_are_stored(tmp_path: Path) -> None:
    session = new_session(Store(tmp_path))
    calls = []
    session.run_auto(NoveltyFitness(), generations=3, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 3), (2, 3), (3, 3)]


@needs_syncfs
def test_a_store_failure_stops_the_run_and_keeps_what_was_committed(tmp_path: Path) -> None:
    store = Store(tmp_path)
    session = new_session(store)
    real_prepare = store.prepare_generation

    def prepare(**kwargs):
        if kwargs["generation"] == 3:
            raise StoreError("branch 'main' moved; reload")
        return real_prepare(**kwargs)

    store.prepare_generation = prepare  # type: ignore[method-assign]
    with pytest.raises(StoreError, match="moved"):
        session.run_auto(NoveltyFitness(), generations=5)
    head = session.head()
    assert head.generation == 2
    # The objects on disk are exactly those of the committed generations: generation 3's
    # and the one rendering beside its commit went.
    referenced = {sha for s in store.history(session.branch) for sha in (*s.images, *s.thumbs)}
    assert {p.parent.name + p.name for p in object_files(tmp_path)} == referenced


@needs_syncfs
def test_a_render_failure_lets_the_commit_under_way_land(tmp_path: Path) -> None:
    store = Store(tmp_path)
    session = new_session(store)
    real = session.spark.render
    calls = []

    def render(genomes, size, progress=None):
        calls.append(len(genomes))
        if len(calls) == 3:  # generation 3
            raise GeneratorError("the spark ran out of memory")
        return real(genomes, size, progress)

    session.spark.render = render  # type: ignore[method-assign]
    with pytest.raises(SessionError, match="out of memory"):
        session.run_auto(NoveltyFitness(), generations=5)
    assert session.head().generation == 2  # generation 2 was committing beside the failure
    referenced = {sha for s in store.history(session.branch) for sha in (*s.images, *s.thumbs)}
    assert {p.parent.name + p.name for p in object_files(tmp_path)} == referenced
    head = session.run_auto(NoveltyFitness(), generations=1)  # and the run carries on
    assert head.generation == 3


def test_a_batch_run_with_the_agent_attached_is_refused(tmp_path: Path) -> None:
    store = Store(tmp_path)
    session = new_session(store)
    session.agent = object()
    with pytest.raises(SessionError, match="detach the agent"):
        session.run_auto(NoveltyFitness(), generations=2)
    assert session.head().generation == 0 and store.ratings(session.head().id) == []
