"""Diffusion genomes and operators: no model needed, so these run in milliseconds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from imagery import diffusion_genome as dg
from imagery.diffusion import DiffusionGenerator, seed_from_image
from imagery.prompt_vocab import category_of
from imagery.protocol import TENSORS_KEY, GeneratorError
from spark_runtime.genome_codec import decode, encode, genome_id

# 512 px: 16384 latent numbers, enough for variance checks to be tight.
CONFIG = {"model": "/nonexistent/model", "resolution": 512, "prompt": "a red fox, (snow:1.2)"}


@pytest.fixture(scope="module")
def gen() -> DiffusionGenerator:
    return DiffusionGenerator.from_config(CONFIG)


def _latents(genome: dict) -> torch.Tensor:
    return genome[TENSORS_KEY]["latents"]


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.reshape(-1).double(), b.reshape(-1).double()
    return float(a @ b / (a.norm() * b.norm()))


def test_constructor_loads_nothing_and_random_needs_no_model(gen):
    # The model path does not exist: building and varying genomes must still work.
    population = gen.random(np.random.default_rng(0), 4)
    assert len(population) == 4
    assert all(tuple(_latents(g).shape) == (4, 64, 64) for g in population)
    assert population[0]["prompt"][:2] == [
        {"text": "a red fox", "weight": 1.0},
        {"text": "snow", "weight": 1.2},
    ]


def test_random_is_reproducible_from_the_rng_alone(gen):
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()[1].copy()
    first = [genome_id(g) for g in gen.random(np.random.default_rng(7), 5)]
    again = [genome_id(g) for g in gen.random(np.random.default_rng(7), 5)]
    assert first == again
    assert len(set(first)) == 5
    # No global RNG was touched.
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], np_state)


def test_random_latents_are_unit_variance_noise(gen):
    latents = _latents(gen.random(np.random.default_rng(1), 1)[0])
    assert abs(latents.mean().item()) < 0.05
    assert abs(latents.std().item() - 1.0) < 0.05


def test_slerp_stays_on_the_sphere_and_hits_its_ends():
    a, b = dg.noise(1, (4, 64, 64)), dg.noise(2, (4, 64, 64))
    radius = math.sqrt(a.numel())
    for t in (0.0, 0.3, 0.5, 0.9, 1.0):
        assert slerp_norm(a, b, t) == pytest.approx(radius, rel=1e-5)
    assert _cos(dg.slerp(a, b, 0.0), a) == pytest.approx(1.0, abs=1e-6)
    assert _cos(dg.slerp(a, b, 1.0), b) == pytest.approx(1.0, abs=1e-6)
    middle = dg.slerp(a, b, 0.5)
    assert _cos(middle, a) == pytest.approx(_cos(middle, b), abs=1e-6)


def slerp_norm(a: torch.Tensor, b: torch.Tensor, t: float) -> float:
    return dg.slerp(a, b, t).norm().item()


def test_mutation_strength_zero_changes_nothing(gen):
    rng = np.random.default_rng(2)
    parent = gen.random(rng, 1)[0]
    assert genome_id(gen.mutate(parent, rng, 0.0)) == genome_id(parent)


def test_small_mutations_drift_and_keep_unit_variance(gen):
    rng = np.random.default_rng(3)
    parent = gen.random(rng, 1)[0]
    child = gen.mutate(parent, rng, 0.1, locks=frozenset({"prompt"}))
    assert 0.95 < _cos(_latents(child), _latents(parent)) < 0.9999
    assert _latents(child).norm().item() == pytest.approx(math.sqrt(4 * 64 * 64), rel=1e-5)
    assert abs(_latents(child).std().item() - 1.0) < 0.05


def test_big_seed_jumps_are_separate_from_small_moves(gen):
    rng = np.random.default_rng(4)
    parent = gen.random(rng, 1)[0]
    jumps = small = 0
    for _ in range(200):
        child = gen.mutate(parent, rng, 1.0)
        if child["seed"] != parent["seed"]:
            jumps += 1
            # A jump is exactly a fresh start: the noise its new seed makes.
            assert torch.equal(_latents(child), dg.noise(child["seed"], (4, 64, 64)))
        else:
            small += 1
            assert _cos(_latents(child), _latents(parent)) > 0.5
    assert 60 < jumps < 140 and small > 60  # p(jump) = strength**2 / 2 = 0.5


def test_locked_groups_survive_many_bold_mutations(gen):
    rng = np.random.default_rng(5)
    parent = gen.random(rng, 1)[0]
    locks = frozenset({"prompt", "latents"})
    changed_guidance = changed_steps = False
    for _ in range(50):
        child = gen.mutate(parent, rng, 1.0, locks=locks)
        assert child["prompt"] == parent["prompt"]
        assert child["seed"] == parent["seed"]
        assert torch.equal(_latents(child), _latents(parent))
        changed_guidance |= child["guidance"] != parent["guidance"]
        changed_steps |= child["steps"] != parent["steps"]
    assert changed_guidance and changed_steps
    everything = frozenset(gen.lockable)
    locked = gen.mutate(parent, rng, 1.0, locks=everything)
    assert genome_id(locked) == genome_id(parent)


def test_unknown_lock_is_a_clear_error(gen):
    parent = gen.random(np.random.default_rng(6), 1)[0]
    with pytest.raises(GeneratorError, match="unknown gene lock 'colour'"):
        gen.mutate(parent, np.random.default_rng(0), 0.5, locks=frozenset({"colour"}))


def test_prompt_mutations_edit_modifiers_but_keep_the_users_words(gen):
    rng = np.random.default_rng(8)
    genome = gen.random(rng, 1)[0]
    seen_modifiers = set()
    for _ in range(100):
        genome = gen.mutate(genome, rng, 1.0, locks=frozenset({"latents"}))
        texts = [f["text"] for f in genome["prompt"]]
        assert "a red fox" in texts and "snow" in texts
        assert len(texts) == len(set(texts)) <= dg.MAX_FRAGMENTS
        assert all(
            dg.WEIGHT_RANGE[0] <= f["weight"] <= dg.WEIGHT_RANGE[1] for f in genome["prompt"]
        )
        seen_modifiers |= {t for t in texts if category_of(t) is not None}
    assert len(seen_modifiers) > 5


def test_crossover_slerps_latents_and_mixes_prompts(gen):
    rng = np.random.default_rng(9)
    a, b = gen.random(rng, 2)
    a["prompt"] = dg.parse_prompt("a red fox, watercolor, moonlight")
    b["prompt"] = dg.parse_prompt("a red fox, (pixel art:1.5), neon glow")
    for _ in range(20):
        child = gen.crossover(a, b, rng)
        latents = _latents(child)
        assert latents.norm().item() == pytest.approx(math.sqrt(latents.numel()), rel=1e-5)
        assert _cos(latents, _latents(a)) > 0.3 and _cos(latents, _latents(b)) > 0.3
        texts = [f["text"] for f in child["prompt"]]
        assert "a red fox" in texts  # shared by both parents
        assert set(texts) <= {"a red fox", "watercolor", "moonlight", "pixel art", "neon glow"}


def test_genomes_round_trip_through_the_store_codec(gen):
    rng = np.random.default_rng(10)
    text2img = gen.random(rng, 1)[0]
    img2img = gen.from_image(Image.new("RGB", (40, 30), (200, 40, 10)), rng, strength=0.4)
    for genome in (text2img, img2img, gen.mutate(img2img, rng, 0.7)):
        data, blob = encode(genome)
        back = decode(data, blob)
        assert genome_id(back) == genome_id(genome)
        assert torch.equal(_latents(back), _latents(genome))
        gen.mutate(back, rng, 0.5)  # still a valid genome for the generator


def test_seed_from_image_makes_an_img2img_genome():
    image = Image.new("L", (100, 80), 128)
    genome = seed_from_image(image, np.random.default_rng(0), prompt="a castle", resolution=64)
    assert genome["strength"] == 0.6
    assert genome["prompt"] == [{"text": "a castle", "weight": 1.0}]
    init = genome[TENSORS_KEY]["init_image"]
    assert init.dtype == torch.uint8 and tuple(init.shape) == (3, 64, 64)
    assert int(init.float().mean()) == 128


def test_parse_and_format_prompt_are_inverse():
    text = "a lighthouse, (oil painting:1.3), (moonlight:0.5)"
    fragments = dg.parse_prompt(text)
    assert fragments == [
        {"text": "a lighthouse", "weight": 1.0},
        {"text": "oil painting", "weight": 1.3},
        {"text": "moonlight", "weight": 0.5},
    ]
    assert dg.format_prompt(fragments) == text
    assert dg.parse_prompt("  ,, ") == []


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda g: g[TENSORS_KEY].update(latents=torch.zeros(4, 8, 8)), "latents have shape"),
        (lambda g: g.update(steps=0), "'steps' must be"),
        (lambda g: g.update(prompt=[{"text": 3}]), "bad prompt fragment"),
        (lambda g: g.update(strength=0.5), "needs both 'strength'"),
        (lambda g: g.update(kind="cppn"), "not a diffusion genome"),
    ],
)
def test_malformed_genomes_are_rejected_in_one_line(gen, edit, message):
    genome = gen.random(np.random.default_rng(11), 1)[0]
    edit(genome)
    with pytest.raises(GeneratorError, match=message) as info:
        gen.mutate(genome, np.random.default_rng(0), 0.5)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({}, "needs 'model'"),
        ({"model": "tiny", "sampler": "x"}, "unknown diffusion config key 'sampler'"),
        ({"model": "tiny", "fidelity": "draft"}, "'fidelity' must be one of"),
        ({"model": "tiny", "resolution": 100}, "multiple of 8"),
        ({"model": "tiny", "chunk_size": 0}, "'chunk_size' must be"),
        ({"model": "tiny", "dtype": "int8"}, "'dtype' must be"),
    ],
)
def test_bad_config_is_one_clear_line(config, message):
    with pytest.raises(GeneratorError, match=message) as info:
        DiffusionGenerator.from_config(config)
    assert "\n" not in str(info.value)


def test_config_round_trips(gen):
    again = DiffusionGenerator.from_config(gen.config)
    assert again.config == gen.config
    assert gen.config["chunk_size"] == 8 and gen.config["fidelity"] == "full"
