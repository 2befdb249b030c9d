"""Batched torch renderer for CPPN genomes: a whole population in one computation.

Every node of every genome in the batch is one row of a ``[rows, pixels]`` tensor (the four
inputs are shared rows). Rows are grouped into layers by depth (one more than the deepest
hidden node feeding them; the outputs come last), so a layer is computed in a handful of
tensor ops for all genomes at once: gather each row's source rows, weight them, add them
up, clamp, and apply the activation. Rows in a layer are sorted by activation, so each
function runs once per layer on a contiguous block. No padding rows exist; a row with fewer
links than the widest in its layer gets zero-weight terms at the end of its sum. Pixels go
through in chunks sized to stay in cache.

Bit-identical pictures, alone or in any batch, on CPU: a row's sum is folded in the
genome's own link order with separate multiplies and adds, each rounded exactly by IEEE
rules whatever the SIMD lane or thread, and padding only appends exact zeros. Nothing is a
matrix product, whose blocking (and so rounding) depends on the batch shape. ``sigmoid`` is
built from ``tanh`` because torch's fused sigmoid rounds differently in its scalar and SIMD
code paths, which would make a pixel's value depend on where it sits in the tensor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from imagery.cppn_genome import ACTIVATIONS, INPUT_IDS, OUTPUT_IDS
from imagery.protocol import Genome, ProgressCallback

PRE_LIMIT = 32.0  # clamp on a node's summed input: keeps every value finite and bounded
_ALIGN = 64  # chunk lengths are multiples of this
_CHUNK_ELEMENTS = {"cpu": 1 << 18, "cuda": 1 << 26}  # rows x pixels held per chunk


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
    start: int  # first row of the layer; rows [start, start + size)
    size: int
    sources: torch.Tensor  # [fan_in * size] rows to gather, term-major
    weights: torch.Tensor  # [fan_in, size, 1]
    bias: torch.Tensor  # [size, 1]
    groups: list[tuple[str, int, int]]  # (activation, first row, end row) within the layer


@dataclass(frozen=True)
class _Packed:
    rows: int
    layers: list[_Layer]
    outputs: torch.Tensor  # [3 * B] rows of each genome's outputs, output-major


def _depths(genome: Genome) -> dict[int, int]:
    """Layer of each hidden node: 1 + the deepest hidden node feeding it (inputs are 0)."""
    depth = dict.fromkeys(INPUT_IDS, 0)
    for node in genome["nodes"][: -len(OUTPUT_IDS)]:
        feeding = [
            depth[link["src"]]
            for link in genome["links"]
            if link["enabled"] and link["dst"] == node["id"]
        ]
        depth[node["id"]] = 1 + max(feeding, default=0)
    return depth


def _pack(genomes: Sequence[Genome], device: torch.device) -> _Packed:
    depths = [_depths(g) for g in genomes]
    levels = 1 + max(max(d.values()) for d in depths)  # hidden layers, then the outputs
    members: list[list[tuple[int, int, int, dict]]] = [[] for _ in range(levels)]
    for b, (genome, depth) in enumerate(zip(genomes, depths, strict=True)):
        for order, node in enumerate(genome["nodes"]):
            level = depth.get(node["id"], levels) - 1
            members[level].append((ACTIVATIONS.index(node["act"]), b, order, node))
    row = {(b, nid): nid for b in range(len(genomes)) for nid in INPUT_IDS}
    layers, start = [], len(INPUT_IDS)
    for level in members:
        level.sort(key=lambda m: m[:3])  # by activation, so each function gets one block
        incoming = []
        for i, (_, b, _, node) in enumerate(level):
            row[b, node["id"]] = start + i
            links = genomes[b]["links"]
            incoming.append(
                [
                    (lk["src"], lk["weight"])
                    for lk in links
                    if lk["enabled"] and lk["dst"] == node["id"]
                ]
            )
        fan_in = max(len(links) for links in incoming)
        sources = np.zeros((fan_in, len(level)), np.int64)
        weights = np.zeros((fan_in, len(level), 1), np.float32)
        for i, ((_, b, _, _), links) in enumerate(zip(level, incoming, strict=True)):
            for k, (src, weight) in enumerate(links):
                sources[k, i], weights[k, i, 0] = row[b, src], weight
        groups = []
        for i, (act, *_) in enumerate(level):
            if groups and groups[-1][0] == ACTIVATIONS[act]:
                groups[-1] = (groups[-1][0], groups[-1][1], i + 1)
            else:
                groups.append((ACTIVATIONS[act], i, i + 1))
        bias = np.array([[node["bias"]] for *_, node in level], np.float32)
        layers.append(
            _Layer(
                start=start,
                size=len(level),
                sources=torch.from_numpy(sources.reshape(-1)).to(device),
                weights=torch.from_numpy(weights).to(device),
                bias=torch.from_numpy(bias).to(device),
                groups=groups,
            )
        )
        start += len(level)
    outputs = [row[b, out] for out in OUTPUT_IDS for b in range(len(genomes))]
    return _Packed(start, layers, torch.tensor(outputs, device=device))


def _coordinates(start: int, length: int, size: int, device: torch.device) -> torch.Tensor:
    """x, y, d, bias for pixels ``start..start+length`` (row-major), x and y in [-1, 1]."""
    index = torch.arange(start, start + length, device=device).clamp_(max=size * size - 1)
    # Pixel centres, so any resolution samples the same continuous picture.
    x = (torch.remainder(index, size).float() * 2.0 + 1.0) / size - 1.0
    y = (torch.div(index, size, rounding_mode="floor").float() * 2.0 + 1.0) / size - 1.0
    d = torch.sqrt(x * x + y * y)
    return torch.stack([x, y, d, torch.ones_like(x)])


def _evaluate(packed: _Packed, coords: torch.Tensor) -> torch.Tensor:
    """Run every genome on every pixel of a chunk; returns the raw outputs, [3, B, P]."""
    length = coords.shape[1]
    values = torch.empty(packed.rows, length, device=coords.device)
    values[: len(INPUT_IDS)] = coords
    for layer in packed.layers:
        block = values[layer.start : layer.start + layer.size]
        fan_in = layer.weights.shape[0]
        if fan_in == 0:
            block.copy_(layer.bias.expand(-1, length))
        else:
            terms = values.index_select(0, layer.sources).view(fan_in, layer.size, length)
            terms.mul_(layer.weights)
            torch.add(terms[0], layer.bias, out=block)
            for k in range(1, fan_in):
                block.add_(terms[k])
        block.clamp_(-PRE_LIMIT, PRE_LIMIT)
        for act, first, end in layer.groups:
            activate_(act, block[first:end])
    return values.index_select(0, packed.outputs).view(len(OUTPUT_IDS), -1, length)


def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Branch-free HSV -> RGB: channel n is v - v*s*clamp(min(k, 4 - k), 0, 1), k = (n + 6h) mod 6."""
    offsets = torch.tensor([5.0, 3.0, 1.0], device=h.device).view(3, *([1] * h.dim()))
    k = torch.remainder(h * 6.0 + offsets, 6.0)
    ramp = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    return v - (v * s) * ramp


