"""Batched torch renderer for CPPN genomes: a whole population in one computation.

Every node of every genome in the batch is one row of a ``[rows, pixels]`` tensor (the four
inputs are shared rows). Rows are grouped into layers by depth (one more than the deepest
hidden node feeding them; the outputs come last), so a layer is computed in a handful of
tensor ops for all genomes at once: gather each row's source rows, weight them, add them
up, clamp, and apply the activation. Rows in a layer are sorted by activation, so each
function runs once per layer on a contiguous block. Nothing is padded: genomes of any size
share the rows, and a row only ever adds its own links. Pixels go through in chunks sized
to stay in cache. This module packs the genomes into index and weight tensors; the loop over
layers and chunks (``imagery.cppn_kernel``) runs compiled, without the GIL, on the CPU.

Bit-identical pictures, alone or in any batch, on CPU: a row's sum is folded in the
genome's own link order with separate multiplies and adds, each rounded exactly by IEEE
rules whatever the SIMD lane or thread. Nothing is a matrix product, whose blocking (and so
rounding) depends on the batch shape. ``sigmoid`` is built from ``tanh`` because torch's
fused sigmoid rounds differently in its scalar and SIMD code paths, which would make a
pixel's value depend on where it sits in the tensor.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from imagery.cppn_genome import ACTIVATIONS, INPUT_IDS, OUTPUT_IDS
from imagery.cppn_kernel import compiled_render_levels, render_levels
from imagery.protocol import Genome, ProgressCallback

_ALIGN = 64  # chunk lengths are multiples of this
_CHUNK_ELEMENTS = {"cpu": 1 << 19, "cuda": 1 << 26}  # rows x pixels held per chunk
_KEPT_COORDINATES_MAX = 1 << 20  # pixels (16 MB of coordinates) up to which they are cached
PROGRESS_STEPS = 8  # progress reports per render, when asked for


class _Packed(NamedTuple):
    """A batch of genomes as the kernel takes it, field for field in its parameter order
    (``imagery.cppn_kernel.render_levels``, which describes the layout). The link and row
    tensors are whole-batch, made from numpy in one call each, so that packing gives up the
    GIL (for another thread to take and hold) only a handful of times."""

    rows: int
    starts: list[int]
    sizes: list[int]
    counts: list[list[int]]  # counts[i][k]: rows of layer i with more than k links
    link_starts: list[int]  # layer i's links are [link_starts[i], link_starts[i + 1])
    groups: list[list[int]]  # (activation number, first row, end row) triples per layer
    sources: torch.Tensor  # [links] rows to gather, term-major within each layer
    weights: torch.Tensor  # [links, 1]
    bias: torch.Tensor  # [rows after the inputs, 1], in fan-in order within each layer
    order: torch.Tensor  # [rows after the inputs]: scratch row of each row within its layer
    outputs: torch.Tensor  # [3 * B] rows of each genome's outputs, output-major


_ACTIVATION_INDEX = {name: i for i, name in enumerate(ACTIVATIONS)}
# Sources of links from the inputs, which are shared rows 0..3: flat index -1 - input id.
_INPUT_SOURCE = {nid: -1 - nid for nid in INPUT_IDS}


@dataclass
class _Flat:
    """Every genome's nodes and enabled links as flat arrays over the whole batch."""

    act: np.ndarray  # [nodes] activation index
    bias: np.ndarray  # [nodes]
    genome: np.ndarray  # [nodes] batch index of the node's genome
    position: np.ndarray  # [nodes] the node's place in its genome's node list
    ends: np.ndarray  # [genomes] one past each genome's last node (its outputs come last)
    src: np.ndarray  # [links] flat node of the source, or -1 - input id
    dst: np.ndarray  # [links] flat node of the destination
    weight: np.ndarray  # [links]
    term: np.ndarray  # [links] the link's place among the enabled links into its node


