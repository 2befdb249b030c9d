"""The session loop: ask -> render on a spark -> store -> snapshot -> scores -> tell.

A ``Session`` binds one store branch to an engine. It holds no state of its own that matters:
everything needed to make the next generation (population, RNG state, settings) is read back
from the branch head snapshot, so a session can be dropped and reopened at any time, in any
process, and makes the same next generation.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from evolve.engine import Candidate, Engine, EngineError, EngineSettings, rng_from_state
from evolve.fitness import AutoFitness, fitness_from_ratings
from imagery import GENERATORS, GeneratorError, check_size
from spark_runtime.image_codec import decode, encode_png, encode_thumb
from spark_runtime.spark import InProcessSpark, Spark, build_generator
from spark_runtime.store import RatingInput, Store, StoreError
from spark_runtime.store.ratings import fold_picks, fold_scores

Progress = Callable[[int, int], None]


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
        genomes = self.store.genomes(snapshot)
        out = []
        for individual_id, genome in zip(snapshot.population, genomes, strict=True):
            parents = self.store.get_individual(individual_id).parents
            out.append(Candidate(id=individual_id, genome=genome, parent_ids=tuple(parents)))
        return out

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
    ) -> Any:
        """Tell the head's ratings (or explicit fitness), render and commit the next generation."""
        head = self.head()
        candidates = self.candidates(head)
        if fitness is None:
            scores = self.store.current_scores(head.id)
            picks = self.store.current_picks(head.id)
            fitness = fitness_from_ratings(len(candidates), scores, picks)
        settings = settings or self.settings(head)
        if settings.population_size != len(candidates):
            settings = settings.replace(population_size=len(candidates))
        try:
            engine = Engine(self.generator, settings, rng_from_state(head.rng_state), candidates)
        except EngineError as exc:
            raise SessionError(str(exc)) from None
        engine.ask()
        children, extra = self._tell(engine, fitness, head, extra or {})
        consumed = [r.id for r in self.store.ratings(head.id)]
        return self._commit(children, engine, parent=head, generation=head.generation + 1, consumed=consumed, extra=extra or {}, progress=progress)

    def run_auto(self, fitness: AutoFitness, generations: int, progress: Callable[[int, int], None] | None = None) -> Any:
        """Headless batch run: score each head automatically, store the scores, evolve."""
        if generations < 1:
            raise SessionError(f"generations must be at least 1, got {generations}")
        snapshot = self.head()
        for done in range(generations):
            images = [decode(self.store.objects.get(h)) for h in snapshot.images]
            state = snapshot.settings.get("fitness", {}).get("state", {}) if snapshot.settings.get("fitness", {}).get("spec") == fitness.spec else {}
            scores, new_state = fitness.evaluate(images, state)
            self.rate({i: round(min(5.0, max(0.0, s)), 4) for i, s in enumerate(scores)}, snapshot=snapshot)
            snapshot = self.evolve(extra={"fitness": {"spec": fitness.spec, "state": new_state}})
            if progress:
                progress(done + 1, generations)
        return snapshot

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
    def _tell(self, engine: Engine, fitness: Sequence[float], head: Any, extra: dict[str, Any]) -> tuple[list[Candidate], dict[str, Any]]:
        """``engine.tell``, screened by the agent when one is attached; its predictions for
        the new generation go into the snapshot settings under ``"agent"``."""
        if self.agent is None:
            return engine.tell(fitness), extra
        # Equal ratings say nothing about order: the agent's model breaks those ties only.
        fitness = self.agent.tie_break(self, head, fitness)
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
    ) -> Any:
        images, thumbs = self._render(population, parent, progress)
        settings = {"engine": engine.settings.to_dict(), **extra}
        return self.store.commit_generation(
            branch_id=self.branch.id,
            parent_id=parent.id if parent else None,
            generation=generation,
            individuals=[(c.genome, list(c.parent_ids)) for c in population],
            images=images,
            thumbs=thumbs,
            rng_state=engine.rng_state,
            settings=settings,
            consumed_ratings=consumed,
            generator_config=self.run.generator_config,
        )

    def _render(self, population: Sequence[Candidate], parent: Any | None, progress: Progress | None) -> tuple[list[bytes], list[bytes]]:
        """Render only genomes the parent generation does not already show (elites are reused)."""
        known: dict[str, tuple[str, str]] = {}
        if parent is not None:
            known = {i: (img, th) for i, img, th in zip(parent.population, parent.images, parent.thumbs, strict=True)}
        todo = [c for c in population if c.id not in known]
        unique = list({c.id: c for c in todo}.values())
        try:
            rendered = self.spark.render([c.genome for c in unique], self.run.size, progress=progress)
        except GeneratorError as exc:
            raise SessionError(str(exc)) from None
        fresh = {c.id: (encode_png(im), encode_thumb(im)) for c, im in zip(unique, rendered, strict=True)}
        images, thumbs = [], []
        for c in population:
            if c.id in fresh:
                image, thumb = fresh[c.id]
            else:
                image_hash, thumb_hash = known[c.id]
                image, thumb = self.store.objects.get(image_hash), self.store.objects.get(thumb_hash)
            images.append(image)
            thumbs.append(thumb)
        if progress and not unique:
            progress(len(population), len(population))
        return images, thumbs

    # --- live evolving (the browser UI) -------------------------------------------------
    def evolve_live(
        self,
        settings: EngineSettings | None = None,
        on_image: Callable[[int, Any, str | None], None] | None = None,
        progress: Progress | None = None,
        chunks: int = 4,
    ) -> Any:
        """``evolve`` from the head's ratings, announcing each image as soon as its batch renders.

        The new population renders in up to ``chunks`` batches (few calls keep batching
        efficient; more show images sooner). Each image is announced the moment its batch
        finishes, as ``on_image(position, pil_image, None)``, so a browser can be shown a quick
        preview; elites reused from the parent come first, as ``on_image(position, None,
        thumb_sha)`` (their thumbnail is already stored). Thumbnails and PNGs are encoded and
        written after the last batch, off the path to the screen. The commit is the same as
        ``evolve``'s, and so is the generation it makes.
        """
        head = self.head()
        if self.agent is None:
            # Without an agent nothing reads the current population's own parents (elites keep
            # their stored rows): skip the per-individual lookups ``candidates`` makes.
            genomes = self.store.genomes(head)
            candidates = [Candidate(id=i, genome=g) for i, g in zip(head.population, genomes, strict=True)]
        else:
            candidates = self.candidates(head)
        # One read of the ratings, so the fitness and the consumed ids agree exactly.
        rows = self.store.ratings(head.id)
        fitness = fitness_from_ratings(len(candidates), fold_scores(rows), fold_picks(rows))
        settings = settings or self.settings(head)
        if settings.population_size != len(candidates):
            settings = settings.replace(population_size=len(candidates))
        try:
            engine = Engine(self.generator, settings, rng_from_state(head.rng_state), candidates)
        except EngineError as exc:
            raise SessionError(str(exc)) from None
        engine.ask()
        children, extra = self._tell(engine, fitness, head, {})
        images, thumbs = self._render_live(children, head, on_image, progress, chunks)
        return self.store.commit_generation(
            branch_id=self.branch.id,
            parent_id=head.id,
            generation=head.generation + 1,
            individuals=[(c.genome, list(c.parent_ids)) for c in children],
            images=images,
            thumbs=thumbs,
            rng_state=engine.rng_state,
            settings={"engine": engine.settings.to_dict(), **extra},
            consumed_ratings=[r.id for r in rows],
            generator_config=self.run.generator_config,
        )

    def _render_live(
        self,
        population: Sequence[Candidate],
        parent: Any,
        on_image: Callable[[int, Any, str | None], None] | None,
        progress: Progress | None,
        chunks: int,
    ) -> tuple[list[bytes], list[bytes]]:
        announce = on_image or (lambda position, image, sha: None)
        total = len(population)
        positions: dict[str, list[int]] = {}
        for position, c in enumerate(population):
            positions.setdefault(c.id, []).append(position)
        encoded: dict[str, tuple[bytes, bytes]] = {}
        for cid, image_hash, thumb_hash in zip(parent.population, parent.images, parent.thumbs, strict=True):
            if cid in positions and cid not in encoded:
                encoded[cid] = (self.store.objects.get(image_hash), self.store.objects.get(thumb_hash))
                for position in positions[cid]:
                    announce(position, None, thumb_hash)
        unique = [c for c in {c.id: c for c in population}.values() if c.id not in encoded]
        done = total - sum(len(positions[c.id]) for c in unique)
        step = max(1, -(-len(unique) // max(1, chunks)))
        finished: list[tuple[Candidate, Any]] = []
        for start in range(0, len(unique), step):
            part = unique[start : start + step]

            def chunk_progress(d: int, _t: int, offset: int = done) -> None:
                if progress:
                    progress(min(total, offset + d), total)

            try:
                rendered = self.spark.render([c.genome for c in part], self.run.size, progress=chunk_progress)
            except GeneratorError as exc:
                raise SessionError(str(exc)) from None
            done += sum(len(positions[c.id]) for c in part)
            for c, im in zip(part, rendered, strict=True):
                for position in positions[c.id]:
                    announce(position, im, None)
                finished.append((c, im))
        if progress:
            progress(total, total)

        # Encoding beside a running render slows the render (on a busy CPU its worker threads
        # spin at every barrier) more than it saves, so all of it waits for the last batch.
        def write(c: Candidate, im: Any) -> None:
            thumb, image = encode_thumb(im), encode_png(im)
            # Written ahead of the commit so it only re-hashes; the commit point is unchanged.
            self.store.objects.put(thumb)
            self.store.objects.put(image)
            encoded[c.id] = (image, thumb)

        # Each write waits on an fsync: a few at once.
        with ThreadPoolExecutor(max_workers=4) as writers:
            for future in [writers.submit(write, *item) for item in finished]:
                future.result()
        return [encoded[c.id][0] for c in population], [encoded[c.id][1] for c in population]

__all__ = ["RunSpec", "Session", "SessionError", "StoreError", "generator_target"]
