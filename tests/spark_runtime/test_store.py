"""Snapshot store: runs, commits, forks, skip pointers, ratings, gc, concurrent writers."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import pytest
import torch
from sqlalchemy import create_engine, text

from spark_runtime.store import RatingInput, Store, StoreError
from spark_runtime.store import generations as generations_module
from spark_runtime.store.skiplist import skip_generation, walk_to

TABLES = ("run", "branch", "snapshot", "individual", "rating")


@pytest.fixture
def store(tmp_path, store_url):
    # store_url (tests/spark_runtime/conftest.py): every test runs on SQLite and PostgreSQL.
    s = Store(tmp_path / "data", db_url=store_url)
    s.db_url = store_url
    yield s
    s.close()


def new_run(store, name="run-a", population_size=2):
    return store.create_run(
        name=name,
        generator="fake",
        target="tests.fake:Fake",
        generator_config={"depth": 3},
        population_size=population_size,
        size=32,
        seed=7,
    )


def commit(store, branch, parent, tag, n=2, image=None, tensors=False):
    """Commit the next generation after ``parent`` on ``branch``; returns the snapshot."""
    generation = 0 if parent is None else parent.generation + 1
    individuals = []
    for i in range(n):
        genome = {"tag": tag, "g": generation, "i": i}
        if tensors:
            value = float(generation * 10 + i + 1000 * sum(map(ord, tag)))
            genome["tensors"] = {"latent": torch.full((2, 3), value)}
        individuals.append((genome, [] if parent is None else [parent.population[i]]))
    images = [image or f"{tag}-{generation}-{i}".encode() for i in range(n)]
    return store.commit_generation(
        branch_id=branch.id,
        parent_id=None if parent is None else parent.id,
        generation=generation,
        individuals=individuals,
        images=images,
        thumbs=[b"thumb-" + img for img in images],
        rng_state={"bit_generator": "PCG64", "state": {"state": 2**100 + generation}},
        settings={"strength": 0.5, "locks": []},
        consumed_ratings=[],
        generator_config={"depth": 3},
    )


def chain(store, branch, length, tag="main", parent=None, **kw):
    snaps = []
    for _ in range(length):
        parent = commit(store, branch, parent, tag, **kw)
        snaps.append(parent)
    return snaps


def counts(store):
    # Read through a separate plain connection: what another process would see.
    engine = create_engine(store.db_url)
    with engine.connect() as db:
        rows = {t: db.execute(text(f"SELECT COUNT(*) FROM {t}")).scalar_one() for t in TABLES}
    engine.dispose()
    rows["objects"] = sum(1 for _ in store.objects.iter_objects())
    return rows


# Runs and branches


def test_run_round_trip_and_reopen(store, tmp_path):
    run = new_run(store)
    assert len(run.id) == 12
    assert store.get_run(run.id).name == "run-a"
    assert store.get_run("run-a").id == run.id
    main = store.get_branch(run.id)
    assert (main.name, main.head_snapshot_id) == ("main", None)
    store.close()
    reopened = Store(tmp_path / "data", db_url=store.db_url)
    assert [r.id for r in reopened.list_runs()] == [run.id]
    assert reopened.get_run(run.id).generator_config == {"depth": 3}
    assert [b.name for b in reopened.list_branches(run.id)] == ["main"]
    reopened.close()


def test_bad_run_input_changes_nothing(store):
    new_run(store)
    before = counts(store)
    with pytest.raises(StoreError, match="run 'run-a' already exists"):
        new_run(store)
    with pytest.raises(StoreError, match="run name must be a non-empty string"):
        new_run(store, name="  ")
    with pytest.raises(StoreError, match="population_size must be >= 1"):
        new_run(store, name="other", population_size=0)
    with pytest.raises(StoreError, match="unknown run 'nope'"):
        store.get_run("nope")
    with pytest.raises(StoreError, match="unknown branch 'dev'"):
        store.get_branch("run-a", "dev")
    assert counts(store) == before


# Commits


def test_commit_round_trip_genomes_images_lineage(store):
    run = new_run(store)
    main = store.get_branch(run.id)
    g0, g1 = chain(store, main, 2, tensors=True)
    assert store.get_branch(run.id).head_snapshot_id == g1.id
    genomes = store.genomes(g1.id)
    assert [(g["g"], g["i"]) for g in genomes] == [(1, 0), (1, 1)]
    assert torch.equal(
        genomes[1]["tensors"]["latent"], torch.full((2, 3), 11.0 + 1000 * sum(map(ord, "main")))
    )
    assert store.objects.get(g1.images[0]) == b"main-1-0"
    assert store.objects.get(g1.thumbs[1]) == b"thumb-main-1-1"
    again = store.get_snapshot(g1.id)
    assert again.rng_state["state"]["state"] == 2**100 + 1
    assert again.parent_id == g0.id
    assert store.get_individual(g1.population[0]).parents == [g0.population[0]]
    assert store.lineage(g1.population[0], 5) == [[g0.population[0]]]


def test_identical_images_are_stored_once_across_generations(store):
    main = store.get_branch(new_run(store).id)
    chain(store, main, 3, image=b"same pixels")
    # One image and one thumbnail, whatever the number of generations and individuals.
    assert counts(store)["objects"] == 2


def test_bad_commits_change_nothing(store):
    main = store.get_branch(new_run(store).id)
    g0 = commit(store, main, None, "main")
    before = counts(store)
    args = dict(
        branch_id=main.id,
        parent_id=g0.id,
        generation=1,
        individuals=[({"x": 1}, [g0.population[0]])],
        images=[b"new image"],
        thumbs=[b"new thumb"],
        rng_state={},
        settings={},
        consumed_ratings=[],
        generator_config={},
    )
    bad = [
        ({"generation": 3}, "generation 3 cannot follow generation 0"),
        ({"parent_id": None, "generation": 0}, "branch 'main' moved: another session changed its head first"),
        ({"images": []}, "images must be a list of 1 byte strings"),
        ({"individuals": [({"x": 1}, ["f" * 64])]}, "parent individual 'fff"),
        ({"individuals": [({"x": float("nan")}, [])]}, "individual 0: genome cannot be encoded"),
        ({"consumed_ratings": [99]}, "consumed rating 99 does not exist"),
        ({"branch_id": "nope"}, "unknown branch id 'nope'"),
        ({"settings": {"f": object()}}, "settings is not plain JSON"),
    ]
    for change, message in bad:
        with pytest.raises(StoreError, match=message):
            store.commit_generation(**{**args, **change})
    after = counts(store)
    assert {t: after[t] for t in TABLES} == {t: before[t] for t in TABLES}
    assert store.get_branch(main.run_id).head_snapshot_id == g0.id


def test_second_writer_on_a_stale_head_is_told_to_reload(store, tmp_path):
    main = store.get_branch(new_run(store).id)
    g0 = commit(store, main, None, "main")
    other = Store(tmp_path / "data", db_url=store.db_url)
    winner = commit(other, main, g0, "winner")
    with pytest.raises(StoreError, match="branch 'main' moved: another session changed its head first"):
        commit(store, main, g0, "loser")
    other.close()
    assert store.get_branch(main.run_id).head_snapshot_id == winner.id
    assert [s.id for s in store.history(main)] == [g0.id, winner.id]


def test_crash_inside_the_transaction_leaves_store_as_before(store, monkeypatch):
    main = store.get_branch(new_run(store).id)
    g0 = commit(store, main, None, "main")
    before = counts(store)

    class PowerCut:
        def _execute_on_connection(self, *args, **kwargs):
            raise RuntimeError("power cut")

    # Dies at the head move, after the individual and snapshot rows were inserted.
    monkeypatch.setattr(generations_module, "_MOVE_HEAD", PowerCut())
    with pytest.raises(RuntimeError, match="power cut"):
        commit(store, main, g0, "main")
    monkeypatch.undo()
    after = counts(store)
    assert {t: after[t] for t in TABLES} == {t: before[t] for t in TABLES}
    assert store.get_branch(main.run_id).head_snapshot_id == g0.id
    # Objects were written first; nothing references them, so gc reclaims them.
    assert after["objects"] > before["objects"]
    store.gc()
    assert counts(store)["objects"] == before["objects"]


def _args(branch, parent, genomes):
    generation = 0 if parent is None else parent.generation + 1
    return {
        "branch_id": branch.id,
        "parent_id": None if parent is None else parent.id,
        "generation": generation,
        "individuals": [(g, [] if parent is None else [parent.population[0]]) for g in genomes],
        "consumed_ratings": [],
    }


def _finish(store, prepared, args, tag):
    n = len(args["individuals"])
    return store.commit_generation(
        **{**args, "individuals": prepared},
        images=[f"{tag}-{i}".encode() for i in range(n)],
        thumbs=[f"thumb-{tag}-{i}".encode() for i in range(n)],
        rng_state={"bit_generator": "PCG64"},
        settings={},
        generator_config={},
    )


def test_prepared_generation_commits_like_a_plain_one(store):
    main = store.get_branch(new_run(store).id)
    g0 = commit(store, main, None, "main")
    args = _args(main, g0, [{"tag": "p", "i": 0}, {"tag": "p", "i": 1}])
    snap = _finish(store, store.prepare_generation(**args), args, "p")
    assert store.get_branch(main.run_id).head_snapshot_id == snap.id
    assert store.genomes(snap) == [{"tag": "p", "i": 0}, {"tag": "p", "i": 1}]
    assert store.snapshot_at(main, 0).id == g0.id


def test_prepared_generation_is_refused_for_another_parent_or_ratings(store):
    main = store.get_branch(new_run(store).id)
    g0 = commit(store, main, None, "main")
    args = _args(main, g0, [{"tag": "p"}])
    prepared = store.prepare_generation(**args)
    before = counts(store)
    for change in ({"generation": 2}, {"consumed_ratings": [1]}, {"parent_id": None, "generation": 0}):
        with pytest.raises(StoreError, match="prepared generation was made for another"):
            _finish(store, prepared, {**args, **change}, "p")
    assert counts(store) == before


def test_head_moved_after_prepare_is_refused_and_nothing_lands(store):
    main = store.get_branch(new_run(store).id)
    g0 = commit(store, main, None, "main")
    args = _args(main, g0, [{"tag": "late"}])
    prepared = store.prepare_generation(**args)
    winner = commit(store, main, g0, "winner")
    before = counts(store)
    with pytest.raises(StoreError, match="branch 'main' moved: another session changed its head first"):
        _finish(store, prepared, args, "late")
    after = counts(store)
    assert {t: after[t] for t in TABLES} == {t: before[t] for t in TABLES}
    assert store.get_branch(main.run_id).head_snapshot_id == winner.id


def test_the_same_new_genome_prepared_on_two_branches_commits_on_both(store):
    # Each prepare sees the genome as new; the second commit finds it stored by the first
    # and must neither fail nor store it twice.
    main = store.get_branch(new_run(store).id)
    g0 = commit(store, main, None, "main")
    side = store.fork(g0.id, "side")
    shared = [{"tag": "shared", "i": 7}]
    args_main, args_side = _args(main, g0, shared), _args(side, g0, shared)
    prepared_main = store.prepare_generation(**args_main)
    prepared_side = store.prepare_generation(**args_side)
    rows = counts(store)["individual"]
    a = _finish(store, prepared_main, args_main, "m")
    b = _finish(store, prepared_side, args_side, "s")
    assert a.population == b.population
    assert counts(store)["individual"] == rows + 1


def test_identity_from_the_codec_is_used_and_anything_else_refused(store):
    from spark_runtime.genome_codec import identify

    main = store.get_branch(new_run(store).id)
    genome = {"tag": "known"}
    args = {**_args(main, None, [genome]), "individuals": [(genome, [], identify(genome))]}
    snap = _finish(store, store.prepare_generation(**args), args, "k")
    assert snap.population == [identify(genome).id]
    bad = {**args, "individuals": [(genome, [], "not an identity")]}
    with pytest.raises(StoreError, match="third element must be the genome's Identity"):
        store.prepare_generation(**bad)


# Forks and history


def test_fork_is_one_branch_row_and_nothing_else(store):
    run = new_run(store)
    main = store.get_branch(run.id)
    snaps = chain(store, main, 4)
    before = counts(store)
    fork = store.fork(snaps[1].id, "explore")
    after = counts(store)
    assert after == {**before, "branch": before["branch"] + 1}
    assert fork.head_snapshot_id == fork.forked_from_snapshot_id == snaps[1].id
    assert [s.id for s in store.history(fork)] == [s.id for s in snaps[:2]]
    with pytest.raises(StoreError, match="branch 'explore' already exists"):
        store.fork(snaps[2].id, "explore")
    with pytest.raises(StoreError, match="unknown snapshot 'nope'"):
        store.fork("nope", "other")
    assert counts(store) == after


def test_fork_evolves_without_touching_the_original(store):
    main = store.get_branch(new_run(store).id)
    main_snaps = chain(store, main, 5)
    fork = store.fork(main_snaps[2].id, "alt")
    fork_snaps = chain(store, fork, 3, tag="alt", parent=main_snaps[2])
    assert [s.id for s in store.history(main)] == [s.id for s in main_snaps]
    assert [s.generation for s in store.history(fork)] == [0, 1, 2, 3, 4, 5]
    assert store.snapshot_at(fork, 1).id == main_snaps[1].id
    assert store.snapshot_at(fork, 4).id == fork_snaps[1].id
    assert store.snapshot_at(main, 4).id == main_snaps[4].id
    # Lineage crosses the fork point back into main's individuals.
    lineage = store.lineage(fork_snaps[-1].population[0], 10)
    assert [level[0] for level in lineage] == [
        fork_snaps[1].population[0],
        fork_snaps[0].population[0],
        main_snaps[2].population[0],
        main_snaps[1].population[0],
        main_snaps[0].population[0],
    ]


def test_set_head_moves_a_branch_within_its_run_only(store):
    main = store.get_branch(new_run(store).id)
    snaps = chain(store, main, 3)
    store.set_head(main.id, snaps[0].id)
    assert [s.id for s in store.history(main)] == [snaps[0].id]
    other = store.get_branch(new_run(store, name="run-b").id)
    foreign = commit(store, other, None, "b")
    with pytest.raises(StoreError, match="belongs to another run"):
        store.set_head(main.id, foreign.id)
    assert store.get_branch_by_id(main.id).head_snapshot_id == snaps[0].id


def test_snapshot_at_every_generation_of_a_300_generation_chain(store):
    main = store.get_branch(new_run(store).id)
    snaps = chain(store, main, 300, n=1, image=b"tiny")
    for generation, expected in enumerate(snaps):
        assert store.snapshot_at(main, generation).id == expected.id
    with pytest.raises(StoreError, match=r"generation 300 is out of range: .* 0\.\.299"):
        store.snapshot_at(main, 300)
    with pytest.raises(StoreError, match="generation -1 is out of range"):
        store.snapshot_at(main, -1)


def test_empty_branch_has_no_generations(store):
    main = store.get_branch(new_run(store).id)
    assert store.history(main) == []
    with pytest.raises(StoreError, match="branch 'main' has no generations yet"):
        store.snapshot_at(main, 0)


@dataclass
class _Node:
    generation: int
    parent_id: str | None
    skip_id: str | None


def test_skip_walk_takes_logarithmic_hops():
    n = 4096
    nodes = {
        str(g): _Node(g, str(g - 1) if g else None, None if g == 0 else str(skip_generation(g)))
        for g in range(n + 1)
    }
    fetched = []

    def fetch(node_id):
        fetched.append(node_id)
        return nodes[node_id]

    worst = 0
    for target in range(n + 1):
        fetched.clear()
        assert walk_to(nodes[str(n)], target, fetch).generation == target
        worst = max(worst, len(fetched))
    # A parent-only walk needs up to 4096 hops; the skip walk stays within a few log2(n).
    assert worst <= 5 * math.log2(n)


# Ratings


def test_scores_fold_per_session_with_clear(store):
    main = store.get_branch(new_run(store, population_size=3).id)
    snap = commit(store, main, None, "main", n=3)
    store.add_ratings(snap.id, [RatingInput("score", 0, 2), RatingInput("score", 1, 1)], "ann")
    store.add_ratings(snap.id, [RatingInput("score", 0, 5)], "bob")
    store.add_ratings(snap.id, [RatingInput("score", 0, 3), RatingInput("clear", 1)], "ann")
    assert store.current_scores(snap.id, "ann") == {0: 3.0}
    assert store.current_scores(snap.id, "bob") == {0: 5.0}
    assert store.current_scores(snap.id) == {0: 4.0}
    store.add_ratings(snap.id, [RatingInput("clear", 0)], "bob")
    assert store.current_scores(snap.id) == {0: 3.0}
    # Undo appends: five events, none deleted.
    assert [r.kind for r in store.ratings(snap.id, "ann")] == ["score", "score", "score", "clear"]
    assert len(store.ratings(snap.id)) == 6


def test_picks_and_pairs(store):
    main = store.get_branch(new_run(store, population_size=3).id)
    snap = commit(store, main, None, "main", n=3)
    store.add_ratings(snap.id, [RatingInput("pick", 0), RatingInput("pick", 2)], "ann")
    store.add_ratings(snap.id, [RatingInput("pick", 1), RatingInput("unpick", 2)], "bob")
    store.add_ratings(snap.id, [RatingInput("unpick", 0)], "ann")
    assert store.current_picks(snap.id, "ann") == {2}
    assert store.current_picks(snap.id) == {1, 2}
    store.add_ratings(
        snap.id,
        [
            RatingInput("pair", 2, other_position=0),
            RatingInput("pair", 0, 0.0, other_position=1),
        ],
        "ann",
    )
    pairs = store.pairs(snap.id)
    assert [(p.first, p.second, p.outcome) for p in pairs] == [(2, 0, "first"), (0, 1, "both_bad")]


def test_bad_ratings_store_nothing(store):
    main = store.get_branch(new_run(store).id)
    snap = commit(store, main, None, "main")
    store.add_ratings(snap.id, [RatingInput("score", 0, 1)], "ann")
    before = counts(store)
    bad = [
        ([RatingInput("score", 0, 4), RatingInput("score", 2, 4)], "rating 1: position 2 is out"),
        ([RatingInput("score", 1, 4), RatingInput("score", 0, 5.5)], "rating 1: score 5.5 is out"),
        ([RatingInput("score", 0)], "rating 0: a score needs a value"),
        ([RatingInput("love", 0)], "rating 0: unknown kind 'love'"),
        ([RatingInput("pair", 1, other_position=1)], "two different positions"),
        ([RatingInput("pair", 1, 0.7, other_position=0)], "pair value must be"),
        ([RatingInput("pick", 0, other_position=1)], "other_position is only for pairs"),
    ]
    for events, message in bad:
        with pytest.raises(StoreError, match=message):
            store.add_ratings(snap.id, events, "ann")
    with pytest.raises(StoreError, match="session name must be a non-empty string"):
        store.add_ratings(snap.id, [RatingInput("score", 0, 1)], "")
    with pytest.raises(StoreError, match="unknown snapshot 'nope'"):
        store.add_ratings("nope", [RatingInput("score", 0, 1)], "ann")
    assert counts(store) == before
    assert store.current_scores(snap.id) == {0: 1.0}


def test_ratings_of_many_snapshots_match_the_per_snapshot_reads(store, monkeypatch):
    main = store.get_branch(new_run(store).id)
    g0 = commit(store, main, None, "main")
    store.add_ratings(g0.id, [RatingInput("score", 0, 4), RatingInput("pick", 1)], "ann")
    store.add_ratings(g0.id, [RatingInput("score", 0, 2)], "bob")
    g1 = commit(store, main, g0, "main")
    store.add_ratings(g1.id, [RatingInput("score", 1, 3)], "ann")
    monkeypatch.setattr("spark_runtime.store.store._IDS_PER_QUERY", 1)  # chunks still join up
    found = store.ratings_of([g0.id, g1.id, "unknown"])
    assert [(r.kind, r.session) for r in found[g0.id]] == [(r.kind, r.session) for r in store.ratings(g0.id)]
    assert [(r.kind, r.position) for r in found[g1.id]] == [(r.kind, r.position) for r in store.ratings(g1.id)] != []
    assert found["unknown"] == [] and store.ratings_of([]) == {}


def test_consumed_ratings_are_recorded(store):
    main = store.get_branch(new_run(store).id)
    g0 = commit(store, main, None, "main")
    rated = store.add_ratings(g0.id, [RatingInput("score", 1, 5)], "ann")
    g1 = store.commit_generation(
        branch_id=main.id,
        parent_id=g0.id,
        generation=1,
        individuals=[({"child": 1}, [g0.population[1]])],
        images=[b"c"],
        thumbs=[b"ct"],
        rng_state={},
        settings={},
        consumed_ratings=[r.id for r in rated],
        generator_config={},
    )
    assert store.get_snapshot(g1.id).consumed_ratings == [rated[0].id]


def test_concurrent_writers_on_one_folder_all_land(store, tmp_path):
    main = store.get_branch(new_run(store, population_size=4).id)
    snap = commit(store, main, None, "main", n=4)
    errors = []

    def writer(k):
        try:
            with Store(tmp_path / "data", db_url=store.db_url) as mine:
                for j in range(10):
                    events = [RatingInput("score", (k + j) % 4, j % 6), RatingInput("pick", k % 4)]
                    mine.add_ratings(snap.id, events, f"s{k}")
        except Exception as exc:  # collected and asserted below, so no failure is lost
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    stored = store.ratings(snap.id)
    assert len(stored) == 8 * 10 * 2
    assert {r.session for r in stored} == {f"s{k}" for k in range(8)}


# Garbage collection


def test_gc_removes_only_unreachable_objects(store):
    main = store.get_branch(new_run(store).id)
    g0, g1, g2 = chain(store, main, 3, tensors=True)
    fork = store.fork(g1.id, "keep")
    fork_g2 = commit(store, fork, g1, "fork", tensors=True)
    # Undo on main back to g0, then evolve anew: main's old g1 stays reachable through the
    # fork, main's old g2 is reachable from no head.
    store.set_head(main.id, g0.id)
    new_g1 = commit(store, main, g0, "redo", tensors=True)
    rows_before = counts(store)
    report = store.gc()
    dead = set(g2.images) | set(g2.thumbs)
    dead |= {store.get_individual(i).tensors_hash for i in g2.population}
    assert report.objects_removed == len(dead)
    assert report.bytes_freed > 0
    for sha in dead:
        assert not store.objects.exists(sha)
    for snap in (g0, g1, fork_g2, new_g1):
        assert all(store.objects.exists(sha) for sha in snap.images + snap.thumbs)
        store.genomes(snap)  # tensors still load
    assert report.objects_kept == counts(store)["objects"]
    rows_after = counts(store)
    assert {t: rows_after[t] for t in TABLES} == {t: rows_before[t] for t in TABLES}


def test_gc_grace_keeps_fresh_garbage(store):
    main = store.get_branch(new_run(store).id)
    g0, _ = chain(store, main, 2)
    store.set_head(main.id, g0.id)
    assert store.gc(grace_seconds=3600).objects_removed == 0
    assert store.gc().objects_removed == 4


def test_a_store_that_cannot_be_opened_is_one_line_and_creates_nothing(tmp_path):
    with pytest.raises(StoreError, match=r"^cannot open database sqlite:///.*: unable to open database file$"):
        Store(tmp_path / "a", db_url=f"sqlite:///{tmp_path}/no/such/folder/x.db")
    assert not (tmp_path / "a").exists()
    garbage = tmp_path / "b"
    garbage.mkdir()
    (garbage / "imagery.db").write_bytes(b"not a database\n" * 100)
    with pytest.raises(StoreError, match=r"^cannot open database .*: file is not a database$"):
        Store(garbage)
    assert [p.name for p in garbage.iterdir()] == ["imagery.db"]
    with pytest.raises(StoreError, match="unsupported database 'bogus'"):
        Store(tmp_path / "c", db_url="bogus://x")
    with pytest.raises(StoreError, match="must be a local path"):
        Store("s3://bucket/store")
    a_file = tmp_path / "b" / "imagery.db"
    with pytest.raises(StoreError, match=r"^cannot open object store '.*imagery.db': File exists$"):
        Store(tmp_path / "d", objects_url=str(a_file))
    with pytest.raises(StoreError, match=r"^cannot open object store 'bogus://x': Protocol not known"):
        Store(tmp_path / "e", objects_url="bogus://x")
    with pytest.raises(StoreError, match=r"^cannot make the store folder '.*imagery.db': File exists$"):
        Store(a_file, objects_url=str(tmp_path / "objects-f"))
    with pytest.raises(StoreError, match="unable to open database file"):
        Store(tmp_path / "g", db_url=f"sqlite:///{tmp_path}/no/such/folder/x.db", objects_url=str(tmp_path / "objects-g"))
    with pytest.raises(StoreError, match=r"^cannot open object store 'reference://': .*'fo'"):  # a TypeError
        Store(tmp_path / "h", objects_url="reference://")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]  # no folder, database or objects root
