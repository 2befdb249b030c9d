"""Choosing the database: URLs, drivers, one-line errors, and a store on PostgreSQL.

The full store suite runs on PostgreSQL through the ``store_url`` fixture (test_store.py);
these tests cover what differs: opening by URL, and failures before anything is stored.
"""

from __future__ import annotations

import pytest
from sqlalchemy import inspect

from spark_runtime.store import RatingInput, Store, StoreError
from spark_runtime.store.engine import default_url, make_engines, normalise_url, safe_url
from tests.conftest import free_port


def test_bare_postgresql_url_gets_the_installed_psycopg_driver():
    assert normalise_url("postgresql://u:pw@db.example/imagery").startswith("postgresql+psycopg://")
    assert normalise_url("postgres://u@h/d").startswith("postgresql+psycopg://")
    assert normalise_url("sqlite:///x.db") == "sqlite:///x.db"


def test_default_url_is_the_sqlite_file_in_the_store_folder(tmp_path):
    with Store(tmp_path / "s") as store:
        store.create_run(
            name="r",
            generator="g",
            target="a.b:C",
            generator_config={},
            population_size=1,
            size=16,
            seed=1,
        )
    read, _ = make_engines(default_url(tmp_path / "s"))
    with read.connect() as conn:
        assert inspect(conn).has_table("run")
    read.dispose()


@pytest.mark.parametrize(
    "url, message",
    [
        ("not a url", "not a database URL"),
        ("mysql://u@h/d", "unsupported database 'mysql': use sqlite or postgresql"),
    ],
)
def test_bad_database_urls_are_one_line_errors(tmp_path, url, message):
    with pytest.raises(StoreError, match=message) as info:
        Store(tmp_path / "s", db_url=url)
    assert "\n" not in str(info.value)


def test_unreachable_server_names_it_without_the_password(tmp_path):
    port = free_port()  # nothing listens on it
    url = f"postgresql+psycopg://imagery:s3cret@127.0.0.1:{port}/nope"
    with pytest.raises(StoreError, match=rf"cannot connect to .*127\.0\.0\.1:{port}/nope") as info:
        Store(tmp_path / "s", db_url=url)
    assert "s3cret" not in str(info.value)
    assert "\n" not in str(info.value)
    assert safe_url(url) == f"postgresql+psycopg://imagery:***@127.0.0.1:{port}/nope"


@pytest.mark.postgres
def test_store_on_postgresql_keeps_objects_in_the_folder_and_rows_in_the_server(
    tmp_path, postgres_url
):
    with Store(tmp_path / "s", db_url=postgres_url) as store:
        run = store.create_run(
            name="pg",
            generator="g",
            target="a.b:C",
            generator_config={"k": [1, 2]},
            population_size=2,
            size=16,
            seed=2**40,
        )
        main = store.get_branch(run.id)
        snap = store.commit_generation(
            branch_id=main.id,
            parent_id=None,
            generation=0,
            individuals=[({"i": 0}, []), ({"i": 1}, [])],
            images=[b"a", b"b"],
            thumbs=[b"ta", b"tb"],
            rng_state={"s": 2**100},
            settings={},
            consumed_ratings=[],
            generator_config={},
        )
        store.add_ratings(snap.id, [RatingInput("score", 1, 4.5)], "ann")
    # No SQLite file: the rows live on the server, and a second store there sees them.
    assert not (tmp_path / "s" / "imagery.db").exists()
    with Store(tmp_path / "s", db_url=postgres_url) as again:
        assert again.get_run("pg").seed == 2**40
        assert again.get_snapshot(snap.id).rng_state == {"s": 2**100}
        assert again.current_scores(snap.id) == {1: 4.5}
        assert again.objects.get(snap.images[1]) == b"b"
