"""Database engines for the store: SQLite tuned for several writers, or PostgreSQL.

SQLite gets WAL (readers never block the writer), a busy timeout, foreign keys, and write
transactions that start with ``BEGIN IMMEDIATE``: a writer takes the lock up front and waits
its turn, instead of upgrading a read lock mid-transaction and failing with "database is
locked". pysqlite's own implicit BEGIN is switched off so that these BEGINs are ours.

PostgreSQL (``postgresql+psycopg://user@host/db``; a bare ``postgresql://`` gets the psycopg
driver) needs no such help: its row locks serialise the branch-head compare-and-set, and
concurrent inserts never block each other. Connections are checked before use, so a server
restart costs a reconnect rather than an error.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine, create_engine, make_url

from spark_runtime.store.errors import StoreError

BUSY_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 10
_WRITE_OPTION = "imagery_write"
_DRIVERS = {"postgres": "postgresql+psycopg", "postgresql": "postgresql+psycopg"}


def normalise_url(db_url: str) -> str:
    """The URL with a driver SQLAlchemy can load here; StoreError if it is not a DB URL."""
    try:
        url = make_url(db_url)
    except (sa_exc.ArgumentError, ValueError):
        raise StoreError(f"not a database URL: {safe_url(db_url)!r}") from None
    if url.drivername in _DRIVERS:
        url = url.set(drivername=_DRIVERS[url.drivername])
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise StoreError(
            f"unsupported database {url.get_backend_name()!r}: use sqlite or postgresql"
        )
    return url.render_as_string(hide_password=False)


def safe_url(db_url: str) -> str:
    """The URL with its password hidden, for messages."""
    try:
        return make_url(db_url).render_as_string(hide_password=True)
    except (sa_exc.ArgumentError, ValueError):
        return db_url.split("@")[-1]


def default_url(root: str | os.PathLike[str]) -> str:
    """The SQLite file a store keeps in its folder when no database URL is given."""
    return f"sqlite:///{Path(root).as_posix()}/imagery.db"


def make_engines(db_url: str, *, foreign_keys: bool = True) -> tuple[Engine, Engine]:
    """Return ``(read_engine, write_engine)`` sharing one connection pool.

    Transactions on the write engine start as ``BEGIN IMMEDIATE`` on SQLite; elsewhere both
    engines behave the same (PostgreSQL serialises the head update with a compare-and-set).
    ``foreign_keys=False`` is for schema migrations, which rebuild SQLite tables.

    Raises:
        StoreError: a bad URL, a missing driver, or a server that does not answer.
    """
    url = normalise_url(db_url)
    is_sqlite = url.startswith("sqlite")
    if is_sqlite:
        connect_args: dict[str, Any] = {"timeout": BUSY_TIMEOUT_S, "check_same_thread": False}
        engine = create_engine(url, connect_args=connect_args)
        event.listen(engine, "connect", _sqlite_on_connect(foreign_keys))
        event.listen(engine, "begin", _on_sqlite_begin)
    else:
        try:
            engine = create_engine(
                url, pool_pre_ping=True, connect_args={"connect_timeout": CONNECT_TIMEOUT_S}
            )
        except ImportError as exc:
            raise StoreError(
                f"no driver for {safe_url(url)}: {exc} (pip install 'imagery[postgres]')"
            ) from None
        _check_connect(engine, url)
    return engine, engine.execution_options(**{_WRITE_OPTION: True})


def _check_connect(engine: Engine, url: str) -> None:
    # Fail on open with one line, not on the first query with a driver traceback.
    try:
        with engine.connect():
            pass
    except sa_exc.DBAPIError as exc:
        text = str(exc.orig or exc).strip().splitlines()
        raise StoreError(f"cannot connect to {safe_url(url)}: {text[0] if text else exc}") from None


def _sqlite_on_connect(foreign_keys: bool) -> Any:
    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Autocommit at the driver level: we emit BEGIN ourselves in _on_sqlite_begin.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            cur.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")
            cur.execute("PRAGMA journal_mode = WAL")
            # In WAL mode NORMAL syncs at checkpoints, not at every commit: a power cut may
            # drop the last commits but never half of one, which is the store's promise.
            cur.execute("PRAGMA synchronous = NORMAL")
        finally:
            cur.close()

    return on_connect


def _on_sqlite_begin(conn: Connection) -> None:
    if conn.get_execution_options().get(_WRITE_OPTION):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        # Deferred: a read-only transaction sees one consistent snapshot of the WAL.
        conn.exec_driver_sql("BEGIN")
