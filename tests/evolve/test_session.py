"""The whole loop headless on CPPN: evolve, fork, lineage, determinism, crash safety."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from evolve.fitness import NoveltyFitness
from evolve.session import Session, SessionError
from spark_runtime.store import Store, StoreError
from tests.conftest import needs_syncfs
from tests.evolve.conftest import POP, before_render, new_session, object_files


def image_bytes(store: Store, snapshot) -> list[bytes]:
    return [store.objects.get(h) for h in snapshot.images]


def test_five_generations_fork_and_evolve_the_fork(tmp_path: Path) -> None:
    store = Store(tmp_path)
    session = new_session(store)
    for g in range(5):
        session.rate({g % POP: 5, (g + 1) % POP: 3})
        session.evolve()
    main_history = [s.id for s in store.history(session.branch)]
    assert len(main_history) == 6

    fork = session.fork(2, "alt")
    assert fork.head().generation == 2
    for _ in range(2):
        fork.rate({0: 4})
        fork.evolve()
    alt = store.history(fork.branch)
    assert [s.generation for s in alt] == [0, 1, 2, 3, 4]
    assert [s.id for s in alt[:3]] == main_history[:3]  # shared history, nothing copied
    assert [s.id for s in store.history(session.branch)] == main_history  # original untouched

    # Lineage: every bred child of the fork's head descends from generation-2 individuals.
    head = fork.head()
    gen2 = set(store.snapshot_at(fork.branch, 2).population)
    gen3 = set(alt[3].population)
    for individual_id in head.population:
        ancestors = {a for level in store.lineage(individual_id, max_depth=4) for a in level}
        parents = set(store.get_individual(individual_id).parents)
        assert not parents or ancestors & (gen2 | gen3 | set(head.population))


def test_resume_equals_unbroken_run_bit_for_bit(tmp_path: Path) -> None:
    unbroken_store = Store(tmp_path / "a")
    unbroken = new_session(unbroken_store, seed=5)
    for g in range(3):
        unbroken.rate({g: 5, g + 1: 2})
        unbroken.evolve()

    resumed_store = Store(tmp_path / "b")
    first = new_session(resumed_store, seed=5)
    first.rate({0: 5, 1: 2})
    first.evolve()
    resumed_store.close()
    for g in range(1, 3):  # a fresh process-like reopen each generation
        store = Store(tmp_path / "b")
        session = Session(store, "r")
        session.rate({g: 5, g + 1: 2})
        session.evolve()
        store.close()

    store = Store(tmp_path / "b")
    a, b = unbroken.head(), Session(store, "r").head()
    assert a.population == b.population
    assert image_bytes(unbroken_store, a) == image_bytes(store, b)


def test_forking_then_evolving_reproduces_the_original_next_generation(tmp_path: Path) -> None:
    store = Store(tmp_path)
    session = new_session(store)
    session.evolve()
    original_gen1 = session.head()
    fork = session.fork(0, "again")
    fork.evolve()  # same (absent) ratings, same RNG state => same generation 1
    assert fork.head().population == original_gen1.population


def test_undo_moves_head_back_and_deletes_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path)
    session = new_session(store)
    session.evolve()
    gen1 = session.head()
    assert session.undo().generation == 0
    assert store.get_snapshot(gen1.id).id == gen1.id
    with pytest.raises(SessionError, match="nothing to undo"):
        session.undo()


def test_elites_are_not_rendered_twice(tmp_path: Path) -> None:
    store = Store(tmp_path)
    session = new_session(store)
    calls = []
    real = session.spark.render

    def counting(genomes, size, progress=None):
        calls.append(len(genomes))
        return real(genomes, size, progress)

    session.spark.render = counting  # type: ignore[method-assign]
    session.rate({0: 5, 1: 5})
    session.evolve()
    assert calls and sum(calls) <= POP - 2  # every batch together: the 2 elites never render


def test_each_new_image_shows_its_stored_thumbnail_before_the_commit(tmp_path: Path) -> None:
    store = Store(tmp_path)
    session = new_session(store)
    session.rate({0: 5, 1: 5})
    parent, shown, thumbs = session.head(), [], []
    # Elites come through on_image with their stored thumbnail, new images through on_thumb
    # with theirs, each the moment it is encoded: nothing of this generation is readable yet.
    unreadable = lambda sha: not store.objects.exists(sha)  # noqa: E731
    session.evolve(
        on_image=lambda position, image, sha: sha is not None and thumbs.append((position, sha)),
        on_thumb=lambda position, jpeg: shown.append((position, jpeg, unreadable(hashlib.sha256(jpeg).hexdigest()))),
    )
    head = session.head()
    elites = {p for p, cid in enumerate(head.population) if cid in parent.population}
    assert sorted(p for p, _ in thumbs) == sorted(elites) and len(elites) >= 1
    assert sorted(p for p, _, _ in shown) == sorted(set(range(POP)) - elites)  # each new image once
    for position, jpeg, was_unreadable in shown:
        assert hashlib.sha256(jpeg).hexdigest() == head.thumbs[position] and was_unreadable
    assert all(head.thumbs[p] == sha for p, sha in thumbs)


def test_new_genomes_are_hashed_only_once_the_render_is_over(tmp_path: Path, monkeypatch) -> None:
    from evolve import engine

    session = new_session(Store(tmp_path))
    events = []
    real_render, real_identify = session.spark.render, engine.identify

    def render(genomes, size, progress=None):
        events.append("render")
        return real_render(genomes, size, progress)

    def identify(genome):
        events.append("hash")
        return real_identify(genome)

    session.spark.render = render  # type: ignore[method-assign]
    monkeypatch.setattr(engine, "identify", identify)
    session.rate({0: 5, 1: 4})
    head = session.evolve()
    # Hashing is pure Python: while the render runs it would hold the GIL the render thread
    # needs between tensor operations. The ids are worked out after the last batch.
    assert events.count("render") == 3 and events[:3] == ["render"] * 3 and "hash" in events
    assert len(set(head.population)) == POP and len(head.images) == POP


@needs_syncfs
def test_the_writer_syncs_staged_batches_while_the_next_renders(tmp_path: Path) -> None:
    store = Store(tmp_path)
    session = new_session(store)
    events, settled = [], threading.Event()
    real_render, real_settle, real_publish = session.spark.render, store.objects.settle, store.objects.publish

    def render(genomes, size, progress=None):
        events.append("render")
        if events.count("render") == 2:
            assert settled.wait(10)  # the first batch's sync, on the writer, during this render
        try:
            return real_render(genomes, size, progress)
        finally:
            events.append("rendered")

    def settle():
        staged = list((tmp_path / "objects").rglob(".tmp-*"))
        events.append(f"settle {len(staged)} staged, on {threading.current_thread().name}")
        real_settle()
        settled.set()

    def publish(batches):
        events.append("publish")
        real_publish(batches)

    session.spark.render = render  # type: ignore[method-assign]
    store.objects.settle = settle  # type: ignore[method-assign]
    store.objects.publish = publish  # type: ignore[method-assign]
    session.evolve(fitness=[1.0] * POP, chunks=3)
    # The first batch's sync ran while the second batch rendered, with its files staged, unseen.
    second = events.index("render", events.index("rendered"))
    first_settle = next(i for i, e in enumerate(events) if e.startswith("settle"))
    assert second < first_settle < events.index("rendered", second)
    assert "on store-writer" in events[first_settle] and not events[first_settle].startswith("settle 0 ")
    assert events[-1] == "publish" and events.count("render") == 3


@needs_syncfs
def test_a_write_error_the_writer_meets_while_settling_stops_the_generation(tmp_path: Path) -> None:
    # The sync that met the error reports it once: publish's own sync would not see it, so
    # the error must come back from the writer, and nothing of the generation may stay.
    store = Store(tmp_path)
    session = new_session(store)
    head, objects = session.head(), object_files(tmp_path)
    settled = threading.Event()

    def failing_settle():
        settled.set()
        raise StoreError("cannot write objects to the store: Input/output error")

    def wait_for_the_sync() -> None:
        assert settled.wait(10)  # the writer runs the first batch's sync meanwhile

    before_render(session, 2, wait_for_the_sync)
    store.objects.settle = failing_settle  # type: ignore[method-assign]
    with pytest.raises(StoreError, match="Input/output error"):
        session.evolve(fitness=[1.0] * POP, chunks=3)
    assert session.head().id == head.id
    assert object_files(tmp_path) == objects


CRASH_SCRIPT = """
import sys
from evolve.fitness import NoveltyFitness
from evolve.session import RunSpec, Session
from spark_runtime.store import Store
store = Store(sys.argv[1])
try:
    session = Session(store, "crash")
