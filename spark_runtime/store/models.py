"""SQLModel tables of the store: runs, branches, immutable snapshots, individuals, ratings.

Column types are portable (JSON kept as Text, timestamps as UTC), so the same models run on
SQLite and PostgreSQL. Only ``Branch.head_snapshot_id`` is ever updated; every other row is
written once.
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, Column, DateTime, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

from spark_runtime import genome_codec

RATING_KINDS = ("score", "clear", "pick", "unpick", "pair")


class JSONText(TypeDecorator):
    """A JSON value stored as canonical text: portable, and equal values give equal text."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> str | None:
        if value is None:
            return None
        return genome_codec.canonical_json(value)

    def process_result_value(self, value: str | None, dialect: Any) -> Any:
        return None if value is None else json.loads(value)


class UTCDateTime(TypeDecorator):
    """Timestamps stored as naive UTC and read back as aware UTC on every backend."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def new_id(n_hex: int = 12) -> str:
    """A short random hex id."""
    return secrets.token_hex(n_hex // 2)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _json(nullable: bool = False) -> Any:
    return Field(sa_column=Column(JSONText, nullable=nullable))


def _created() -> Any:
    return Field(default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False))


def _fk(target: str, *, nullable: bool, index: bool = False, alter_name: str | None = None) -> Any:
    # alter_name (use_alter) breaks the branch <-> snapshot cycle for backends that create
    # tables in dependency order.
    fk = ForeignKey(target, use_alter=alter_name is not None, name=alter_name)
    return Field(sa_column=Column(String(64), fk, nullable=nullable, index=index))


class Run(SQLModel, table=True):
    """One evolution run: a generator kind and config, population size, image size, seed."""

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    name: str = Field(sa_column=Column(String(200), unique=True, nullable=False))
    generator: str = Field(max_length=100)
    target: str = Field(max_length=300)
    generator_config: dict[str, Any] = _json()
    population_size: int
    size: int
    seed: int = Field(sa_column=Column(BigInteger, nullable=False))
    settings: dict[str, Any] = _json()
    created_at: datetime = _created()


class Branch(SQLModel, table=True):
    """A named line of evolution; its head is the only mutable pointer in the history."""

    __table_args__ = (UniqueConstraint("run_id", "name", name="uq_branch_run_name"),)

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    run_id: str = Field(foreign_key="run.id", index=True, max_length=32)
    name: str = Field(max_length=200)
    head_snapshot_id: str | None = _fk("snapshot.id", nullable=True, alter_name="fk_branch_head")
    forked_from_snapshot_id: str | None = _fk(
        "snapshot.id", nullable=True, alter_name="fk_branch_forked_from"
    )
    created_at: datetime = _created()


class Snapshot(SQLModel, table=True):
    """One generation, immutable once written.

    ``population``, ``images`` and ``thumbs`` are parallel lists (display order) of individual
    ids and object sha256s. ``skip_id`` points at an older ancestor (see ``skiplist``) so any
    generation of a branch is found in O(log n) row fetches.
    """

    id: str = Field(default_factory=lambda: new_id(16), primary_key=True, max_length=32)
    run_id: str = Field(foreign_key="run.id", index=True, max_length=32)
    branch_id: str = Field(foreign_key="branch.id", max_length=32)
    parent_id: str | None = _fk("snapshot.id", nullable=True, index=True)
    skip_id: str | None = _fk("snapshot.id", nullable=True)
    generation: int
    population: list[str] = _json()
    images: list[str] = _json()
    thumbs: list[str] = _json()
    rng_state: dict[str, Any] = _json()
    settings: dict[str, Any] = _json()
    consumed_ratings: list[int] = _json()
    generator_config: dict[str, Any] = _json()
    created_at: datetime = _created()


class Individual(SQLModel, table=True):
    """A genome, shared by every run and branch that produced it: its id is its content hash.

    The first commit that stores a genome records its parents; a later identical genome with
    other parents reuses the row.
    """

    id: str = Field(primary_key=True, max_length=64)
    genome_json: str = Field(sa_column=Column(Text, nullable=False))
    tensors_hash: str | None = Field(default=None, max_length=64)
    parents: list[str] = _json()
    created_at: datetime = _created()


class Rating(SQLModel, table=True):
    """An append-only rating event; undo is a later event, never a deletion.

    Kinds: ``score`` (value 0..5), ``clear`` (withdraws the score), ``pick`` / ``unpick``, and
    ``pair``: a comparison of ``position`` with ``other_position`` whose value is 1.0 when
    ``position`` is preferred, 0.5 when both are equally good, 0.0 when both are bad.
    """

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(foreign_key="run.id", max_length=32)
    snapshot_id: str = Field(foreign_key="snapshot.id", index=True, max_length=32)
    position: int
    individual_id: str = Field(foreign_key="individual.id", max_length=64)
    session: str = Field(max_length=200)
    kind: str = Field(max_length=16)
    value: float | None = None
    other_position: int | None = None
    created_at: datetime = _created()
