"""Alembic environment: runs on the connection ``spark_runtime.store.migrations`` hands over.

There is no alembic.ini: the runner builds the config in code and passes an open connection
(already inside the transaction that makes the upgrade all-or-nothing).
"""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

from spark_runtime.store import models  # noqa: F401 - registers the tables on the metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    # SQLite alters tables by copying them: batch mode does that for every operation.
    render_as_batch=True,
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
