"""Batched torch renderer for CPPN genomes: a whole population in one computation.

Nodes are evaluated layer by layer (a node's layer is its depth: one more than its deepest
hidden source), every genome of the batch at once. Genome ``b`` puts its depth-``L`` nodes
at the start of layer ``L``'s block of slots, so a layer is one batched matrix product of
each genome's weights with all earlier slots, over a chunk of pixels; shorter genomes are
padded with empty slots. Activations differ per node, so rows sharing a function are
gathered, activated and scattered back. Pixels go through in a few large chunks to bound
memory.

Bit-identical pictures, alone or in any batch, on CPU: the weighted sums are EXACT. Weights
and biases are used on a 2**-12 grid and node values on a 2**-20 grid, so every product is
an integer multiple of 2**-32 below 2**40 of them, and float64 adds such integers without
rounding in any order: the matrix product's blocking, which depends on the batch shape,
cannot change a bit. Each sum is then rounded once to float32 for the activation. (For the
same reason ``sigmoid`` is built from ``tanh``: torch's fused sigmoid rounds differently in
its scalar and SIMD code paths, so a pixel's value would depend on where it sits.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from imagery.cppn_genome import ACTIVATIONS, INPUT_IDS, OUTPUT_IDS, WEIGHT_STEP
from imagery.protocol import Genome, ProgressCallback

PRE_LIMIT = 32.0  # clamp on a node's summed input: bounds every node value by 32
VALUE_STEP = 2.0**-20  # node values are rounded to this grid before they feed other nodes
_SUM_STEP = WEIGHT_STEP * VALUE_STEP
_ALIGN = 64  # chunk lengths are multiples of this
_CHUNK_ELEMENTS = {"cpu": 1 << 16, "cuda": 1 << 22}  # genomes x pixels per chunk


def activate(name: str, x: torch.Tensor) -> torch.Tensor:
    """Apply one named activation elementwise (the functions a genome's nodes name)."""
    if name == "sin":
        return torch.sin(x)
    if name == "cos":
        return torch.cos(x)
    if name == "gaussian":
        return torch.exp(-(x * x))
    if name == "sigmoid":
        return torch.tanh(x * 0.5) * 0.5 + 0.5
    if name == "tanh":
        return torch.tanh(x)
    if name == "abs":
        return torch.abs(x)
    if name == "identity":
        return x.clone()
    raise ValueError(f"unknown activation {name!r}")


@dataclass(frozen=True)
class _Layer:
    start: int  # first slot of the layer's block; the block's sources are slots [0, start)
    width: int
    groups: list[tuple[str, torch.Tensor | None]]  # (activation, rows of [B * width] or None=all)


@dataclass(frozen=True)
class _Packed:
    weights: torch.Tensor  # [B, S, S] float64, integer multiples of WEIGHT_STEP, in steps
    layers: list[_Layer]  # hidden layers, then the output layer (the last 3 slots)


def _depths(genome: Genome) -> dict[int, int]:
    """Layer of each hidden node: 1 + the deepest hidden node feeding it (inputs are 0)."""
    depth = dict.fromkeys(INPUT_IDS, 0)
    sources: dict[int, list[int]] = {}
    for link in genome["links"]:
        if link["enabled"]:
            sources.setdefault(link["dst"], []).append(link["src"])
    for node in genome["nodes"][: -len(OUTPUT_IDS)]:
        depth[node["id"]] = 1 + max((depth[s] for s in sources.get(node["id"], ())), default=0)
    return depth


def _pack(genomes: Sequence[Genome], device: torch.device) -> _Packed:
    depths = [_depths(g) for g in genomes]
    levels = max((max(d.values()) for d in depths), default=0)
    widths = [0] * (levels + 1)
    for d in depths:
        counts = np.bincount(list(d.values()), minlength=levels + 1)
        widths = [max(w, int(c)) for w, c in zip(widths, counts, strict=True)]
    widths[0] = len(INPUT_IDS)
    widths.append(len(OUTPUT_IDS))  # the outputs form the last layer in every genome
    starts = np.concatenate([[0], np.cumsum(widths)]).astype(int)
    batch, total = len(genomes), int(starts[-1])
    weights = np.zeros((batch, total, total), np.float64)
    acts: list[dict[str, list[int]]] = [{} for _ in widths]
    for b, (genome, depth) in enumerate(zip(genomes, depths, strict=True)):
        slot = {nid: i for i, nid in enumerate(INPUT_IDS)}
        filled = [0] * len(widths)
        for node in genome["nodes"]:
            level = depth.get(node["id"], len(widths) - 1)
            slot[node["id"]] = int(starts[level]) + filled[level]
            acts[level].setdefault(node["act"], []).append(b * widths[level] + filled[level])
            filled[level] += 1
            weights[b, slot[node["id"]], INPUT_IDS[3]] += round(node["bias"] / WEIGHT_STEP)
        for link in genome["links"]:
            if link["enabled"]:
                weights[b, slot[link["dst"]], slot[link["src"]]] += round(
                    link["weight"] / WEIGHT_STEP
                )
    layers = []
    for level in range(1, len(widths)):
        rows = batch * widths[level]
        groups = [
            (act, None if len(idx) == rows else torch.tensor(idx, device=device))
            for act, idx in sorted(acts[level].items(), key=lambda kv: ACTIVATIONS.index(kv[0]))
        ]
        layers.append(_Layer(int(starts[level]), widths[level], groups))
    return _Packed(torch.from_numpy(weights).to(device), layers)


def _coordinates(start: int, length: int, size: int, device: torch.device) -> torch.Tensor:
    """x, y, d, bias for pixels ``start..start+length`` (row-major), x and y in [-1, 1]."""
    index = torch.arange(start, start + length, device=device).clamp_(max=size * size - 1)
    # Pixel centres, so any resolution samples the same continuous picture.
    x = (torch.remainder(index, size).double() * 2.0 + 1.0) / size - 1.0
    y = (torch.div(index, size, rounding_mode="floor").double() * 2.0 + 1.0) / size - 1.0
    d = torch.sqrt(x * x + y * y)
    return torch.stack([x, y, d, torch.ones_like(x)])


def _evaluate(packed: _Packed, coords: torch.Tensor) -> torch.Tensor:
    """Run every genome on every pixel of a chunk; returns the raw outputs, [3, B, P] float32."""
    batch, slots = packed.weights.shape[:2]
    length = coords.shape[1]
    values = torch.zeros(batch, slots, length, dtype=torch.float64, device=coords.device)
    values[:, : len(INPUT_IDS)] = torch.round(coords / VALUE_STEP)
    for layer in packed.layers:
        end = layer.start + layer.width
        exact = torch.bmm(
            packed.weights[:, layer.start : end, : layer.start], values[:, : layer.start]
        )
        # Rounding to float32 commutes with the power-of-two scale, so scale after narrowing.
        summed = exact.float().mul_(_SUM_STEP).clamp_(-PRE_LIMIT, PRE_LIMIT).view(-1, length)
        out = torch.zeros_like(summed)
        for act, rows in layer.groups:
            if rows is None:
                out = activate(act, summed)
            else:
                out.index_copy_(0, rows, activate(act, summed.index_select(0, rows)))
        if end < slots:
            # Exact in float32 too: |out| <= 32, so out / VALUE_STEP needs at most 25 bits.
            values[:, layer.start : end] = torch.round(out.view(batch, -1, length) / VALUE_STEP)
    return out.view(batch, len(OUTPUT_IDS), length).transpose(0, 1)


def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    h6 = torch.remainder(h, 1.0) * 6.0
    sector = torch.floor(h6)
    f = h6 - sector
    p = v * (1.0 - s)
    q = v * (1.0 - s * f)
    t = v * (1.0 - s * (1.0 - f))
    # remainder can round up to exactly 1.0 for tiny negatives: sector 6 is sector 0.
    sector = torch.remainder(sector, 6.0).long()[None]
    r = torch.stack([v, q, p, p, t, v]).gather(0, sector)[0]
    g = torch.stack([t, v, v, q, p, p]).gather(0, sector)[0]
    b = torch.stack([p, p, t, v, v, q]).gather(0, sector)[0]
    return torch.stack([r, g, b])


def to_color(raw: torch.Tensor, mode: str) -> torch.Tensor:
    """Map raw outputs [3, ...] to RGB in [0, 1] [3, ...] for the given colour mode."""
    if mode == "rgb":
        return (raw.clamp(-1.0, 1.0) + 1.0) * 0.5
    # Hue wraps around; saturation and value fold negative outputs back (Picbreeder-like).
    hue = raw[0] * 0.5
    sat = torch.abs(raw[1]).clamp(max=1.0)
    val = torch.abs(raw[2]).clamp(max=1.0)
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
    chunk = min(padded, max(_ALIGN, budget // batch // _ALIGN * _ALIGN))
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
