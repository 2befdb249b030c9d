"""Headless batch runs: score each generation automatically, breed, render, store; repeat.

A generation renders in one call, and everything else about it happens beside the next one:
the writer thread encodes and stages its images, and the store thread stores its parent's
scores, checks it, makes its images durable and commits it, while this thread scores it,
breeds the next generation and renders that. Nothing the next generation needs waits on the
store: its parents, their pictures and fitness and the random state are in memory, and an
elite's image hashes are only needed by its own commit. Each commit still waits for the one
before it (its parent) and is as atomic as ever. A run that stops, for any reason, first
waits for the commit under way: the store holds every generation rendered before the
failure, whole, and nothing after it.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from PIL import Image

from evolve.engine import Candidate
from evolve.fitness import AutoFitness, fitness_from_events
from evolve.session import WRITER, Progress, Session, SessionError, drop_jobs, render_groups
from spark_runtime.image_codec import decode
from spark_runtime.store.ratings import fold_scores

# (``evolve.session`` imports this module only when a batch run starts.)

# One thread: a branch's generations commit in order, each after its parent.
_STORE_WORK = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-commit")

# An image's (image sha, thumbnail sha), or the writer's job that encodes and stages it
# (``Session._store_image``: its result is those hashes and the staged objects).
ImageRef = tuple[str, str] | Future


@dataclass
class _Rendered:
    """A rendered generation on its way to the store: each position's image ref, and the
    writer jobs of its own new images, whose staged objects its commit publishes."""

    population: list[Candidate]
    refs: list[ImageRef]
    jobs: list[Future]
    rng_state: dict[str, Any]
    settings: dict[str, Any]


def run_auto(
    session: Session, fitness: AutoFitness, generations: int, progress: Progress | None = None
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
    decoded = {sha: decode(session.store.objects.get(sha)) for sha in dict.fromkeys(head.images)}
    previous = head.settings.get("fitness", {})
    # Stateful fitness (novelty's archive) carries on only from the same fitness.
    state = previous.get("state", {}) if previous.get("spec") == fitness.spec else {}
    head, members = session._head_population(head)
    engine = session._engine(head, members)
    # Member id -> its picture and its image ref: elites carry both over.
    pictures = {cid: decoded[sha] for cid, sha in zip(head.population, head.images, strict=True)}
    refs: dict[str, ImageRef] = {
        cid: (image, thumb) for cid, image, thumb in zip(head.population, head.images, head.thumbs, strict=True)
    }
    images = [pictures[c.id] for c in members]
    engine_settings = engine.settings.to_dict()
    committing: Future[Any] | None = None  # the store work of the generation before
    committed = head  # the newest generation known to be committed
    unsent: list[Future] = []  # writer jobs of a generation not handed to the store thread
    try:
        for done in range(generations):
            scores, state = fitness.evaluate(images, state)
            scores = [round(min(5.0, max(0.0, s)), 4) for s in scores]
            consumed: list[int] | None = None
            if done == 0:
                # The starting head may carry ratings of its own (a person's scores and picks
                # from the browser): they count with these scores, as in a step by step run.
                # Every later head is this run's own, rated by it alone. A run that stopped
                # after storing these very scores (its next commit failed) stores none again.
                rows = session.store.ratings(head.id)
                mine = fold_scores([r for r in rows if r.session == session.session_id])
                fresh = {p: s for p, s in enumerate(scores) if mine.get(p) != s}
                if fresh:  # newer than every event read, so oldest first still holds
                    rows = [*rows, *session.rate(fresh, snapshot=head)]
                told = fitness_from_events(len(scores), rows)
                consumed = [r.id for r in rows]
            else:
                told = scores  # every position scored: the fitness is the scores themselves
            engine.ask()
            children = engine.tell(told)
            keys, jobs, fresh = _render(session, children, refs)
            unsent = list(jobs.values())
            # The ids now, on this thread: the next generation finds its elites by them.
            refs = {c.id: jobs[key] if key in jobs else refs[key] for c, key in zip(children, keys, strict=True)}
            pictures = {
                c.id: _picture(fresh[key]) if key in fresh else pictures[key]
                for c, key in zip(children, keys, strict=True)
            }
            batch = _Rendered(
                children,
                [refs[c.id] for c in children],
                unsent,
                engine.rng_state,
                # A copy: the store thread serialises it while the next evaluate has it, and
                # nothing in the fitness protocol forbids changing it in place.
                {"engine": engine_settings, "fitness": {"spec": fitness.spec, "state": copy.deepcopy(state)}},
            )
            if committing is not None:
                committed = committing.result()
                committing = None
                if progress:
                    progress(done, generations)
            unsent = []  # the store thread's from here: publishes them, or drops them on failure
            committing = _STORE_WORK.submit(_store, session, batch, committed, scores, consumed)
            images = [pictures[c.id] for c in children]
        committed = committing.result() if committing is not None else committed
    except BaseException as error:
        # Stopped: the commit under way still lands (or fails, which is said too).
        failed = committing.exception() if committing is not None else None
        if failed is not None and failed is not error:
            error.add_note(f"the generation being stored when this happened failed too: {failed}")
        raise
    finally:
        drop_jobs(session.store, unsent)
    if progress:
        progress(generations, generations)
    return committed


def _render(
    session: Session, children: Sequence[Candidate], known: dict[str, ImageRef]
) -> tuple[list[Any], dict[Any, Future], dict[Any, Any]]:
    """Render, in one call, the children that no earlier generation shows, and hand each new
    image to the writer.

    Returns:
        each position's render key (``render_groups``), the writer job of each key rendered,
        and its picture.
    """
    keys, groups = render_groups(children)
    todo = {key: places[0] for key, places in groups.items() if key not in known}  # key -> first position
    rendered = session.render([children[p].genome for p in todo.values()])
    fresh = dict(zip(todo, rendered, strict=True))
    return keys, {key: WRITER.submit(session._store_image, image) for key, image in fresh.items()}, fresh


def _store(
    session: Session, batch: _Rendered, parent: Any, scores: Sequence[float], consumed: list[int] | None
) -> Any:
    """The parent's scores as rating events (unless ``consumed`` names the ratings it was
    bred from, stored already), then the generation bred from them, committed and consuming
    exactly those ratings."""
    try:
        staged = [job.result()[1] for job in batch.jobs]
        shas = [ref if isinstance(ref, tuple) else ref.result()[0] for ref in batch.refs]
        if consumed is None:
            consumed = [r.id for r in session.rate(dict(enumerate(scores)), snapshot=parent)]
    except BaseException:
        drop_jobs(session.store, batch.jobs)
        raise
    return session._finish(
        batch.population,
        parent,
        parent.generation + 1,
        consumed,
        [image for image, _ in shas],
        [thumb for _, thumb in shas],
        staged,
        batch.rng_state,
        batch.settings,
    )


def _picture(image: Image.Image) -> Image.Image:
    """A rendered image (sparks hand back PIL images) as the RGB picture that decoding its
    stored PNG gives back."""
    return image if image.mode == "RGB" else image.convert("RGB")
