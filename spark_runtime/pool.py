"""A pool of sparks behind the one spark interface: chunks out, images back in order.

``SparkPool.render`` splits a generation into chunks (one per spark by default, or a fixed
size for compiled models), renders them on the sparks at once, and returns the images in the
order of the genomes. A chunk whose spark is lost (``SparkLost``: a killed process, a dead
Ray actor) is retried on another spark; this is safe because a chunk's images are a pure
function of its genomes and the generator config, so a retry can neither lose nor duplicate
an image. Any other error (the generator refused a genome) is the caller's and is raised.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from PIL import Image

from spark_runtime.spark import ProgressCallback, Spark, SparkError

MAX_ATTEMPTS = 3


class SparkLost(SparkError):
    """The spark went away before answering (process died, actor lost); a retry may succeed."""


class _Progress:
    """Sums per-chunk progress into one monotonic ``progress(done, total)`` for the caller."""

    def __init__(self, callback: ProgressCallback | None, total: int) -> None:
        self._callback = callback
        self._total = total
        self._done: dict[int, int] = {}
        self._reported = -1
        self._lock = threading.Lock()

    def chunk(self, index: int, size: int) -> ProgressCallback | None:
        """The progress callback for one chunk; None when nobody listens (a spark in
        another process then sends no progress at all)."""
        if self._callback is None:
            return None

        def report(done: int, total: int) -> None:
            self.set(index, size * done // total if total else size)

        return report

    def set(self, index: int, done: int) -> None:
        if self._callback is None:
            return
        with self._lock:
            self._done[index] = done
            # A retried chunk starts again from zero; the caller's bar never moves back.
            now = max(self._reported, min(self._total, sum(self._done.values())))
            if now == self._reported:
                return
            self._reported = now
            self._callback(now, self._total)


class SparkPool:
    """Renders a generation across several sparks; is itself a spark.

    Args:
        sparks: the sparks, all built from the same generator target and config.
        chunk_size: genomes per chunk; None splits a batch evenly, one chunk per spark.
        max_attempts: how often one chunk may be tried before the render fails.
    """

    def __init__(
        self,
        sparks: Sequence[Spark],
        *,
        chunk_size: int | None = None,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        if not sparks:
            raise SparkError("a spark pool needs at least one spark")
        if chunk_size is not None and chunk_size < 1:
            raise SparkError(f"chunk size must be at least 1, got {chunk_size}")
        if max_attempts < 1:
            raise SparkError(f"max attempts must be at least 1, got {max_attempts}")
        self.sparks = list(sparks)
        self.target = self.sparks[0].target
        self.config = self.sparks[0].config
        self.chunk_size = chunk_size
        self.max_attempts = max_attempts
        self.retries = 0  # chunks re-rendered after a lost spark, over the pool's life
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def launch(self) -> None:
        """Begin loading the generator on every spark without waiting."""
        for spark in self.sparks:
            spark.launch()

    def start(self) -> None:
        """Load the generator on every spark (all launched first, so they load in parallel)."""
        self.launch()
        for spark in self.sparks:
            spark.start()

    def chunks(self, n: int) -> list[tuple[int, int]]:
        """``(start, stop)`` of each chunk of an ``n``-genome batch."""
        size = self.chunk_size or -(-n // len(self.sparks))
        return [(start, min(n, start + size)) for start in range(0, n, size)]

    def render(
        self,
        genomes: Sequence[dict[str, Any]],
        size: int,
        progress: ProgressCallback | None = None,
    ) -> list[Image.Image]:
        """Render ``genomes`` on the sparks; images come back in the genomes' order.

        Raises:
            SparkError: a chunk failed ``max_attempts`` times, or a spark refused it.
        """
        genomes = list(genomes)
        if not genomes:
            return []
        spans = self.chunks(len(genomes))
        tracker = _Progress(progress, len(genomes))
        # One render at a time: two overlapping renders would fight over the same sparks.
        with self._lock:
            if len(self.sparks) == 1:
                parts = [self._serial(genomes, size, spans, tracker)]
            else:
                parts = self._parallel(genomes, size, spans, tracker)
        return [image for part in parts for image in part]

    def _serial(
        self,
        genomes: list[dict[str, Any]],
        size: int,
        spans: list[tuple[int, int]],
        tracker: _Progress,
    ) -> list[Image.Image]:
        # One spark: no threads, the chunks render in the calling thread.
        images: list[Image.Image] = []
        for index, (start, stop) in enumerate(spans):
            for attempt in range(1, self.max_attempts + 1):
                try:
                    part = self._render_chunk(
                        0, genomes[start:stop], size, tracker.chunk(index, stop - start)
                    )
                except SparkLost as exc:
                    self._check_attempts(attempt, exc)
                    continue
                break
            tracker.set(index, stop - start)
            images.extend(part)
        return images

    def _parallel(
        self,
        genomes: list[dict[str, Any]],
        size: int,
        spans: list[tuple[int, int]],
        tracker: _Progress,
    ) -> list[list[Image.Image]]:
        executor = self._pool()
        results: list[list[Image.Image] | None] = [None] * len(spans)
        attempts = [0] * len(spans)
        failed_on: list[set[int]] = [set() for _ in spans]
        pending = deque(range(len(spans)))
        idle = list(range(len(self.sparks)))
        running: dict[Future[list[Image.Image]], tuple[int, int]] = {}
        error: BaseException | None = None
        while running or (pending and error is None):
            for index in list(pending) if error is None else []:
                spark = self._pick(idle, failed_on[index])
                if spark is None:
                    continue
                pending.remove(index)
                idle.remove(spark)
                attempts[index] += 1
                start, stop = spans[index]
                future = executor.submit(
                    self._render_chunk,
                    spark,
                    genomes[start:stop],
                    size,
                    tracker.chunk(index, stop - start),
                )
                running[future] = (index, spark)
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                index, spark = running.pop(future)
                idle.append(spark)
                try:
                    results[index] = future.result()
                    tracker.set(index, spans[index][1] - spans[index][0])
                except SparkLost as exc:
                    try:
                        self._check_attempts(attempts[index], exc)
                    except SparkError as final:
                        error = error or final
                        continue
                    failed_on[index].add(spark)
                    pending.appendleft(index)
                except BaseException as exc:
                    # Let chunks already running finish (a render cannot be interrupted),
                    # start no new ones, then report the first error.
                    error = error or exc
        if error is not None:
            raise error
        return [part for part in results if part is not None]

    def _pick(self, idle: list[int], failed_on: set[int]) -> int | None:
        """An idle spark that has not lost this chunk before; any idle one if all have."""
        for spark in idle:
            if spark not in failed_on:
                return spark
        if idle and len(failed_on) >= len(self.sparks):
            return idle[0]
        return None

    def _check_attempts(self, attempt: int, exc: SparkLost) -> None:
        if attempt >= self.max_attempts:
            raise SparkError(f"a chunk failed {attempt} times, giving up: {exc}") from None
        self.retries += 1

    def _render_chunk(
        self, spark: int, genomes: list[dict[str, Any]], size: int, progress: ProgressCallback | None
    ) -> list[Image.Image]:
        images = self.sparks[spark].render(genomes, size, progress=progress)
        if len(images) != len(genomes):
            raise SparkError(f"spark returned {len(images)} images for {len(genomes)} genomes")
        return images

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(len(self.sparks), thread_name_prefix="spark-pool")
        return self._executor

    def close(self) -> None:
        """Close every spark; the first error is raised after all were tried."""
        errors = []
        for spark in self.sparks:
            try:
                spark.close()
            except Exception as exc:  # collected so one bad spark does not leak the others
                errors.append(exc)
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        if errors:
            raise errors[0]

    def __enter__(self) -> SparkPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