def _flatten(genomes: Sequence[Genome]) -> _Flat:
    """The one pass over the genome dicts; everything after it works on arrays."""
    acts: list[int] = []
    biases: list[float] = []
    sizes: list[int] = []
    srcs: list[int] = []
    dsts: list[int] = []
    weights: list[float] = []
    terms: list[int] = []
    act_index = _ACTIVATION_INDEX
    for genome in genomes:
        nodes = genome["nodes"]
        base = len(acts)
        where = {node["id"]: base + i for i, node in enumerate(nodes)}
        where.update(_INPUT_SOURCE)
        acts.extend([act_index[node["act"]] for node in nodes])
        biases.extend([node["bias"] for node in nodes])
        sizes.append(len(nodes))
        # In the genome's own link order: a row's terms are summed in that order.
        enabled = [link for link in genome["links"] if link["enabled"]]
        srcs.extend([where[link["src"]] for link in enabled])
        dsts.extend([where[link["dst"]] for link in enabled])
        weights.extend([link["weight"] for link in enabled])
        # Counted here rather than with argsort and searchsorted, which give up the GIL even
        # for a few elements (another thread may then keep it for a switch interval):
        # packing beside a thread busy in Python measured 62 ms with them, 24 ms without.
        seen: dict[int, int] = {}
        for link in enabled:
            seen[link["dst"]] = seen.get(link["dst"], -1) + 1
            terms.append(seen[link["dst"]])
    size = np.asarray(sizes, dtype=np.int64)
    ends = np.cumsum(size)
    genome_of = np.repeat(np.arange(len(genomes)), size)
    return _Flat(
        act=np.asarray(acts, dtype=np.int64),
        bias=np.asarray(biases, dtype=np.float64),
        genome=genome_of,
        position=np.arange(len(acts)) - (ends - size)[genome_of],
        ends=ends,
        src=np.asarray(srcs, dtype=np.int64),
        dst=np.asarray(dsts, dtype=np.int64),
        weight=np.asarray(weights, dtype=np.float64),
        term=np.asarray(terms, dtype=np.int64),
    )


def _levels(flat: _Flat) -> np.ndarray:
    """Layer of every node: a hidden node's is its depth - 1, where its depth is 1 + the
    deepest hidden node feeding it (inputs are 0); the outputs share the last layer."""
    output = np.zeros(len(flat.act), dtype=bool)
    for k in range(1, len(OUTPUT_IDS) + 1):
        output[flat.ends - k] = True
    from_hidden = flat.src >= 0
    src, dst = flat.src[from_hidden], flat.dst[from_hidden]
    depth = np.ones(len(flat.act), dtype=np.int64)
    # Relax until nothing deepens: as many rounds as the longest chain of hidden nodes.
    while True:
        deeper = depth.copy()
        np.maximum.at(deeper, dst, depth[src] + 1)
        if np.array_equal(deeper, depth):
            break
        depth = deeper
    hidden_depth = depth[~output]
    last = int(hidden_depth.max()) if len(hidden_depth) else 0  # the outputs' layer
    return np.where(output, last, depth - 1)


