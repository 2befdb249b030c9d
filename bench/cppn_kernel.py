"""The CPPN kernel compiled (TorchScript) against the same kernel dispatched op by op from Python.

Both render the same evolved population with the same code (``imagery.cppn_kernel``): the
eager reference runs ``render_levels`` as plain Python, the measured one its compiled form,
which the renderer uses. Each is timed alone, and beside a thread doing pure-Python work half
the time (about 1 ms of JSON encoding, then 1 ms asleep: standing in for store commits or
web requests in the same process): an eager render gives the GIL up at every tensor
operation and waits to win it back each time, a compiled one runs without it. Calls
alternate round by round; medians; the pictures are checked to be equal.

    python bench/cppn_kernel.py [--population 16] [--size 256] [--repeats 9] [--generations 10]
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any
from unittest.mock import patch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench.args import at_least  # noqa: E402
from bench.genomes import mutated  # noqa: E402
from bench.timing import interleaved_medians  # noqa: E402
from imagery import cppn_kernel, cppn_render  # noqa: E402
from imagery.cppn import CPPN  # noqa: E402


def eager_kernel() -> Any:
    """The renderer with the kernel run as plain Python, op by op."""
    return patch.object(cppn_render, "compiled_render_levels", cppn_kernel.render_levels)


@contextmanager
def python_busy_thread(work: Any) -> Iterator[None]:
    """A thread doing pure-Python work half the time until the block ends."""
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            deadline = time.perf_counter() + 0.001
            while time.perf_counter() < deadline:
                json.dumps(work, sort_keys=True)
            time.sleep(0.001)

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--population", type=at_least(1), default=16)
    parser.add_argument("--size", type=at_least(1), default=256)
    parser.add_argument("--repeats", type=at_least(1), default=9)
    parser.add_argument("--generations", type=at_least(1), default=10, help="mutations before timing (bigger networks)")
    args = parser.parse_args()
    generator = CPPN.from_config({})
    rng = np.random.default_rng(0)
    genomes = mutated(generator, generator.random(rng, args.population), args.generations, 0.35, rng)

    def render() -> np.ndarray:
        return generator.render_pixels(genomes, args.size)

    compiled = render()
    with eager_kernel():
        if not np.array_equal(render(), compiled):
            print("FAIL: the compiled kernel's pixels differ from the eager kernel's")
            return 1

    def eager() -> np.ndarray:
        with eager_kernel():
            return render()

    calls: dict[str, Callable[[], Any]] = {"compiled": render, "eager": eager}
    nodes = sum(len(g["nodes"]) for g in genomes)
    print(f"CPPN kernel: population {args.population} at {args.size} px, {nodes} nodes, one torch thread")
    print("   pictures identical: yes")
    for label, busy in (("alone", False), ("beside a half-busy thread", True)):
        with python_busy_thread(genomes) if busy else nullcontext():
            times = interleaved_medians(calls, args.repeats)
        fast, slow = times["compiled"], times["eager"]
        print(
            f"   {label:<28} compiled {fast * 1000:8.1f} ms   eager {slow * 1000:8.1f} ms   "
            f"eager / compiled {slow / fast:5.2f}x  (median of {args.repeats})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
