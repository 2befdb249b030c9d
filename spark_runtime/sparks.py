"""Where images render, chosen by one option: ``--sparks local | process:N | ray | ray:ADDRESS``.

- ``parse_sparks(text)`` turns the option into a ``SparkSpec`` (one-line ``SparkError`` on
  bad input).
- ``make_pool(spec, target, config)`` builds a ``SparkPool`` for a batch run: the whole
  generation is split across all the sparks.
- ``SessionSparks`` gives each browser session a spark of its own: leased on the session's
  first render, released after it has been idle a while, so one person's heavy render does
  not stall another's.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from PIL import Image

from spark_runtime.pool import MAX_ATTEMPTS, SparkLost, SparkPool
from spark_runtime.spark import InProcessSpark, ProgressCallback, Spark, SparkError

MAX_PROCESS_SPARKS = 64
_COUNT = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class SparkSpec:
    """A parsed ``--sparks`` value.

    Args:
        kind: ``local`` (in this process), ``process`` (spawned subprocesses) or ``ray``.
        count: number of process sparks (1 for the other kinds).
        address: Ray cluster address; None starts a local cluster.
    """

    kind: str = "local"
    count: int = 1
    address: str | None = None

    def __str__(self) -> str:
        if self.kind == "process":
            return f"process:{self.count}"
        if self.kind == "ray" and self.address:
            return f"ray:{self.address}"
        return self.kind

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SparkSpec:
        return cls(**data)


def parse_sparks(text: str | SparkSpec | None) -> SparkSpec:
    """Parse ``local``, ``process``, ``process:N``, ``ray`` or ``ray:ADDRESS``.

    Raises:
        SparkError: anything else, with the accepted forms in its one-line message.
    """
    if isinstance(text, SparkSpec):
        return text
    if text is None:
        return SparkSpec()
    raw = str(text).strip()
    kind, sep, rest = raw.partition(":")
    kind = kind.lower()
    usage = "use local, process:N or ray[:ADDRESS]"
    if kind == "local" and not sep:
        return SparkSpec()
    if kind == "process":
        if not sep:
            return SparkSpec("process", 1)
        if not _COUNT.fullmatch(rest) or not 1 <= int(rest) <= MAX_PROCESS_SPARKS:
            raise SparkError(
                f"bad --sparks {raw!r}: process:N needs a whole number N from 1 to "
                f"{MAX_PROCESS_SPARKS}"
            )
        return SparkSpec("process", int(rest))
    if kind == "ray":
        if not sep:
            return SparkSpec("ray")
        if not rest.strip() or any(c.isspace() for c in rest):
            raise SparkError(f"bad --sparks {raw!r}: ray:ADDRESS needs an address, e.g. ray:auto")
        return SparkSpec("ray", 1, rest)
    raise SparkError(f"bad --sparks {raw!r}: {usage}")


def cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def ray_defaults(free_only: bool = False) -> tuple[Any, int]:
    """``(RayOptions, sparks)`` for the connected cluster: one spark per GPU when it has
    GPUs, otherwise one single-CPU spark per CPU; ``free_only`` counts only what no other
    actor holds now (so that none of ours waits forever for room)."""
    from spark_runtime.ray_spark import RayOptions, cluster_resources

    total = cluster_resources()
    resources = cluster_resources(free_only=True) if free_only else total
    if total.get("GPU", 0) >= 1:
        return RayOptions(num_cpus=1.0, num_gpus=1.0), max(1, int(resources.get("GPU", 0)))
    return RayOptions(num_cpus=1.0), max(1, int(resources.get("CPU", 1)))


def spark_factory(
    spec: SparkSpec | str, free_only: bool = False
) -> tuple[Callable[[str, dict[str, Any]], Spark], int | None]:
    """``(new_spark(target, config), capacity)`` for one spark per user of the spec.

    ``capacity`` is how many such sparks may exist at once (None: no limit of ours); for Ray
    with ``free_only``, how many fit in the cluster's free resources now.
    """
    spec = parse_sparks(spec)
    if spec.kind == "local":
        return InProcessSpark, None
    if spec.kind == "process":
        from spark_runtime.process_spark import ProcessSpark

        threads = max(1, cores() // spec.count)

        def new_process(target: str, config: dict[str, Any]) -> Spark:
            return ProcessSpark(target, config, threads=threads)

        return new_process, spec.count
    from spark_runtime.ray_spark import RaySpark, connect

    connect(spec.address)
    options, count = ray_defaults(free_only)

    def new_actor(target: str, config: dict[str, Any]) -> Spark:
        return RaySpark(target, config, options=options, address=spec.address)

    return new_actor, count


def make_pool(
    spec: SparkSpec | str,
    target: str,
    config: dict[str, Any],
    *,
    start: bool = True,
) -> SparkPool:
    """A pool of every spark the spec allows, all rendering ``target`` with ``config``.

    ``start`` loads the generators now (in parallel) rather than on the first render; a bad
    config then fails here, with nothing rendered or stored.
    """
    spec = parse_sparks(spec)
    factory, capacity = spark_factory(spec, free_only=True)
    sparks = [factory(target, config) for _ in range(capacity or 1)]
    pool = SparkPool(sparks)
    if start:
        try:
            pool.start()
        except BaseException:
            pool.close()
            raise
    return pool


# Per-session sparks


@dataclass
class _Lease:
    key: str
    spark: Spark | None = None
    busy: int = 0
    last_used: float = 0.0
    ready: threading.Event = field(default_factory=threading.Event)


def _key(target: str, config: dict[str, Any]) -> str:
    return target + "|" + json.dumps(config, sort_keys=True)


class SessionSpark:
    """A session's handle on its spark; pass it to ``Session(spark=...)``.

    Holds no spark itself: each render leases the session's spark from the manager (making
    one on first use or after an idle release) and hands it back when done. A spark lost
    mid-batch is retried, since a batch's images depend only on its genomes and the config.
    """

    def __init__(
        self, manager: SessionSparks, session_id: str, target: str, config: dict[str, Any]
    ) -> None:
        self.manager = manager
        self.session_id = session_id
        self.target = target
        self.config = dict(config)

    def launch(self) -> None:
        """Nothing to load ahead: the spark is leased (and started) on the first render."""

    def start(self) -> None:
        """Nothing to load ahead: the spark is leased (and started) on the first render."""

    def render(
        self,
        genomes: Sequence[dict[str, Any]],
        size: int,
        progress: ProgressCallback | None = None,
    ) -> list[Image.Image]:
        if not genomes:
            return []
        for attempt in range(1, MAX_ATTEMPTS + 1):
            spark = self.manager._acquire(self.session_id, self.target, self.config)
            try:
                return spark.render(genomes, size, progress=progress)
            except SparkLost as exc:
                if attempt == MAX_ATTEMPTS:
                    raise SparkError(
                        f"rendering failed {attempt} times, giving up: {exc}"
                    ) from None
            finally:
                self.manager._done(self.session_id)
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Release the session's spark now (the browser tab went away)."""
        self.manager.release(self.session_id)


