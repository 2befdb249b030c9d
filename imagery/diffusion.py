"""The diffusion generator: Stable Diffusion through diffusers, fully offline.

Import path ``"imagery.diffusion:DiffusionGenerator"``. Config keys (all JSON):

==================  =========  ===============================================================
key                 default    meaning
==================  =========  ===============================================================
model               required   ``"tiny"``, ``"random-sd-turbo"``, a diffusers folder, or a
                               single ``.safetensors`` checkpoint
model_config        None       local diffusers folder with configs + tokenizer, for a
                               single-file checkpoint (never fetched from the hub)
prompt              ""         base prompt, ``"a fox, (watercolor:1.3)"`` weighted fragments
negative            ""         negative prompt
resolution          None       image side the model renders; None reads the model's configs
steps               20         sampler steps of new genomes (full fidelity)
guidance            7.5        CFG scale of new genomes; <= 1 turns CFG off (SD-Turbo: 0)
strength            0.6        img2img strength of genomes seeded from an image
max_steps           50         mutation never raises steps above this
preview_steps       4          steps cap when rendering at preview fidelity
fidelity            "full"     ``render`` at "full" steps or capped at "preview" steps
chunk_size          8          images per pipeline call
pad_chunks          None       pad the last chunk to chunk_size; None: only when compiling
compile             false      ``torch.compile`` the UNet (worth it on a GPU spark)
device              "auto"     "auto" (cuda if present), "cpu", "cuda", "cuda:1", ...
dtype               "auto"     "auto" (bf16 on CUDA, fp32 on CPU), "float32", "float16", ...
random_modifiers    2          random genomes add up to this many vocabulary modifiers
==================  =========  ===============================================================

Building the generator loads nothing; the model loads on the first render and stays loaded.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

os.environ["HF_HUB_OFFLINE"] = "1"  # before anything below can import huggingface_hub

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from imagery import diffusion_genome as dg  # noqa: E402
from imagery.protocol import (  # noqa: E402
    GeneratorError,
    Genome,
    ProgressCallback,
    check_size,
)

FIDELITIES = ("preview", "full")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class DiffusionConfig:
    """The generator's JSON config, validated; see the module docstring for each key."""

    model: str
    model_config: str | None = None
    prompt: str = ""
    negative: str = ""
    resolution: int | None = None
    steps: int = 20
    guidance: float = 7.5
    strength: float = 0.6
    max_steps: int = 50
    preview_steps: int = 4
    fidelity: str = "full"
    chunk_size: int = 8
    pad_chunks: bool | None = None
    compile: bool = False
    device: str = "auto"
    dtype: str = "auto"
    random_modifiers: int = 2

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DiffusionConfig:
        """Build from JSON, raising a one-line ``GeneratorError`` on any bad value."""
        if not isinstance(data, dict):
            raise GeneratorError("diffusion config must be a JSON object")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise GeneratorError(f"unknown diffusion config key {unknown[0]!r}")
        if not isinstance(data.get("model"), str) or not data["model"].strip():
            raise GeneratorError(
                "diffusion needs 'model': 'tiny', a diffusers folder or a .safetensors file"
            )
        config = cls(**data)
        config._check()
        return config

    def _check(self) -> None:
        def whole(name: str, low: int, high: int, allow_none: bool = False) -> None:
            value = getattr(self, name)
            if value is None and allow_none:
                return
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise GeneratorError(f"diffusion '{name}' must be a whole number {low}..{high}")

        whole("resolution", 64, 2048, allow_none=True)
        whole("steps", 1, 1000)
        whole("max_steps", 1, 1000)
        whole("preview_steps", 1, 1000)
        whole("chunk_size", 1, 256)
        whole("random_modifiers", 0, dg.MAX_FRAGMENTS)
        if self.resolution is not None and self.resolution % 8:
            raise GeneratorError(
                f"diffusion 'resolution' must be a multiple of 8, got {self.resolution}"
            )
        for name, low, high in (("guidance", 0.0, 50.0), ("strength", 0.01, 1.0)):
            value = getattr(self, name)
            if not dg._is_number(value) or not low <= value <= high:
                raise GeneratorError(f"diffusion '{name}' must be a number {low}..{high}")
        for name in ("prompt", "negative", "device", "dtype"):
            if not isinstance(getattr(self, name), str):
                raise GeneratorError(f"diffusion '{name}' must be text")
        if self.model_config is not None and not isinstance(self.model_config, str):
            raise GeneratorError("diffusion 'model_config' must be a folder path")
        if self.fidelity not in FIDELITIES:
            raise GeneratorError(f"diffusion 'fidelity' must be one of {FIDELITIES}")
        if self.dtype != "auto" and self.dtype not in DTYPES:
            raise GeneratorError(f"diffusion 'dtype' must be 'auto' or one of {tuple(DTYPES)}")
        if not isinstance(self.compile, bool) or self.pad_chunks not in (None, True, False):
            raise GeneratorError("diffusion 'compile' and 'pad_chunks' must be true or false")


