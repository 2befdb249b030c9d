"""The diffusion genome and its variation operators.

A genome is a JSON dict plus tensors under ``"tensors"`` (see ``imagery.protocol``)::

    {"kind": "diffusion",
     "prompt": [{"text": "a lighthouse", "weight": 1.0}, {"text": "watercolor", "weight": 0.8}],
     "negative": "blurry", "seed": 1234, "guidance": 7.5, "steps": 20,
     "strength": 0.6,                       # img2img genomes only
     "tensors": {"latents": float32 4 x r/8 x r/8,       # the initial noise, unit variance
                 "init_image": uint8 3 x r x r}}         # img2img genomes only

The latents are the starting noise itself, so an image depends on its genome alone and not on
which batch rendered it. ``seed`` also seeds the sampler's own noise (ancestral schedulers).
Every random draw comes from the numpy Generator passed in; torch noise is made from a seed
drawn from it, never from torch's global generator.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from imagery.prompt_vocab import category_of, pick_modifier
from imagery.protocol import TENSORS_KEY, GeneratorError, Genome

KIND = "diffusion"
LATENT_CHANNELS = 4
VAE_SCALE = 8
LOCKABLE: tuple[str, ...] = ("prompt", "latents", "guidance", "steps", "strength")
MAX_FRAGMENTS = 8
WEIGHT_RANGE = (0.2, 2.0)
GUIDANCE_RANGE = (1.0, 20.0)
STRENGTH_RANGE = (0.1, 1.0)
_SEED_LIMIT = 2**32  # fits a JSON number exactly, also in a browser


@dataclass(frozen=True)
class GenomeSpec:
    """What new genomes start from and where mutation keeps them (from the generator config)."""

    resolution: int
    prompt: tuple[tuple[str, float], ...]
    negative: str = ""
    steps: int = 20
    guidance: float = 7.5
    strength: float = 0.6
    max_steps: int = 50
    random_modifiers: int = 2

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        side = self.resolution // VAE_SCALE
        return (LATENT_CHANNELS, side, side)


# ---- prompts -------------------------------------------------------------------------------

_WEIGHTED = re.compile(r"^\((.+):\s*([0-9]*\.?[0-9]+)\s*\)$", re.S)


def parse_prompt(text: str) -> list[dict[str, Any]]:
    """Split ``"a cat, (oil painting:1.3)"`` into weighted fragments at top-level commas."""
    if not isinstance(text, str):
        raise GeneratorError(f"prompt must be text, got {type(text).__name__}")
    parts, depth, current = [], 0, []
    for char in text:
        depth += (char == "(") - (char == ")")
        if char == "," and depth <= 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    fragments = []
    for part in (p.strip() for p in parts):
        match = _WEIGHTED.match(part)
        if match:
            fragments.append({"text": match.group(1).strip(), "weight": float(match.group(2))})
        elif part:
            fragments.append({"text": part, "weight": 1.0})
    return fragments


def format_prompt(fragments: list[dict[str, Any]]) -> str:
    """The inverse of ``parse_prompt``: the text a user would type for these fragments."""
    out = []
    for frag in fragments:
        weight = float(frag["weight"])
        out.append(frag["text"] if weight == 1.0 else f"({frag['text']}:{weight:g})")
    return ", ".join(out)


# ---- latents --------------------------------------------------------------------------------


def draw_seed(rng: np.random.Generator) -> int:
    return int(rng.integers(0, _SEED_LIMIT))


def noise(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Unit-variance float32 noise; the same values diffusers draws for one image of ``seed``."""
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randn((1, *shape), generator=generator, dtype=torch.float32)[0]


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation from ``a`` (t=0) to ``b`` (t=1) on the sphere of radius sqrt(n).

    Gaussian noise in n dimensions lies near that sphere; a straight average would shrink
    toward the centre, which a diffusion model reads as a washed-out, low-contrast start.
    """
    radius = math.sqrt(a.numel())
    ua = a.reshape(-1).double()
    ub = b.reshape(-1).double()
    ua = ua / ua.norm()
    ub = ub / ub.norm()
    omega = torch.arccos(torch.clamp(ua @ ub, -1.0, 1.0)).item()
    if omega < 1e-6:
        out = ua
    else:
        out = (math.sin((1.0 - t) * omega) * ua + math.sin(t * omega) * ub) / math.sin(omega)
    return (out / out.norm() * radius).reshape(a.shape).to(torch.float32)


# ---- construction -------------------------------------------------------------------------------


def _fragment(text: str, weight: float) -> dict[str, Any]:
    return {"text": text, "weight": round(float(weight), 3)}


def random_genome(spec: GenomeSpec, rng: np.random.Generator) -> Genome:
    """A text-to-image genome: the base prompt plus up to ``random_modifiers`` modifiers."""
    fragments = [_fragment(text, weight) for text, weight in spec.prompt]
    for _ in range(int(rng.integers(0, spec.random_modifiers + 1))):
        text = pick_modifier(rng, exclude=frozenset(f["text"] for f in fragments))
        if text is not None and len(fragments) < MAX_FRAGMENTS:
            fragments.append(_fragment(text, 1.0))
    seed = draw_seed(rng)
    return {
        "kind": KIND,
        "prompt": fragments,
        "negative": spec.negative,
        "seed": seed,
        "guidance": round(float(spec.guidance), 2),
        "steps": int(spec.steps),
        TENSORS_KEY: {"latents": noise(seed, spec.latent_shape)},
    }


def image_tensor(image: Image.Image, resolution: int) -> torch.Tensor:
    """An image as the uint8 3 x r x r tensor an img2img genome stores."""
    rgb = image.convert("RGB")
    if rgb.size != (resolution, resolution):
        rgb = rgb.resize((resolution, resolution), Image.Resampling.LANCZOS)
    return torch.from_numpy(np.asarray(rgb, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def image_genome(
    spec: GenomeSpec,
    image: Image.Image,
    rng: np.random.Generator,
    prompt: str | None = None,
    strength: float | None = None,
    parent: Genome | None = None,
) -> Genome:
    """An img2img genome that starts from ``image`` (a CPPN picture, a parent's render...).

    Args:
        spec: Generator defaults (resolution, steps, guidance, base prompt).
        image: Any PIL image; it is converted to RGB and resized to the model resolution.
        rng: The source of randomness (the seed of the fresh noise).
        prompt: Prompt text; defaults to the parent's prompt, else the generator's.
        strength: How far to move from the image, 0..1; defaults to the spec's.
        parent: A genome whose prompt and sampler settings the child inherits.
    """
    child = random_genome(spec, rng) if parent is None else _copy(parent)
    if parent is not None:
        seed = draw_seed(rng)
        child["seed"] = seed
        child[TENSORS_KEY]["latents"] = noise(seed, spec.latent_shape)
    if prompt is not None:
        child["prompt"] = parse_prompt(prompt)
    value = spec.strength if strength is None else float(strength)
    child["strength"] = round(min(max(value, STRENGTH_RANGE[0]), STRENGTH_RANGE[1]), 3)
    child[TENSORS_KEY]["init_image"] = image_tensor(image, spec.resolution)
    return child


def _copy(genome: Genome) -> Genome:
    """A copy safe to edit: fresh lists and dicts; tensors shared (operators never edit in place)."""
    out = {k: v for k, v in genome.items() if k != TENSORS_KEY}
    out["prompt"] = [dict(f) for f in genome["prompt"]]
    out[TENSORS_KEY] = dict(genome[TENSORS_KEY])
    return out


# ---- mutation -----------------------------------------------------------------------------------


def mutate(
    genome: Genome,
    spec: GenomeSpec,
    rng: np.random.Generator,
    strength: float,
    locks: frozenset[str] = frozenset(),
) -> Genome:
    """Vary a genome; ``strength`` 0 changes nothing, 1 explores boldly; locked groups stay.

    Latents move in two separate ways: rarely a jump to a whole new seed (probability
    ``strength**2 / 2``), otherwise a small slerp toward fresh noise of angle fraction
    ``0.4 * strength``, so the composition drifts instead of being replaced.
    """
    s = min(max(float(strength), 0.0), 1.0)
    child = _copy(genome)
    if s == 0.0:
        return child
    if "latents" not in locks:
        seed = draw_seed(rng)
        fresh = noise(seed, tuple(genome[TENSORS_KEY]["latents"].shape))
        if rng.random() < 0.5 * s * s:
            child["seed"] = seed
            child[TENSORS_KEY]["latents"] = fresh
        else:
            child[TENSORS_KEY]["latents"] = slerp(genome[TENSORS_KEY]["latents"], fresh, 0.4 * s)
    if "prompt" not in locks:
        for _ in range(int(rng.random() < s) + int(rng.random() < s * s)):
            child["prompt"] = _mutate_prompt(child["prompt"], rng, s)
    if "guidance" not in locks and child["guidance"] > 1.0 and rng.random() < s:
        value = child["guidance"] * math.exp(rng.normal(0.0, 0.25 * s))
        child["guidance"] = round(min(max(value, GUIDANCE_RANGE[0]), GUIDANCE_RANGE[1]), 2)
    if "steps" not in locks and rng.random() < 0.3 * s:
        delta = int(rng.integers(1, 2 + int(3 * s))) * (1 if rng.random() < 0.5 else -1)
        child["steps"] = min(max(child["steps"] + delta, 1), spec.max_steps)
    if "strength" not in locks and "strength" in child and rng.random() < s:
        value = child["strength"] + rng.normal(0.0, 0.15 * s)
        child["strength"] = round(min(max(value, STRENGTH_RANGE[0]), STRENGTH_RANGE[1]), 3)
    return child


def _mutate_prompt(
    fragments: list[dict[str, Any]], rng: np.random.Generator, s: float
) -> list[dict[str, Any]]:
    """One edit: add, drop or swap a modifier, or reweight any fragment."""
    fragments = [dict(f) for f in fragments]
    present = frozenset(f["text"] for f in fragments)
    modifiers = [i for i, f in enumerate(fragments) if category_of(f["text"]) is not None]
    ops = ["reweight"] if fragments else []
    if len(fragments) < MAX_FRAGMENTS:
        ops.append("add")
    if modifiers:
        ops += ["swap"] + (["drop"] if len(fragments) > 1 else [])
    op = ops[int(rng.integers(len(ops)))]
    if op == "add":
        text = pick_modifier(rng, exclude=present)
        if text is not None:
            fragments.append(_fragment(text, 1.0))
    elif op == "drop":
        del fragments[modifiers[int(rng.integers(len(modifiers)))]]
    elif op == "swap":
        i = modifiers[int(rng.integers(len(modifiers)))]
        text = pick_modifier(rng, category_of(fragments[i]["text"]), exclude=present)
        if text is not None:
            fragments[i] = _fragment(text, fragments[i]["weight"])
    else:
        i = int(rng.integers(len(fragments)))
        value = fragments[i]["weight"] + rng.normal(0.0, 0.3 * s)
        fragments[i] = _fragment(
            fragments[i]["text"], min(max(value, WEIGHT_RANGE[0]), WEIGHT_RANGE[1])
        )
    return fragments


# ---- crossover ----------------------------------------------------------------------------------


def crossover(a: Genome, b: Genome, rng: np.random.Generator) -> Genome:
    """A child between two parents: slerped latents, a mix of both prompts' fragments.

    Fragments both parents share are kept (weight from either); the others each come along
    with probability one half, so the child inherits a blend of the two prompts.
    """
    t = float(rng.uniform(0.25, 0.75))
    child = _copy(a if t < 0.5 else b)
    child[TENSORS_KEY]["latents"] = slerp(a[TENSORS_KEY]["latents"], b[TENSORS_KEY]["latents"], t)
    weights_b = {f["text"]: f["weight"] for f in b["prompt"]}
    texts_a = {f["text"] for f in a["prompt"]}
    fragments = []
    for frag in a["prompt"]:
        if frag["text"] in weights_b:
            weight = frag["weight"] if rng.random() < 0.5 else weights_b[frag["text"]]
            fragments.append(_fragment(frag["text"], weight))
        elif rng.random() < 0.5:
            fragments.append(dict(frag))
    fragments += [dict(f) for f in b["prompt"] if f["text"] not in texts_a and rng.random() < 0.5]
    child["prompt"] = fragments[:MAX_FRAGMENTS] or [dict(f) for f in a["prompt"][:1]]
    child["negative"] = a["negative"] if rng.random() < 0.5 else b["negative"]
    child["guidance"] = round((a["guidance"] + b["guidance"]) / 2.0, 2)
    child["steps"] = a["steps"] if rng.random() < 0.5 else b["steps"]
    # img2img-ness is inherited whole from one parent: an init image with its strength.
    source = a if rng.random() < 0.5 else b
    child.pop("strength", None)
    child[TENSORS_KEY].pop("init_image", None)
    if "strength" in source:
        child["strength"] = source["strength"]
        child[TENSORS_KEY]["init_image"] = source[TENSORS_KEY]["init_image"]
    return child


# ---- validation ---------------------------------------------------------------------------------


def validate(genome: Any, spec: GenomeSpec) -> None:
    """Raise a one-line ``GeneratorError`` unless ``genome`` is a well-formed diffusion genome."""
    if not isinstance(genome, dict) or genome.get("kind") != KIND:
        raise GeneratorError("not a diffusion genome (expected a dict with kind 'diffusion')")
    fragments = genome.get("prompt")
    if not isinstance(fragments, list):
        raise GeneratorError("diffusion genome needs a 'prompt' list of fragments")
    for frag in fragments:
        if (
            not isinstance(frag, dict)
            or not isinstance(frag.get("text"), str)
            or not _is_number(frag.get("weight"))
        ):
            raise GeneratorError(
                f"bad prompt fragment {frag!r}: expected {{'text': str, 'weight': number}}"
            )
    if not isinstance(genome.get("negative"), str):
        raise GeneratorError("diffusion genome 'negative' must be text")
    seed = genome.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63:
        raise GeneratorError(
            f"diffusion genome 'seed' must be a non-negative integer, got {seed!r}"
        )
    if not _is_number(genome.get("guidance")) or not 0.0 <= genome["guidance"] <= 50.0:
        raise GeneratorError(
            f"diffusion genome 'guidance' must be 0..50, got {genome.get('guidance')!r}"
        )
    steps = genome.get("steps")
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= 1000:
        raise GeneratorError(f"diffusion genome 'steps' must be 1..1000, got {steps!r}")
    tensors = genome.get(TENSORS_KEY) or {}
    latents = tensors.get("latents")
    if not isinstance(latents, torch.Tensor) or tuple(latents.shape) != spec.latent_shape:
        shape = None if not isinstance(latents, torch.Tensor) else tuple(latents.shape)
        raise GeneratorError(
            f"diffusion genome latents have shape {shape}, the model needs {spec.latent_shape}"
        )
    if not latents.is_floating_point() or not bool(torch.isfinite(latents).all()):
        raise GeneratorError("diffusion genome latents must be finite floats")
    if ("strength" in genome) != ("init_image" in tensors):
        raise GeneratorError("an img2img genome needs both 'strength' and an 'init_image' tensor")
    if "strength" in genome:
        if not _is_number(genome["strength"]) or not 0.0 < genome["strength"] <= 1.0:
            raise GeneratorError(
                f"img2img 'strength' must be in (0, 1], got {genome['strength']!r}"
            )
        image = tensors["init_image"]
        expected = (3, spec.resolution, spec.resolution)
        if (
            not isinstance(image, torch.Tensor)
            or image.dtype != torch.uint8
            or tuple(image.shape) != expected
        ):
            raise GeneratorError(f"img2img 'init_image' must be a uint8 tensor of shape {expected}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