def _pack(genomes: Sequence[Genome], device: torch.device) -> _Packed:
    flat = _flatten(genomes)
    count = len(flat.act)
    first_row = len(INPUT_IDS)
    level = _levels(flat)
    # Rows: layer by layer; within a layer by activation (one block per function), then by
    # genome and node order, which makes the layout a function of the batch alone.
    member = np.lexsort((flat.position, flat.genome, flat.act, level))
    row_of = np.empty(count, dtype=np.int64)
    row_of[member] = np.arange(count)  # rows counted from the first after the inputs
    layer_of = level[member]  # by row
    sizes = np.bincount(layer_of)
    starts = np.cumsum(sizes) - sizes
    # Each link's source row, destination row, and term number k (its place among the
    # enabled links into the same node, in the genome's link order).
    src_row = np.where(flat.src < 0, -1 - flat.src, row_of[np.maximum(flat.src, 0)] + first_row)
    dst_row = row_of[flat.dst]
    fan = np.bincount(dst_row, minlength=count)
    # Scratch rows: within each layer, most links first (stable in row order).
    by_fan = np.lexsort((np.arange(count), -fan, layer_of))
    scratch = np.empty(count, dtype=np.int64)
    scratch[by_fan] = np.arange(count) - starts[layer_of[by_fan]]
    # Term-major within a layer: term 0 of every row in scratch order, then term 1, ...
    link_layer = layer_of[dst_row]
    term_major = np.lexsort((scratch[dst_row], flat.term, link_layer))
    act_by_row = flat.act[member]
    starts_list, sizes_list, counts, groups = [], [], [], []
    for start, size in zip(starts.tolist(), sizes.tolist(), strict=True):
        end = start + size
        fans = fan[start:end]
        counts.append(np.count_nonzero(fans[None, :] > np.arange(fans.max())[:, None], axis=1).tolist())
        acts = act_by_row[start:end]
        cuts = [0, *(np.flatnonzero(acts[1:] != acts[:-1]) + 1).tolist(), size]
        groups.append([v for a, b in itertools.pairwise(cuts) for v in (int(acts[a]), a, b)])
        starts_list.append(first_row + start)
        sizes_list.append(size)
    outputs = flat.ends[None, :] - len(OUTPUT_IDS) + np.arange(len(OUTPUT_IDS))[:, None]
    return _Packed(
        rows=first_row + count,
        starts=starts_list,
        sizes=sizes_list,
        counts=counts,
        # A layer's links are its rows' terms: the counts of each term add up to them.
        link_starts=[0, *itertools.accumulate(sum(layer) for layer in counts)],
        groups=groups,
        sources=_tensor(src_row[term_major], device),
        weights=_tensor(flat.weight[term_major].astype(np.float32).reshape(-1, 1), device),
        bias=_tensor(flat.bias[member][by_fan].astype(np.float32).reshape(-1, 1), device),
        order=_tensor(scratch, device),
        outputs=_tensor(row_of[outputs].ravel() + first_row, device),
    )


def _tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    tensor = torch.from_numpy(array)
    # ``.to`` would be a no-op on the CPU, but still a torch call that gives up the GIL.
    return tensor if device.type == "cpu" else tensor.to(device)


def _coordinates(size: int, length: int, device: torch.device) -> torch.Tensor:
    """x, y, d, bias for every pixel (row-major, padded to ``length``), x and y in [-1, 1].

    Up to a megapixel, kept for the next calls (read-only): a generation renders in several
    batches at one size, and the agent's small renders all share theirs."""
    if length <= _KEPT_COORDINATES_MAX:
        return _kept_coordinates(size, length, device)
    return _new_coordinates(size, length, device)


@functools.lru_cache(maxsize=4)
def _kept_coordinates(size: int, length: int, device: torch.device) -> torch.Tensor:
    return _new_coordinates(size, length, device)


def _new_coordinates(size: int, length: int, device: torch.device) -> torch.Tensor:
    # Pixel centres, so any resolution samples the same continuous picture.
    axis = (torch.arange(size, device=device).float() * 2.0 + 1.0) / size - 1.0
    coords = torch.ones(4, length, device=device)
    coords[0, : size * size] = axis.repeat(size)
    coords[1, : size * size] = axis.repeat_interleave(size)
    coords[2] = torch.sqrt(coords[0] * coords[0] + coords[1] * coords[1])
    return coords


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
    # Made in numpy: every torch call from here gives the GIL up and must win it back.
    result = np.empty((batch, padded, 3), dtype=np.uint8)
    chunks = -(-padded // chunk)
    # Each call runs without the GIL and takes it back once at its end: one call for the
    # whole render, or a few when someone watches the progress. On a GPU the kernel runs
    # eagerly: there TorchScript would fuse operations into kernels of its own, whose
    # rounding need not match eager torch's, and the pictures must not depend on that.
    kernel = compiled_render_levels if device.type == "cpu" else render_levels
    calls = 1 if progress is None else min(chunks, PROGRESS_STEPS)
    ends = [chunks * (k + 1) // calls for k in range(calls)]
    out = torch.from_numpy(result)  # a view: the kernel writes into ``result``
    for first, end in zip([0, *ends[:-1]], ends, strict=True):
        kernel(coords, chunk, first, end, out, *packed, color == "hsv")
        if progress is not None:
            progress(batch * end // chunks, batch)
    return result[:, :pixels].reshape(batch, size, size, 3)
