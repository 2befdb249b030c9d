"""Hand-made features of images and genomes: what the preference model sees by default.

``image_features`` turns a batch of images into a fixed-length vector each: colour statistics,
contrast, edges, symmetry, entropy, colourfulness and how detail splits across scales. It works
on small thumbnails (64 px) with array operations over the whole batch, so a population of 64
costs a few tens of milliseconds on a CPU and needs no model weights.

``genome_features`` summarises any JSON genome (CPPN nodes/links, diffusion prompt fragments)
without knowing its kind. Both return ``float64`` arrays that are finite for every input.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

THUMB_SIZE = 64
_HIST_BINS = 32
_EDGE_THRESHOLD = 0.1
_EPS = 1e-8

FEATURE_NAMES: tuple[str, ...] = (
    "mean_r", "mean_g", "mean_b",
    "std_r", "std_g", "std_b",
    "hue_cos", "hue_sin", "hue_concentration",
    "sat_mean", "sat_std", "val_mean", "val_std",
    "luma_mean", "contrast", "dynamic_range",
    "dark_fraction", "bright_fraction",
    "edge_mean", "edge_density",
    "symmetry_lr", "symmetry_tb", "symmetry_rot180",
    "entropy", "colourfulness",
    "detail_fine", "detail_mid", "detail_coarse",
    "centroid_x", "centroid_y", "centre_contrast",
)  # fmt: skip


def image_features(images: Sequence[Image.Image] | np.ndarray, size: int = THUMB_SIZE) -> np.ndarray:
    """Feature vectors of a batch of images, one row per image, columns as ``FEATURE_NAMES``.

    Args:
        images: PIL images of any mode and size; each is converted to RGB and resized to a
            ``size`` x ``size`` thumbnail first (aspect ratio is not kept: the statistics are
            about the whole frame). Or those thumbnails already, from ``thumbnails``.
        size: thumbnail edge in pixels (a multiple of 8, at least 16).

    Returns:
        ``float64`` array of shape ``[len(images), len(FEATURE_NAMES)]``.

    Raises:
        ValueError: an item is not a PIL image, or ``size`` is unusable.
    """
    if size < 16 or size % 8:
        raise ValueError(f"thumbnail size must be a multiple of 8 and at least 16, got {size}")
    if len(images) == 0:
        return np.zeros((0, len(FEATURE_NAMES)))
    # Channel-first and flat per channel: every reduction below runs over contiguous memory.
    x = thumbnails(images, size).transpose(0, 3, 1, 2)
    x = x.reshape(len(images), 3, size * size).astype(np.float32, order="C") / 255.0
    luma = np.einsum("c,ncp->np", np.array([0.299, 0.587, 0.114], dtype=np.float32), x)
    hist = _histogram(luma)
    grid = luma.reshape(len(images), size, size)
    cols = [
        x.mean(axis=2),
        x.std(axis=2),
        _hsv_stats(x),
        _luma_stats(luma, hist),
        _edges(grid),
        _symmetry(grid),
        _entropy(hist)[:, None],
        _colourfulness(x)[:, None],
        _detail_scales(grid),
        _layout(grid),
    ]
    out = np.concatenate(cols, axis=1).astype(np.float64)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0) + 0.0  # + 0.0 turns -0.0 into 0.0


def thumbnails(images: Sequence[Image.Image] | np.ndarray, size: int) -> np.ndarray:
    """``[n, size, size, 3]`` uint8 pixels of a batch of images; an array already in that
    shape is passed through (a caller computing several features converts once)."""
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8 or images.shape[1:] != (size, size, 3):
            raise ValueError(f"expected [n, {size}, {size}, 3] uint8 pixels, got {images.dtype} {images.shape}")
        return images
    return np.stack([_thumbnail(img, size) for img in images])


def _thumbnail(img: Any, size: int) -> np.ndarray:
    if not isinstance(img, Image.Image):
        raise ValueError(f"image_features needs PIL images, got {type(img).__name__}")
    rgb = img if img.mode == "RGB" else img.convert("RGB")
    if rgb.size != (size, size):
        # BOX averages every source pixel, so fine detail becomes grey rather than aliasing;
        # reducing_gap lets PIL shrink by whole factors first, which is several times faster.
        rgb = rgb.resize((size, size), Image.Resampling.BOX, reducing_gap=1.0)
    return np.asarray(rgb, dtype=np.uint8)


def _hsv_stats(x: np.ndarray) -> np.ndarray:
    """Hue direction, saturation and value statistics; ``x`` is ``[n, 3, pixels]``."""
    value = x.max(axis=1)
    chroma = value - x.min(axis=1)
    sat = chroma / np.maximum(value, _EPS)
    # Hue as the angle of the opponent-colour vector (the hexagonal hue, smoothed): its
    # circular mean weighted by chroma is the sum of vectors over the sum of their lengths,
    # so grey pixels, which have no hue, weigh nothing.
    alpha = x[:, 0] - 0.5 * (x[:, 1] + x[:, 2])
    beta = (np.sqrt(3.0) / 2.0) * (x[:, 1] - x[:, 2])
    length = np.sqrt(alpha * alpha + beta * beta).sum(axis=1)
    has_hue = length > 1e-4
    safe = np.maximum(length, _EPS)
    hc = np.where(has_hue, alpha.sum(axis=1) / safe, 0.0)
    hs = np.where(has_hue, beta.sum(axis=1) / safe, 0.0)
    return np.stack(
        [
            hc,
            hs,
            np.hypot(hc, hs),
            sat.mean(axis=1),
            sat.std(axis=1),
            value.mean(axis=1),
            value.std(axis=1),
        ],
        axis=1,
    )


def _histogram(luma: np.ndarray, bins: int = 256) -> np.ndarray:
    """Per-image histogram of luma in ``bins`` levels, as fractions; ``luma`` is ``[n, p]``."""
    n = len(luma)
    idx = np.clip((luma * bins).astype(np.int64), 0, bins - 1)
    idx += np.arange(n)[:, None] * bins
    counts = np.bincount(idx.ravel(), minlength=n * bins).reshape(n, bins)
    return counts / luma.shape[1]


def _luma_stats(luma: np.ndarray, hist: np.ndarray) -> np.ndarray:
    # Percentiles read off the cumulative histogram: a sort per image would cost more.
    cdf = hist.cumsum(axis=1)
    levels = (np.arange(hist.shape[1]) + 0.5) / hist.shape[1]
    lo = levels[np.argmax(cdf >= 0.05, axis=1)]
    hi = levels[np.argmax(cdf >= 0.95, axis=1)]
    return np.stack(
        [
            luma.mean(axis=1),
            luma.std(axis=1),
            hi - lo,
            (luma < 0.1).mean(axis=1),
            (luma > 0.9).mean(axis=1),
        ],
        axis=1,
    )


def _edges(luma: np.ndarray) -> np.ndarray:
    gx = np.diff(luma, axis=2)[:, :-1, :]
    gy = np.diff(luma, axis=1)[:, :, :-1]
    mag = np.sqrt(gx * gx + gy * gy)
    return np.stack(
        [mag.mean(axis=(1, 2)), (mag > _EDGE_THRESHOLD).mean(axis=(1, 2))],
        axis=1,
    )


def _symmetry(luma: np.ndarray) -> np.ndarray:
    # 1 = perfectly symmetric; mean absolute difference of luma against the mirrored image.
    def score(mirrored: np.ndarray) -> np.ndarray:
        return 1.0 - np.abs(luma - mirrored).mean(axis=(1, 2))

    return np.stack(
        [score(luma[:, :, ::-1]), score(luma[:, ::-1, :]), score(luma[:, ::-1, ::-1])],
        axis=1,
    )


def _entropy(hist: np.ndarray) -> np.ndarray:
    p = hist.reshape(len(hist), _HIST_BINS, -1).sum(axis=2)  # 256 levels -> 32 bins
    logp = np.log2(np.where(p > 0, p, 1.0))
    return -(p * logp).sum(axis=1) / np.log2(_HIST_BINS)  # normalised to 0..1


def _colourfulness(x: np.ndarray) -> np.ndarray:
    # Hasler & Suesstrunk (2003): spread and mean of the opponent channels.
    rg = x[:, 0] - x[:, 1]
    yb = 0.5 * (x[:, 0] + x[:, 1]) - x[:, 2]
    spread = np.hypot(rg.std(axis=1), yb.std(axis=1))
    centre = np.hypot(rg.mean(axis=1), yb.mean(axis=1))
    return spread + 0.3 * centre


def _pool2(a: np.ndarray) -> np.ndarray:
    n, h, w = a.shape
    return a.reshape(n, h // 2, 2, w // 2, 2).mean(axis=(2, 4))


def _up2(a: np.ndarray) -> np.ndarray:
    return a.repeat(2, axis=1).repeat(2, axis=2)


def _detail_scales(luma: np.ndarray) -> np.ndarray:
    """Share of the luma variance that is fine (64 px), middle (32-16 px) and coarse (8 px).

    Bands of a box pyramid: what each level adds over the next coarser one, plus what is
    already visible at 8 x 8. For a 64 px thumbnail the three shares roughly sum to 1.
    """
    levels = [luma]
    for _ in range(3):
        levels.append(_pool2(levels[-1]))
    bands = [(levels[i] - _up2(levels[i + 1])).var(axis=(1, 2)) for i in range(3)]
    total = luma.var(axis=(1, 2))
    shares = [bands[0], bands[1] + bands[2], levels[3].var(axis=(1, 2))]
    ok = total > 1e-10
    return np.stack([np.where(ok, b / np.maximum(total, 1e-10), 0.0) for b in shares], axis=1)


def _layout(luma: np.ndarray) -> np.ndarray:
    n, h, w = luma.shape
    ys = (np.arange(h) + 0.5) / h - 0.5
    xs = (np.arange(w) + 0.5) / w - 0.5
    # Centroid of the squared deviation from mean brightness: where the "stuff" sits (0 =
    # centred). Squaring keeps a large plain background from pulling it back to the middle.
    dev = np.square(luma - luma.mean(axis=(1, 2), keepdims=True))
    mass = np.maximum(dev.sum(axis=(1, 2)), _EPS)
    cx = (dev.sum(axis=1) * xs).sum(axis=1) / mass
    cy = (dev.sum(axis=2) * ys).sum(axis=1) / mass
    inner = np.zeros((h, w), dtype=bool)
    inner[h // 4 : h - h // 4, w // 4 : w - w // 4] = True
    centre = luma[:, inner].mean(axis=1) - luma[:, ~inner].mean(axis=1)
    return np.stack([cx, cy, centre], axis=1)


# ---- genomes -----------------------------------------------------------------------------

_LIST_BUCKETS = 8
GENOME_FEATURE_NAMES: tuple[str, ...] = (
    "n_numbers", "n_strings", "n_bools", "n_lists", "n_dicts", "max_depth",
    "num_mean", "num_std", "num_abs_mean", "num_abs_max", "string_chars",
) + tuple(f"list_len_{i}" for i in range(_LIST_BUCKETS))  # fmt: skip


def genome_features(genomes: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Generic summary features of JSON genomes, one row each (``GENOME_FEATURE_NAMES``).

    Counts of leaves by type, nesting depth, statistics of all numbers and the total string
    length; plus, for each top-level key holding a list (e.g. CPPN ``nodes``, ``links``), its
    length in one of a few buckets chosen by a stable hash of the key. Counts are ``log1p``-ed
    and numbers squashed with a signed log so that one huge weight cannot dominate. The
    reserved ``"tensors"`` key (latents) is skipped.

    Raises:
        ValueError: a genome is not a mapping.
    """
    rows = [_genome_row(g) for g in genomes]
    if not rows:
        return np.zeros((0, len(GENOME_FEATURE_NAMES)))
    return np.nan_to_num(np.array(rows, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)


def _genome_row(genome: Any) -> list[float]:
    if not isinstance(genome, Mapping):
        raise ValueError(f"genome_features needs dict genomes, got {type(genome).__name__}")
    tally = {"str": 0, "bool": 0, "list": 0, "dict": 0, "chars": 0, "depth": 0}
    numbers: list[float] = []
    body = {k: v for k, v in genome.items() if k != "tensors"}
    for value in body.values():
        _walk(value, 1, tally, numbers)
    nums = np.asarray(numbers, dtype=np.float64)
    nums = nums[np.isfinite(nums)]
    squashed = np.sign(nums) * np.log1p(np.abs(nums))
    stats = (
        [squashed.mean(), squashed.std(), np.abs(squashed).mean(), np.abs(squashed).max()]
        if len(squashed)
        else [0.0] * 4
    )
    buckets = [0.0] * _LIST_BUCKETS
    for key, value in body.items():
        if isinstance(value, list):
            buckets[zlib.crc32(str(key).encode()) % _LIST_BUCKETS] += len(value)
    counts = [len(nums), tally["str"], tally["bool"], tally["list"], tally["dict"]]
    return (
        [float(np.log1p(c)) for c in counts]
        + [float(tally["depth"])]
        + [float(s) for s in stats]
        + [float(np.log1p(tally["chars"]))]
        + [float(np.log1p(b)) for b in buckets]
    )


def _walk(value: Any, depth: int, tally: dict[str, int], numbers: list[float]) -> None:
    tally["depth"] = max(tally["depth"], depth)
    if isinstance(value, bool):
        tally["bool"] += 1
    elif isinstance(value, int | float):
        numbers.append(float(value))
    elif isinstance(value, str):
        tally["str"] += 1
        tally["chars"] += len(value)
    elif isinstance(value, Mapping):
        tally["dict"] += 1
        for item in value.values():
            _walk(item, depth + 1, tally, numbers)
    elif isinstance(value, list | tuple):
        tally["list"] += 1
        for item in value:
            _walk(item, depth + 1, tally, numbers)
