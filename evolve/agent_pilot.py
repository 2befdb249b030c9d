"""Autopilot: the agent evolves a few generations on its own, then hands back.

The agent scores each head with its model, stores the scores as ordinary rating events of
session ``AGENT_SESSION`` (so the generations read like any other and the person can see
what it did), and lets the session evolve with itself screening. It never learns from those
scores: ``agent_data.person_group`` leaves them out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from evolve.agent_config import AgentError
from evolve.agent_data import AGENT_SESSION, person_group
from evolve.session import Progress
from spark_runtime.store import RatingInput

if TYPE_CHECKING:
    from evolve.agent import Agent


def autopilot(
    session: Any,
    generations: int,
    progress: Progress | None = None,
    agent: Agent | None = None,
    settings: Any | None = None,
) -> Any:
    """Let the agent evolve ``generations`` generations on its own, then hand back.

    Each generation the agent scores the head's candidates with its model (rating events
    of session ``AGENT_SESSION``; positions the person already scored keep their score),
    and the session evolves with the agent screening by predicted score alone: with nobody
    to answer, neither exploring nor optimism can teach it anything. The generations are
    ordinary snapshots.

    Args:
        session: the session to drive; its own agent is used unless ``agent`` is given.
        generations: how many generations to make (>= 1).
        progress: called as ``progress(done, generations)`` after each.
        agent: the agent to use (default the session's, else a new default one).
        settings: engine settings for every generation it makes (the person's mutation
            strength and gene locks); default those of each head.

    Returns:
        The new head snapshot.
    """
    if isinstance(generations, bool) or not isinstance(generations, int) or generations < 1:
        raise AgentError(f"autopilot needs at least 1 generation, got {generations!r}")
    if agent is None and getattr(session, "agent", None) is None:
        from evolve.agent import Agent  # here: evolve.agent imports this module

        agent = Agent()
    base = agent or session.agent
    pilot = base.with_config(explore=0.0, beta=0.0)
    saved = getattr(session, "agent", None)
    session.agent = pilot
    try:
        head = session.head()
        for done in range(generations):
            # The head's ratings read once, for the fit and for what the person scored.
            ratings = session.store.ratings(head.id)
            fitted = pilot.fit(session, head, ratings)
            utility = pilot.utility(session, head, fitted)
            scored = person_group(session.store, head, ratings)
            taken = set(scored.group.scores) if scored else set()
            events = [
                RatingInput(kind="score", position=i, value=round(float(s), 4))
                for i, s in enumerate(fitted.squash(utility))
                if i not in taken
            ]
            if events:
                session.store.add_ratings(head.id, events, session=AGENT_SESSION)
            head = session.evolve(settings=settings)
            if progress:
                progress(done + 1, generations)
    finally:
        session.agent = saved
    return session.head()
