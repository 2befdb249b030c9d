"""What the browser UI does, as plain functions over the store: testable without a browser.

Every handler takes plain JSON-like input (a dict from a request body or query string),
checks it, and either returns plain JSON-like output or raises a one-line error from
``USER_ERRORS`` before anything stored changes. ``ui/api.py`` maps them onto HTTP routes and
``ui/app.py`` onto the Gradio start view; ``ui/live.py`` holds the streaming evolve.
"""

from __future__ import annotations

import logging
import re
import statistics
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from evolve.agent import AGENT_SESSION, Agent, AgentConfig
from evolve.engine import EngineError, EngineSettings
from evolve.export import ExportError
from evolve.session import RunSpec, Session, SessionError, generator_target
from imagery import GeneratorError
from spark_runtime.spark import InProcessSpark, SparkError, build_generator
from spark_runtime.sparks import SessionSparks
from spark_runtime.store import RatingInput, Store, StoreError
from spark_runtime.store.ratings import fold_picks, fold_scores
from ui.agent_view import DEFAULT_K, screening
from ui.refs import RefError, check_name

log = logging.getLogger(__name__)


class UIError(SessionError):
    """A bad UI request; one line for the user. A SessionError so the CLI reports it too."""

    status = 400


class Conflict(UIError):
    """The request is fine but the branch is busy or moved on in another tab."""

    status = 409


USER_ERRORS: tuple[type[BaseException], ...] = (
    SessionError,
    StoreError,
    RefError,
    EngineError,
    GeneratorError,
    SparkError,
    ExportError,
)

UI_KINDS = ("score", "clear", "pick", "unpick", "pair")
MAX_EVENTS = 500
IDLE_GAP_S = 60.0  # a pause longer than this is a break, not a slow decision
_SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{4,64}$")


