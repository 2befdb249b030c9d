"""Benchmark: the batched CPPN renderer against a per-pixel reference, measured in one run.

The reference is written the way the classic neat-python CPPN example renders a picture:
a plain Python loop over pixels that evaluates the network node by node with ``math``
functions. Both render the SAME genomes (a population evolved for a few generations, so the
networks have grown past their first few nodes); the script checks that the pictures agree
and prints both timings and the speed-up.

Usage::

    python bench/cppn_render.py [--population 16] [--size 256] [--generations 10]
                                [--device auto|cpu|cuda] [--budget 45]

If rendering the whole population with the reference would take longer than ``--budget``
seconds, the reference renders every k-th pixel row of every genome instead, and its
full-population time is extrapolated from that measured fraction; the script says so.
"""

from __future__ import annotations

import argparse
import colorsys
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from imagery.cppn import CPPN  # noqa: E402
from imagery.cppn_genome import INPUT_IDS, OUTPUT_IDS  # noqa: E402
from imagery.cppn_render import PRE_LIMIT  # noqa: E402

FUNCTIONS = {
    "sin": math.sin,
    "cos": math.cos,
    "gaussian": lambda z: math.exp(-z * z),
    "sigmoid": lambda z: 0.5 * math.tanh(0.5 * z) + 0.5,
    "tanh": math.tanh,
    "abs": abs,
    "identity": lambda z: z,
}


class ReferenceNetwork:
    """A feed-forward network evaluated one node at a time, as in neat-python's examples."""

    def __init__(self, genome: dict) -> None:
        self.node_evals = []
        for node in genome["nodes"]:
            links = [
                (lk["src"], lk["weight"])
                for lk in genome["links"]
                if lk["enabled"] and lk["dst"] == node["id"]
            ]
            self.node_evals.append((node["id"], FUNCTIONS[node["act"]], node["bias"], links))

    def activate(self, inputs: list[float]) -> list[float]:
        values = dict(zip(INPUT_IDS, inputs, strict=True))
        for node_id, func, bias, links in self.node_evals:
            total = bias
            for src, weight in links:
                total += values[src] * weight
            values[node_id] = func(max(-PRE_LIMIT, min(PRE_LIMIT, total)))
        return [values[o] for o in OUTPUT_IDS]


def reference_pixel(outputs: list[float], color: str) -> tuple[int, int, int]:
    if color == "rgb":
        rgb = [(max(-1.0, min(1.0, o)) + 1.0) * 0.5 for o in outputs]
    else:
        rgb = colorsys.hsv_to_rgb(
            (outputs[0] * 0.5) % 1.0, min(abs(outputs[1]), 1.0), min(abs(outputs[2]), 1.0)
        )
    return tuple(int(max(0.0, min(255.0, round(c * 255.0)))) for c in rgb)


def reference_render(genome: dict, size: int, color: str, rows: range) -> np.ndarray:
    """Render the given pixel rows of one genome with a Python loop over pixels."""
    net = ReferenceNetwork(genome)
    image = np.zeros((len(rows), size, 3), np.uint8)
    for r, row in enumerate(rows):
        y = (row * 2.0 + 1.0) / size - 1.0
        for col in range(size):
            x = (col * 2.0 + 1.0) / size - 1.0
            d = math.sqrt(x * x + y * y)
            image[r, col] = reference_pixel(net.activate([x, y, d, 1.0]), color)
    return image


def machine(device: str) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"CPU {cpu} ({torch.get_num_threads()} torch threads)"
    if device == "cuda":
        text += f", GPU {torch.cuda.get_device_name(0)}"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--population", type=int, default=16)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--generations", type=int, default=10)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument(
        "--budget", type=float, default=45.0, help="seconds allowed for the reference"
    )
    args = parser.parse_args()

    generator = CPPN.from_config({"device": args.device})
    rng = np.random.default_rng(2024)
    population = generator.random(rng, args.population)
    for _ in range(args.generations):
        population = [generator.mutate(g, rng, 0.5) for g in population]
    color, size = generator.config["color"], args.size
    device = (
        "cuda"
        if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
        else "cpu"
    )
    hidden = [len(g["nodes"]) - len(OUTPUT_IDS) for g in population]
    links = [sum(lk["enabled"] for lk in g["links"]) for g in population]
    print(f"machine: {machine(device)}; renderer device: {device}")
    print(
        f"population {args.population} at {size}x{size}, hidden nodes {min(hidden)}..{max(hidden)} "
        f"(mean {np.mean(hidden):.1f}), enabled links {min(links)}..{max(links)} (mean {np.mean(links):.1f})"
    )

    generator.render(population, 32)  # warm-up: imports, allocator, CUDA context
    batched_times = []
    for _ in range(5):
        start = time.perf_counter()
        images = generator.render(population, size)
        if device == "cuda":
            torch.cuda.synchronize()
        batched_times.append(time.perf_counter() - start)
    batched = min(batched_times)

    # Estimate the reference cost from two rows of every genome, then pick a row stride
    # that keeps the measured reference run inside the budget.
    start = time.perf_counter()
    for genome in population:
        reference_render(genome, size, color, range(0, size, size // 2))
    estimate = (time.perf_counter() - start) * size / 2
    stride = max(1, math.ceil(estimate / args.budget))
    rows = range(0, size, stride)
    start = time.perf_counter()
    worst, mismatched, total = 0, 0, 0
    for genome, image in zip(population, images, strict=True):
        ref = reference_render(genome, size, color, rows).astype(np.int16)
        fast = np.asarray(image)[rows.start :: rows.step].astype(np.int16)
        diff = np.abs(ref - fast)
        worst, mismatched, total = (
            max(worst, int(diff.max())),
            mismatched + int((diff > 2).sum()),
            total + diff.size,
        )
    measured = time.perf_counter() - start
    reference = measured * size / len(rows)
    what = (
        "all pixels"
        if stride == 1
        else f"every {stride}th pixel row ({len(rows)} of {size}), extrapolated"
    )
    print(
        f"agreement: max channel difference {worst}/255, {mismatched} of {total} channel values differ by > 2"
    )
    print(
        f"batched renderer ({device}): {batched * 1000:.1f} ms for the whole population (best of 5)"
    )
    print(
        f"per-pixel reference: {measured:.2f} s measured over {what} -> {reference:.2f} s for the population"
    )
    print(f"speed-up: {reference / batched:.0f}x")
    if mismatched > total // 1000:
        sys.exit("FAIL: the batched renderer does not reproduce the reference pictures")


if __name__ == "__main__":
    main()