def to_color(raw: torch.Tensor, mode: str) -> torch.Tensor:
    """Map raw outputs [3, ...] to RGB in [0, 1] [3, ...] for the given colour mode."""
    if mode == "rgb":
        return (raw.clamp(-1.0, 1.0) + 1.0) * 0.5
    # Hue wraps around; saturation and value fold negative outputs back (Picbreeder-like).
    hue = torch.remainder(raw[0] * 0.5, 1.0)
    sat = torch.abs(raw[1]).clamp_(max=1.0)
    val = torch.abs(raw[2]).clamp_(max=1.0)
    return _hsv_to_rgb(hue, sat, val)


def render(
    genomes: Sequence[Genome],
    size: int,
    color: str,
    device: torch.device,
    progress: ProgressCallback | None = None,
) -> list[Image.Image]:
    """Render validated genomes to ``size`` x ``size`` RGB images in one batched computation."""
    if not genomes:
        return []
    batch = len(genomes)
    packed = _pack(genomes, device)
    pixels = size * size
    padded = -(-pixels // _ALIGN) * _ALIGN
    budget = _CHUNK_ELEMENTS["cuda" if device.type == "cuda" else "cpu"]
    chunk = min(padded, max(_ALIGN, budget // packed.rows // _ALIGN * _ALIGN))
    result = torch.empty(batch, 3, padded, dtype=torch.uint8)
    steps = -(-padded // chunk)
    with torch.no_grad():
        for step, start in enumerate(range(0, padded, chunk)):
            length = min(chunk, padded - start)
            rgb = to_color(_evaluate(packed, _coordinates(start, length, size, device)), color)
            levels = (rgb * 255.0).round_().clamp_(0.0, 255.0).to(torch.uint8)
            result[:, :, start : start + length] = levels.permute(1, 0, 2).cpu()
            if progress is not None:
                progress(batch * (step + 1) // steps, batch)
    images = result[:, :, :pixels].reshape(batch, 3, size, size).permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(np.ascontiguousarray(image), "RGB") for image in images]
