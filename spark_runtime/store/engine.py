"""Database engines for the store: SQLite tuned for several writers, or any SQLAlchemy URL.

SQLite gets WAL (readers never block the writer), a busy timeout, foreign keys, and write
transactions that start with ``BEGIN IMMEDIATE``: a writer takes the lock up front and waits
its turn, instead of upgrading a read lock mid-transaction and failing with "database is
locked". pysqlite's own implicit BEGIN is switched off so that these BEGINs are ours.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, create_engine

BUSY_TIMEOUT_S = 30.0
_WRITE_OPTION = "imagery_write"


def make_engines(db_url: str) -> tuple[Engine, Engine]:
    """Return ``(read_engine, write_engine)`` sharing one connection pool.

    Transactions on the write engine start as ``BEGIN IMMEDIATE`` on SQLite; elsewhere both
    engines behave the same (PostgreSQL serialises the head update with a compare-and-set).
    """
    is_sqlite = db_url.startswith("sqlite")
    connect_args: dict[str, Any] = {}
    if is_sqlite:
        connect_args = {"timeout": BUSY_TIMEOUT_S, "check_same_thread": False}
    engine = create_engine(db_url, connect_args=connect_args)
    if is_sqlite:
        event.listen(engine, "connect", _on_sqlite_connect)
        event.listen(engine, "begin", _on_sqlite_begin)
    return engine, engine.execution_options(**{_WRITE_OPTION: True})


def _on_sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    # Autocommit at the driver level: we emit BEGIN ourselves in _on_sqlite_begin.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    try:
        cur.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.execute("PRAGMA journal_mode = WAL")
    finally:
        cur.close()


def _on_sqlite_begin(conn: Connection) -> None:
    if conn.get_execution_options().get(_WRITE_OPTION):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        # Deferred: a read-only transaction sees one consistent snapshot of the WAL.
        conn.exec_driver_sql("BEGIN")
