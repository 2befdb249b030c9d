"""A branch's past for the browser: the history strip, lineage, and the export of picks.

Plain functions over the store like ``ui.handlers``: JSON-like input, JSON-like output or a
one-line error before anything changes.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping
from typing import Any

from evolve.export import export_metadata, png_with_metadata
from spark_runtime.store.ratings import fold_picks
from ui.handlers import UIError, Workbench, payload, session_id, text, whole


def history(wb: Workbench, query: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The branch's generations, oldest first, each with its picks (any tab) as thumbnails."""
    query = payload(query)
    run = wb.store.get_run(text(query, "run"))
    branch = wb.store.get_branch(run.id, text(query, "branch", "main"))
    out = []
    snapshots = wb.store.history(branch)
    ratings = wb.store.ratings_of([snap.id for snap in snapshots])  # one read, not one a generation
    for snap in snapshots:
        rows = ratings[snap.id]
        picks = sorted(fold_picks(rows))
        out.append(
            {
                "generation": snap.generation,
                "snapshot": snap.id,
                "picks": [snap.thumbs[p] for p in picks],
                "ratings": len(rows),
            }
        )
    return out


def lineage(wb: Workbench, query: Mapping[str, Any], max_depth: int = 6) -> dict[str, Any]:
    """Ancestors of one candidate, generation by generation, with their thumbnails."""
    query = payload(query)
    snap = wb.store.get_snapshot(text(query, "snapshot"))
    position = whole(query, "position", 0, len(snap.population) - 1)
    individual = snap.population[position]
    depth = min(max_depth, snap.generation)
    thumbs: dict[str, tuple[int, str]] = {}
    walk = snap
    for _ in range(depth):
        if walk.parent_id is None:
            break
        walk = wb.store.get_snapshot(walk.parent_id)
        for i, th in zip(walk.population, walk.thumbs, strict=True):
            thumbs.setdefault(i, (walk.generation, th))
    levels = wb.store.lineage(individual, max_depth=depth)
    return {
        "individual": individual,
        "generation": snap.generation,
        "thumb": snap.thumbs[position],
        "levels": [
            [
                {
                    "id": i,
                    "generation": thumbs.get(i, (None, None))[0],
                    "thumb": thumbs.get(i, (None, None))[1],
                }
                for i in level
            ]
            for level in levels
        ],
    }


def export_picks(wb: Workbench, query: Mapping[str, Any]) -> tuple[str, bytes]:
    """A zip of this tab's picks on the branch, each a PNG carrying its genome and lineage."""
    query = payload(query)
    tab = session_id(query)
    run = wb.store.get_run(text(query, "run"))
    branch = wb.store.get_branch(run.id, text(query, "branch", "main"))
    buffer = io.BytesIO()
    count = 0
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        snapshots = wb.store.history(branch)
        ratings = wb.store.ratings_of([snap.id for snap in snapshots])
        for snap in snapshots:
            picks = sorted(fold_picks([r for r in ratings[snap.id] if r.session == tab]))
            if not picks:
                continue
            genomes = wb.store.genomes(snap)
            for p in picks:
                meta = export_metadata(wb.store, run, branch.name, snap, p, genomes[p])
                data = png_with_metadata(wb.store.objects.get(snap.images[p]), meta)
                zf.writestr(f"{run.name}-{branch.name}-g{snap.generation:04d}-{p:02d}.png", data)
                count += 1
    if not count:
        raise UIError("no picks to export yet: press space on an image to pick it")
    return f"{run.name}-{branch.name}-picks.zip", buffer.getvalue()