except Exception:
    session = Session.create(store, RunSpec(name="crash", population=8, size=48, seed=3))
print("ready", flush=True)
session.run_auto(NoveltyFitness(), generations=10_000)
"""


def test_kill_9_mid_run_leaves_a_consistent_store_that_continues(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen([sys.executable, "-c", CRASH_SCRIPT, str(tmp_path)], stdout=subprocess.PIPE, env=env)
    assert proc.stdout.readline().strip() == b"ready"
    deadline = time.time() + 60
    store = Store(tmp_path)
    while time.time() < deadline:
        if Session(store, "crash").head().generation >= 2:
            break
        time.sleep(0.05)
    time.sleep(0.137)  # land somewhere inside a generation
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store.close()

    store = Store(tmp_path)
    session = Session(store, "crash")
    head = session.head()
    assert head.generation >= 2
    for snapshot in store.history(session.branch):
        assert len(snapshot.population) == 8
        assert all(store.objects.exists(h) for h in snapshot.images + snapshot.thumbs)
        assert len(store.genomes(snapshot)) == 8
    session.run_auto(NoveltyFitness(), generations=1)
    assert session.head().generation == head.generation + 1


def test_sessions_sharing_a_branch_always_build_on_the_latest_head(tmp_path: Path) -> None:
    # A session keeps what it committed last; another session moving the head must win.
    store = Store(tmp_path)
    first = new_session(store)
    second = Session(store, first.run.id)
    a = first.evolve()
    b = second.evolve()
    assert b.parent_id == a.id
    c = first.evolve()
    assert c.parent_id == b.id and c.generation == 3
    first.undo()
    d = first.evolve()
    assert d.parent_id == b.id


@needs_syncfs
def test_a_render_failing_mid_generation_leaves_no_trace(tmp_path: Path) -> None:
    from imagery import GeneratorError

    session = new_session(Store(tmp_path))
    head, objects = session.head(), object_files(tmp_path)

    def fail() -> None:
        raise GeneratorError("the second batch failed")

    before_render(session, 2, fail)
    with pytest.raises(SessionError, match="the second batch failed"):
        session.evolve(fitness=[1.0] * POP)
    assert session.head().id == head.id
    # The first batch had been encoded and staged; nothing of it may stay behind.
    assert object_files(tmp_path) == objects


@needs_syncfs
def test_a_commit_check_failing_after_the_render_leaves_no_trace(tmp_path: Path) -> None:
    # The last batch is encoded on this thread as well as on the writer: both are undone.
    from spark_runtime.store import StoreError

    store = Store(tmp_path)
    session = new_session(store)
    objects = object_files(tmp_path)

    def refuse(**_kwargs):
        raise StoreError("branch 'main' moved: another session changed its head first")

    store.prepare_generation = refuse  # type: ignore[method-assign]
    with pytest.raises(StoreError, match="moved"):
        session.evolve(fitness=[1.0] * POP)
    assert object_files(tmp_path) == objects
