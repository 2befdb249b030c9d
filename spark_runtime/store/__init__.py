"""The snapshot store: runs, branches, immutable snapshots, ratings and content-addressed objects.

``Store(root)`` opens (or creates) ``root/imagery.db`` and ``root/objects/``:

- runs and branches: ``create_run``, ``get_run``, ``list_runs``, ``get_branch``,
  ``get_branch_by_id``, ``list_branches``, ``fork`` (one row, constant time), ``set_head``;
- generations: ``commit_generation`` (objects first, then one transaction whose branch-head
  compare-and-set is the commit point), ``get_snapshot``, ``snapshot_at`` (O(log n) via skip
  pointers), ``history``;
- individuals: ``genomes``, ``get_individual``, ``lineage``;
- ratings (append-only events): ``add_ratings``, ``ratings``, ``current_scores``,
  ``current_picks``, ``pairs``;
- ``gc``: removes object files no branch head can reach.

Every error is a ``StoreError`` with a one-line message, raised before anything changes.
"""

from __future__ import annotations

from spark_runtime.store.collect import GcReport
from spark_runtime.store.errors import StoreError
from spark_runtime.store.models import Branch, Individual, Rating, Run, Snapshot
from spark_runtime.store.objects import ObjectStore
from spark_runtime.store.ratings import (
    PAIR_BOTH_BAD,
    PAIR_BOTH_GOOD,
    PAIR_PREFERRED,
    PairOutcome,
    RatingInput,
)
from spark_runtime.store.store import Store

__all__ = [
    "PAIR_BOTH_BAD",
    "PAIR_BOTH_GOOD",
    "PAIR_PREFERRED",
    "Branch",
    "GcReport",
    "Individual",
    "ObjectStore",
    "PairOutcome",
    "Rating",
    "RatingInput",
    "Run",
    "Snapshot",
    "Store",
    "StoreError",
]
