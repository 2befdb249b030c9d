"""The session loop: ask -> render on a spark -> store -> snapshot -> scores -> tell.

A ``Session`` binds one store branch to an engine. It holds no state of its own that matters:
everything needed to make the next generation (population, RNG state, settings) is read back
from the branch head snapshot, so a session can be dropped and reopened at any time, in any
process, and makes the same next generation.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import numpy as np

from evolve.engine import Candidate, Engine, EngineError, EngineSettings, rng_from_state
from evolve.fitness import AutoFitness, fitness_from_events
from imagery import GENERATORS, GeneratorError, check_size
from spark_runtime.image_codec import decode, encode_png, encode_thumb, rgb_pixels
from spark_runtime.spark import InProcessSpark, Spark, build_generator
from spark_runtime.sparks import cores
from spark_runtime.store import RatingInput, Store, StoreError
from spark_runtime.store.objects import StagedObjects

T = TypeVar("T")
# New images of a generation render in this many calls; each finished batch is encoded and
# written while the next renders (see ``_batches``).
RENDER_BATCHES = 3
Progress = Callable[[int, int], None]
# Writer threads encode and stage each rendered batch while the next one renders (the PNG and
# JPEG encoders release the GIL). One per core the render leaves free, two at most: a writer more
# than that takes turns on the render's core and slows the render more than it saves.
# Shared by every session in the process and kept between generations (a thread per
# generation costs more to start and join than the last batch costs to write).
WRITER = ThreadPoolExecutor(max_workers=max(1, min(2, cores() - 1)), thread_name_prefix="store-writer")
# on_image(position, image or None, stored thumbnail sha or None)
OnImage = Callable[[int, Any, str | None], None]
# on_thumb(position, JPEG bytes): a new image's grid thumbnail, the very bytes the commit stores
OnThumb = Callable[[int, bytes], None]


class SessionError(ValueError):
    """A request the session cannot carry out; the message is one line for the user."""


@dataclass(frozen=True)
class RunSpec:
    """What ``imagery new`` asks for.

    ``init_images`` (encoded image bytes, e.g. CPPN renders) seed generation 0 through the
    generator's ``from_image`` (diffusion img2img): a run can start from evolved shapes.
    """

    name: str
    generator: str = "cppn"
    generator_config: dict[str, Any] | None = None
    population: int = 16
    size: int = 256
    seed: int = 1
    settings: dict[str, Any] | None = None
    init_images: tuple[bytes, ...] = ()


def _seeded_population(generator: Any, spec: RunSpec, rng: np.random.Generator) -> list[Candidate] | None:
    """Generation 0 from seed images, cycling through them; None for random genomes."""
    if not spec.init_images:
        return None
    if not hasattr(generator, "from_image"):
        raise SessionError(f"the {spec.generator} generator cannot start from images; use --generator diffusion")
    images = []
    for data in spec.init_images:
        try:
            images.append(decode(data))
        except OSError:
            raise SessionError("a seed image is not a readable image") from None
    genomes = [generator.from_image(images[i % len(images)], rng) for i in range(spec.population)]
    return [Candidate.of(g) for g in genomes]


def generator_target(kind: str) -> str:
    try:
        return GENERATORS[kind]
    except KeyError:
        raise SessionError(f"unknown generator {kind!r}: choose from {', '.join(GENERATORS)}") from None


class Session:
    """One branch of one run, driven through the engine.

    Args:
        store: the snapshot store.
        run_ref: run id or name.
        branch: branch name.
        spark: where images render; the in-process spark by default.
        session_id: tags rating events so two browser tabs never overwrite each other.
    """

    def __init__(
        self,
        store: Store,
        run_ref: str,
        branch: str = "main",
        spark: Spark | None = None,
        session_id: str | None = None,
    ) -> None:
        self.store = store
        self.run = store.get_run(run_ref)
        self.branch = store.get_branch(self.run.id, branch)
        self.session_id = session_id or f"s-{uuid.uuid4().hex[:10]}"
        self._spark = spark
        self._generator: Any | None = None
        # The agent (evolve.agent.Agent) screens bred children when attached; None = off.
        self.agent: Any | None = None
        # (snapshot, candidates) of the generation this session committed last.
        self._last_commit: tuple[Any, list[Candidate]] | None = None

    # --- construction -------------------------------------------------------------------
    @classmethod
    def create(cls, store: Store, spec: RunSpec, spark: Spark | None = None, progress: Progress | None = None) -> Session:
        """Create a run, render generation 0 and commit it; nothing is stored on bad input."""
        target = generator_target(spec.generator)
        try:
            check_size(spec.size)
        except GeneratorError as exc:
            raise SessionError(str(exc)) from None
        if not isinstance(spec.seed, int) or spec.seed < 0:
            raise SessionError(f"seed must be a whole number >= 0, got {spec.seed!r}")
        settings = EngineSettings.from_dict({**(spec.settings or {}), "population_size": spec.population})
        # Build (and so validate) the generator before anything is written.
        generator = build_generator(target, spec.generator_config or {})
        if hasattr(generator, "check_model"):  # cheap file checks: fail before anything is stored
            generator.check_model()
        rng = np.random.Generator(np.random.PCG64(spec.seed))
        engine = Engine(generator, settings, rng, _seeded_population(generator, spec, rng))
        run = store.create_run(
            name=spec.name,
            generator=spec.generator,
            target=target,
            generator_config=generator.config,
            population_size=spec.population,
            size=spec.size,
            seed=spec.seed,
            settings=settings.to_dict(),
        )
        session = cls(store, run.id, spark=spark)
        session._generator = generator
        try:
            session._commit(engine.ask(), engine, parent=None, generation=0, consumed=[], extra={}, progress=progress)
        except BaseException:
            store.delete_empty_run(run.id)
            raise
        return session

    @property
    def generator(self) -> Any:
        if self._generator is None:
            self._generator = build_generator(self.run.target, self.run.generator_config)
        return self._generator

    @property
    def spark(self) -> Spark:
        if self._spark is None:
            self._spark = InProcessSpark(self.run.target, self.run.generator_config)
        return self._spark

    # --- reading ------------------------------------------------------------------------
    def reload(self) -> None:
        self.branch = self.store.get_branch_by_id(self.branch.id)

    def head(self) -> Any:
        self.reload()
        if self.branch.head_snapshot_id is None:
            raise SessionError(f"branch {self.branch.name!r} has no generations yet")
        return self.store.get_snapshot(self.branch.head_snapshot_id)

    def settings(self, snapshot: Any | None = None) -> EngineSettings:
        snapshot = snapshot or self.head()
        return EngineSettings.from_dict(snapshot.settings["engine"])

    def candidates(self, snapshot: Any | None = None) -> list[Candidate]:
        snapshot = snapshot or self.head()
        return [
            Candidate(id=i, genome=g, parent_ids=tuple(parents))
            for i, g, parents in self.store.population(snapshot)
        ]

    # --- rating -------------------------------------------------------------------------
    def rate(self, scores: dict[int, float | None], picks: dict[int, bool] | None = None, snapshot: Any | None = None) -> list[Any]:
        """Store scores (None clears) and pick toggles for the head as one all-or-nothing event batch."""
        snapshot = snapshot or self.head()
        events = []
        for position, value in scores.items():
            events.append(RatingInput(kind="clear", position=position) if value is None else RatingInput(kind="score", position=position, value=float(value)))
        for position, picked in (picks or {}).items():
            events.append(RatingInput(kind="pick" if picked else "unpick", position=position))
        return self.store.add_ratings(snapshot.id, events, session=self.session_id)

    # --- evolving -----------------------------------------------------------------------
    def evolve(
        self,
        fitness: Sequence[float] | None = None,
        settings: EngineSettings | None = None,
        progress: Progress | None = None,
        extra: dict[str, Any] | None = None,
        on_image: OnImage | None = None,
        chunks: int = RENDER_BATCHES,
        on_thumb: OnThumb | None = None,
    ) -> Any:
        """Tell the head's ratings (or explicit fitness), render and commit the next generation.

        Args:
            fitness: one value per candidate instead of the head's ratings (benchmarks, scripts).
            settings: engine settings for this step (mutation strength, locks...).
            progress: ``progress(done, total)`` as images finish.
            extra: more JSON to keep in the new snapshot's settings.
            on_image: ``on_image(position, image, None)`` the moment a new image renders, and
                ``on_image(position, None, thumb_sha)`` for one reused from the parent.
            on_thumb: ``on_thumb(position, jpeg)`` once a new image's grid thumbnail is
                encoded (by a writer thread, or this one), before it is written: the browser
                shows the stored thumbnail's own bytes without a second encoding.
            chunks: render calls the new images are split into; each finished batch is
                encoded and written while the next one renders.
        """
        # One read for the branch head and its ratings, so the fitness and the consumed ids
        # agree exactly; the population itself usually comes from this session's last commit.
        self.branch, rows = self.store.head_ratings(self.branch.id)
        if self.branch.head_snapshot_id is None:
            raise SessionError(f"branch {self.branch.name!r} has no generations yet")
        head, candidates = self._head_population(self.branch.head_snapshot_id)
        if fitness is None:
            fitness = fitness_from_events(len(candidates), rows)
        engine = self._engine(head, candidates, settings)
        engine.ask()
        children, extra = self._tell(engine, fitness, head, rows, extra or {})
        return self._commit(
            children,
            engine,
            parent=head,
            generation=head.generation + 1,
            consumed=[r.id for r in rows],
            extra=extra,
            progress=progress,
            on_image=on_image,
            chunks=chunks,
            on_thumb=on_thumb,
        )

    def run_auto(self, fitness: AutoFitness, generations: int, progress: Progress | None = None) -> Any:
        """Headless batch run: score each generation automatically, store the scores, evolve
        (``evolve.batch``: each generation's store work runs while the next renders)."""
        from evolve.batch import run_auto

        return run_auto(self, fitness, generations, progress)

    def undo(self) -> Any:
        """Move the branch head back one generation; nothing is deleted."""
        head = self.head()
        if head.parent_id is None:
            raise SessionError("already at generation 0: nothing to undo")
        self.store.set_head(self.branch.id, head.parent_id)
        return self.head()

    def fork(self, generation: int, name: str) -> Session:
        snapshot = self.store.snapshot_at(self.branch, generation)
        branch = self.store.fork(snapshot.id, name)
        return Session(self.store, self.run.id, branch.name, spark=self._spark)

    # --- internals ----------------------------------------------------------------------
    def _engine(self, head: Any, candidates: list[Candidate], settings: EngineSettings | None = None) -> Engine:
        """The engine that breeds the generation after ``head`` (its settings unless given)."""
        settings = settings or self.settings(head)
        if settings.population_size != len(candidates):
            settings = settings.replace(population_size=len(candidates))
        try:
            return Engine(self.generator, settings, rng_from_state(head.rng_state), candidates)
        except EngineError as exc:
            raise SessionError(str(exc)) from None

    def _head_population(self, head: Any) -> tuple[Any, list[Candidate]]:
        """The head snapshot (given by id, or in hand) and its candidates: kept from this
        session's own last commit (snapshots never change, and the id says it is still the
        head), else read back."""
        snapshot_id = head if isinstance(head, str) else head.id
        if self._last_commit is not None and self._last_commit[0].id == snapshot_id:
            return self._last_commit[0], list(self._last_commit[1])
        if isinstance(head, str):
            head = self.store.get_snapshot(head)
        # Without their parent ids, as a generation made here leaves them: nothing reads
        # the current population's own parents (elites keep their stored rows).
        return head, [Candidate(id=i, genome=g) for i, g, _ in self.store.population(head)]

    def _tell(
        self, engine: Engine, fitness: Sequence[float], head: Any, ratings: list[Any], extra: dict[str, Any]
    ) -> tuple[list[Candidate], dict[str, Any]]:
        """``engine.tell``, screened by the agent when one is attached; its predictions for
        the new generation go into the snapshot settings under ``"agent"``. ``ratings``: the
        head's rating events as ``evolve`` read them (the agent learns from them too)."""
        if self.agent is None:
            return engine.tell(fitness), extra
        # Equal ratings say nothing about order: the agent's model breaks those ties only.
        fitness = self.agent.tie_break(self, head, fitness, ratings)
        # The fitness and elite count tell the agent which parents stay on screen.
        screen, factor = self.agent.screener(self, head, fitness=fitness, elite=engine.settings.elite)
        children = engine.tell(fitness, screen=screen, offspring_factor=factor)
        return children, {**extra, "agent": self.agent.record(self, head, children)}

    def _commit(
        self,
        population: Sequence[Candidate],
        engine: Engine,
        parent: Any | None,
        generation: int,
        consumed: list[int],
        extra: dict[str, Any],
        progress: Progress | None,
        on_image: OnImage | None = None,
        chunks: int = RENDER_BATCHES,
        on_thumb: OnThumb | None = None,
    ) -> Any:
        images, thumbs, staged = self._render(population, parent, progress, on_image, chunks, on_thumb)
        settings = {"engine": engine.settings.to_dict(), **extra}
        return self._finish(population, parent, generation, consumed, images, thumbs, staged, engine.rng_state, settings, progress)

    def _finish(
        self,
        population: Sequence[Candidate],
        parent: Any | None,
        generation: int,
        consumed: list[int],
        images: list[str],
        thumbs: list[str],
        staged: list[StagedObjects],
        rng_state: dict[str, Any],
        settings: dict[str, Any],
        progress: Progress | None = None,
    ) -> Any:
        """Check, publish and commit a rendered generation; its staged images are discarded
        if the check fails."""
        try:
            # Hashing the new genomes and checking them against the store comes after the
            # render: it is pure Python, and beside the render it holds the GIL the render
            # thread needs between its calls into torch (even the compiled CPPN kernel packs
            # its genomes in Python), which measured slower than doing it after. A stale
            # head fails here, and the images go unseen.
            individuals = self.store.prepare_generation(
                branch_id=self.branch.id,
                parent_id=parent.id if parent else None,
                generation=generation,
                individuals=[(c.genome, list(c.parent_ids), c.identity) for c in population],
                consumed_ratings=consumed,
            )
        except BaseException:
            self.store.objects.discard(staged)
            raise
        # Every image made durable and put in place with two file-system syncs in all.
        self.store.objects.publish(staged)
        if progress:
            progress(len(population), len(population))
        snapshot = self.store.commit_generation(
            branch_id=self.branch.id,
            parent_id=parent.id if parent else None,
            generation=generation,
            individuals=individuals,
            images=images,
            thumbs=thumbs,
            rng_state=rng_state,
            settings=settings,
            consumed_ratings=consumed,
            generator_config=self.run.generator_config,
        )
        self._last_commit = (snapshot, list(population))
        return snapshot

    def _render(
        self,
        population: Sequence[Candidate],
        parent: Any | None,
        progress: Progress | None,
        on_image: OnImage | None,
        chunks: int,
        on_thumb: OnThumb | None = None,
    ) -> tuple[list[str], list[str], list[StagedObjects]]:
        """Render the genomes the parent does not already show, and stage their images.

        Elites reuse the parent's objects by hash: nothing is rendered, read or written for
        them. New images render in ``chunks`` batches; the writer thread encodes and stages
        each finished batch while the next renders (the encoders let go of the GIL).

        Returns:
            (image hashes, thumbnail hashes, the staged objects, still to be published or
            discarded by the caller).
        """
        announce = on_image or (lambda position, image, sha: None)
        total = len(population)
        keys, groups = render_groups(population)
        shas: dict[Any, tuple[str, str]] = {}
        if parent is not None:
            for cid, image_sha, thumb_sha in zip(parent.population, parent.images, parent.thumbs, strict=True):
                if cid in groups and cid not in shas:
                    shas[cid] = (image_sha, thumb_sha)
                    for position in groups[cid]:
                        announce(position, None, thumb_sha)
        todo = [(key, places) for key, places in groups.items() if key not in shas]
        done = total - sum(len(places) for _, places in todo)
        # (writer job, render key, the job's call: run here if no writer has started it)
        jobs: list[tuple[Future[tuple[tuple[str, str], StagedObjects]], Any, Callable[[], Any]]] = []
        settles: list[Future[None]] = []
        staged: list[StagedObjects] = []
        try:
            parts = _batches(todo, chunks)
            for number, part in enumerate(parts, 1):
                # No callback when nobody listens: a spark in another process then sends no
                # progress frames.
                listen = None
                if progress:

                    def listen(d: int, _t: int, offset: int = done, report: Progress = progress) -> None:
                        report(min(total, offset + d), total)

                rendered = self.render([population[places[0]].genome for _, places in part], listen)
                done += sum(len(places) for _, places in part)
                for (key, places), image in zip(part, rendered, strict=True):
                    for position in places:
                        announce(position, image, None)
                    shown = None if on_thumb is None else partial(_show_thumb, on_thumb, places)
                    call = partial(self._store_image, image, shown)
                    jobs.append((WRITER.submit(call), key, call))
                if number < len(parts):
                    # After this batch's images (FIFO; with two writers the other may still be
                    # staging one), a writer makes what is staged durable while the next batch
                    # renders: publish then syncs little more than the last batch's bytes
                    # (bench/sparks.py part 2, 16 images at 256 px, 2-core VM: publish took
                    # 1.4 ms, against 2.7 ms at the commit before settling came in).
                    settles.append(WRITER.submit(self.store.objects.settle))
            # A sync the writer has not reached is left to publish.
            started = [settle for settle in settles if not settle.cancel()]
            # Rendering is over: this thread encodes the images no writer has started (from
            # the last, while the writer works from the first).
            for future, key, call in reversed(jobs):
                shas[key], batch = call() if future.cancel() else future.result()
                staged.append(batch)
            for settle in started:
                settle.result()  # a write error it met stops the generation
        except BaseException:
            for settle in settles:
                settle.cancel()
            # Whatever was staged, here or by the writer, goes: nothing is left for gc.
            self.store.objects.discard(staged)
            drop_jobs(self.store, [future for future, _, _ in jobs])
            raise
        return [shas[k][0] for k in keys], [shas[k][1] for k in keys], staged

    def render(self, genomes: Sequence[Any], progress: Any = None) -> list[Any]:
        """Render genomes on this session's spark at the run's size; a generator's refusal
        is a ``SessionError``."""
        try:
            return self.spark.render(list(genomes), self.run.size, progress=progress)
        except GeneratorError as exc:
            raise SessionError(str(exc)) from None

    def _store_image(
        self, image: Any, shown: Callable[[bytes], None] | None = None
    ) -> tuple[tuple[str, str], StagedObjects]:
        """Encode a rendered image (PNG + JPEG thumbnail) and stage both for the commit;
        ``shown`` gets the thumbnail first, before the PNG is encoded.

        The objects are unreferenced until the snapshot row commits: a crash before that
        leaves only garbage for ``gc``, never a partial generation.
        """
        pixels = rgb_pixels(image)  # one conversion for both encoders
        thumb = encode_thumb(pixels)
        if shown is not None:
            shown(thumb)
        staged = self.store.objects.stage([encode_png(pixels), thumb])
        return (staged.shas[0], staged.shas[1]), staged


def _show_thumb(on_thumb: OnThumb, places: Sequence[int], thumb: bytes) -> None:
    for position in places:
        on_thumb(position, thumb)


def drop_jobs(store: Store, jobs: Sequence[Future[tuple[Any, StagedObjects]]]) -> None:
    """Undo writer jobs (``Session._store_image``) whose images will not be committed: the
    ones not started are cancelled, the others waited for and what they staged removed
    (again, harmlessly, if it was)."""
    for job in jobs:
        if not job.cancel() and job.exception() is None:
            store.objects.discard([job.result()[1]])


def render_groups(population: Sequence[Candidate]) -> tuple[list[Any], dict[Any, list[int]]]:
    """What each position renders as, and the positions of each such key, in order.

    Candidates whose ids are known (elites, carried over) go by id, so the parent's images
    serve them. New children have no id yet: hashing their genomes here would hold up the
    render, so each renders as it is, under its position, and is hashed once the render is
    over (an exact copy of another genome just renders twice, to the same bytes)."""
    keys = [c.known_id if c.known_id is not None else position for position, c in enumerate(population)]
    groups: dict[Any, list[int]] = {}
    for position, key in enumerate(keys):
        groups.setdefault(key, []).append(position)
    return keys, groups


def _batches(items: Sequence[T], chunks: int) -> list[Sequence[T]]:
    """Split into up to ``chunks`` render batches, the last one small.

    Whatever the last batch renders is encoded and written after rendering ends, on the way
    to the commit; earlier batches are written while later ones render. So with several
    batches the last holds at most two images.
    """
    if chunks <= 1 or len(items) <= 2:
        return [items] if items else []
    tail = min(2, len(items) - 1)
    head = items[: len(items) - tail]
    step = max(1, -(-len(head) // (chunks - 1)))
    return [head[i : i + step] for i in range(0, len(head), step)] + [items[len(head) :]]


__all__ = ["RunSpec", "Session", "SessionError", "StoreError", "generator_target"]
