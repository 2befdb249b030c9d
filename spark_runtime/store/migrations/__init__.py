"""Schema migrations of the store, through Alembic (batch mode, so SQLite can alter tables).

``upgrade(db_url)`` brings a database to the newest schema in one transaction (all or
nothing; concurrent upgrades wait for each other). A store created before migrations existed
has the tables of revision ``0001`` but no ``alembic_version`` row: it is stamped at
``0001`` first, then upgraded like any other. ``imagery db upgrade`` calls this.

A new schema change is a new file in ``versions/`` (``alembic revision`` with this folder as
``script_location``, or by hand); always alter tables inside ``op.batch_alter_table``.
"""

from __future__ import annotations

import functools
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import exc as sa_exc
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from spark_runtime.store.engine import make_engines, safe_url
from spark_runtime.store.errors import StoreError

BASELINE = "0001"
_HERE = Path(__file__).resolve().parent
# Any constant: PostgreSQL advisory lock taken for the length of an upgrade.
_PG_LOCK_KEY = 0x1A6E_0001


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_HERE))
    config.attributes["connection"] = connection
    return config


@functools.cache
def head() -> str:
    """The newest revision this code knows."""
    revision = ScriptDirectory.from_config(_config()).get_current_head()
    assert revision is not None
    return revision


def _current(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def revision_of(conn: Connection) -> str | None:
    """The revision of an open connection's database, cheaply (None if it has no version row)."""
    if not inspect(conn).has_table("alembic_version"):
        return None
    return _current(conn)


def current(db_url: str) -> str | None:
    """The revision a database is at; None for an empty database.

    A store made before migrations existed reports ``BASELINE``.
    """
    engine, _ = make_engines(db_url)
    try:
        with engine.connect() as conn:
            revision = _current(conn)
            if revision is None and inspect(conn).has_table("run"):
                return BASELINE
            return revision
    finally:
        engine.dispose()


def upgrade(db_url: str, revision: str = "head") -> tuple[str | None, str]:
    """Migrate the database at ``db_url`` to ``revision``; returns ``(before, after)``.

    Raises:
        StoreError: the database cannot be reached, or is at a revision this code does not
            know (made by a newer version); nothing has changed then.
    """
    _, write_engine = make_engines(db_url, foreign_keys=False)
    try:
        with write_engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
            before = _current(conn)
            if before is None and inspect(conn).has_table("run"):
                command.stamp(_config(conn), BASELINE)
                before = BASELINE
            known = {s.revision for s in ScriptDirectory.from_config(_config()).walk_revisions()}
            if before is not None and before not in known:
                raise StoreError(
                    f"database is at schema revision {before!r}, newer than this version of "
                    "imagery knows: upgrade imagery"
                )
            command.upgrade(_config(conn), revision)
            after = _current(conn)
    except sa_exc.SQLAlchemyError as exc:
        lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        raise StoreError(
            f"cannot upgrade {safe_url(db_url)}: {lines[0] if lines else type(exc).__name__}"
        ) from None
    finally:
        write_engine.dispose()
    assert after is not None
    return before, after


__all__ = ["BASELINE", "current", "head", "revision_of", "upgrade"]