class SessionSparks:
    """One spark per browser session, leased on first render, released when idle.

    Args:
        spec: ``--sparks`` value; each session gets one spark of that kind (``process:N``
            allows N at once, ``ray`` as many as the cluster has GPUs, or CPUs).
        idle_timeout_s: a session's spark is closed after this long without a render.
        evict_after_s: at capacity, a spark of another generator is closed to make room for
            a new session only once it has been idle this long: a generation renders in
            several calls, and the gaps between them are not a session being done.
        wait_timeout_s: how long a first render may wait for a free spark when all are
            rendering for other sessions.
        reap_interval_s: how often a background thread releases idle sparks (None: never;
            call ``reap`` yourself).
        factory, capacity: build sparks some other way (tests); overrides ``spec``.
        clock: monotonic seconds (tests pass a fake).
    """

    def __init__(
        self,
        spec: SparkSpec | str = "local",
        *,
        idle_timeout_s: float = 600.0,
        evict_after_s: float = 2.0,
        wait_timeout_s: float = 600.0,
        reap_interval_s: float | None = 30.0,
        factory: Callable[[str, dict[str, Any]], Spark] | None = None,
        capacity: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spec = parse_sparks(spec)
        if factory is None:
            factory, capacity = spark_factory(self.spec)
        self._factory = factory
        self.capacity = capacity
        self.idle_timeout_s = idle_timeout_s
        self.evict_after_s = evict_after_s
        self.wait_timeout_s = wait_timeout_s
        self._clock = clock
        self._leases: dict[str, _Lease] = {}
        self._unowned = 0  # how many sparks were handed back (names their leases)
        self._cond = threading.Condition()
        self._closed = False
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None
        if reap_interval_s is not None:
            self._reaper = threading.Thread(
                target=self._reap_loop, args=(reap_interval_s,), name="spark-reaper", daemon=True
            )
            self._reaper.start()

    def spark(self, session_id: str, target: str, config: dict[str, Any]) -> SessionSpark:
        """The handle a session renders through; cheap, nothing starts until it renders."""
        return SessionSpark(self, session_id, target, config)

    def leased(self) -> dict[str, int]:
        """Sessions holding a spark now, with how many renders each has in flight (sparks
        handed back are nobody's)."""
        with self._cond:
            return {sid: lease.busy for sid, lease in self._leases.items() if not sid.startswith(_UNOWNED)}

    def release(self, session_id: str) -> bool:
        """Close a session's spark now; one still rendering is closed when it finishes.

        Returns whether the session held an idle spark that was closed.
        """
        with self._cond:
            lease = self._leases.get(session_id)
            if lease is None or lease.busy:
                if lease is not None:
                    lease.last_used = float("-inf")  # the next reap takes it
                return False
            del self._leases[session_id]
            self._cond.notify_all()
        _close(lease)
        return True

    def hand_back(self, session_id: str) -> None:
        """Let go of a session's idle spark without closing it: the next session that needs
        a spark of its generator takes it as it is. For a spark lent for one job, such as
        rendering a new run's generation 0 before any tab has the run open."""
        with self._cond:
            lease = self._leases.get(session_id)
            if lease is None or lease.busy:
                return
            self._unowned += 1
            self._leases[f"{_UNOWNED}{self._unowned}"] = self._leases.pop(session_id)
            self._cond.notify_all()

    def reap(self) -> int:
        """Close the sparks of sessions idle longer than ``idle_timeout_s``; returns how many.
        The other idle sparks are polled: a worker that died meanwhile is cleaned up."""
        cutoff = self._clock() - self.idle_timeout_s
        with self._cond:
            idle = [
                sid
                for sid, lease in self._leases.items()
                if lease.busy == 0 and lease.spark is not None and lease.last_used <= cutoff
            ]
            doomed = [self._leases.pop(sid) for sid in idle]
            if doomed:
                self._cond.notify_all()
            kept = [lease.spark for lease in self._leases.values() if lease.busy == 0 and lease.spark is not None]
        for lease in doomed:
            _close(lease)
        for spark in kept:
            poll = getattr(spark, "poll", None)
            if poll is not None:
                with contextlib.suppress(Exception):  # a spark that cannot tell is left to its render
                    poll()
        return len(doomed)

    def close(self) -> None:
        """Stop the reaper and close every spark (waiting for renders in flight)."""
        self._stop.set()
        with self._cond:
            self._closed = True
            while any(lease.busy for lease in self._leases.values()):
                self._cond.wait()
            doomed = list(self._leases.values())
            self._leases.clear()
        for lease in doomed:
            _close(lease)

    def __enter__(self) -> SessionSparks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Leasing

    def _acquire(self, session_id: str, target: str, config: dict[str, Any]) -> Spark:
        key = _key(target, config)
        deadline = self._clock() + self.wait_timeout_s
        doomed: list[_Lease] = []
        build = False
        with self._cond:
            while True:
                if self._closed:
                    raise SparkError("the spark manager is closed")
                lease = self._leases.get(session_id)
                if lease is not None and lease.key == key:
                    lease.busy += 1
                    break
                if lease is not None and lease.busy == 0:
                    # The session moved to another run: its old generator goes.
                    doomed.append(self._leases.pop(session_id))
                    continue
                if lease is None:
                    lease = self._handed_over(session_id, key)
                    if lease is not None:
                        break
                if lease is None and self._has_room(doomed):
                    lease = self._leases[session_id] = _Lease(key, busy=1)
                    build = True
                    break
                now = self._clock()
                remaining = deadline - now
                if remaining <= 0:
                    raise SparkError(
                        f"all {self.capacity} sparks are busy rendering for other sessions; "
                        "try again in a moment"
                    )
                # Woken when a render ends; a session waiting for room also when the oldest
                # idle spark may be evicted.
                wait = min(remaining, 1.0)
                if lease is None:
                    wait = min(wait, max(0.001, self._next_eviction() - now))
                self._cond.wait(wait)
        for old in doomed:
            _close(old)
        if build:
            self._build(session_id, lease, target, config)
        lease.ready.wait()
        if lease.spark is None:
            self._done(session_id)
            raise SparkError("the session's spark could not be started")
        return lease.spark

    def _handed_over(self, session_id: str, key: str) -> _Lease | None:
        """An idle spark of the same generator, moved over as it is (nothing to close or
        load: it renders the same images for anyone): one handed back, else at capacity
        another session's, least recently used first; None if there is none.

        More sessions than sparks then share them between render calls. Closing one and
        starting another instead costs each call a spark start: three tabs evolving at once on
        two process sparks took 10.9 to 15.2 s a generation that way, 1.5 to 2.3 s sharing
        (browser sessions against ``imagery ui --sparks process:2``, 2-core VM)."""
        full = self.capacity is not None and len(self._leases) >= self.capacity
        idle = [
            (not sid.startswith(_UNOWNED), lease.last_used, sid)
            for sid, lease in self._leases.items()
            if lease.busy == 0
            and lease.key == key
            and lease.spark is not None
            and (full or sid.startswith(_UNOWNED))  # below capacity, a session gets its own
        ]
        if not idle:
            return None
        lease = self._leases[session_id] = self._leases.pop(min(idle)[2])
        lease.busy, lease.last_used = 1, self._clock()  # a release its last session asked for is void
        return lease

    def _has_room(self, doomed: list[_Lease]) -> bool:
        """Room for one more spark, after closing the least recently used spark that has been
        idle ``evict_after_s`` if need be."""
        if self.capacity is None or len(self._leases) < self.capacity:
            return True
        cutoff = self._clock() - self.evict_after_s
        idle = [
            (lease.last_used, sid)
            for sid, lease in self._leases.items()
            if lease.busy == 0 and lease.last_used <= cutoff
        ]
        if not idle:
            return False
        doomed.append(self._leases.pop(min(idle)[1]))
        return True

    def _next_eviction(self) -> float:
        """When the least recently used idle spark may be evicted (``inf``: none is idle)."""
        idle = [lease.last_used for lease in self._leases.values() if lease.busy == 0]
        return min(idle) + self.evict_after_s if idle else float("inf")

    def _build(self, session_id: str, lease: _Lease, target: str, config: dict[str, Any]) -> None:
        # Outside the lock: a Ray actor takes a moment to place; other sessions go on.
        try:
            lease.spark = self._factory(target, config)
        except BaseException:
            lease.ready.set()
            self._done(session_id)
            raise
        lease.ready.set()

    def _done(self, session_id: str) -> None:
        with self._cond:
            lease = self._leases.get(session_id)
            if lease is not None:
                lease.busy -= 1
                if lease.spark is None and lease.busy == 0:
                    del self._leases[session_id]  # its build failed; the next render retries
                elif lease.last_used != float("-inf"):
                    lease.last_used = self._clock()
            self._cond.notify_all()

    def _reap_loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.reap()


# Leases of sparks handed back start with this (no session id can: the UI allows letters,
# digits, '-' and '_').
_UNOWNED = "\x00handed-back-"


def _close(lease: _Lease) -> None:
    if lease.spark is not None:
        # A spark that fails to close is gone either way.
        with contextlib.suppress(Exception):
            lease.spark.close()
