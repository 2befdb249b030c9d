"""Batched torch renderer for CPPN genomes: a whole population in one computation.

Every node of every genome in the batch is one row of a ``[rows, pixels]`` tensor (the four
inputs are shared rows). Rows are grouped into layers by depth (one more than the deepest
hidden node feeding them; the outputs come last), so a layer is computed in a handful of
tensor ops for all genomes at once: gather each row's source rows, weight them, add them
up, clamp, and apply the activation. Rows in a layer are sorted by activation, so each
function runs once per layer on a contiguous block. Nothing is padded: genomes of any size
share the rows, and a row only ever adds its own links. Pixels go through in chunks sized
to stay in cache.

Bit-identical pictures, alone or in any batch, on CPU: a row's sum is folded in the
genome's own link order with separate multiplies and adds, each rounded exactly by IEEE
rules whatever the SIMD lane or thread. Nothing is a matrix product, whose blocking (and so
rounding) depends on the batch shape. ``sigmoid`` is built from ``tanh`` because torch's
fused sigmoid rounds differently in its scalar and SIMD code paths, which would make a
pixel's value depend on where it sits in the tensor.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from imagery.cppn_genome import ACTIVATIONS, INPUT_IDS, OUTPUT_IDS
from imagery.protocol import Genome, ProgressCallback

PRE_LIMIT = 32.0  # clamp on a node's summed input: keeps every value finite and bounded
_ALIGN = 64  # chunk lengths are multiples of this
_CHUNK_ELEMENTS = {"cpu": 1 << 19, "cuda": 1 << 26}  # rows x pixels held per chunk


def activate_(name: str, x: torch.Tensor) -> None:
    """Apply one named activation to ``x`` in place (the functions a genome's nodes name)."""
    if name == "sin":
        x.sin_()
    elif name == "cos":
        x.cos_()
    elif name == "gaussian":
        x.mul_(x).neg_().exp_()
    elif name == "sigmoid":
        x.mul_(0.5).tanh_().mul_(0.5).add_(0.5)
    elif name == "tanh":
        x.tanh_()
    elif name == "abs":
        x.abs_()
    elif name != "identity":
        raise ValueError(f"unknown activation {name!r}")


@dataclass(frozen=True)
class _Layer:
    """One layer's rows ``[start, start + size)``, in activation order.

    The sums are built in a scratch block whose rows are sorted by fan-in, most links first,
    so term ``k`` of every row that has one is a single contiguous ``rows[:counts[k]]``
    update with no padding; ``order`` then permutes the scratch rows into activation order.
    """

    start: int
    size: int
    counts: list[int]  # counts[k]: rows with more than k links
    sources: torch.Tensor  # [sum(counts)] rows to gather, term-major
    weights: torch.Tensor  # [sum(counts), 1]
    bias: torch.Tensor  # [size, 1], in fan-in order
    order: torch.Tensor  # [size]: scratch row of each layer row
    groups: list[tuple[str, int, int]]  # (activation, first row, end row) within the layer


@dataclass(frozen=True)
class _Packed:
    rows: int
    layers: list[_Layer]
    outputs: torch.Tensor  # [3 * B] rows of each genome's outputs, output-major


def _incoming(genome: Genome) -> dict[int, list[tuple[int, float]]]:
    """Enabled links into each node as (source, weight), in the genome's own link order."""
    incoming: dict[int, list[tuple[int, float]]] = {}
    for link in genome["links"]:
        if link["enabled"]:
            incoming.setdefault(link["dst"], []).append((link["src"], link["weight"]))
    return incoming


def _depths(genome: Genome, incoming: dict[int, list[tuple[int, float]]]) -> dict[int, int]:
    """Layer of each hidden node: 1 + the deepest hidden node feeding it (inputs are 0)."""
    depth = dict.fromkeys(INPUT_IDS, 0)
    for node in genome["nodes"][: -len(OUTPUT_IDS)]:
        feeding = [depth[src] for src, _ in incoming.get(node["id"], ())]
        depth[node["id"]] = 1 + max(feeding, default=0)
    return depth


def _layer(start: int, members: list, incoming: list, rows: list, device: torch.device) -> _Layer:
    """Build one layer from (activation index, genome, node order, node) members; ``rows[b]``
    maps genome ``b``'s node ids to their rows and gains this layer's."""
    # By activation, so each function is one block; (activation, genome, node order) is
    # unique, so the tuples sort without ever comparing their node dicts.
    members = sorted(members)
    links, sources_of, weights_of = [], [], []
    for i, (_, b, _, node) in enumerate(members):
        genome_rows = rows[b]
        genome_rows[node["id"]] = start + i
        into = incoming[b].get(node["id"], ())
        links.append(into)
        sources_of.append([genome_rows[src] for src, _ in into])
        weights_of.append([w for _, w in into])
    fan_of = [-len(lk) for lk in links]
    by_fan = sorted(range(len(members)), key=fan_of.__getitem__)  # most links first, stable
    fans = [-fan_of[i] for i in by_fan]  # descending
    counts, remaining = [], len(fans)
    for k in range(fans[0] if fans else 0):
        while fans[remaining - 1] <= k:  # rows with more than k links: a prefix of by_fan
            remaining -= 1
        counts.append(remaining)
    # Term-major: term 0 of every row (in fan-in order), then term 1, ...: rows listed one
    # after another, then stably sorted by term number.
    fan_sizes = np.asarray(fans, dtype=np.int64)
    starts = np.cumsum(fan_sizes) - fan_sizes
    terms = np.arange(int(fan_sizes.sum())) - np.repeat(starts, fan_sizes)  # k of each link
    term_major = np.argsort(terms, kind="stable")
    chain = itertools.chain.from_iterable
    sources = np.array(list(chain(sources_of[i] for i in by_fan)), dtype=np.int64)[term_major]
    weights = np.array(list(chain(weights_of[i] for i in by_fan)), dtype=np.float64)[term_major]
    order = np.empty(len(members), np.int64)
    order[by_fan] = np.arange(len(members))
    groups: list[tuple[str, int, int]] = []
    for i, (act, *_) in enumerate(members):
        if groups and groups[-1][0] == ACTIVATIONS[act]:
            groups[-1] = (groups[-1][0], groups[-1][1], i + 1)
        else:
            groups.append((ACTIVATIONS[act], i, i + 1))
    bias = [[members[i][3]["bias"]] for i in by_fan]
    return _Layer(
        start=start,
        size=len(members),
        counts=counts,
        sources=torch.from_numpy(sources).to(device),
        weights=torch.from_numpy(weights.astype(np.float32)).to(device).view(-1, 1),
        bias=torch.tensor(bias, dtype=torch.float32, device=device),
        order=torch.from_numpy(order).to(device),
        groups=groups,
    )


def _pack(genomes: Sequence[Genome], device: torch.device) -> _Packed:
    incoming = [_incoming(g) for g in genomes]
    depths = [_depths(g, inc) for g, inc in zip(genomes, incoming, strict=True)]
    levels = 1 + max(max(d.values()) for d in depths)  # hidden layers, then the outputs
    members: list[list[tuple[int, int, int, dict]]] = [[] for _ in range(levels)]
    for b, (genome, depth) in enumerate(zip(genomes, depths, strict=True)):
        for order, node in enumerate(genome["nodes"]):
            level = depth.get(node["id"], levels) - 1
            members[level].append((ACTIVATIONS.index(node["act"]), b, order, node))
    rows = [{nid: nid for nid in INPUT_IDS} for _ in genomes]
    layers, start = [], len(INPUT_IDS)
    for level in members:
        layers.append(_layer(start, level, incoming, rows, device))
        start += len(level)
    outputs = [rows[b][out] for out in OUTPUT_IDS for b in range(len(genomes))]
    return _Packed(start, layers, torch.tensor(outputs, device=device))


def _coordinates(size: int, length: int, device: torch.device) -> torch.Tensor:
    """x, y, d, bias for every pixel (row-major, padded to ``length``), x and y in [-1, 1]."""
    # Pixel centres, so any resolution samples the same continuous picture.
    axis = (torch.arange(size, device=device).float() * 2.0 + 1.0) / size - 1.0
    coords = torch.ones(4, length, device=device)
    coords[0, : size * size] = axis.repeat(size)
    coords[1, : size * size] = axis.repeat_interleave(size)
    coords[2] = torch.sqrt(coords[0] * coords[0] + coords[1] * coords[1])
    return coords


def _evaluate(packed: _Packed, coords: torch.Tensor) -> torch.Tensor:
    """Run every genome on every pixel of a chunk; returns the raw outputs, [3, B, P]."""
    length = coords.shape[1]
    values = torch.empty(packed.rows, length, device=coords.device)
    values[: len(INPUT_IDS)] = coords
    scratch = torch.empty(max(layer.size for layer in packed.layers), length, device=coords.device)
    for layer in packed.layers:
        sums = scratch[: layer.size]
        terms = values.index_select(0, layer.sources).mul_(layer.weights)
        # Each row: bias + term 0 + term 1 + ..., in its genome's link order.
        sums.copy_(layer.bias.expand(-1, length))
        offset = 0
        for count in layer.counts:
            sums[:count].add_(terms[offset : offset + count])
            offset += count
        block = values[layer.start : layer.start + layer.size]
        torch.index_select(sums, 0, layer.order, out=block)
        block.clamp_(-PRE_LIMIT, PRE_LIMIT)
        for act, first, end in layer.groups:
            activate_(act, block[first:end])
    return values.index_select(0, packed.outputs).view(len(OUTPUT_IDS), -1, length)


def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Branch-free HSV -> RGB for h in [0, 1]: channel n is v - v*s*clamp(min(k, 4 - k), 0, 1)
    with k = (n + 6h) mod 6 and n = 5, 3, 1 for red, green, blue."""
    offsets = torch.tensor([5.0, 3.0, 1.0], device=h.device).view(3, *([1] * h.dim()))
    k = h * 6.0 + offsets  # in [1, 12): one wrap-around is all the modulo has to do
    k = torch.where(k >= 6.0, k - 6.0, k)
    ramp = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    return v - (v * s) * ramp


def to_color(raw: torch.Tensor, mode: str) -> torch.Tensor:
    """Map raw outputs [3, ...] to RGB in [0, 1] [3, ...] for the given colour mode."""
    if mode == "rgb":
        return (raw.clamp(-1.0, 1.0) + 1.0) * 0.5
    # Hue wraps around; saturation and value fold negative outputs back (Picbreeder-like).
    hue = raw[0] * 0.5
    hue = hue - torch.floor(hue)  # exact; may round up to 1.0, which is the same hue as 0
    sat = torch.abs(raw[1]).clamp_(max=1.0)
    val = torch.abs(raw[2]).clamp_(max=1.0)
    return _hsv_to_rgb(hue, sat, val)


_threads_lock = threading.Lock()
_threads_users = 0
_threads_saved = 1


@contextlib.contextmanager
def _one_intra_op_thread() -> Iterator[None]:
    """Run torch CPU ops single-threaded for the duration (re-entrant and thread-safe).

    A render is thousands of small, cache-sized ops. Splitting each one across OpenMP
    threads gains little on an idle machine and, on a busy one, every op waits for a
    descheduled helper thread: a 256 px batch measured 10x to 30x slower. Throughput on
    many cores comes from running more sparks.
    """
    global _threads_users, _threads_saved
    with _threads_lock:
        if _threads_users == 0:
            _threads_saved = torch.get_num_threads()
            torch.set_num_threads(1)
        _threads_users += 1
    try:
        yield
    finally:
        with _threads_lock:
            _threads_users -= 1
            if _threads_users == 0:
                torch.set_num_threads(_threads_saved)


def render_pixels(
    genomes: Sequence[Genome],
    size: int,
    color: str,
    device: torch.device,
    progress: ProgressCallback | None = None,
) -> np.ndarray:
    """Render validated genomes to one ``[n, size, size, 3]`` uint8 RGB array, batched.

    No image objects are made; callers wanting PIL images wrap the rows themselves.
    """
    if not genomes:
        return np.zeros((0, size, size, 3), np.uint8)
    quiet = _one_intra_op_thread() if device.type == "cpu" else contextlib.nullcontext()
    with torch.no_grad(), quiet:
        return _render(genomes, size, color, device, progress)


def _render(
    genomes: Sequence[Genome],
    size: int,
    color: str,
    device: torch.device,
    progress: ProgressCallback | None,
) -> np.ndarray:
    batch = len(genomes)
    packed = _pack(genomes, device)
    pixels = size * size
    padded = -(-pixels // _ALIGN) * _ALIGN
    budget = _CHUNK_ELEMENTS["cuda" if device.type == "cuda" else "cpu"]
    chunk = min(padded, max(_ALIGN, budget // packed.rows // _ALIGN * _ALIGN))
    coords = _coordinates(size, padded, device)
    result = torch.empty(batch, padded, 3, dtype=torch.uint8)
    steps = -(-padded // chunk)
    for step, start in enumerate(range(0, padded, chunk)):
        raw = _evaluate(packed, coords[:, start : start + chunk])
        levels = to_color(raw, color).mul_(255.0).round_().clamp_(0.0, 255.0)
        result[:, start : start + chunk] = levels.to(torch.uint8).permute(1, 2, 0).cpu()
        if progress is not None:
            progress(batch * (step + 1) // steps, batch)
    return result[:, :pixels].reshape(batch, size, size, 3).numpy()
