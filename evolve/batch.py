"""Headless batch runs: score each generation automatically, breed, render, store; repeat.

A generation's store work (storing the scores of its parent, checking it, making its images
durable, committing it) runs on a store thread while the next generation renders, so a run's
pace is set by its renders. That is safe because nothing the next generation needs waits on
the commit: its parents, their fitness and the random state are in memory, and each commit
still waits for the one before it (its parent) and is as atomic as ever. A run that stops,
for any reason, first waits for the commit under way: the store holds every generation
rendered before the failure, whole, and nothing after it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from PIL import Image

from evolve.engine import Candidate
from evolve.fitness import AutoFitness, fitness_from_ratings
from evolve.session import RENDER_BATCHES, Session, SessionError  # session imports this lazily
from spark_runtime.image_codec import decode, rgb_pixels
from spark_runtime.store import RatingInput
from spark_runtime.store.objects import StagedObjects

# One thread: a branch's generations commit in order, each after its parent.
_STORE_WORK = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-commit")


@dataclass(frozen=True)
class _Shown:
    """What the next render needs of a generation that may not be committed yet: its
    members' ids and their image and thumbnail hashes (elites reuse them)."""

    population: list[str]
    images: list[str]
    thumbs: list[str]


@dataclass
class _Rendered:
    """A rendered generation on its way to the store."""

    population: list[Candidate]
    images: list[str]
    thumbs: list[str]
    staged: list[StagedObjects]
    rng_state: dict[str, Any]
    settings: dict[str, Any]


def run_auto(
    session: Session, fitness: AutoFitness, generations: int, progress: Callable[[int, int], None] | None = None
) -> Any:
    """``generations`` generations scored by ``fitness``; returns the last one's snapshot.

    Each generation is scored from the pictures it rendered, kept in memory: only the
    starting head's images are read back from the store.
    """
    if generations < 1:
        raise SessionError(f"generations must be at least 1, got {generations}")
    if session.agent is not None:
        raise SessionError("a batch run scores with its fitness alone: detach the agent first")
    head = session.head()
    pictures = {sha: decode(session.store.objects.get(sha)) for sha in dict.fromkeys(head.images)}
    images = [pictures[sha] for sha in head.images]
    previous = head.settings.get("fitness", {})
    # Stateful fitness (novelty's archive) carries on only from the same fitness.
    state = previous.get("state", {}) if previous.get("spec") == fitness.spec else {}
    head, members = session._head_population(head.id)
    engine = session._engine(head, members)
    shown = _Shown(list(head.population), list(head.images), list(head.thumbs))
    committing: Future[Any] | None = None  # the store work of the generation before
    committed = head  # the newest generation known to be committed
    try:
        for done in range(generations):
            scores, state = fitness.evaluate(images, state)
            scores = [round(min(5.0, max(0.0, s)), 4) for s in scores]
            engine.ask()
            children = engine.tell(fitness_from_ratings(len(scores), dict(enumerate(scores))))
            rendered: dict[int, Any] = {}

            def keep(position: int, image: Any, _thumb: str | None, into: dict[int, Any] = rendered) -> None:
                if image is not None:
                    into[position] = image

            image_shas, thumb_shas, staged = session._render(children, shown, None, keep, RENDER_BATCHES)
            batch = _Rendered(
                children,
                image_shas,
                thumb_shas,
                staged,
                engine.rng_state,
                {"engine": engine.settings.to_dict(), "fitness": {"spec": fitness.spec, "state": state}},
            )
            try:
                # The ids now, on this thread: the next render groups its elites by them.
                shown = _Shown([c.id for c in children], image_shas, thumb_shas)
                if committing is not None:
                    committed = committing.result()
                    committing = None
                    if progress:
                        progress(done, generations)
            except BaseException:
                session.store.objects.discard(staged)
                raise
            committing = _STORE_WORK.submit(_store, session, batch, committed, scores)
            # Elites reuse their parent's picture under the same hash.
            pictures = {
                sha: _picture(rendered[position]) if position in rendered else pictures[sha]
                for position, sha in enumerate(image_shas)
                if position in rendered or sha in pictures
            }
            images = [pictures[sha] for sha in image_shas]
        committed = committing.result() if committing is not None else committed
        committing = None
    finally:
        if committing is not None:  # stopped by an error: the commit under way still lands
            committing.exception()
    if progress:
        progress(generations, generations)
    return committed


def _store(session: Session, batch: _Rendered, parent: Any, scores: Sequence[float]) -> Any:
    """The parent's scores as rating events, then the generation bred from them, committed
    and consuming exactly those ratings."""
    try:
        events = [RatingInput(kind="score", position=i, value=float(v)) for i, v in enumerate(scores)]
        consumed = [r.id for r in session.store.add_ratings(parent.id, events, session=session.session_id)]
    except BaseException:
        session.store.objects.discard(batch.staged)
        raise
    return session._finish(
        batch.population,
        parent,
        parent.generation + 1,
        consumed,
        batch.images,
        batch.thumbs,
        batch.staged,
        batch.rng_state,
        batch.settings,
    )


def _picture(image: Any) -> Image.Image:
    """A rendered image as the RGB picture that decoding its stored PNG gives back."""
    if isinstance(image, Image.Image) and image.mode == "RGB":
        return image
    return Image.fromarray(rgb_pixels(image))