# --- input checks -------------------------------------------------------------------------
def text(data: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = data.get(key, default)
    if not isinstance(value, str) or not value.strip():
        raise UIError(f"missing {key!r}: expected a non-empty string")
    if len(value) > 200 or "\n" in value:
        raise UIError(f"{key!r} must be one line of at most 200 characters")
    return value.strip()


def whole(data: Mapping[str, Any], key: str, low: int, high: int, default: Any = None) -> int:
    """A whole number (an integral float or numeric string from a form counts) in low..high."""
    value = data.get(key, default)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise UIError(f"{key!r} must be a whole number from {low} to {high}, got {value!r}")
    return value


def session_id(data: Mapping[str, Any]) -> str:
    value = data.get("session")
    if not isinstance(value, str) or not _SESSION_ID.match(value):
        raise UIError(
            f"bad session id {str(value)[:80]!r}: expected 4-64 letters, digits, '-' or '_'"
        )
    if value == AGENT_SESSION:  # the agent's own ratings: the model must never learn from them
        raise UIError(f"session id {value!r} is reserved for the agent's own ratings")
    return value


def payload(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise UIError(f"malformed request: expected a JSON object, got {type(data).__name__}")
    return data


def tab_session(wb: Workbench, data: Mapping[str, Any]) -> Session:
    """The session of the request's ``run``, ``branch`` (default main) and tab ``session``."""
    return wb.session(text(data, "run"), text(data, "branch", "main"), session_id(data))


# --- shared state -------------------------------------------------------------------------
class Workbench:
    """What the handlers share: the store, one spark per run, busy branches, session stats.

    Args:
        store: the snapshot store.
        max_sessions: how many (run, branch, tab) sessions to keep built.
    """

    def __init__(
        self, store: Store, max_sessions: int = 256, sparks: SessionSparks | None = None
    ) -> None:
        self.store = store
        self.max_sessions = max_sessions
        # With process or Ray sparks each browser tab leases its own spark, so one person's
        # heavy render never queues behind another's; "local" shares one in-process spark per run.
        self.sparks = sparks if sparks is not None and sparks.spec.kind != "local" else None
        self.lock = threading.Lock()
        self.busy: set[str] = set()  # branch ids with a generation rendering
        self._sparks: dict[str, InProcessSpark] = {}
        self._generators: dict[str, Any] = {}
        self._sessions: OrderedDict[tuple[str, str, str], Session] = OrderedDict()
        self._agents: dict[tuple[str, str, str], Agent] = {}
        self._features: dict[str, Any] = {}  # run id -> the agents' shared FeatureCache
        self._decisions: dict[tuple[str, str], list[float]] = {}
        # Background fits of the agents as ratings arrive (one at a time, coalesced per tab).
        self._prefits = ThreadPoolExecutor(max_workers=1, thread_name_prefix="agent-prefit")
        self._prefit_queued: set[tuple[str, str, str]] = set()

    def spark(self, run: Any) -> InProcessSpark:
        """One spark per run keeps its generator (and a model, if any) loaded between calls."""
        with self.lock:
            if run.id not in self._sparks:
                self._sparks[run.id] = _SerialSpark(run.target, run.generator_config)
            return self._sparks[run.id]

    def lockable(self, run: Any) -> list[str]:
        with self.lock:
            if run.id not in self._generators:
                self._generators[run.id] = build_generator(run.target, run.generator_config)
            return list(getattr(self._generators[run.id], "lockable", ()))

    def session(self, run_ref: str, branch: str, tab: str) -> Session:
        run = self.store.get_run(run_ref)
        key = (run.id, branch, tab)
        with self.lock:
            if key in self._sessions:
                self._sessions.move_to_end(key)
                return self._sessions[key]
        spark = (
            self.sparks.spark(tab, run.target, run.generator_config)
            if self.sparks
            else self.spark(run)
        )
        built = Session(self.store, run.id, branch, spark=spark, session_id=tab)
        with self.lock:
            # The agent is on by default. Features depend only on genomes, so every tab's
            # agent on a run shares one feature cache; each keeps its own fits.
            agent = Agent(AgentConfig(offspring_factor=DEFAULT_K), cache=self._features.get(run.id))
            self._features.setdefault(run.id, agent.features)
            built.agent = agent
            self._sessions[key] = built
            self._agents[key] = agent
            while len(self._sessions) > self.max_sessions:
                old, _ = self._sessions.popitem(last=False)
                self._agents.pop(old, None)
        return built

    def agent(self, session: Session) -> Agent:
        """The tab's agent: kept while its first pass is off, since it still predicts."""
        key = (session.run.id, session.branch.name, session.session_id)
        with self.lock:
            found = self._agents.get(key)
            if found is None:  # evicted while a request held it, or built elsewhere: adopt its agent
                found = session.agent or Agent(AgentConfig(offspring_factor=DEFAULT_K))
                self._agents[key] = found
            return found

    def close(self) -> None:
        """Stop the background fits (one already running finishes; queued ones are dropped)."""
        self._prefits.shutdown(wait=True, cancel_futures=True)

    def prefit(self, tab: str, snapshot_id: str) -> None:
        """Refit, in the background, the agents of the tab's sessions whose head was rated.

        The fit then happens while the person is still looking at the grid, and their Enter
        finds the model ready. A fit already queued for a session covers the new ratings too.
        """
        with self.lock:
            targets = [
                (key, built)
                for key, built in self._sessions.items()
                if key[2] == tab
                and built.agent is not None
                and built.branch.head_snapshot_id == snapshot_id
                and key not in self._prefit_queued
            ]
            self._prefit_queued.update(key for key, _ in targets)
        for key, built in targets:
            self._prefits.submit(self._prefit, key, built)

    def _prefit(self, key: tuple[str, str, str], session: Session) -> None:
        with self.lock:
            self._prefit_queued.discard(key)
        agent = session.agent
        try:
            if agent is not None:
                agent.prefit(session)
        except Exception:  # only saves time: the evolve fits again and reports any error
            log.debug("background agent fit failed", exc_info=True)

    def set_agent(self, session: Session, k: int) -> None:
        """Screen ``k`` times more children through the tab's agent; 0 turns the first pass off."""
        agent = self.agent(session)
        if k and agent.config.offspring_factor != k:
            agent = agent.with_config(offspring_factor=k)
            with self.lock:
                self._agents[(session.run.id, session.branch.name, session.session_id)] = agent
        session.agent = agent if k else None

    def decisions(self, run_id: str, tab: str) -> list[float]:
        """Times (epoch seconds) of this tab's decisions in the run; read from the store once."""
        key = (run_id, tab)
        with self.lock:
            if key in self._decisions:
                return self._decisions[key]
        # Branches share their history up to the fork: each snapshot once, all in one read.
        ids = dict.fromkeys(snap.id for branch in self.store.list_branches(run_id) for snap in self.store.history(branch))
        rows = self.store.ratings_of(list(ids))
        times = [r.created_at.timestamp() for events in rows.values() for r in events if r.session == tab]
        with self.lock:
            return self._decisions.setdefault(key, sorted(times))

    def record(self, run_id: str, tab: str, times: Sequence[float]) -> list[float]:
        known = self.decisions(run_id, tab)
        with self.lock:
            known.extend(times)
            return known


class _SerialSpark(InProcessSpark):
    """An in-process spark that renders one batch at a time (a model is not thread-safe)."""

    def __init__(self, target: str, config: dict[str, Any]) -> None:
        super().__init__(target, config)
        self._render_lock = threading.Lock()

    def render(
        self, genomes: Sequence[dict[str, Any]], size: int, progress: Any = None
    ) -> list[Any]:
        with self._render_lock:
            return super().render(genomes, size, progress=progress)

    def render_pixels(self, genomes: Sequence[dict[str, Any]], size: int) -> Any:
        with self._render_lock:
            return super().render_pixels(genomes, size)


def session_stats(times: Sequence[float]) -> dict[str, Any]:
    """Decisions, ratings per minute and median seconds per decision over active time.

    Gaps longer than ``IDLE_GAP_S`` are breaks: they count neither as time spent deciding nor
    as slow decisions. Rates are None until there are two decisions close enough to time.
    """
    ordered = sorted(times)
    gaps = [b - a for a, b in zip(ordered, ordered[1:], strict=False) if b - a <= IDLE_GAP_S]
    active = sum(gaps)
    return {
        "decisions": len(ordered),
        "ratings_per_minute": round(60.0 * len(gaps) / active, 1) if active > 0 else None,
        "median_seconds": round(statistics.median(gaps), 2) if gaps else None,
    }


# --- runs ---------------------------------------------------------------------------------
def list_runs(wb: Workbench) -> list[dict[str, Any]]:
    return [
        {
            "id": run.id,
            "name": run.name,
            "generator": run.generator,
            "population": run.population_size,
            "size": run.size,
            "branches": [b.name for b in wb.store.list_branches(run.id)],
        }
        for run in wb.store.list_runs()
    ]


def generator_config(kind: str, form: Mapping[str, Any]) -> dict[str, Any]:
    """The generator config from the start view's fields (diffusion: model, prompt, negative)."""
    if kind == "diffusion":
        model = str(form.get("model") or "").strip()
        if not model:
            raise UIError(
                "a diffusion run needs a model: a local diffusers folder, FILE.safetensors or 'tiny'"
            )
        config: dict[str, Any] = {"model": model, "prompt": str(form.get("prompt") or "")}
        if form.get("negative"):
            config["negative"] = str(form["negative"])
        return config
    return {}


def create_run(
    wb: Workbench, form: Mapping[str, Any], progress: Callable[[int, int], None] | None = None
) -> dict[str, Any]:
    """Create a run and render generation 0; returns ``{"run", "name", "branch"}``."""
    form = payload(form)
    kind = text(form, "generator", "cppn")
    target = generator_target(kind)  # an unknown generator is a one-line SessionError
    population = whole(form, "population", 1, 1024, 16)
    size = whole(form, "size", 16, 2048, 256)
    seed = whole(form, "seed", 0, 2**63 - 1, 1)
    name = form.get("name") or f"{kind}-{uuid.uuid4().hex[:6]}"
    spec = RunSpec(
        name=check_name("run", str(name).strip()),
        generator=kind,
        generator_config=generator_config(kind, form),
        population=population,
        size=size,
        seed=seed,
    )
    # Generation 0 renders on a spark like every later one (not in this process, and not
    # queued behind another tab's render): the tab's own when the request names its tab,
    # else one lent for the create and handed back for the first tab that opens the run.
    spark, lent = None, None
    if wb.sparks is not None:
        owner = session_id(form) if form.get("session") is not None else None
        lent = None if owner else f"create-{uuid.uuid4().hex[:12]}"
        # Keyed by the config the run will store, which its tabs' sparks are keyed by.
        stored_config = build_generator(target, spec.generator_config or {}).config
        spark = wb.sparks.spark(owner or lent, target, stored_config)
    try:
        session = Session.create(wb.store, spec, spark=spark, progress=progress)
    finally:
        if lent is not None and wb.sparks is not None:
            wb.sparks.hand_back(lent)
    return {"run": session.run.id, "name": session.run.name, "branch": "main"}


# --- one generation -----------------------------------------------------------------------
def snapshot_state(wb: Workbench, session: Session, snap: Any, head: Any) -> dict[str, Any]:
    """Everything the grid needs to show ``snap`` with this tab's own marks on it."""
    rows = wb.store.ratings(snap.id, session.session_id)
    settings = EngineSettings.from_dict(snap.settings["engine"])
    run = session.run
    return {
        "run": {"id": run.id, "name": run.name, "generator": run.generator, "size": run.size},
        "branch": session.branch.name,
        "branches": [b.name for b in wb.store.list_branches(run.id)],
        "snapshot": {
            "id": snap.id,
            "generation": snap.generation,
            "parent_id": snap.parent_id,
            "population": list(snap.population),
            "thumbs": list(snap.thumbs),
            "images": list(snap.images),
        },
        "head": {"id": head.id, "generation": head.generation},
        "is_head": snap.id == head.id,
        "settings": {
            "mutation_strength": settings.mutation_strength,
            "locks": list(settings.locks),
        },
        "lockable": wb.lockable(run),
        "agent": screening(snap.settings, len(snap.population)),
        "marks": {
            "scores": {str(k): v for k, v in fold_scores(rows).items()},
            "picks": sorted(fold_picks(rows)),
        },
        "stats": session_stats(wb.decisions(run.id, session.session_id)),
        "session": session.session_id,
    }


def state(wb: Workbench, query: Mapping[str, Any]) -> dict[str, Any]:
    """The shown generation (the head unless ``generation`` is given) for one tab."""
    query = payload(query)
    session = tab_session(wb, query)
    head = session.head()
    return snapshot_state(wb, session, shown_generation(wb, session, query, head), head)


def shown_generation(wb: Workbench, session: Session, query: Mapping[str, Any], head: Any) -> Any:
    """Generation ``query["generation"]`` of the tab's branch, or ``head`` when none is given."""
    if query.get("generation") in (None, ""):
        return head
    generation = whole(query, "generation", 0, head.generation)
    return head if generation == head.generation else wb.store.snapshot_at(session.branch, generation)


def rate(wb: Workbench, body: Any) -> dict[str, Any]:
    """Append one tab's rating events to a snapshot, all or none; returns the tab's stats.

    An event is ``{"position", "kind", "value"?}``; a pairwise decision is ``{"kind": "pair",
    "position": winner, "other": loser, "value": 1}``, or ``"value": 0`` for "both bad".
    """
    body = payload(body)
    tab = session_id(body)
    snapshot = text(body, "snapshot")
    events = body.get("events")
    if not isinstance(events, list) or not events or len(events) > MAX_EVENTS:
        raise UIError(f"'events' must be a list of 1 to {MAX_EVENTS} rating events")
    parsed = []
    for i, ev in enumerate(events):
        if not isinstance(ev, dict):
            raise UIError(
                f"event {i}: expected an object like {{'position': 0, 'kind': 'score', 'value': 4}}"
            )
        kind = ev.get("kind")
        if kind not in UI_KINDS:
            raise UIError(f"event {i}: unknown kind {kind!r}: use one of {', '.join(UI_KINDS)}")
        value = ev.get("value") if kind in ("score", "pair") else None
        other = ev.get("other")
        if kind == "pair" and other is None:
            raise UIError(f"event {i}: a pair needs 'other', the position it was compared with")
        if kind != "pair" and other is not None:
            raise UIError(f"event {i}: 'other' is only for pair events")
        parsed.append(
            RatingInput(kind=kind, position=ev.get("position"), value=value, other_position=other)
        )
    rows = wb.store.add_ratings(snapshot, parsed, session=tab)
    wb.prefit(tab, snapshot)
    times = wb.record(rows[0].run_id, tab, [r.created_at.timestamp() for r in rows])
    return {"stored": len(rows), "stats": session_stats(times)}


def undo(wb: Workbench, body: Any) -> dict[str, Any]:
    """Move the branch head back one generation (nothing is deleted); returns the new state."""
    body = payload(body)
    session = tab_session(wb, body)
    if session.branch.id in wb.busy:
        raise Conflict("a generation is rendering on this branch: wait for it, then go back")
    head = session.undo()
    return snapshot_state(wb, session, head, head)


def fork(wb: Workbench, body: Any) -> dict[str, Any]:
    """A new branch from a generation of this branch; returns the new branch's state."""
    body = payload(body)
    session = tab_session(wb, body)
    generation = whole(body, "generation", 0, session.head().generation)
    taken = {b.name for b in wb.store.list_branches(session.run.id)}
    if body.get("name"):
        name = check_name("branch", text(body, "name"))
    else:
        stem = f"{session.branch.name[:48]}-g{generation}"
        name = next(n for n in (stem, *(f"{stem}-{i}" for i in range(2, 10_000))) if n not in taken)
    forked = session.fork(generation, name)
    opened = wb.session(session.run.id, forked.branch.name, session.session_id)
    head = opened.head()
    return snapshot_state(wb, opened, head, head)
