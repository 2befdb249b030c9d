"""Timing the benchmarks share: calls measured in alternating rounds, and a wrapper that
adds up the seconds spent in whatever it wraps."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


def seconds(call: Callable[..., Any], *args: Any) -> float:
    """How long one ``call(*args)`` took."""
    start = time.perf_counter()
    call(*args)
    return time.perf_counter() - start


def interleaved(calls: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """Seconds each call took, round by round: the calls alternate, so that a busy spell on
    the machine hits every one of them alike."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            times[name].append(seconds(call))
    return times


def interleaved_medians(calls: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """The median seconds of each call over ``interleaved`` rounds."""
    return {name: statistics.median(times) for name, times in interleaved(calls, repeats).items()}


class Timed:
    """Wraps a spark or a function and adds up the seconds spent in it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.seconds = 0.0
        self.target = getattr(inner, "target", None)
        self.config = getattr(inner, "config", None)

    def render(self, genomes: Any, size: int, progress: Any = None) -> Any:
        start = time.perf_counter()
        try:
            return self.inner.render(genomes, size, progress)
        finally:
            self.seconds += time.perf_counter() - start

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return self.inner(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start

    def close(self) -> None:
        self.inner.close()
