"""Rendering with the in-code tiny Stable Diffusion pipeline (64 px, random weights, CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from imagery.cppn import CPPN
from imagery.diffusion import DiffusionGenerator
from imagery.diffusion_genome import format_prompt, parse_prompt
from imagery.protocol import TENSORS_KEY, Generator, GeneratorError
from spark_runtime.spark import InProcessSpark

TINY = {"model": "tiny", "prompt": "a lighthouse, watercolor", "steps": 2, "chunk_size": 4}
TOL = 1e-4


@pytest.fixture(scope="module")
def gen() -> DiffusionGenerator:
    generator = DiffusionGenerator.from_config(TINY)
    generator.load()
    return generator


def _one_by_one(gen: DiffusionGenerator, genomes: list[dict]) -> torch.Tensor:
    return torch.cat([gen.render_tensor([g]) for g in genomes])


def _mixed_population(gen: DiffusionGenerator) -> list[dict]:
    """Text2img and img2img genomes, several step counts and guidance scales (and no CFG)."""
    rng = np.random.default_rng(0)
    population = gen.random(rng, 5)
    population.append(gen.mutate(population[0], rng, 0.8))
    population.append(gen.crossover(population[1], population[2], rng))
    population[3]["steps"] = 1
    population[4]["guidance"] = 1.0
    picture = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    population.append(gen.from_image(picture, rng, strength=0.5))
    population.append(gen.from_image(picture, rng, strength=0.5, parent=population[1]))
    return population


def test_batched_render_equals_rendering_each_genome_alone(gen):
    population = _mixed_population(gen)
    batched = gen.render_tensor(population)
    alone = _one_by_one(gen, population)
    assert batched.shape == (len(population), 3, 64, 64)
    assert (batched - alone).abs().max().item() <= TOL
    # The images are real pictures, not a constant colour that would match trivially.
    assert batched.std().item() > 0.05
    assert (batched[0] - batched[1]).abs().max().item() > 0.1


def test_rerendering_a_genome_gives_the_identical_image(gen):
    genome = gen.random(np.random.default_rng(1), 1)[0]
    first = gen.render_tensor([genome])
    assert torch.equal(first, gen.render_tensor([genome]))
    images = gen.render([genome, genome], 64)
    assert np.array_equal(np.asarray(images[0]), np.asarray(images[1]))


def test_genome_renders_like_the_plain_seeded_pipeline_call(gen):
    # The genome's latents are the noise pipe(generator=manual_seed(seed)) would draw, and the
    # sampler (ancestral in the tiny model) continues that generator's stream.
    genome = gen.random(np.random.default_rng(2), 1)[0]
    reference = gen.pipeline(
        format_prompt(genome["prompt"]),
        num_inference_steps=genome["steps"],
        guidance_scale=genome["guidance"],
        generator=torch.Generator().manual_seed(genome["seed"]),
        height=64,
        width=64,
        output_type="pt",
    ).images
    assert (gen.render_tensor([genome]) - reference).abs().max().item() <= TOL


def test_prompt_weights_and_latents_change_the_image(gen):
    genome = gen.random(np.random.default_rng(3), 1)[0]
    genome["prompt"] = parse_prompt("a lighthouse, watercolor")
    heavier = dict(genome, prompt=parse_prompt("a lighthouse, (watercolor:1.8)"))
    reseeded = gen.mutate(genome, np.random.default_rng(0), 0.5, frozenset({"prompt", "steps"}))
    base, weighted, moved = gen.render_tensor([genome, heavier, reseeded])
    assert (base - weighted).abs().max().item() > 0.01
    assert (base - moved).abs().max().item() > 0.01


def test_render_gives_rgb_images_of_the_asked_size(gen):
    genomes = gen.random(np.random.default_rng(4), 2)
    images = gen.render(genomes, 96)
    assert [(im.mode, im.size) for im in images] == [("RGB", (96, 96))] * 2
    with pytest.raises(GeneratorError, match="image size"):
        gen.render(genomes, 5)
    assert gen.render([], 64) == []


def test_progress_counts_images_up_to_the_total(gen):
    calls: list[tuple[int, int]] = []
    gen.render_tensor(
        gen.random(np.random.default_rng(5), 6), progress=lambda d, t: calls.append((d, t))
    )
    done = [d for d, _ in calls]
    assert calls[-1] == (6, 6)
    assert done == sorted(done) and len(set(done)) == len(done)
    assert {t for _, t in calls} == {6}
    assert len(calls) > 2  # reported within chunks, not only at the end


def test_padded_chunks_give_the_same_images():
    padded = DiffusionGenerator.from_config(dict(TINY, pad_chunks=True, chunk_size=4))
    plain = DiffusionGenerator.from_config(dict(TINY, pad_chunks=False, chunk_size=4))
    genomes = plain.random(np.random.default_rng(6), 5)  # chunks of 4 and 1 (+3 padding)
    a, b = padded.render_tensor(genomes), plain.render_tensor(genomes)
    assert a.shape[0] == 5
    assert (a - b).abs().max().item() <= TOL


def test_preview_fidelity_caps_steps_and_render_full_does_not():
    preview = DiffusionGenerator.from_config(dict(TINY, fidelity="preview", preview_steps=1))
    genome = preview.random(np.random.default_rng(7), 1)[0]
    assert genome["steps"] == 2
    one_step = dict(genome, steps=1)
    fast = preview.render_tensor([genome])
    assert (fast - preview.render_tensor([one_step], full=True)).abs().max().item() <= TOL
    full = np.asarray(preview.render_full([genome], 64)[0], dtype=np.float32)
    assert np.abs(full - np.asarray(preview.render([genome], 64)[0], dtype=np.float32)).max() > 1


def test_img2img_follows_its_init_image(gen):
    rng = np.random.default_rng(8)
    red = gen.from_image(Image.new("RGB", (64, 64), (255, 0, 0)), rng, strength=0.5)
    blue = dict(red, **{TENSORS_KEY: dict(red[TENSORS_KEY])})
    blue[TENSORS_KEY]["init_image"] = torch.zeros_like(red[TENSORS_KEY]["init_image"])
    a, b = gen.render_tensor([red, blue])
    assert (a - b).abs().max().item() > 0.01


def test_rendering_leaves_global_random_state_alone(gen):
    genomes = gen.random(np.random.default_rng(9), 2)
    state = torch.get_rng_state()
    gen.render_tensor(genomes)
    assert torch.equal(torch.get_rng_state(), state)


def test_a_cppn_image_seeds_a_diffusion_genome(gen):
    cppn = CPPN.from_config({})
    rng = np.random.default_rng(10)
    picture = cppn.render(cppn.random(rng, 1), 64)[0]
    genome = gen.from_image(picture, rng, prompt="a stained glass window", strength=0.7)
    assert genome["strength"] == 0.7
    image = gen.render([genome], 64)[0]
    assert image.size == (64, 64)
    assert np.asarray(image).std() > 1


def test_a_spark_builds_and_renders_the_generator_from_its_import_path():
    assert isinstance(DiffusionGenerator.from_config(TINY), Generator)
    spark = InProcessSpark("imagery.diffusion:DiffusionGenerator", TINY)
    genomes = spark.generator.random(np.random.default_rng(11), 2)
    images = spark.render(genomes, 48)
    assert [im.size for im in images] == [(48, 48), (48, 48)]
