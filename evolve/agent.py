"""The agent: learns a person's taste from their ratings and does the first pass for them.

Attached to a session (``Agent.for_session``), the agent changes one thing in the loop: the
engine breeds ``k`` times more children than there are places, the agent renders them small
in one batched call, predicts how the person would rate each (``PreferenceModel`` over
``agent_features``), and shows the best predicted mixed with the ones it is least sure about,
never two near-duplicates (``screening.screen``), nor a child that nearly copies a parent the
engine keeps on screen (an elite). What it predicted for the generation it
shows is stored in that snapshot's settings under ``"agent"``, so the predicted scores and
the agreement figure read back from the store like everything else.

Everything it does is a function of the store: the model is fitted on the rating events of
the branch (or the whole run), tie-breaks are seeded from the snapshot's own RNG state, and
features depend only on genomes. The same store state gives the same next generation in any
process. Caches only save work.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from evolve import agent_data
from evolve.agent_blas import single_blas_thread
from evolve.agent_config import AgentConfig, AgentError, Prediction
from evolve.agent_data import AGENT_SESSION, Fitted, RatedSnapshot
from evolve.agent_features import FeatureCache, FeatureMaker
from evolve.agent_fitness import PreferenceFitness
from evolve.agent_pilot import autopilot
from evolve.embeddings import make_extractor
from evolve.engine import Candidate, Screen, elite_indices
from evolve.screening import agreement as _agreement
from evolve.screening import far_from, screen

__all__ = [
    "AGENT_SESSION",
    "Agent",
    "AgentConfig",
    "AgentError",
    "PreferenceFitness",
    "Prediction",
    "autopilot",
]

_FITS_KEPT = 8
_HISTORIES_KEPT = 8


class Agent:
    """A preference model per branch (or run) that screens what the person sees.

    Args:
        config: screening and learning settings.
        cache: feature rows to share with another agent that computes features the same way.
    """

    def __init__(
        self, config: AgentConfig | None = None, cache: FeatureCache | None = None
    ) -> None:
        self.config = config or AgentConfig()
        c = self.config
        if cache is None:
            extractor = None if c.extractor == "stats" else _extractor(c.extractor)
            cache = FeatureCache(FeatureMaker(c.feature_size, extractor, c.layout, c.genome))
        self.features = cache
        self._fits: OrderedDict[tuple[Any, ...], Fitted] = OrderedDict()
        self._pending: tuple[str, Fitted] | None = None
        self._rated: dict[str, RatedSnapshot | None] = {}
        self._comparisons: dict[tuple[str, tuple[int, ...]], Any] = {}
        self._histories: OrderedDict[str, list[Any]] = OrderedDict()
        self._lock = threading.RLock()

    @classmethod
    def for_session(cls, session: Any, config: AgentConfig | None = None) -> Agent:
        """A new agent attached to ``session``: its ``evolve`` now screens through it."""
        agent = cls(config)
        session.agent = agent
        return agent

    def with_config(self, **changes: Any) -> Agent:
        """The same agent with other settings; shares feature rows when they stay valid."""
        config = self.config.replace(**changes)
        same = ("feature_size", "extractor", "layout", "genome")
        shared = all(getattr(config, f) == getattr(self.config, f) for f in same)
        other = Agent(config, self.features if shared else None)
        # What it read from the store does not depend on the settings: shared, with the lock
        # that guards it (the autopilot's copy and a background prefit may run at once).
        other._lock, other._rated, other._histories = self._lock, self._rated, self._histories
        other._comparisons = self._comparisons
        if shared and (config.l2, config.history, config.scope) == (
            self.config.l2,
            self.config.history,
            self.config.scope,
        ):
            other._fits = self._fits
        return other

    # ---- learning -----------------------------------------------------------------------

    def prefit(self, session: Any) -> None:
        """Fit on the head's ratings now, so that the next ``evolve`` finds the model ready.

        The UI calls this in the background as ratings arrive: the fit then happens while
        the person is still looking, not between their Enter and the next generation.
        """
        # The head read here, not through ``session.head()``, which would also update the
        # session's branch from this background thread; with its ratings, in one read, as
        # ``evolve`` reads them.
        branch, events = session.store.head_ratings(session.branch.id)
        if branch.head_snapshot_id is not None:
            self.fit(session, session.store.get_snapshot(branch.head_snapshot_id), events)

    def fit(self, session: Any, through: Any | None = None, ratings: Sequence[Any] | None = None) -> Fitted:
        """The model fitted on the person's ratings of ``through`` (default: the head) and
        the generations before it; with ``scope="run"``, also of the run's other branches.

        ``ratings``: the rating events of ``through`` as an ``evolve`` has just read them
        with the branch, ``through`` being its head; they are not read again.
        """
        # One fit at a time: a background prefit and an evolve's hooks share the caches.
        with self._lock:
            return self._fit(session, through, ratings)

    def _fit(self, session: Any, through: Any | None, ratings: Sequence[Any] | None) -> Fitted:
        through = through or session.head()
        store = session.store
        read = {} if ratings is None else {through.id: ratings}
        snapshots, live = self._training_snapshots(session, through, through if read else None)
        rated = agent_data.rated_snapshots(
            store, snapshots, self.config.history, self._rated, live | {through.id}, read
        )
        key = tuple((r.snapshot.id, r.rating_ids) for r in rated)
        if key in self._fits:
            self._fits.move_to_end(key)
            return self._fits[key]
        render = _renderer(session)
        self.features.fill(
            [(r.snapshot.population, _genomes(store, r.snapshot)) for r in rated], render
        )

        def rows(r: RatedSnapshot) -> np.ndarray:
            return self.features.get(r.snapshot.population, _genomes(store, r.snapshot), render)

        fitted = agent_data.fit(
            rated, rows, self.config.l2, self.features.maker.name, self._comparisons
        )
        self._fits[key] = fitted
        if len(self._comparisons) > 2 * self.config.history:
            used = set(key)
            # In place: an agent made by ``with_config`` shares this memo.
            for stale in [k for k in self._comparisons if k not in used]:
                del self._comparisons[stale]
        while len(self._fits) > _FITS_KEPT:
            self._fits.popitem(last=False)
        return fitted

    def _training_snapshots(
        self, session: Any, through: Any, head: Any | None = None
    ) -> tuple[list[Any], frozenset[str]]:
        """The snapshots to learn from, oldest first, and the ids of the branch heads among
        them (whose ratings may still change). ``head``: the branch head, if just read."""
        store = session.store
        history = self._history(store, session.branch.id, head)
        ids = [s.id for s in history]
        heads = {s.id for s in history[-1:]}
        if through.id in ids:
            cut = ids.index(through.id) + 1
            line, later = history[:cut], set(ids[cut:])
        else:  # a snapshot off this branch's current line: walk its parents
            line, later = [through], set()
            while line[-1].parent_id is not None:
                line.append(store.get_snapshot(line[-1].parent_id))
            line.reverse()
        if self.config.scope == "branch":
            return line, frozenset(heads)
        seen = {s.id for s in line} | later
        others: dict[str, Any] = {}
        for branch in store.list_branches(session.run.id):
            heads.add(branch.head_snapshot_id)
            for s in store.history(branch):
                if s.id not in seen:
                    others.setdefault(s.id, s)
        # Stable order, oldest first, so the window keeps the newest generations.
        ordered = sorted([*others.values(), *line], key=lambda s: (s.generation, s.id))
        return ordered, frozenset(h for h in heads if h)

    def _history(self, store: Any, branch_id: str, head: Any | None = None) -> list[Any]:
        """``store.history`` of a branch, root first, extended from the last one read when the
        head has only moved on by a generation (snapshots never change: safe to keep).
        ``head``: the branch head snapshot as just read, if known."""
        head_id = head.id if head is not None else store.get_branch_by_id(branch_id).head_snapshot_id
        if head_id is None:
            return []
        known = self._histories.get(head_id)
        if known is None:
            head = head if head is not None else store.get_snapshot(head_id)
            before = self._histories.get(head.parent_id or "")
            known = [*before, head] if before is not None else store.history(branch_id)
            self._histories[head_id] = known
            while len(self._histories) > _HISTORIES_KEPT:
                self._histories.popitem(last=False)
        self._histories.move_to_end(head_id)
        return list(known)

    def _fit_for(self, session: Any, head: Any, ratings: Sequence[Any] | None = None) -> Fitted:
        """The fit for breeding from ``head``, made once per ``evolve`` (its hooks share it)."""
        if self._pending is None or self._pending[0] != head.id:
            self._pending = (head.id, self.fit(session, head, ratings))
        return self._pending[1]

    # ---- predicting ---------------------------------------------------------------------

    def predict(self, session: Any, fitted: Fitted, candidates: Sequence[Candidate]) -> Prediction:
        """Predictions of ``fitted`` for candidates (rendered small if not seen before)."""
        return _prediction(fitted, self.features.candidate_rows(candidates, _renderer(session)))

    def predict_for_snapshot(self, session: Any, snapshot: Any | None = None) -> Prediction:
        """What the agent thinks of each position of a snapshot (default: the head).

        The predictions recorded when the snapshot was made, if the agent made it; otherwise
        those of a model fitted on the generations before it (never on its own ratings).
        """
        snapshot = snapshot or session.head()
        record = (snapshot.settings or {}).get("agent")
        if isinstance(record, dict) and "predicted" in record:
            return Prediction.from_record(record)
        store = session.store
        if snapshot.parent_id is None:
            fitted = agent_data.fit([], lambda r: np.zeros((0, 0)), self.config.l2, "")
        else:
            fitted = self.fit(session, store.get_snapshot(snapshot.parent_id))
        return _prediction(fitted, self._snapshot_rows(session, snapshot))

    def utility(self, session: Any, snapshot: Any, fitted: Fitted) -> np.ndarray:
        """The predicted utility of each position of a stored snapshot (mean only)."""
        x = self._snapshot_rows(session, snapshot)
        with single_blas_thread():
            return fitted.model.utility(x)

    def _snapshot_rows(self, session: Any, snapshot: Any, render: Any = None) -> np.ndarray:
        """The feature rows of a stored snapshot's population, in position order (cached by
        individual id; genomes read and images rendered only for rows not cached)."""
        genomes = _genomes(session.store, snapshot)
        return self.features.get(snapshot.population, genomes, render or _renderer(session))

    def agreement(self, session: Any, last: int | None = None) -> float:
        """How often the person's choices fell in the agent's top half of what it showed.

        Over the branch's generations the agent made (the last ``last`` of them if given): a
        person's picks and pairwise winners, or else their top-scored candidates, each count
        1 when the recorded prediction put them above the median shown, 1/2 at it, 0 below.
        0.5 is chance. NaN until the person has chosen something in a generation the agent made.
        """
        hits, count = 0.0, 0
        with self._lock:  # the memos are shared with background fits
            history = self._history(session.store, session.branch.id)
            made = [s for s in history if isinstance((s.settings or {}).get("agent"), dict)]
            made = made[-last:] if last else made
            live = frozenset(s.id for s in history[-1:])  # the head's ratings may still change
            # What the memo lacks (and the head), in one read rather than one per generation.
            unread = [s.id for s in made if s.id not in self._rated or s.id in live]
            read = session.store.ratings_of(unread) if unread else {}
            rated = agent_data.rated_snapshots(session.store, made, len(made), self._rated, live, read)
        for group in rated:
            snapshot, chosen = group.snapshot, _chosen(group)
            if chosen:
                utility = np.asarray(snapshot.settings["agent"]["utility"], dtype=np.float64)
                hits += _agreement(chosen, utility) * len(chosen)
                count += len(chosen)
        return hits / count if count else float("nan")

    def suggest_pair(self, session: Any, snapshot: Any | None = None) -> tuple[int, int]:
        """The two positions whose comparison would teach the model most (pairwise mode).

        The pair whose predicted outcome is least certain: close predicted utilities and
        large uncertainty, ``|u_a - u_b| / sqrt(std_a^2 + std_b^2)`` smallest, among pairs of
        distinct pictures the person has not compared in this generation yet (all pairs once
        every one has been). Ties go to the lower positions, so the choice is reproducible.

        Raises:
            AgentError: the generation has fewer than two distinct candidates.
        """
        return self.suggest_pairs(session, snapshot)[0]

    def suggest_pairs(
        self,
        session: Any,
        snapshot: Any | None = None,
        count: int = 1,
        compared: Iterable[tuple[int, int]] | None = None,
    ) -> list[tuple[int, int]]:
        """The next ``count`` pairs ``suggest_pair`` would name, each one imagined compared
        before the next is chosen (which pair comes next depends on which pairs were
        compared, not on who won, so the whole queue is known now).

        Args:
            compared: the position pairs compared so far in the snapshot (default: those
                stored); a caller adds the ones decided but not stored yet.
        """
        snapshot = snapshot or session.head()
        prediction = self.predict_for_snapshot(session, snapshot)
        u, s = np.asarray(prediction.utility), np.asarray(prediction.std)
        if compared is None:
            compared = [(p.first, p.second) for p in session.store.pairs(snapshot.id)]
        done = {frozenset(p) for p in compared}
        pairs = [
            (a, b)
            for a in range(len(u))
            for b in range(a + 1, len(u))
            if snapshot.population[a] != snapshot.population[b]
        ]
        if not pairs:
            raise AgentError("pairwise mode needs at least two different candidates")

        def doubt(pair: tuple[int, int]) -> float:
            a, b = pair
            return abs(u[a] - u[b]) / max(float(np.hypot(s[a], s[b])), 1e-9)

        out = []
        for _ in range(count):
            fresh = [p for p in pairs if frozenset(p) not in done] or pairs
            out.append(min(fresh, key=doubt))
            done.add(frozenset(out[-1]))
        return out

    # ---- the session hooks --------------------------------------------------------------

    def tie_break(
        self, session: Any, head: Any, fitness: Sequence[float], ratings: Sequence[Any] | None = None
    ) -> list[float]:
        """The head's fitness with equal values put in the order the model predicts.

        Whole-star ratings tie often, and ties make selection a coin toss. The model's order
        is added as less than half the smallest gap between distinct values, so it never
        overrides what the person said; without ratings nothing changes. It is the first of
        the session's hooks in an ``evolve``, so it fits afresh (on ``ratings``, the head's
        rating events as the evolve read them, if given); the others reuse that fit.
        """
        values = np.asarray(fitness, dtype=np.float64)
        self._pending = None
        fitted = self._fit_for(session, head, ratings)
        if not fitted.model.is_fitted or len(values) < 2:
            return values.tolist()
        utility = self.utility(session, head, fitted)
        distinct = np.unique(values)
        gap = float(np.diff(distinct).min()) if len(distinct) > 1 else 1.0
        rank = np.argsort(np.argsort(utility, kind="stable"), kind="stable") / len(values)
        return (values + 0.5 * gap * rank).tolist()

    def screener(
        self,
        session: Any,
        head: Any,
        fitness: Sequence[float] | None = None,
        elite: int = 0,
    ) -> tuple[Screen, int]:
        """The engine's ``screen`` for breeding from ``head``, and the offspring factor k.

        Args:
            session: the session breeding.
            head: the generation bred from.
            fitness: the head's fitness as told to the engine; with ``elite``, it says which
                parents stay on screen, and children that nearly copy them are passed over.
            elite: how many of the fittest parents the engine keeps.
        """
        fitted = self._fit_for(session, head)
        c = self.config
        kept = elite_indices(fitness, elite) if fitness is not None else []  # the engine's choice

        def choose(children: Sequence[Candidate], places: int) -> list[int]:
            render = _renderer(session)
            # By genome, not id: the children passed over never need their content hash.
            x = self.features.compute([ch.genome for ch in children], render)
            with single_blas_thread():
                mean, std = fitted.model.predict(x)
            cols = self.features.maker.image_columns(x.shape[1])
            scale = None if fitted.model.scale is None else fitted.model.scale[cols]
            pool = np.arange(len(children))
            if kept:
                parents = self._snapshot_rows(session, head, render)[kept]
                far = far_from(x[:, cols], parents[:, cols], c.min_distance, scale)
                if far.sum() >= places:
                    pool = np.flatnonzero(far)
            chosen = screen(
                mean[pool],
                std[pool],
                x[pool][:, cols],
                places,
                _screen_rng(head),
                explore=c.explore,
                min_distance=c.min_distance,
                beta=c.beta,
                scale=scale,
            )
            picked = [int(pool[i]) for i in chosen]
            self.features.defer([children[i] for i in picked], x[picked])
            return picked

        return choose, c.offspring_factor

    def record(self, session: Any, head: Any, population: Sequence[Candidate]) -> dict[str, Any]:
        """The ``settings["agent"]`` entry for the generation bred from ``head``."""
        fitted = self._fit_for(session, head)
        self._pending = None  # the generation is bred: the next one refits
        return self.predict(session, fitted, population).to_record(self.config)


# ---- helpers ------------------------------------------------------------------------------


def _extractor(spec: str) -> Any:
    try:
        return make_extractor(spec)
    except ValueError as exc:
        raise AgentError(str(exc)) from None


def _renderer(session: Any) -> Callable[[Sequence[dict[str, Any]], int], Sequence[Any]]:
    """The small renderer: pixel arrays straight from an in-process spark that can make them
    (the same pixels as its images, with no image objects made and read back), else images."""
    pixels = getattr(session.spark, "render_pixels", None)

    def render(genomes: Sequence[dict[str, Any]], size: int) -> Sequence[Any]:
        if pixels is not None:
            return pixels(list(genomes), size)
        return session.spark.render(list(genomes), size)

    return render


def _genomes(store: Any, snapshot: Any) -> Callable[[], list[dict[str, Any]]]:
    return lambda: store.genomes(snapshot)


def _screen_rng(head: Any) -> np.random.Generator:
    """Tie-breaking randomness that is a function of the head alone (its RNG state and
    population are the same in any store that holds the same run)."""
    text = json.dumps(head.rng_state, sort_keys=True) + "|" + ",".join(head.population)
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    return np.random.Generator(np.random.PCG64(seed))


def _prediction(fitted: Fitted, x: np.ndarray) -> Prediction:
    with single_blas_thread():
        mean, std = fitted.model.predict(x)
        scores = fitted.model.score(x)
    return Prediction(
        scores=tuple(float(v) for v in scores),
        utility=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std),
        comparisons=fitted.model.n_comparisons,
    )


def _chosen(rated: RatedSnapshot) -> list[int]:
    """What the person chose in a generation: picks and pair winners, else the top score."""
    group = rated.group
    chosen = set(group.picks) | {w for w, _ in group.pairs}
    if not chosen and group.scores:
        values = {p: v for p, v in group.scores.items() if v is not None}
        if values and len(set(values.values())) > 1:
            top = max(values.values())
            chosen = {p for p, v in values.items() if v == top}
    return sorted(chosen)
