"""The CPPN renderer's inner loop, compiled with TorchScript so it runs without the GIL.

A chunk of a render is hundreds of small tensor operations. Dispatched from Python, every
one of them gives the GIL up for its kernel and has to win it back afterwards: any other
Python thread in the process (the store's writer, a web request, a batch run's commit) then
stalls the render at every operation, which on a busy process made a render several times
slower. Compiled, the whole chunk runs in torch's interpreter with the GIL released, and
with less overhead per operation than Python's. The operations are exactly the eager ones,
in the same order (no fusion: TorchScript fuses nothing on the CPU unless asked to), so the
pixels are bit-identical to eager torch and to every picture stored before. On a GPU, where
TorchScript would fuse, the renderer runs the same functions eagerly.

Layers come in as parallel lists (TorchScript takes lists and tensors, not dataclasses);
``groups[i]`` holds layer ``i``'s activation blocks as flat (activation, first, end) triples,
activations numbered as in ``imagery.cppn_genome.ACTIVATIONS``.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from imagery.cppn_genome import ACTIVATIONS

PRE_LIMIT = 32.0  # clamp on a node's summed input: keeps every value finite and bounded
# The activation numbers the kernel branches on; a renamed or reordered activation fails here.
assert ACTIVATIONS == ("sin", "cos", "gaussian", "sigmoid", "tanh", "abs", "identity")


def activate_(code: int, x: torch.Tensor) -> None:
    """Apply activation number ``code`` to ``x`` in place (``sigmoid`` from ``tanh``: see
    ``imagery.cppn_render``)."""
    if code == 0:
        x.sin_()
    elif code == 1:
        x.cos_()
    elif code == 2:
        x.mul_(x).neg_().exp_()
    elif code == 3:
        x.mul_(0.5).tanh_().mul_(0.5).add_(0.5)
    elif code == 4:
        x.tanh_()
    elif code == 5:
        x.abs_()


def to_color(raw: torch.Tensor, hsv: bool) -> torch.Tensor:
    """Map raw outputs [3, ...] to RGB in [0, 1] [3, ...]."""
    if not hsv:
        return (raw.clamp(-1.0, 1.0) + 1.0) * 0.5
    # Hue wraps around; saturation and value fold negative outputs back (Picbreeder-like).
    hue = raw[0] * 0.5
    hue = hue - torch.floor(hue)  # exact; may round up to 1.0, which is the same hue as 0
    sat = torch.abs(raw[1]).clamp_(max=1.0)
    val = torch.abs(raw[2]).clamp_(max=1.0)
    # Branch-free HSV -> RGB: channel n is v - v*s*clamp(min(k, 4 - k), 0, 1) with
    # k = (n + 6h) mod 6 and n = 5, 3, 1 for red, green, blue.
    offsets = torch.tensor([5.0, 3.0, 1.0], device=raw.device).view(3, 1, 1)
    k = hue * 6.0 + offsets  # in [1, 12): one wrap-around is all the modulo has to do
    k = torch.where(k >= 6.0, k - 6.0, k)
    ramp = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    return val - (val * sat) * ramp


def render_levels(
    coords: torch.Tensor,
    chunk: int,
    first: int,
    end: int,
    result: torch.Tensor,
    rows: int,
    starts: list[int],
    sizes: list[int],
    counts: list[list[int]],
    link_starts: list[int],
    groups: list[list[int]],
    sources: torch.Tensor,
    weights: torch.Tensor,
    bias: torch.Tensor,
    order: torch.Tensor,
    outputs: torch.Tensor,
    hsv: bool,
    limit: float = PRE_LIMIT,
) -> None:
    """Chunks ``first`` to ``end`` (exclusive) of a render, each ``chunk`` pixels: every
    genome on every pixel, as 8-bit RGB levels into ``result`` ([genomes, pixels, 3] uint8
    on the CPU). One call does many chunks, so the caller takes the GIL back once per call.

    Layer by layer: gather each row's source rows and weight them; each row's sum is its
    bias plus its terms in its genome's link order (``counts[i][k]``: rows with more than
    ``k`` links, sorted most links first, so term ``k`` is one contiguous update); the sums
    are permuted into activation order, clamped, and activated block by block. The link
    and row tensors are the whole batch's; each layer takes its part by offset.
    """
    inputs = coords.size(0)  # x, y, d, bias: the shared first rows
    # Each layer's part of the whole-batch link and row tensors, the same for every chunk.
    layer_sources: list[torch.Tensor] = []
    layer_weights: list[torch.Tensor] = []
    layer_bias: list[torch.Tensor] = []
    layer_order: list[torch.Tensor] = []
    for i in range(len(starts)):
        row = starts[i] - inputs
        layer_sources.append(sources[link_starts[i] : link_starts[i + 1]])
        layer_weights.append(weights[link_starts[i] : link_starts[i + 1]])
        layer_bias.append(bias[row : row + sizes[i]])
        layer_order.append(order[row : row + sizes[i]])
    scratch_rows = max(sizes)
    for index in range(first, end):
        pixels = coords[:, index * chunk : (index + 1) * chunk]
        length = pixels.size(1)
        values = torch.empty([rows, length], dtype=coords.dtype, device=coords.device)
        values[:inputs] = pixels
        scratch = torch.empty([scratch_rows, length], dtype=coords.dtype, device=coords.device)
        for i in range(len(starts)):
            size = sizes[i]
            sums = scratch[:size]
            terms = values.index_select(0, layer_sources[i]).mul_(layer_weights[i])
            sums.copy_(layer_bias[i].expand(size, length))
            offset = 0
            for count in counts[i]:
                sums[:count].add_(terms[offset : offset + count])
                offset += count
            block = values[starts[i] : starts[i] + size]
            torch.index_select(sums, 0, layer_order[i], out=block)
            block.clamp_(-limit, limit)
            layer_groups = groups[i]
            for j in range(0, len(layer_groups), 3):
                activate_(layer_groups[j], block[layer_groups[j + 1] : layer_groups[j + 2]])
        raw = values.index_select(0, outputs).view(3, -1, length)
        levels = to_color(raw, hsv).mul_(255.0).round_().clamp_(0.0, 255.0)
        result[:, index * chunk : index * chunk + length] = levels.to(torch.uint8).permute(1, 2, 0).cpu()


def _compiled() -> Any:
    # TorchScript is deprecated in favour of torch.compile, which needs a C++ toolchain at
    # run time and recompiles for every new network shape; this loop's shapes change with
    # every population, which TorchScript's interpreter takes as it comes. A call into it
    # lets go of the GIL until it returns.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.script(render_levels)


compiled_render_levels = _compiled()
