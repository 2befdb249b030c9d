"""Schema migrations: a fresh database, a store made before migrations, ``imagery db upgrade``."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlmodel import SQLModel

from spark_runtime.store import RatingInput, Store, StoreError, migrations
from spark_runtime.store.engine import make_engines
from ui import cli


def _schema_diff(url: str) -> list:
    engine, _ = make_engines(url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    engine.dispose()
    return diff


def _seed(store: Store) -> str:
    run = store.create_run(
        name="old",
        generator="g",
        target="a.b:C",
        generator_config={},
        population_size=2,
        size=16,
        seed=1,
    )
    snap = store.commit_generation(
        branch_id=store.get_branch(run.id).id,
        parent_id=None,
        generation=0,
        individuals=[({"i": 0}, []), ({"i": 1}, [])],
        images=[b"a", b"b"],
        thumbs=[b"c", b"d"],
        rng_state={},
        settings={},
        consumed_ratings=[],
        generator_config={},
    )
    store.add_ratings(snap.id, [RatingInput("score", 0, 3)], "ann")
    return snap.id


def test_upgrading_an_empty_database_builds_exactly_the_models_schema(store_url):
    assert migrations.current(store_url) is None
    assert migrations.upgrade(store_url) == (None, migrations.head())
    # Nothing to autogenerate: the migrated tables, keys and indexes are the models'.
    assert _schema_diff(store_url) == []
    assert migrations.upgrade(store_url) == (migrations.head(), migrations.head())


def test_a_store_made_before_migrations_opens_after_upgrade(tmp_path, store_url):
    with Store(tmp_path / "data", db_url=store_url) as store:
        snapshot_id = _seed(store)
    assert migrations.current(store_url) == migrations.BASELINE
    before, after = migrations.upgrade(store_url)
    assert (before, after) == (migrations.BASELINE, migrations.head())
    with Store(tmp_path / "data", db_url=store_url) as store:
        assert store.current_scores(snapshot_id) == {0: 3.0}
        head = store.get_snapshot(snapshot_id)
        assert store.objects.get(head.images[1]) == b"b"
        store.add_ratings(snapshot_id, [RatingInput("score", 1, 5)], "bob")
        assert store.current_scores(snapshot_id) == {0: 3.0, 1: 5.0}
    assert _schema_diff(store_url) == []


def test_a_database_from_a_newer_version_is_refused_and_left_alone(tmp_path, store_url):
    migrations.upgrade(store_url)
    engine = create_engine(store_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(StoreError, match="schema revision '9999', newer than this version"):
        migrations.upgrade(store_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "9999"
        assert inspect(conn).has_table("snapshot")
    engine.dispose()


def test_cli_db_upgrade_on_the_default_store_and_on_a_url(tmp_path, capsys, store_url):
    store = str(tmp_path / "fresh")
    assert cli.main(["--store", store, "db", "upgrade"]) == 0
    assert f"from schema revision none to {migrations.head()}" in capsys.readouterr().out
    assert cli.main(["--store", store, "db", "upgrade"]) == 0
    assert "is up to date" in capsys.readouterr().out
    with Store(tmp_path / "data", db_url=store_url) as opened:
        _seed(opened)
    assert cli.main(["--store", str(tmp_path / "data"), "--db", store_url, "db", "upgrade"]) == 0
    assert f"is up to date (schema revision {migrations.head()})" in capsys.readouterr().out
    assert migrations.current(store_url) == migrations.head()


def test_cli_db_upgrade_unreachable_is_one_line(tmp_path, capsys):
    url = "postgresql+psycopg://imagery:pw@127.0.0.1:1/none"
    assert cli.main(["--store", str(tmp_path), "--db", url, "db", "upgrade"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("imagery: error: cannot connect to postgresql+psycopg://imagery:***@")
    assert err.count("\n") == 1
