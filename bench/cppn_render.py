"""Benchmark: the batched CPPN renderer against a per-pixel reference, measured in one run.

The reference is written the way the classic neat-python CPPN example renders a picture:
a plain Python loop over pixels that evaluates the network node by node with ``math``
functions (a ``FeedForwardNetwork`` shaped like neat-python's, written out here). Both
render the SAME genomes (a population evolved for a few generations, so the networks have
grown past their first few nodes); the script checks that the pictures agree and prints
both timings and the speed-up.

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
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.args import at_least  # noqa: E402
from bench.genomes import mutated  # noqa: E402
from imagery.cppn import CPPN  # noqa: E402
from imagery.cppn_genome import INPUT_IDS, OUTPUT_IDS  # noqa: E402
from imagery.cppn_kernel import PRE_LIMIT  # noqa: E402


def _clamped(func):
    # Like neat-python's activation functions, each clamps its argument first.
    return lambda z: func(max(-PRE_LIMIT, min(PRE_LIMIT, z)))


ACTIVATION_FUNCTIONS = {
    "sin": _clamped(math.sin),
    "cos": _clamped(math.cos),
    "gaussian": _clamped(lambda z: math.exp(-z * z)),
    "sigmoid": _clamped(lambda z: 0.5 * math.tanh(0.5 * z) + 0.5),
    "tanh": _clamped(math.tanh),
    "abs": _clamped(abs),
    "identity": _clamped(lambda z: z),
}


class FeedForwardNetwork:
    """A network evaluated node by node, shaped like neat-python's ``FeedForwardNetwork``."""

    def __init__(self, inputs: list[int], outputs: list[int], node_evals: list[tuple]) -> None:
        self.input_nodes = inputs
        self.output_nodes = outputs
        self.node_evals = node_evals
        self.values = dict.fromkeys(inputs + outputs, 0.0)

    @staticmethod
    def create(genome: dict) -> FeedForwardNetwork:
        node_evals = []
        for node in genome["nodes"]:
            links = [
                (lk["src"], lk["weight"])
                for lk in genome["links"]
                if lk["enabled"] and lk["dst"] == node["id"]
            ]
            act = ACTIVATION_FUNCTIONS[node["act"]]
            node_evals.append((node["id"], act, sum, node["bias"], 1.0, links))
        return FeedForwardNetwork(list(INPUT_IDS), list(OUTPUT_IDS), node_evals)

    def activate(self, inputs: list[float]) -> list[float]:
        for key, value in zip(self.input_nodes, inputs, strict=True):
            self.values[key] = value
        for node, act_func, agg_func, bias, response, links in self.node_evals:
            node_inputs = []
            for i, w in links:
                node_inputs.append(self.values[i] * w)
            s = agg_func(node_inputs)
            self.values[node] = act_func(bias + response * s)
        return [self.values[i] for i in self.output_nodes]


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
    net = FeedForwardNetwork.create(genome)
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
    text = f"CPU {cpu}, {os.cpu_count()} cores"
    if device == "cuda":
        text += f", GPU {torch.cuda.get_device_name(0)}"
    return text


def time_batched(generator: CPPN, population: list[dict], size: int, device: str) -> tuple:
    """Best of ten timings (wall clock, process CPU) of one batched render of the population."""
    generator.render(population, 32)  # warm-up: allocator, CUDA context
    walls, cpus = [], []
    for _ in range(10):
        wall, cpu = time.perf_counter(), time.process_time()
        images = generator.render(population, size)
        if device == "cuda":
            torch.cuda.synchronize()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return min(walls), min(cpus), images


def compare_reference(population: list[dict], images: list, size: int, color: str, budget: float):
    """Render with the per-pixel reference (every k-th row if the budget demands) and compare.

    Returns (wall seconds measured, CPU seconds measured, the share of pixels measured, worst
    channel difference, channel values off by more than 2, channel values compared).
    """
    start = time.perf_counter()
    for genome in population:  # two rows of every genome, to choose the row stride
        reference_render(genome, size, color, range(0, size, size // 2))
    stride = max(1, math.ceil((time.perf_counter() - start) * size / 2 / budget))
    rows = range(0, size, stride)
    worst, off, total = 0, 0, 0
    wall, cpu = time.perf_counter(), time.process_time()
    for genome, image in zip(population, images, strict=True):
        ref = reference_render(genome, size, color, rows).astype(np.int16)
        diff = np.abs(ref - np.asarray(image)[::stride].astype(np.int16))
        worst, off, total = (
            max(worst, int(diff.max())),
            off + int((diff > 2).sum()),
            total + diff.size,
        )
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return wall, cpu, rows, worst, off, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--population", type=at_least(1), default=16)
    parser.add_argument("--size", type=at_least(1), default=256)
    parser.add_argument("--generations", type=at_least(1), default=10)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--budget", type=float, default=45.0, help="seconds for the reference")
    args = parser.parse_args()

    generator = CPPN.from_config({"device": args.device})
    rng = np.random.default_rng(2024)
    population = mutated(generator, generator.random(rng, args.population), args.generations, 0.5, rng)
    color, size = generator.config["color"], args.size
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = "cuda" if cuda else "cpu"
    hidden = [len(g["nodes"]) - len(OUTPUT_IDS) for g in population]
    links = [sum(lk["enabled"] for lk in g["links"]) for g in population]
    print(
        f"machine: {machine(device)}; renderer device: {device}; load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"population {args.population} at {size}x{size}: hidden nodes {min(hidden)}..{max(hidden)} "
        f"(mean {np.mean(hidden):.1f}), enabled links {min(links)}..{max(links)} "
        f"(mean {np.mean(links):.1f})"
    )

    batched_wall, batched_cpu, images = time_batched(generator, population, size, device)
    wall, cpu, rows, worst, off, total = compare_reference(
        population, images, size, color, args.budget
    )
    scale = size / len(rows)  # the reference's time for every pixel of every genome
    what = (
        "all pixels"
        if rows.step == 1
        else f"every k-th pixel row, k={rows.step}, times {scale:.2f}"
    )
    print(f"agreement: max channel difference {worst}/255; {off} of {total} values differ by > 2")
    print(
        f"per-pixel reference, all {args.population} genomes ({what}): "
        f"{wall * scale:.2f} s wall, {cpu * scale:.2f} s CPU"
    )
    mode = "one torch thread, as the renderer runs on CPU" if device == "cpu" else device
    print(
        f"batched renderer, one render() call for all {args.population} ({mode}), best of 10: "
        f"{batched_wall * 1000:.1f} ms wall, {batched_cpu * 1000:.1f} ms CPU"
    )
    print(
        f"speed-up: {wall * scale / batched_wall:.0f}x wall clock, "
        f"{cpu * scale / batched_cpu:.0f}x CPU time (the steadier figure on a busy machine)"
    )
    if off > total // 1000:
        sys.exit("FAIL: the batched renderer does not reproduce the reference pictures")


if __name__ == "__main__":
    main()
