"""Garbage collection of objects: mark from every branch head, sweep unmarked old files.

Only object files are removed, never rows. Snapshots no branch can reach keep their rows
(their history stays inspectable) but may lose their images.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlmodel import Session

from spark_runtime.store.errors import StoreError
from spark_runtime.store.models import Branch, Individual, Snapshot
from spark_runtime.store.objects import ObjectStore

# Stay well below SQLite's limit on bound parameters per statement.
CHUNK = 500


@dataclass(frozen=True)
class GcReport:
    """What a collection did."""

    objects_removed: int
    bytes_freed: int
    objects_kept: int


def chunks(items: Sequence[str], size: int = CHUNK) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def reachable_snapshots(session: Session) -> list[Snapshot]:
    """Every snapshot on the parent chain of some branch head, each once."""
    snap = Snapshot.__table__
    chain = (
        select(snap.c.id, snap.c.parent_id)
        .where(
            snap.c.id.in_(
                select(Branch.head_snapshot_id).where(Branch.head_snapshot_id.is_not(None))
            )
        )
        .cte("chain", recursive=True)
    )
    # UNION (not UNION ALL) drops ancestors already visited from another head.
    chain = chain.union(select(snap.c.id, snap.c.parent_id).where(snap.c.id == chain.c.parent_id))
    stmt = select(Snapshot).where(Snapshot.id.in_(select(chain.c.id)))
    return list(session.scalars(stmt))


def mark(session: Session) -> set[str]:
    """Object ids referenced by reachable snapshots: images, thumbnails, genome tensors."""
    marked: set[str] = set()
    individual_ids: set[str] = set()
    for snapshot in reachable_snapshots(session):
        marked.update(snapshot.images)
        marked.update(snapshot.thumbs)
        individual_ids.update(snapshot.population)
    for part in chunks(sorted(individual_ids)):
        stmt = select(Individual.tensors_hash).where(
            Individual.id.in_(part), Individual.tensors_hash.is_not(None)
        )
        marked.update(session.scalars(stmt))
    return marked


def sweep(objects: ObjectStore, marked: set[str], grace_seconds: float) -> GcReport:
    """Delete objects not in ``marked`` whose mtime is older than ``grace_seconds``."""
    cutoff = time.time() - grace_seconds
    removed = freed = kept = 0
    for sha, mtime in list(objects.iter_objects()):
        if sha in marked or mtime > cutoff:
            kept += 1
            continue
        try:
            size = objects.size(sha)
        except StoreError:  # removed by a concurrent collection
            continue
        if objects.delete(sha):
            removed += 1
            freed += size
    objects.sweep_temp(max(grace_seconds, 3600.0))
    return GcReport(objects_removed=removed, bytes_freed=freed, objects_kept=kept)