class DiffusionGenerator:
    """Evolves Stable Diffusion images: prompts, seeds and initial noise are the genes.

    The constructor is cheap: ``random``, ``mutate`` and ``crossover`` need no model, and the
    pipeline is loaded on the first render and kept (a spark reuses it between generations).
    """

    lockable: tuple[str, ...] = dg.LOCKABLE

    def __init__(self, config: DiffusionConfig) -> None:
        self._config = config
        self._resolution = config.resolution
        self._renderer: Any = None

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> DiffusionGenerator:
        return cls(DiffusionConfig.from_dict(config))

    @property
    def config(self) -> dict[str, Any]:
        return self._config.to_dict()

    @property
    def resolution(self) -> int:
        """The side of the images the model renders (from the config, else the model's JSON)."""
        if self._resolution is None:
            from imagery.diffusion_models import model_resolution

            self._resolution = model_resolution(self._config.model, self._config.model_config)
            if self._resolution is None:
                raise GeneratorError(
                    f"cannot tell the resolution of {self._config.model}: set 'resolution'"
                )
        return self._resolution

    @functools.cached_property
    def spec(self) -> dg.GenomeSpec:
        c = self._config
        return dg.GenomeSpec(
            resolution=self.resolution,
            prompt=tuple((f["text"], f["weight"]) for f in dg.parse_prompt(c.prompt)),
            negative=c.negative,
            steps=min(c.steps, c.max_steps),
            guidance=c.guidance,
            strength=c.strength,
            max_steps=c.max_steps,
            random_modifiers=c.random_modifiers,
        )

    # ---- model --------------------------------------------------------------------------------

    def check_model(self) -> None:
        """Cheap checks (files present, supported kind) without loading; raises GeneratorError."""
        from imagery.diffusion_models import check_model

        check_model(self._config.model, self._config.model_config)

    def load(self) -> None:
        """Load the pipeline now (otherwise the first render does); a no-op once loaded."""
        if self._renderer is not None:
            return
        from imagery.diffusion_models import load_pipeline
        from imagery.diffusion_render import Renderer

        c = self._config
        device = self._device()
        dtype = self._dtype(device)
        pipe = load_pipeline(c.model, c.model_config, device, dtype)
        if c.compile:
            pipe.unet = torch.compile(pipe.unet)
        pad = c.compile if c.pad_chunks is None else c.pad_chunks
        self._renderer = Renderer(pipe, self.resolution, c.chunk_size, pad)

    @property
    def pipeline(self) -> Any:
        """The loaded diffusers pipeline (loading it if needed)."""
        self.load()
        return self._renderer.pipe

    def _device(self) -> torch.device:
        name = self._config.device
        if name == "auto":
            name = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            device = torch.device(name)
        except RuntimeError:
            raise GeneratorError(f"unknown device {name!r}") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise GeneratorError("device 'cuda' asked for, but no CUDA GPU is available")
        return device

    def _dtype(self, device: torch.device) -> torch.dtype:
        if self._config.dtype != "auto":
            return DTYPES[self._config.dtype]
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    # ---- genomes ------------------------------------------------------------------------------

    def random(self, rng: np.random.Generator, n: int) -> list[Genome]:
        spec = self.spec
        return [dg.random_genome(spec, rng) for _ in range(n)]

    def mutate(
        self,
        genome: Genome,
        rng: np.random.Generator,
        strength: float,
        locks: frozenset[str] = frozenset(),
    ) -> Genome:
        spec = self.spec
        dg.validate(genome, spec)
        unknown = set(locks) - set(self.lockable)
        if unknown:
            raise GeneratorError(f"unknown gene lock {sorted(unknown)[0]!r}; use {self.lockable}")
        return dg.mutate(genome, spec, rng, strength, frozenset(locks))

    def crossover(self, a: Genome, b: Genome, rng: np.random.Generator) -> Genome:
        spec = self.spec
        dg.validate(a, spec)
        dg.validate(b, spec)
        return dg.crossover(a, b, rng)

    def from_image(
        self,
        image: Image.Image,
        rng: np.random.Generator,
        *,
        prompt: str | None = None,
        strength: float | None = None,
        parent: Genome | None = None,
    ) -> Genome:
        """An img2img genome starting from ``image`` (a CPPN image, a parent's render...).

        With ``parent``, the child keeps the parent's prompt and sampler settings.
        """
        spec = self.spec
        if parent is not None:
            dg.validate(parent, spec)
        return dg.image_genome(spec, image, rng, prompt, strength, parent)

    # ---- rendering ----------------------------------------------------------------------------

    def render(
        self, genomes: Sequence[Genome], size: int, progress: ProgressCallback | None = None
    ) -> list[Image.Image]:
        """Render at the configured fidelity ("preview" caps steps at ``preview_steps``)."""
        check_size(size)
        return self._to_images(self.render_tensor(genomes, progress=progress), size)

    def render_full(
        self, genomes: Sequence[Genome], size: int, progress: ProgressCallback | None = None
    ) -> list[Image.Image]:
        """Render with every genome's own step count, whatever the configured fidelity."""
        check_size(size)
        return self._to_images(self.render_tensor(genomes, progress=progress, full=True), size)

    def render_tensor(
        self,
        genomes: Sequence[Genome],
        progress: ProgressCallback | None = None,
        full: bool | None = None,
    ) -> torch.Tensor:
        """Render to float32 CPU images in [0, 1], shape (n, 3, resolution, resolution).

        Args:
            genomes: The batch; rendered in chunks of ``chunk_size``, one pipeline call each.
            progress: Called with (images done, total).
            full: True for full steps, False for preview, None for the configured fidelity.
        """
        spec = self.spec
        for genome in genomes:
            dg.validate(genome, spec)
        if not genomes:
            return torch.zeros((0, 3, spec.resolution, spec.resolution))
        self.load()
        if full is None:
            full = self._config.fidelity == "full"
        cap = None if full else self._config.preview_steps
        steps = [g["steps"] if cap is None else min(g["steps"], cap) for g in genomes]
        return self._renderer.render(list(genomes), steps, progress)

    @staticmethod
    def _to_images(pixels: torch.Tensor, size: int) -> list[Image.Image]:
        arrays = (pixels * 255.0).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
        images = []
        for array in arrays.numpy():
            image = Image.fromarray(array, mode="RGB")
            if image.size != (size, size):
                image = image.resize((size, size), Image.Resampling.LANCZOS)
            images.append(image)
        return images


def seed_from_image(
    image: Image.Image,
    rng: np.random.Generator,
    prompt: str = "",
    *,
    resolution: int = 512,
    strength: float = 0.6,
    steps: int = 20,
    guidance: float = 7.5,
    negative: str = "",
) -> Genome:
    """An img2img diffusion genome seeded by any image, e.g. a CPPN render (the hybrid).

    Prefer ``DiffusionGenerator.from_image``, which takes these settings from its config.
    """
    spec = dg.GenomeSpec(
        resolution=resolution,
        prompt=tuple((f["text"], f["weight"]) for f in dg.parse_prompt(prompt)),
        negative=negative,
        steps=steps,
        guidance=guidance,
        strength=strength,
        random_modifiers=0,
    )
    return dg.image_genome(spec, image, rng, strength=strength)
