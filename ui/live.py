"""Evolve with live progress: check the request up front, render on a worker, stream events.

``start_evolve`` raises a one-line error before anything starts (unknown run, stale head,
bad settings, a render already running on the branch). Otherwise it returns an iterator of
events the browser reads as they happen::

    {"type": "start", "generation": 8, "n": 16}
    {"type": "progress", "done": 4, "total": 16}
    {"type": "image", "position": 3, "preview": "data:image/jpeg;base64,..."}  # new image (1)
    {"type": "image", "position": 0, "thumb": "<sha256>"}   # an elite, its thumbnail stored
    {"type": "done", "state": {...}}            # the committed generation, as ``state`` gives it
    {"type": "error", "message": "one line"}    # nothing was committed

(1) The new image's grid thumbnail, sent as soon as a writer thread has encoded it: the very
bytes the commit stores, so the render thread encodes nothing for the browser, and the stored
thumbnail that replaces it after ``done`` is the same picture.

The render runs on its own thread and commits even if the browser goes away mid-stream, so a
reload after Enter shows the new generation once it is stored.
"""

from __future__ import annotations

import base64
import logging
import math
import queue
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from evolve.agent_config import MAX_OFFSPRING_FACTOR
from evolve.engine import EngineError, EngineSettings
from evolve.session import RENDER_BATCHES, Session
from spark_runtime.spark import one_line
from ui.handlers import (
    USER_ERRORS,
    Conflict,
    UIError,
    Workbench,
    payload,
    snapshot_state,
    tab_session,
    text,
    whole,
)

log = logging.getLogger(__name__)
_END = object()


def evolve_settings(wb: Workbench, session: Session, head: Any, body: dict[str, Any]) -> Any:
    """The head's engine settings with the tab's mutation strength and gene locks applied;
    a bad value is a one-line UIError."""
    settings = session.settings(head)
    changes: dict[str, Any] = {}
    strength = body.get("strength")
    if strength is not None:
        if (
            isinstance(strength, bool)
            or not isinstance(strength, int | float)
            or not math.isfinite(strength)
            or not 0 <= strength <= 1
        ):
            raise UIError(f"mutation strength must be a number from 0 to 1, got {strength!r}")
        changes["mutation_strength"] = float(strength)
    locks = body.get("locks")
    if locks is not None:
        lockable = wb.lockable(session.run)
        if not isinstance(locks, list) or not all(isinstance(x, str) for x in locks):
            raise UIError("'locks' must be a list of gene group names")
        unknown = sorted(set(locks) - set(lockable))
        if unknown:
            raise UIError(
                f"cannot lock {unknown[0]!r}: this generator offers {', '.join(lockable) or 'no locks'}"
            )
        changes["locks"] = sorted(set(locks))
    try:
        return settings.replace(**changes) if changes else settings
    except EngineError as exc:
        raise UIError(str(exc)) from None


def start_evolve(wb: Workbench, body: Any, chunks: int = RENDER_BATCHES) -> Iterator[dict[str, Any]]:
    """Check an evolve request and start rendering; returns the event stream.

    Args:
        wb: the shared workbench.
        body: ``{"run", "branch", "session", "parent", "strength"?, "locks"?, "agent"?}``;
            ``parent`` is the snapshot the tab shows as head, so a tab never evolves from a
            head it has not seen; ``agent`` is the agent's k (children bred and screened per
            place shown; 0 = off, default the tab's last choice, at first 4).
        chunks: render batches per generation (images appear after each).

    Raises:
        UIError: a bad request; Conflict when the branch moved or is already rendering.
    """
    session, head, settings = begin(wb, payload(body))

    def job(emit: Callable[[dict[str, Any]], None]) -> Any:
        last = [-1]

        def progress(done: int, total: int) -> None:
            if done != last[0]:
                last[0] = done
                emit({"type": "progress", "done": done, "total": total})

        def on_image(position: int, image: Any, thumb: str | None) -> None:
            if thumb is not None:  # an elite: its thumbnail file is stored already
                emit({"type": "image", "position": position, "thumb": thumb})

        def on_thumb(position: int, jpeg: bytes) -> None:  # a new image, not yet stored
            emit({"type": "image", "position": position, "preview": data_url(jpeg)})

        return session.evolve(
            settings=settings, progress=progress, on_image=on_image, chunks=chunks, on_thumb=on_thumb
        )

    first = {"type": "start", "generation": head.generation + 1, "n": len(head.population)}
    return stream(wb, session, first, job, "evolve")


def begin(wb: Workbench, body: Mapping[str, Any]) -> tuple[Session, Any, EngineSettings]:
    """What starting a job on a tab's branch checks and takes, in that order: the tab's
    session, its head (the ``parent`` the tab shows), the tab's engine settings and agent k;
    then the branch is claimed and the agent set. Returns (session, head, settings)."""
    session = tab_session(wb, body)
    head = check_parent(session, body)
    settings = evolve_settings(wb, session, head, body)
    k = agent_k(body)
    claim_branch(wb, session.branch.id)
    if k is not None:
        wb.set_agent(session, k)
    return session, head, settings


def check_parent(session: Session, body: Mapping[str, Any]) -> Any:
    """The branch head, if it is the ``parent`` the tab shows; else Conflict (it moved on)."""
    head = session.head()
    if text(body, "parent") != head.id:
        raise Conflict(
            f"branch {session.branch.name!r} moved to generation {head.generation} in another tab; showing it now"
        )
    return head


def agent_k(body: dict[str, Any]) -> int | None:
    """The tab's "agent first pass" setting: children screened per place (0 = off), if sent."""
    if body.get("agent") is None:
        return None
    return whole(body, "agent", 0, MAX_OFFSPRING_FACTOR)


def claim_branch(wb: Workbench, branch_id: str) -> None:
    """Mark a branch busy (one render or autopilot at a time), or raise Conflict."""
    with wb.lock:
        if branch_id in wb.busy:
            raise Conflict("a generation is already rendering on this branch")
        wb.busy.add(branch_id)


def stream(
    wb: Workbench,
    session: Session,
    first: dict[str, Any],
    job: Callable[[Callable[[dict[str, Any]], None]], Any],
    what: str,
) -> Iterator[dict[str, Any]]:
    """Run ``job(emit)`` on a daemon worker thread and return its event stream.

    The stream starts with ``first``, then carries what the job emits, then ``done`` with the
    state of the snapshot the job returns (or ``error``); the branch claimed by
    ``claim_branch`` is released whatever happens.
    """
    branch_id = session.branch.id
    events: queue.Queue[Any] = queue.Queue()

    def work() -> None:
        final: dict[str, Any]
        try:
            snap = job(events.put)
            final = {"type": "done", "state": snapshot_state(wb, session, snap, snap)}
        except USER_ERRORS as exc:
            final = {"type": "error", "message": one_line(exc)}
        except Exception as exc:  # a bug must still end the stream with a message, not hang the tab
            log.exception("%s failed", what)
            final = {"type": "error", "message": f"internal error: {one_line(exc)}"}
        finally:
            with wb.lock:
                wb.busy.discard(branch_id)
        events.put(final)
        events.put(_END)

    threading.Thread(target=work, daemon=True, name=f"imagery-{what}").start()
    return _drain(events, first)


def data_url(jpeg: bytes) -> str:
    """A new image's thumbnail as a data URL: the browser shows it before the commit makes
    the stored file readable."""
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()


def _drain(events: queue.Queue[Any], first: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield first
    while True:
        item = events.get()
        if item is _END:
            return
        yield item
