"""Writing a generation in two steps, so that the write lock is held for four statements.

``prepare`` does everything that can be checked ahead, in a read transaction: the branch and
its parent snapshot, the consumed ratings, which genomes and parents are stored, and the
skip pointer. None of it can go stale in a way that matters before the write: snapshots,
individuals and ratings are never updated or deleted, and the one mutable row, the branch
head, is re-checked by the compare-and-set that is the commit point. ``write`` is then one
short transaction: insert the new genomes (skipping any that another writer stored in the
meantime), insert the snapshot, move the head.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from sqlalchemy import Connection, bindparam, insert, update
from sqlalchemy.dialects import postgresql, sqlite

from spark_runtime.store import queries as q
from spark_runtime.store.checks import PreparedIndividual
from spark_runtime.store.errors import StoreError, head_moved
from spark_runtime.store.models import Branch, Individual, Snapshot, utcnow
from spark_runtime.store.skiplist import skip_generation, walk_to


@dataclass(frozen=True)
class PreparedGeneration:
    """A generation checked against the store and encoded, ready for ``Store.commit_generation``.

    Made by ``Store.prepare_generation``; valid for the branch, parent, generation and
    consumed ratings it was prepared for.
    """

    branch_id: str
    branch_name: str
    run_id: str
    parent_id: str | None
    generation: int
    skip_id: str | None
    consumed: tuple[int, ...]
    individuals: tuple[PreparedIndividual, ...]
    stored: frozenset[str]  # individual ids already in the store when prepared

    def check_matches(self, branch_id: str, parent_id: str | None, generation: int, consumed: Sequence[int]) -> None:
        if (branch_id, parent_id, generation, tuple(consumed)) != (
            self.branch_id,
            self.parent_id,
            self.generation,
            self.consumed,
        ):
            raise StoreError("the prepared generation was made for another branch, parent or set of ratings")


def prepare(
    s: Connection,
    *,
    branch_id: str,
    parent_id: str | None,
    generation: int,
    individuals: Sequence[PreparedIndividual],
    consumed: Sequence[int],
    nodes: q.SkipNodes,
) -> PreparedGeneration:
    """Every check that needs no lock, in one read transaction."""
    fetch = partial(nodes.get, s)
    branch = q.branch_row(s, branch_id)
    parent = q.check_parent(branch, parent_id, generation, fetch)
    q.check_ratings_exist(s, branch.run_id, list(consumed))
    ids = {p.id for p in individuals}
    wanted = {pid for p in individuals for pid in p.parents} - ids
    stored = q.existing_individual_ids(s, ids | wanted)
    if wanted - stored:
        raise StoreError(f"parent individual {sorted(wanted - stored)[0]!r} is not stored")
    skip_id = None
    if parent is not None:
        skip_id = walk_to(parent, skip_generation(generation), fetch).id
    return PreparedGeneration(
        branch_id=branch_id,
        branch_name=branch.name,
        run_id=branch.run_id,
        parent_id=parent_id,
        generation=generation,
        skip_id=skip_id,
        consumed=tuple(consumed),
        individuals=tuple(individuals),
        stored=frozenset(stored & ids),
    )


def write(conn: Connection, prepared: PreparedGeneration, snapshot: Snapshot, tensors: dict[str, str]) -> None:
    """Insert the new genomes and the snapshot and move the head, inside a write transaction.

    Raises:
        StoreError: the branch head is no longer the prepared parent (nothing is written).
    """
    now = utcnow()
    rows: dict[str, dict[str, Any]] = {}
    for p in prepared.individuals:
        if p.id not in prepared.stored and p.id not in rows:
            rows[p.id] = {
                "id": p.id,
                "genome_json": p.genome_json,
                "tensors_hash": tensors.get(p.id),
                "parents": p.parents,
                "created_at": now,
            }
    if rows:
        conn.execute(_insert_new(conn.dialect.name), list(rows.values()))
    conn.execute(_INSERT_SNAPSHOT, {c.name: getattr(snapshot, c.name) for c in _SNAPSHOT.columns})
    # The commit point: only lands if nobody moved the head since it was read.
    head_move = _MOVE_ROOT_HEAD if prepared.parent_id is None else _MOVE_HEAD
    moved = conn.execute(head_move, {"branch": prepared.branch_id, "parent": prepared.parent_id, "snapshot": snapshot.id})
    if moved.rowcount != 1:
        raise head_moved(prepared.branch_name)


# Built once, executed on the connection: Core statements with bound parameters hit the
# compiled cache at once, where the ORM and ``.values()`` rebuild them on every commit.
_SNAPSHOT = Snapshot.__table__
_BRANCH = Branch.__table__
_INSERT_SNAPSHOT = insert(_SNAPSHOT)
_MOVE_HEAD = (
    update(_BRANCH)
    .where(_BRANCH.c.id == bindparam("branch"), _BRANCH.c.head_snapshot_id == bindparam("parent"))
    .values(head_snapshot_id=bindparam("snapshot"))
)
_MOVE_ROOT_HEAD = (
    update(_BRANCH)
    .where(_BRANCH.c.id == bindparam("branch"), _BRANCH.c.head_snapshot_id.is_(None))
    .values(head_snapshot_id=bindparam("snapshot"))
)
_INSERT_NEW = {
    name: dialect.insert(Individual.__table__).on_conflict_do_nothing(index_elements=["id"])
    for name, dialect in (("postgresql", postgresql), ("sqlite", sqlite))
}


def _insert_new(dialect: str) -> Any:
    """INSERT that skips rows whose id is already there (another writer stored the genome)."""
    return _INSERT_NEW["postgresql" if dialect == "postgresql" else "sqlite"]
