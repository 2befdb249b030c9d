"""Batched rendering of diffusion genomes: one pipeline call per fixed-size chunk.

Genomes that share (steps, guidance, img2img strength) go through the pipeline together; a
pipeline call takes one step count and one guidance scale, so a mixed population makes one
group per combination. Each image still depends on its own genome only:

- the initial latents are the genome's, passed explicitly;
- the sampler's per-step noise (ancestral schedulers) comes from a per-image generator seeded
  with the genome's seed, advanced past the latents draw, exactly as ``pipe(prompt,
  generator=torch.Generator().manual_seed(seed))`` would use it;
- prompt embeddings are encoded one prompt at a time and cached.

Prompt weights: the fragments are tokenized into one 77-token sequence and encoded together
(so words keep their context); then each token's hidden state ``h`` becomes
``e + w * (h - e)``, where ``e`` is the empty prompt's hidden state at that position and ``w``
its fragment's weight. Weight 1 leaves the plain CLIP embedding, bit for bit; 0 erases the
fragment; no division, so no blow-up when an embedding's mean is near zero.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import torch
from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline

from imagery.protocol import TENSORS_KEY, Genome

_CACHE_SIZE = 512


class _GenomeNoiseImg2Img(StableDiffusionImg2ImgPipeline):
    """Img2img that noises the init image with the genomes' latents, not fresh random noise.

    diffusers draws that noise itself; a genome carries it, so the child of an image is
    reproducible alone and its latents respond to mutation like a text-to-image genome's.
    """

    genome_noise: torch.Tensor | None = None

    def prepare_latents(
        self, image, timestep, batch_size, num_images_per_prompt, dtype, device, generator=None
    ):
        image = image.to(device=device, dtype=dtype)
        # The distribution's mode, not a sample: the encoding of an image is then a constant.
        init = self.vae.encode(image).latent_dist.mode() * self.vae.config.scaling_factor
        noise = self.genome_noise.to(device=device, dtype=dtype)
        return self.scheduler.add_noise(init, noise, timestep)


class Renderer:
    """Holds a loaded pipeline and turns batches of genomes into float images.

    Args:
        pipe: A Stable Diffusion text-to-image pipeline; the img2img twin shares its modules.
        resolution: The model's native image side; latents are ``resolution // 8``.
        chunk_size: Images per pipeline call.
        pad: Pad the last chunk to ``chunk_size`` (by repeating a genome) so a compiled
            model always sees the same batch shape; the padding is dropped afterwards.
    """

    def __init__(
        self, pipe: StableDiffusionPipeline, resolution: int, chunk_size: int, pad: bool
    ) -> None:
        self.pipe = pipe
        self.img2img = _GenomeNoiseImg2Img(**pipe.components, requires_safety_checker=False)
        self.img2img.set_progress_bar_config(disable=True)
        self.resolution = resolution
        self.chunk_size = chunk_size
        self.pad = pad
        self._embeds: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._empty_hidden: torch.Tensor | None = None

    @property
    def device(self) -> torch.device:
        return self.pipe.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.pipe.unet.dtype

    def render(
        self,
        genomes: Sequence[Genome],
        steps: Sequence[int],
        progress: Callable[[int, int], None] | None = None,
    ) -> torch.Tensor:
        """Render genomes (``steps[i]`` steps for the i-th) to float32 CPU images in [0, 1].

        Returns:
            A tensor of shape (len(genomes), 3, resolution, resolution).
        """
        total = len(genomes)
        out: list[torch.Tensor | None] = [None] * total
        groups: dict[tuple[Any, ...], list[int]] = {}
        for i, genome in enumerate(genomes):
            key = (steps[i], float(genome["guidance"]), genome.get("strength"))
            groups.setdefault(key, []).append(i)
        done = 0
        for (n_steps, guidance, strength), members in groups.items():
            for start in range(0, len(members), self.chunk_size):
                chunk = members[start : start + self.chunk_size]
                images = self._call(
                    [genomes[i] for i in chunk], n_steps, guidance, strength, done, total, progress
                )
                for i, image in zip(chunk, images, strict=False):
                    out[i] = image
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
        return torch.stack(out)  # type: ignore[arg-type]

    def _call(
        self,
        chunk: list[Genome],
        steps: int,
        guidance: float,
        strength: float | None,
        done_before: int,
        total: int,
        progress: Callable[[int, int], None] | None,
    ) -> torch.Tensor:
        real = len(chunk)
        if self.pad and real < self.chunk_size:
            chunk = chunk + [chunk[-1]] * (self.chunk_size - real)
        latents = torch.stack([g[TENSORS_KEY]["latents"] for g in chunk])
        kwargs: dict[str, Any] = {
            "prompt_embeds": torch.cat([self._embed(g["prompt"]) for g in chunk]),
            "guidance_scale": guidance,
            "generator": [self._sampler_generator(g["seed"], latents.shape[1:]) for g in chunk],
            "output_type": "pt",
            "callback_on_step_end": self._step_callback(real, done_before, total, progress),
        }
        # diffusers skips classifier-free guidance at guidance <= 1: no negative pass at all.
        if guidance > 1.0:
            negatives = [self._embed([{"text": g["negative"], "weight": 1.0}]) for g in chunk]
            kwargs["negative_prompt_embeds"] = torch.cat(negatives)
        latents = latents.to(device=self.device, dtype=self.dtype)
        if strength is None:
            result = self.pipe(
                latents=latents,
                num_inference_steps=steps,
                height=self.resolution,
                width=self.resolution,
                **kwargs,
            )
        else:
            images = torch.stack([g[TENSORS_KEY]["init_image"] for g in chunk])
            self.img2img.genome_noise = latents
            try:
                result = self.img2img(
                    image=images.to(device=self.device, dtype=torch.float32) / 255.0,
                    strength=strength,
                    # diffusers needs at least one step after the strength cut.
                    num_inference_steps=max(steps, math.ceil(1.0 / strength)),
                    **kwargs,
                )
            finally:
                self.img2img.genome_noise = None
        return result.images[:real].float().cpu()

    @staticmethod
    def _sampler_generator(seed: int, shape: torch.Size) -> torch.Generator:
        generator = torch.Generator(device="cpu").manual_seed(int(seed))
        # Skip the draw a plain pipe(generator=...) call spends on the initial latents.
        torch.randn((1, *shape), generator=generator)
        return generator

    def _step_callback(
        self,
        real: int,
        done_before: int,
        total: int,
        progress: Callable[[int, int], None] | None,
    ) -> Callable[..., dict[str, Any]]:
        reported = [done_before]

        def on_step_end(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict:
            # Progress counts images: a chunk's images finish together, so report the
            # fraction of its steps as a share of its images, whole images only.
            if progress is not None:
                done = done_before + (real * (step + 1)) // max(pipe.num_timesteps, 1)
                if done > reported[0] and done < done_before + real:
                    reported[0] = done
                    progress(done, total)
            return tensors

        return on_step_end

    def _embed(self, fragments: list[dict[str, Any]]) -> torch.Tensor:
        key = json.dumps([[f["text"], float(f["weight"])] for f in fragments])
        cached = self._embeds.get(key)
        if cached is None:
            cached = self._encode(fragments)
            self._embeds[key] = cached
            if len(self._embeds) > _CACHE_SIZE:
                self._embeds.popitem(last=False)
        else:
            self._embeds.move_to_end(key)
        return cached

    @torch.no_grad()
    def _encode(self, fragments: list[dict[str, Any]]) -> torch.Tensor:
        ids, weights = self._tokens(fragments)
        hidden = self._hidden(ids)
        if any(w != 1.0 for w in weights):
            # Move each token's hidden state away from (w > 1) or toward (w < 1) what the
            # empty prompt gives at that position; w = 0 erases the token's influence.
            if self._empty_hidden is None:
                self._empty_hidden = self._hidden(self._tokens([])[0]).float()
            empty = self._empty_hidden
            scale = torch.tensor(weights, device=hidden.device, dtype=torch.float32)[None, :, None]
            hidden = empty + (hidden.float() - empty) * scale
        return hidden.to(dtype=self.dtype)

    def _tokens(self, fragments: list[dict[str, Any]]) -> tuple[list[int], list[float]]:
        """BOS, the comma-joined fragments' tokens (75 at most), EOS, padding: 77 ids, weights."""
        tokenizer = self.pipe.tokenizer
        length = tokenizer.model_max_length
        ids: list[int] = []
        weights: list[float] = []
        comma = tokenizer(",", add_special_tokens=False).input_ids
        for i, frag in enumerate(fragments):
            if i:  # the same tokens as the plain text "first, second"
                ids += comma
                weights += [1.0] * len(comma)
            piece = tokenizer(frag["text"], add_special_tokens=False).input_ids
            ids += piece
            weights += [float(frag["weight"])] * len(piece)
        ids = [tokenizer.bos_token_id, *ids[: length - 2], tokenizer.eos_token_id]
        weights = [1.0, *weights[: length - 2], 1.0]
        ids += [tokenizer.pad_token_id] * (length - len(ids))
        weights += [1.0] * (length - len(weights))
        return ids, weights

    def _hidden(self, ids: list[int]) -> torch.Tensor:
        encoder = self.pipe.text_encoder
        return encoder(torch.tensor([ids], device=encoder.device))[0]
