"""The agent in the browser, as plain functions: predictions, pairwise mode and the autopilot.

Like ``ui.handlers``: JSON-like input, JSON-like output or a one-line error raised before
anything stored changes. The agent itself (``evolve.agent``) is the tab's, kept by the
``Workbench``; these functions only ask it things.

- ``agent_info``: the agent's predicted score of each candidate of a generation, with a likely
  range, what it chose when it bred the generation, and the running agreement figure.
- ``pair_queue``: the next pairs to compare in pairwise mode (``Agent.suggest_pairs``), looking
  past the pairs the tab has decided but may not have stored yet; so the browser shows the
  next pair the moment a key is pressed.
- ``start_autopilot``: the agent evolves N generations on its own on a worker thread, and the
  browser reads the stream of events (the same shape as ``ui.live.start_evolve``'s)::

    {"type": "start", "generations": 5, "generation": 3}
    {"type": "generation", "done": 1, "total": 5, "generation": 4, "thumbs": [...]}
    {"type": "done", "state": {...}}          # the new head, handed back to the person
    {"type": "error", "message": "one line"}  # the generations made so far stay
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from evolve.agent import autopilot
from evolve.session import Session
from ui.agent_view import agreement_value, score_bands, screening
from ui.handlers import UIError, Workbench, payload, shown_generation, tab_session, text, whole
from ui.live import begin, stream

MAX_AUTOPILOT = 100
MAX_PENDING = 5000


def _shown(wb: Workbench, session: Session, data: Mapping[str, Any]) -> Any:
    """The snapshot the tab shows: ``snapshot`` (an id in this run), ``generation``, or the head."""
    if data.get("snapshot") not in (None, ""):
        snap = wb.store.get_snapshot(text(data, "snapshot"))
        if snap.run_id != session.run.id:
            raise UIError(f"snapshot {snap.id} is not in run {session.run.name!r}")
        return snap
    return shown_generation(wb, session, data, session.head())


# --- predictions and agreement -------------------------------------------------------------
def agent_info(wb: Workbench, query: Any) -> dict[str, Any]:
    """What the tab's agent thinks of the shown generation, and how often it agreed so far.

    Args:
        query: ``{"run", "branch", "session", "generation"? | "snapshot"?}``.

    Returns:
        ``predicted`` (0..5 per position), ``bands`` (``[low, high]`` per position, or None
        before the agent has learned anything), ``comparisons`` the model learned from,
        ``recorded`` (predicted before the generation was shown), ``agreement`` (0..1, None
        until there is data), ``screening`` (what it chose, or None), ``k`` (0 = off).
    """
    query = payload(query)
    session = tab_session(wb, query)
    snap = _shown(wb, session, query)
    agent = wb.agent(session)
    prediction = agent.predict_for_snapshot(session, snap)
    return {
        "snapshot": snap.id,
        "generation": snap.generation,
        "predicted": [round(float(v), 2) for v in prediction.scores],
        "bands": score_bands(prediction.scores, prediction.utility, prediction.std),
        "comparisons": prediction.comparisons,
        "recorded": prediction.recorded,
        "agreement": agreement_value(agent.agreement(session)),
        "screening": screening(snap.settings, len(snap.population)),
        "k": agent.config.offspring_factor if session.agent is not None else 0,
    }


# --- pairwise mode -------------------------------------------------------------------------
def _pair(pair: Any, n: int, what: str) -> tuple[int, int]:
    ok = isinstance(pair, list) and len(pair) == 2
    ok = ok and all(isinstance(p, int) and not isinstance(p, bool) for p in pair)
    if not ok:
        raise UIError(f"{what}: expected [a, b] with two positions, got {pair!r}")
    a, b = pair
    if not (0 <= a < n and 0 <= b < n):
        raise UIError(f"{what}: positions must be within 0..{n - 1}, got {pair!r}")
    if a == b:
        raise UIError(f"{what}: a pair compares two different positions, got {pair!r}")
    return a, b


def _pending_pairs(body: Mapping[str, Any], n: int) -> list[tuple[int, int]]:
    pending = body.get("pending", [])
    if not isinstance(pending, list) or len(pending) > MAX_PENDING:
        raise UIError(f"'pending' must be a list of at most {MAX_PENDING} [a, b] position pairs")
    return [_pair(pair, n, f"pending pair {i}") for i, pair in enumerate(pending)]


def pair_queue(wb: Workbench, body: Any) -> dict[str, Any]:
    """The next ``count`` pairs to show, in the order the agent would suggest them.

    Args:
        body: ``{"run", "branch", "session", "snapshot", "pending"?: [[a, b], ...],
            "showing"?: [a, b], "count"?: 1..32}``; ``pending`` are pairs the tab decided that
            may not be stored yet, ``showing`` the one on screen now: the queue follows it.

    Returns:
        ``{"snapshot", "pairs": [[a, b], ...], "judged"}``: ``judged`` counts the distinct
        pairs this tab has compared in the snapshot, pending ones included.
    """
    body = payload(body)
    session = tab_session(wb, body)
    snap = _shown(wb, session, {"snapshot": text(body, "snapshot")})
    count = whole(body, "count", 1, 32, 6)
    pending = _pending_pairs(body, len(snap.population))
    showing = body.get("showing")
    ahead = [] if showing is None else [_pair(showing, len(snap.population), "'showing'")]
    tab = session.session_id
    stored = wb.store.pairs(snap.id)
    judged = {frozenset((p.first, p.second)) for p in stored if p.session == tab}
    judged |= {frozenset(p) for p in pending}
    compared = [(p.first, p.second) for p in stored] + pending + ahead
    pairs = wb.agent(session).suggest_pairs(session, snap, count, compared)
    return {"snapshot": snap.id, "pairs": [list(pair) for pair in pairs], "judged": len(judged)}


# --- autopilot -----------------------------------------------------------------------------
def start_autopilot(wb: Workbench, body: Any) -> Iterator[dict[str, Any]]:
    """Check an autopilot request and start it on a worker thread; returns the event stream.

    Args:
        body: ``{"run", "branch", "session", "parent", "generations": 1..100, "strength"?,
            "locks"?, "agent"?}``; ``parent`` is the head the tab shows (as for evolve),
            ``strength`` and ``locks`` apply to every generation, ``agent`` is its k setting.
            With the first pass off the agent still drives, with the k it had last.

    Raises:
        UIError: a bad request (nothing starts, nothing is stored); Conflict when the branch
            moved on or is busy.
    """
    body = payload(body)
    generations = whole(body, "generations", 1, MAX_AUTOPILOT)  # before anything is claimed
    session, head, settings = begin(wb, body)  # settings: the tab's strength and locks
    pilot = session.agent or wb.agent(session)

    def job(emit: Callable[[dict[str, Any]], None]) -> Any:
        def progress(done: int, total: int) -> None:
            snap = session.head()
            emit(
                {
                    "type": "generation",
                    "done": done,
                    "total": total,
                    "generation": snap.generation,
                    "thumbs": list(snap.thumbs),
                }
            )

        return autopilot(session, generations, progress=progress, agent=pilot, settings=settings)

    first = {"type": "start", "generations": generations, "generation": head.generation}
    return stream(wb, session, first, job, "autopilot")
