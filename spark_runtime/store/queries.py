"""Row lookups and checks inside an open session, shared by the store facade.

Each raises a one-line StoreError when a referenced row is missing or a write would be
inconsistent, before anything is written.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from sqlalchemy import Connection, Row, bindparam, select
from sqlmodel import Session

from spark_runtime.store.collect import chunks
from spark_runtime.store.errors import StoreError, head_moved
from spark_runtime.store.models import Branch, Individual, Rating, Run, Snapshot
from spark_runtime.store.skiplist import walk_to


def run(s: Session, ref: str) -> Run:
    run = s.get(Run, ref) if isinstance(ref, str) else None
    if run is None and isinstance(ref, str):
        run = s.scalars(select(Run).where(Run.name == ref)).first()
    if run is None:
        raise StoreError(f"unknown run {ref!r}")
    return run


def branch(s: Session, branch_id: str) -> Branch:
    branch = s.get(Branch, branch_id) if isinstance(branch_id, str) else None
    if branch is None:
        raise StoreError(f"unknown branch id {branch_id!r}")
    return branch


_BRANCH_ROW = select(Branch.__table__).where(Branch.__table__.c.id == bindparam("bid"))


def branch_row(conn: Connection, branch_id: str) -> Row:
    """A branch's columns as a read-only row (``id``, ``run_id``, ``name``,
    ``head_snapshot_id``...): the hot paths read it on a Core connection, where building the
    ORM object and its session would cost more than the query."""
    row = conn.execute(_BRANCH_ROW, {"bid": branch_id}).first() if isinstance(branch_id, str) else None
    if row is None:
        raise StoreError(f"unknown branch id {branch_id!r}")
    return row


def snapshot(s: Session, snapshot_id: str) -> Snapshot:
    snap = s.get(Snapshot, snapshot_id) if isinstance(snapshot_id, str) else None
    if snap is None:
        raise StoreError(f"unknown snapshot {snapshot_id!r}")
    return snap


_SNAP = Snapshot.__table__
# Core, not ORM, and built once: a hop is then a single narrow indexed lookup.
_SKIP_NODE = select(_SNAP.c.id, _SNAP.c.generation, _SNAP.c.parent_id, _SNAP.c.skip_id).where(
    _SNAP.c.id == bindparam("sid")
)


def skip_node(s: Session | Connection, snapshot_id: str) -> Row:
    """Just the columns a skip-pointer walk needs: one narrow row fetch per hop."""
    row = s.execute(_SKIP_NODE, {"sid": snapshot_id}).first()
    if row is None:
        raise StoreError(f"unknown snapshot {snapshot_id!r}")
    return row


_MEMBERS = select(_SNAP.c.run_id, _SNAP.c.population).where(_SNAP.c.id == bindparam("sid"))


def members(s: Session | Connection, snapshot_id: str) -> Row:
    """A snapshot's ``run_id`` and ``population`` and nothing else: rating or reading a
    generation has no use for its settings, which hold a batch run's fitness state (a
    novelty archive, for one) and can cost more to parse than the rest."""
    row = s.execute(_MEMBERS, {"sid": snapshot_id}).first() if isinstance(snapshot_id, str) else None
    if row is None:
        raise StoreError(f"unknown snapshot {snapshot_id!r}")
    return row


class SkipNode(NamedTuple):
    id: str
    generation: int
    parent_id: str | None
    skip_id: str | None


class SkipNodes:
    """The skip-walk columns of recent snapshots, kept in memory.

    Safe to cache for good: a snapshot row never changes and is never deleted once
    committed, and only committed rows enter (read back, or added after a commit lands).
    """

    def __init__(self, limit: int = 4096) -> None:
        self._rows: OrderedDict[str, SkipNode] = OrderedDict()
        self._limit = limit
        self._lock = threading.Lock()

    def get(self, s: Session | Connection, snapshot_id: str) -> SkipNode:
        with self._lock:
            node = self._rows.get(snapshot_id)
        if node is None:
            node = SkipNode(*skip_node(s, snapshot_id))
            self.add(node)
        return node

    def add(self, node: SkipNode) -> None:
        with self._lock:
            self._rows[node.id] = node
            self._rows.move_to_end(node.id)
            while len(self._rows) > self._limit:
                self._rows.popitem(last=False)


def ancestor(s: Session, start: Snapshot, generation: int, fetch: Callable[[str], Any]) -> Snapshot:
    """The full row of ``start``'s ancestor at ``generation`` (O(log n) narrow fetches).
    ``fetch`` loads a snapshot's skip-walk row by id (``SkipNodes.get``, a cache)."""
    if generation == start.generation:
        return start
    return snapshot(s, walk_to(start, generation, fetch).id)


def head(s: Session, branch: Branch) -> Snapshot:
    if branch.head_snapshot_id is None:
        raise StoreError(f"branch {branch.name!r} has no generations yet")
    return snapshot(s, branch.head_snapshot_id)


def check_branch_free(s: Session, run_id: str, name: str) -> None:
    stmt = select(Branch.id).where(Branch.run_id == run_id, Branch.name == name)
    if s.scalars(stmt).first() is not None:
        raise StoreError(f"branch {name!r} already exists in this run")


def check_parent(
    branch: Branch | Row,
    parent_id: str | None,
    generation: int,
    fetch: Callable[[str], Any],
) -> Any:
    """The parent's skip-walk row (id, generation, parent_id, skip_id), after checking that the
    branch head is still ``parent_id`` and that ``generation`` follows it; None for a root.
    ``fetch`` loads that row by id (a cache)."""
    if branch.head_snapshot_id != parent_id:
        raise head_moved(branch.name)
    if parent_id is None:
        if generation != 0:
            raise StoreError(f"generation {generation} needs a parent snapshot")
        return None
    parent = fetch(parent_id)
    if generation != parent.generation + 1:
        raise StoreError(f"generation {generation} cannot follow generation {parent.generation}")
    return parent


def check_ratings_exist(s: Session | Connection, run_id: str, ids: list[int]) -> None:
    if not ids:
        return
    found = set(
        s.scalars(select(Rating.id).where(Rating.run_id == run_id, Rating.id.in_(set(ids))))
    )
    missing = sorted(set(ids) - found)
    if missing:
        raise StoreError(f"consumed rating {missing[0]} does not exist in this run")


def individuals(s: Session, ids: Sequence[str], strict: bool = True) -> dict[str, Individual]:
    rows: dict[str, Individual] = {}
    for part in chunks(sorted(set(ids))):
        rows.update((r.id, r) for r in s.scalars(select(Individual).where(Individual.id.in_(part))))
    missing = [i for i in ids if i not in rows]
    if strict and missing:
        raise StoreError(f"individual {missing[0]!r} is missing from the store")
    return rows


_INDIVIDUAL = Individual.__table__


def existing_individual_ids(s: Session | Connection, ids: set[str]) -> set[str]:
    """Which of ``ids`` are stored: ids only, no genome text loaded."""
    found: set[str] = set()
    for part in chunks(sorted(ids)):
        found.update(s.scalars(_EXISTING_IDS, {"ids": part}))
    return found


# Built once (an expanding IN): building the statement anew each generation cost more than
# running it.
_EXISTING_IDS = select(_INDIVIDUAL.c.id).where(_INDIVIDUAL.c.id.in_(bindparam("ids", expanding=True)))
