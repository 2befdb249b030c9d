"""The store facade: runs, branches, immutable snapshots, individuals, ratings and objects.

Write order for a generation: object files first, then one DB transaction that inserts the
individuals and the snapshot and moves the branch head (compare-and-set). The head move is the
commit point, so a crash at any instant leaves the store as it was before or after; objects
written by a commit that never landed are garbage for ``gc``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, select
from sqlalchemy import exc as sa_exc
from sqlmodel import Session

from spark_runtime import genome_codec
from spark_runtime.store import checks, collect, generations, migrations
from spark_runtime.store import queries as q
from spark_runtime.store.engine import default_url, make_engines, safe_url
from spark_runtime.store.errors import StoreError
from spark_runtime.store.generations import PreparedGeneration
from spark_runtime.store.models import Branch, Individual, Rating, Run, Snapshot
from spark_runtime.store.objects import ObjectStore
from spark_runtime.store.ratings import (
    PairOutcome,
    RatingInput,
    fold_picks,
    fold_scores,
    normalise,
    pair_outcomes,
)

_RATING = Rating.__table__
_HEAD_RATINGS = select(_RATING).where(_RATING.c.snapshot_id == bindparam("sid")).order_by(_RATING.c.id)
# Snapshot ids bound in one IN (...) list, as everywhere in the store.
_IDS_PER_QUERY = collect.CHUNK


def _one_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.splitlines()[0] if text else type(exc).__name__


@contextmanager
def _store_errors() -> Iterator[None]:
    """Database errors as one-line ``StoreError``s, whether a session or a connection ran them."""
    try:
        yield
    except sa_exc.IntegrityError as exc:
        raise StoreError(f"conflicting write: {_one_line(exc)}") from None
    except sa_exc.OperationalError as exc:
        raise StoreError(f"database error: {_one_line(exc)}") from None


class Store:
    """Snapshots, branches and content-addressed objects under one folder.

    Args:
        root: local folder holding ``imagery.db`` (the default SQLite database) and
            ``objects/`` (the default object store).
        db_url: an SQLAlchemy URL to use instead of the SQLite file (e.g. PostgreSQL).
        objects_url: where the objects go instead of ``objects/``: a folder, or an fsspec URL
            (shared storage for a cluster; ``memory://`` in tests).
        storage_options: fsspec options for ``objects_url`` (credentials, endpoints).

    Raises:
        StoreError: a bad or unreachable database or object store, one line; nothing is
            created then.
    """

    def __init__(
        self,
        root: str | Path,
        db_url: str | None = None,
        objects_url: str | Path | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        if "://" in str(root):
            raise StoreError(
                f"the store folder must be a local path, got {str(root)!r}: "
                "put the objects behind a URL with --objects (objects_url)"
            )
        self.root = Path(root)
        url = db_url or default_url(self.root)
        self._engine, self._write_engine = make_engines(url)  # a bad URL fails before any mkdir
        self._skip_nodes = q.SkipNodes()
        try:
            # Every check before anything is made: a bad objects root fails before the
            # folder or the database is created, and a bad database before the objects root.
            if objects_url:
                ObjectStore.check(objects_url, storage_options)
            if not db_url:
                try:
                    self.root.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise StoreError(f"cannot make the store folder {str(root)!r}: {exc.strerror or exc}") from None
            # A new database is created, and an older one brought up to date, through the
            # migrations (one locked transaction, so stores opened at once do not race).
            try:
                with self._engine.connect() as conn:
                    revision = migrations.revision_of(conn)
            except sa_exc.SQLAlchemyError as exc:
                raise StoreError(f"cannot open database {safe_url(url)}: {_one_line(exc)}") from None
            if revision != migrations.head():
                migrations.upgrade(url)
            self.objects = ObjectStore(objects_url or self.root / "objects", storage_options)
        except BaseException:
            self._engine.dispose()
            raise

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _session(self, write: bool = False) -> Iterator[Session]:
        with _store_errors(), Session(self._engine_for(write), expire_on_commit=False) as session, session.begin():
            yield session

    @contextmanager
    def _connection(self, write: bool = False) -> Iterator[Connection]:
        """A Core transaction, for the reads and writes every generation makes: no ORM
        session and no ORM objects, which cost more than those statements themselves."""
        with _store_errors(), self._engine_for(write).begin() as conn:
            yield conn

    def _engine_for(self, write: bool) -> Engine:
        return self._write_engine if write else self._engine

    # Runs and branches

    def create_run(
        self,
        *,
        name: str,
        generator: str,
        target: str,
        generator_config: dict[str, Any],
        population_size: int,
        size: int,
        seed: int,
        settings: dict[str, Any] | None = None,
    ) -> Run:
        """Create a run and its empty ``main`` branch."""
        name = checks.name(name, "run")
        generator = checks.name(generator, "generator")
        if not isinstance(target, str) or ":" not in target:
            raise StoreError(f"target must look like 'package.module:Class', got {target!r}")
        run = Run(
            name=name,
            generator=generator,
            target=target,
            generator_config=checks.json_value(generator_config, "generator_config"),
            population_size=checks.integer(population_size, "population_size", 1),
            size=checks.integer(size, "size", 1),
            seed=checks.integer(seed, "seed"),
            settings=checks.json_value(settings or {}, "settings"),
        )
        with self._session(write=True) as s:
            if s.scalars(select(Run.id).where(Run.name == name)).first() is not None:
                raise StoreError(f"run {name!r} already exists")
            s.add(run)
            s.flush()
            s.add(Branch(run_id=run.id, name="main"))
        return run

    def delete_empty_run(self, run_id: str) -> None:
        """Remove a run that never committed a generation (its first render failed).

        Only a run with no snapshots can go, so no history is ever lost this way.
        """
        with self._session(write=True) as s:
            if s.scalars(select(Snapshot.id).where(Snapshot.run_id == run_id)).first() is not None:
                raise StoreError("run has generations; runs with history are never deleted")
            for branch in s.scalars(select(Branch).where(Branch.run_id == run_id)):
                s.delete(branch)
            s.flush()
            run = s.get(Run, run_id)
            if run is not None:
                s.delete(run)

    def get_run(self, ref: str) -> Run:
        """A run by id or by name."""
        with self._session() as s:
            return q.run(s, ref)

    def list_runs(self) -> list[Run]:
        with self._session() as s:
            return list(s.scalars(select(Run).order_by(Run.created_at, Run.id)))

    def get_branch(self, run_id: str, name: str = "main") -> Branch:
        """A branch by run (id or name) and branch name."""
        with self._session() as s:
            run = q.run(s, run_id)
            stmt = select(Branch).where(Branch.run_id == run.id, Branch.name == name)
            branch = s.scalars(stmt).first()
            if branch is None:
                raise StoreError(f"unknown branch {name!r} in run {run.name!r}")
            return branch

    def get_branch_by_id(self, branch_id: str) -> Branch:
        with self._session() as s:
            return q.branch(s, branch_id)

    def list_branches(self, run_id: str) -> list[Branch]:
        with self._session() as s:
            run = q.run(s, run_id)
            stmt = select(Branch).where(Branch.run_id == run.id)
            return list(s.scalars(stmt.order_by(Branch.created_at, Branch.name)))

    def fork(self, snapshot_id: str, name: str) -> Branch:
        """A new branch whose head is ``snapshot_id``: one row, nothing copied."""
        name = checks.name(name, "branch")
        with self._session(write=True) as s:
            snap = q.snapshot(s, snapshot_id)
            q.check_branch_free(s, snap.run_id, name)
            branch = Branch(
                run_id=snap.run_id,
                name=name,
                head_snapshot_id=snap.id,
                forked_from_snapshot_id=snap.id,
            )
            s.add(branch)
        return branch

    def set_head(self, branch_id: str, snapshot_id: str) -> Branch:
        """Point a branch at another snapshot of the same run (undo, redo, reset)."""
        with self._session(write=True) as s:
            branch = q.branch(s, branch_id)
            snap = q.snapshot(s, snapshot_id)
            if snap.run_id != branch.run_id:
                raise StoreError(f"snapshot {snapshot_id!r} belongs to another run")
            branch.head_snapshot_id = snap.id
        return branch

    # Snapshots

    def prepare_generation(
        self,
        *,
        branch_id: str,
        parent_id: str | None,
        generation: int,
        individuals: Sequence[tuple[dict[str, Any], Sequence[str]]],
        consumed_ratings: Sequence[int],
    ) -> PreparedGeneration:
        """Check and encode a generation ahead of its commit, without taking the write lock.

        A session runs this once its images are rendered and staged, before they are
        published: a stale head fails here and the images are discarded unseen, and
        ``commit_generation`` only has four statements left to run under the lock.

        Raises:
            StoreError: bad input, a stale branch head, or missing parents or ratings.
        """
        prepared = checks.individuals(individuals)
        generation = checks.integer(generation, "generation", 0)
        consumed = [checks.integer(r, "consumed rating id") for r in consumed_ratings]
        with self._connection() as conn:
            return generations.prepare(
                conn,
                branch_id=branch_id,
                parent_id=parent_id,
                generation=generation,
                individuals=prepared,
                consumed=consumed,
                nodes=self._skip_nodes,
            )

    def commit_generation(
        self,
        *,
        branch_id: str,
        parent_id: str | None,
        generation: int,
        individuals: Sequence[tuple[dict[str, Any], Sequence[str]]] | PreparedGeneration,
        images: Sequence[bytes | str],
        thumbs: Sequence[bytes | str],
        rng_state: dict[str, Any],
        settings: dict[str, Any],
        consumed_ratings: Sequence[int],
        generator_config: dict[str, Any],
    ) -> Snapshot:
        """Store one generation and move the branch head to it.

        ``individuals`` are ``(genome, parent_ids)`` pairs, or what ``prepare_generation``
        made of them for the same branch, parent, generation and ratings; ``images`` and
        ``thumbs`` hold bytes to store or the sha256 of objects stored already.

        Raises:
            StoreError: bad input, or the branch head is no longer ``parent_id``.
        """
        if isinstance(individuals, PreparedGeneration):
            prepared = individuals
            prepared.check_matches(branch_id, parent_id, generation, consumed_ratings)
        else:
            # Also fails early on a stale head, before objects are written that would only
            # be garbage.
            prepared = self.prepare_generation(
                branch_id=branch_id,
                parent_id=parent_id,
                generation=generation,
                individuals=individuals,
                consumed_ratings=consumed_ratings,
            )
        count = len(prepared.individuals)
        image_blobs = checks.blobs(images, "images", count)
        thumb_blobs = checks.blobs(thumbs, "thumbs", count)
        snapshot = Snapshot(
            run_id=prepared.run_id,
            branch_id=branch_id,
            parent_id=parent_id,
            skip_id=prepared.skip_id,
            generation=prepared.generation,
            population=[p.id for p in prepared.individuals],
            rng_state=checks.json_value(rng_state, "rng_state"),
            settings=checks.json_value(settings, "settings"),
            consumed_ratings=list(prepared.consumed),
            generator_config=checks.json_value(generator_config, "generator_config"),
        )
        # Only new rows take a tensors hash: a stored individual's tensors are stored already.
        with_tensors = {p.id: p.tensors for p in prepared.individuals if p.tensors and p.id not in prepared.stored}
        fresh = [e for e in (*image_blobs, *thumb_blobs) if isinstance(e, bytes)]
        # Objects given as bytes and genome tensors in one batch: one publish here. It costs
        # nothing when there are none (a session stages its images itself and passes shas);
        # a diffusion run's tensors make a second publish after the session's.
        staged = self.objects.stage([*fresh, *with_tensors.values()])
        try:
            stored, known = iter(staged.shas), set(staged.shas)
            snapshot.images = self._resolve_objects(image_blobs, stored, known, "images")
            snapshot.thumbs = self._resolve_objects(thumb_blobs, stored, known, "thumbs")
            tensors = dict(zip(with_tensors, stored, strict=True))
        except BaseException:
            self.objects.discard([staged])
            raise
        self.objects.publish([staged])
        with self._connection(write=True) as conn:
            generations.write(conn, prepared, snapshot, tensors)
        self._skip_nodes.add(q.SkipNode(snapshot.id, snapshot.generation, snapshot.parent_id, snapshot.skip_id))
        return snapshot

    def _resolve_objects(
        self, entries: Sequence[bytes | str], stored: Iterator[str], staged: set[str], what: str
    ) -> list[str]:
        """The object id of each entry: byte entries take the next of ``stored`` (their staged
        sha256s, in order); hash entries must name objects already stored or staged."""
        out = []
        for entry in entries:
            if isinstance(entry, bytes):
                out.append(next(stored))
            elif entry in staged or self.objects.exists(entry):
                out.append(entry)
            else:
                raise StoreError(f"{what}: object {entry[:12]}... is not in the store")
        return out

    def get_snapshot(self, snapshot_id: str) -> Snapshot:
        with self._session() as s:
            return q.snapshot(s, snapshot_id)

    def snapshot_at(self, branch: Branch | str, generation: int) -> Snapshot:
        """The ancestor of the branch head at ``generation``, in O(log n) row fetches."""
        with self._session() as s:
            row = q.branch(s, branch if isinstance(branch, str) else branch.id)
            head = q.head(s, row)
            generation = checks.integer(generation, "generation")
            if not 0 <= generation <= head.generation:
                raise StoreError(
                    f"generation {generation} is out of range: branch {row.name!r} has "
                    f"generations 0..{head.generation}"
                )
            return q.ancestor(s, head, generation, partial(self._skip_nodes.get, s))

    def history(self, branch: Branch | str) -> list[Snapshot]:
        """Every snapshot from the root to the branch head, oldest first."""
        with self._session() as s:
            row = q.branch(s, branch if isinstance(branch, str) else branch.id)
            if row.head_snapshot_id is None:
                return []
            snap = Snapshot.__table__
            chain = (
                select(snap.c.id, snap.c.parent_id)
                .where(snap.c.id == row.head_snapshot_id)
                .cte("chain", recursive=True)
            )
            parent = select(snap.c.id, snap.c.parent_id).where(snap.c.id == chain.c.parent_id)
            chain = chain.union_all(parent)
            stmt = select(Snapshot).where(Snapshot.id.in_(select(chain.c.id)))
            return list(s.scalars(stmt.order_by(Snapshot.generation)))

    # Individuals

    def genomes(self, snapshot: Snapshot | str) -> list[dict[str, Any]]:
        """The decoded genomes of a snapshot's population, in display order."""
        return [genome for _, genome, _ in self.population(snapshot)]

    def population(self, snapshot: Snapshot | str) -> list[tuple[str, dict[str, Any], list[str]]]:
        """``(individual id, decoded genome, parent ids)`` per position, in display order,
        from one read."""
        with self._session() as s:
            # A snapshot in hand already holds its population (snapshots never change).
            population = q.members(s, snapshot).population if isinstance(snapshot, str) else snapshot.population
            rows = q.individuals(s, population)
        blobs = {
            row.tensors_hash: self.objects.get(row.tensors_hash)
            for row in rows.values()
            if row.tensors_hash
        }
        return [
            (i, genome_codec.decode(rows[i].genome_json, blobs.get(rows[i].tensors_hash or "")), list(rows[i].parents))
            for i in population
        ]

    def get_individual(self, individual_id: str) -> Individual:
        with self._session() as s:
            row = s.get(Individual, individual_id)
            if row is None:
                raise StoreError(f"unknown individual {individual_id!r}")
            return row

    def lineage(self, individual_id: str, max_depth: int = 8) -> list[list[str]]:
        """Ancestor ids by generation: ``[parents, grandparents, ...]``, each id at its
        nearest depth only; stops early when the ancestry runs out."""
        max_depth = checks.integer(max_depth, "max_depth", 0)
        levels: list[list[str]] = []
        with self._session() as s:
            if s.get(Individual, individual_id) is None:
                raise StoreError(f"unknown individual {individual_id!r}")
            frontier = [individual_id]
            seen = set(frontier)
            for _ in range(max_depth):
                rows = q.individuals(s, frontier, strict=False)
                parents = [p for i in frontier if i in rows for p in rows[i].parents]
                frontier = [p for p in dict.fromkeys(parents) if p not in seen]
                if not frontier:
                    break
                seen.update(frontier)
                levels.append(frontier)
        return levels

    # Ratings

    def add_ratings(
        self, snapshot_id: str, events: Sequence[RatingInput], session: str
    ) -> list[Rating]:
        """Append rating events to a snapshot, all or none."""
        session = checks.name(session, "session")
        with self._session(write=True) as s:
            snap = q.members(s, snapshot_id)
            rows = [
                Rating(
                    run_id=snap.run_id,
                    snapshot_id=snapshot_id,
                    position=ev.position,
                    individual_id=snap.population[ev.position],
                    session=session,
                    kind=ev.kind,
                    value=ev.value,
                    other_position=ev.other_position,
                )
                for ev in normalise(events, len(snap.population))
            ]
            s.add_all(rows)
            s.flush()
        return rows

    def ratings(self, snapshot_id: str, session: str | None = None) -> list[Rating]:
        """The rating events of a snapshot (optionally one session's), oldest first."""
        with self._session() as s:
            q.members(s, snapshot_id)
            stmt = select(Rating).where(Rating.snapshot_id == snapshot_id)
            if session is not None:
                stmt = stmt.where(Rating.session == session)
            return list(s.scalars(stmt.order_by(Rating.id)))

    def ratings_of(self, snapshot_ids: Sequence[str]) -> dict[str, list[Rating]]:
        """The rating events of many snapshots at once (oldest first for each), by snapshot
        id; one read however long the branch, where ``ratings`` per snapshot would be one
        query per generation. Unknown ids just have no events."""
        found: dict[str, list[Rating]] = {sid: [] for sid in snapshot_ids}
        wanted = list(found)
        with self._session() as s:
            for part in collect.chunks(wanted, _IDS_PER_QUERY):
                stmt = select(Rating).where(Rating.snapshot_id.in_(part)).order_by(Rating.id)
                for row in s.scalars(stmt):
                    found[row.snapshot_id].append(row)
        return found

    def head_ratings(self, branch_id: str) -> tuple[Branch, list[Any]]:
        """A branch and the rating events of its head (none without a head), in one read.

        The events come as read-only rows with the ``Rating`` columns as attributes: every
        generation reads them, and making ORM objects of them cost more than the query.
        """
        with self._connection() as conn:
            row = q.branch_row(conn, branch_id)
            events = [] if row.head_snapshot_id is None else conn.execute(_HEAD_RATINGS, {"sid": row.head_snapshot_id}).all()
        return Branch(**row._mapping), events

    def current_scores(self, snapshot_id: str, session: str | None = None) -> dict[int, float]:
        """Score per position: latest per session, averaged across sessions."""
        return fold_scores(self.ratings(snapshot_id, session))

    def current_picks(self, snapshot_id: str, session: str | None = None) -> set[int]:
        """Positions currently picked (by any session, unless one is named)."""
        return fold_picks(self.ratings(snapshot_id, session))

    def pairs(self, snapshot_id: str, session: str | None = None) -> list[PairOutcome]:
        """Pairwise comparisons made on a snapshot, oldest first."""
        return pair_outcomes(self.ratings(snapshot_id, session))

    # Garbage collection

    def gc(self, grace_seconds: float = 0) -> collect.GcReport:
        """Delete objects no branch head can reach that are older than ``grace_seconds``.

        Use a grace period of minutes while other processes may be committing: their objects
        are written before the rows that reference them.
        """
        with self._session() as s:
            marked = collect.mark(s)
        return collect.sweep(self.objects, marked, grace_seconds)
