"""The CPPN generator: protocol, genome operators, locks, and the batched renderer."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from imagery.cppn import CPPN
from imagery.protocol import Generator, GeneratorError


def _evolved(generator: CPPN, seed: int, n: int, rounds: int, strength: float = 0.5) -> list[dict]:
    rng = np.random.default_rng(seed)
    population = generator.random(rng, n)
    for _ in range(rounds):
        population = [generator.mutate(g, rng, strength) for g in population]
    return population


def _pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


@pytest.fixture(scope="module")
def cppn() -> CPPN:
    return CPPN.from_config({"device": "cpu"})


# --- protocol and config ----------------------------------------------------------------


def test_conforms_to_the_generator_protocol_with_a_normalised_config() -> None:
    generator = CPPN.from_config({"color": "rgb"})
    assert isinstance(generator, Generator)
    config = generator.config
    assert config == {"color": "rgb", "hidden": 4, "device": "auto", "max_nodes": 64}
    assert json.loads(json.dumps(config)) == config
    assert CPPN.from_config(config).config == config
    assert {"topology", "activations", "color"} <= set(generator.lockable)


@pytest.mark.parametrize(
    "config",
    [
        {"color": "cmyk"},
        {"hidden": -1},
        {"hidden": 2.5},
        {"hidden": True},
        {"device": "tpu"},
        {"max_nodes": 0},
        {"max_nodes": 10_000},
        {"hidden": 8, "max_nodes": 4},
        {"colour": "rgb"},
    ],
)
def test_bad_config_is_one_clear_line(config: dict) -> None:
    with pytest.raises(GeneratorError) as info:
        CPPN.from_config(config)
    assert "\n" not in str(info.value) and "CPPN config" in str(info.value)


def test_a_config_that_is_not_a_dict_is_rejected() -> None:
    with pytest.raises(GeneratorError, match="JSON object"):
        CPPN.from_config(["hsv"])  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [15, 2049, 64.0, True, "128"])
def test_bad_image_size_is_rejected(cppn: CPPN, size: object) -> None:
    genome = cppn.random(np.random.default_rng(0), 1)[0]
    with pytest.raises(GeneratorError, match="image size"):
        cppn.render([genome], size)  # type: ignore[arg-type]


# --- genomes ------------------------------------------------------------------------------


def test_genomes_are_plain_json_and_reproducible_from_the_seed(cppn: CPPN) -> None:
    first = _evolved(cppn, seed=5, n=4, rounds=3)
    again = _evolved(cppn, seed=5, n=4, rounds=3)
    other = _evolved(cppn, seed=6, n=4, rounds=3)
    assert first == again
    assert first != other
    for genome in first:
        assert genome["kind"] == "cppn" and genome["version"] == 1
        assert json.loads(json.dumps(genome, allow_nan=False)) == genome
    rendered = cppn.render(first, 32)
    reloaded = cppn.render([json.loads(json.dumps(g)) for g in first], 32)
    assert all(
        np.array_equal(_pixels(a), _pixels(b)) for a, b in zip(rendered, reloaded, strict=True)
    )


def test_a_fresh_genome_has_the_configured_hidden_nodes() -> None:
    genome = CPPN.from_config({"hidden": 2}).random(np.random.default_rng(1), 1)[0]
    assert len(genome["nodes"]) == 2 + 3
    assert CPPN.from_config({"hidden": 2}).random(np.random.default_rng(1), 0) == []


@pytest.mark.parametrize(
    "damage",
    [
        lambda g: g.update(kind="diffusion"),
        lambda g: g.update(version=99),
        lambda g: g["nodes"][0].update(act="relu6"),
        lambda g: g["links"][0].update(weight=float("nan")),
        lambda g: g["links"][0].update(weight=1e6),
        lambda g: g["links"].append(dict(g["links"][0])),
        lambda g: g["links"].append({"src": 4, "dst": 5, "weight": 1.0, "enabled": True}),
        lambda g: g["nodes"].reverse(),
    ],
)
def test_a_damaged_genome_is_rejected_in_one_line(cppn: CPPN, damage) -> None:
    genome = cppn.random(np.random.default_rng(2), 1)[0]
    damage(genome)
    for use in (
        lambda: cppn.render([genome], 32),
        lambda: cppn.mutate(genome, np.random.default_rng(0), 0.5),
    ):
        with pytest.raises(GeneratorError) as info:
            use()
        assert "\n" not in str(info.value)


# --- mutation -----------------------------------------------------------------------------


def _operator(parent: dict, child: dict) -> str:
    """Which single operator turned parent into child, judged from the outside."""
    if len(child["nodes"]) == len(parent["nodes"]) + 1:
        return "add_node"
    enabled = sum(link["enabled"] for link in child["links"])
    if enabled == sum(link["enabled"] for link in parent["links"]) + 1:
        return "add_link"
    if [n["act"] for n in child["nodes"]] != [n["act"] for n in parent["nodes"]]:
        return "change_activation"
    assert child != parent
    return "perturb"


def test_operators_are_drawn_in_picbreeders_10_6_4_1_mix(cppn: CPPN) -> None:
    rng = np.random.default_rng(11)
    parent = cppn.random(rng, 1)[0]
    draws = 2100
    counts: dict[str, int] = {}
    for _ in range(draws):  # strength 0: exactly one operator per mutation
        name = _operator(parent, cppn.mutate(parent, rng, 0.0))
        counts[name] = counts.get(name, 0) + 1
    for name, weight in {
        "perturb": 10,
        "add_node": 6,
        "add_link": 4,
        "change_activation": 1,
    }.items():
        p = weight / 21
        assert abs(counts.get(name, 0) / draws - p) < 4.5 * np.sqrt(p * (1 - p) / draws), counts


def test_mutate_leaves_the_parent_alone_and_strength_scales_the_change(cppn: CPPN) -> None:
    rng = np.random.default_rng(3)
    parent = cppn.random(rng, 1)[0]
    before = copy.deepcopy(parent)
    gentle = [cppn.mutate(parent, rng, 0.05) for _ in range(60)]
    wild = [cppn.mutate(parent, rng, 1.0) for _ in range(60)]
    assert parent == before

    def change(child: dict) -> float:
        common = min(len(parent["links"]), len(child["links"]))
        old = np.array([link["weight"] for link in parent["links"][:common]])
        new = np.array([link["weight"] for link in child["links"][:common]])
        grown = len(child["nodes"]) - len(parent["nodes"]) + len(child["links"]) - common
        return float(np.abs(new - old).sum()) + grown

    assert np.mean([change(c) for c in wild]) > 3 * np.mean([change(c) for c in gentle])
    with pytest.raises(GeneratorError, match="strength"):
        cppn.mutate(parent, rng, 1.5)


def test_add_node_splits_a_link_and_max_nodes_caps_growth() -> None:
    generator = CPPN.from_config({"hidden": 2, "max_nodes": 6})
    rng = np.random.default_rng(4)
    genome = generator.random(rng, 1)[0]
    split_seen = False
    for _ in range(80):
        child = generator.mutate(genome, rng, 1.0)
        new_ids = {n["id"] for n in child["nodes"]} - {n["id"] for n in genome["nodes"]}
        for new in new_ids:
            into = [lk for lk in child["links"] if lk["dst"] == new]
            out = [lk for lk in child["links"] if lk["src"] == new]
            # The new node sits on a path that replaced a link now switched off.
            assert into and out
            assert any(
                not lk["enabled"] and lk["src"] == into[0]["src"] and lk["dst"] == out[0]["dst"]
                for lk in child["links"]
            )
            split_seen = True
        genome = child
        assert len(genome["nodes"]) - 3 <= 6
    assert split_seen
    assert len(genome["nodes"]) - 3 == 6
    generator.render([genome], 32)


def _groups(genome: dict) -> dict[str, object]:
    """The genes each lock freezes (for nodes that exist in the genome)."""
    outputs = {4, 5, 6}
    hidden = [n for n in genome["nodes"] if n["id"] not in outputs]
    return {
        "topology": (
            [n["id"] for n in genome["nodes"]],
            sorted((lk["src"], lk["dst"], lk["enabled"]) for lk in genome["links"]),
        ),
        "weights": (
            {n["id"]: n["bias"] for n in hidden},
            {
                (lk["src"], lk["dst"]): lk["weight"]
                for lk in genome["links"]
                if lk["dst"] not in outputs
            },
        ),
        "activations": {n["id"]: n["act"] for n in hidden},
        "color": (
            [n for n in genome["nodes"] if n["id"] in outputs],
            sorted(
                (lk["src"], lk["dst"], lk["weight"], lk["enabled"])
                for lk in genome["links"]
                if lk["dst"] in outputs
            ),
        ),
    }


def _restricted(before: dict, after: dict, name: str) -> object:
    """The locked view of ``after``, limited to genes that existed ``before``."""
    if name == "weights":
        biases, weights = after
        return (
            {k: v for k, v in biases.items() if k in before[0]},
            {k: v for k, v in weights.items() if k in before[1]},
        )
    if name == "activations":
        return {k: v for k, v in after.items() if k in before}
    return after


@pytest.mark.parametrize(
    "locks",
    [
        ("topology",),
        ("weights",),
        ("activations",),
        ("color",),
        ("topology", "color"),
        ("weights", "color"),
    ],
)
def test_locked_gene_groups_never_change(cppn: CPPN, locks: tuple[str, ...]) -> None:
    rng = np.random.default_rng(8)
    for genome in _evolved(cppn, seed=9, n=6, rounds=4):
        before = _groups(genome)
        changed = False
        for _ in range(25):
            child = cppn.mutate(genome, rng, 1.0, frozenset(locks))
            after = _groups(child)
            for name in locks:
                assert _restricted(before[name], after[name], name) == before[name], name
            changed = changed or child != genome
        assert changed  # the unlocked groups still evolve


def test_locking_everything_freezes_the_genome_and_unknown_locks_fail(cppn: CPPN) -> None:
    rng = np.random.default_rng(10)
    genome = cppn.random(rng, 1)[0]
    assert cppn.mutate(genome, rng, 1.0, frozenset(cppn.lockable)) == genome
    with pytest.raises(GeneratorError, match="lock"):
        cppn.mutate(genome, rng, 0.5, frozenset({"hue"}))


# --- crossover ----------------------------------------------------------------------------


def test_crossover_of_different_topologies_is_valid_and_mixes_both_parents(cppn: CPPN) -> None:
    a_pop = _evolved(cppn, seed=20, n=4, rounds=6)
    b_pop = _evolved(cppn, seed=21, n=4, rounds=12)
    rng = np.random.default_rng(22)
    children = []
    for a, b in zip(a_pop, b_pop, strict=True):
        assert len(a["nodes"]) != len(b["nodes"]) or a["links"] != b["links"]
        child = cppn.crossover(a, b, rng)
        a_ids, b_ids = {n["id"] for n in a["nodes"]}, {n["id"] for n in b["nodes"]}
        ids = {n["id"] for n in child["nodes"]}
        assert a_ids <= ids <= a_ids | b_ids
        assert ids - a_ids, "no node came from the second parent"
        children.append(child)
    images = cppn.render(children, 32)  # every child is a renderable feed-forward network
    assert len(images) == len(children)
    again = [
        cppn.crossover(a, b, np.random.default_rng(22))
        for a, b in zip(a_pop[:1], b_pop[:1], strict=True)
    ]
    assert again[0] == children[0]


def test_crossover_of_relatives_aligns_shared_genes_by_id(cppn: CPPN) -> None:
    rng = np.random.default_rng(30)
    ancestor = cppn.random(rng, 1)[0]
    a = cppn.mutate(ancestor, rng, 1.0)
    b = cppn.mutate(ancestor, rng, 1.0)
    shared = {(lk["src"], lk["dst"]) for lk in a["links"]} & {
        (lk["src"], lk["dst"]) for lk in b["links"]
    }
    from_b = 0
    for seed in range(20):
        child = cppn.crossover(a, b, np.random.default_rng(seed))
        weights = {(lk["src"], lk["dst"]): lk["weight"] for lk in child["links"]}
        b_weights = {(lk["src"], lk["dst"]): lk["weight"] for lk in b["links"]}
        a_weights = {(lk["src"], lk["dst"]): lk["weight"] for lk in a["links"]}
        for key in shared:
            assert weights[key] in (a_weights[key], b_weights[key])
            from_b += weights[key] == b_weights[key] != a_weights[key]
    assert from_b > 0


# --- rendering ----------------------------------------------------------------------------


def test_batch_render_equals_single_renders_bit_for_bit(cppn: CPPN) -> None:
    population = _evolved(cppn, seed=40, n=6, rounds=5)
    assert len({len(g["nodes"]) for g in population}) > 1  # genomes of different sizes
    # Odd size; alone and batched renders also split the pixels into different chunks.
    size = 151
    batch = cppn.render(population, size)
    again = cppn.render(population, size)
    alone = [cppn.render([g], size)[0] for g in population]
    mixed = cppn.render(population[::-2], size)
    for i, image in enumerate(batch):
        assert image.mode == "RGB" and image.size == (size, size)
        assert np.array_equal(_pixels(image), _pixels(again[i]))
        assert np.array_equal(_pixels(image), _pixels(alone[i]))
    for image, i in zip(mixed, range(len(population) - 1, -1, -2), strict=True):
        assert np.array_equal(_pixels(image), _pixels(batch[i]))
    assert cppn.render([], size) == []


@pytest.mark.parametrize("color", ["hsv", "rgb"])
def test_the_compiled_kernel_draws_what_the_kernel_draws_op_by_op(monkeypatch, color: str) -> None:
    # The renderer runs the kernel compiled (without the GIL); run as plain Python, op by
    # op, the same code must give the same pixels: no fusion or reordering may creep in.
    # Several progress steps, so the compiled kernel is also called for a range of chunks.
    from imagery import cppn_kernel, cppn_render

    generator = CPPN.from_config({"color": color, "device": "cpu"})
    population = _evolved(generator, seed=41, n=5, rounds=8)
    steps: list[int] = []
    assert isinstance(cppn_render.compiled_render_levels, torch.jit.ScriptFunction)
    compiled = generator.render_pixels(population, 97, progress=lambda done, total: steps.append(done))
    monkeypatch.setattr(cppn_render, "compiled_render_levels", cppn_kernel.render_levels)
    eager = generator.render_pixels(population, 97)
    assert compiled.shape == (5, 97, 97, 3) and len(steps) > 1
    assert np.array_equal(compiled, eager)


def test_batches_mixing_flat_and_deep_genomes_render_as_alone(cppn: CPPN) -> None:
    deep = _evolved(cppn, seed=41, n=4, rounds=12)
    flat = {  # no hidden nodes: the outputs read the inputs directly
        "kind": "cppn",
        "version": 1,
        "nodes": [{"id": out, "act": "sin", "bias": 0.1 * out} for out in (4, 5, 6)],
        "links": [
            {"src": 0, "dst": 4, "weight": 2.0, "enabled": True},
            {"src": 1, "dst": 5, "weight": -1.5, "enabled": True},
            {"src": 2, "dst": 4, "weight": 0.5, "enabled": False},
        ],
    }
    idle = copy.deepcopy(deep[0])  # a hidden node left with no enabled input
    for link in idle["links"]:
        if link["dst"] == idle["nodes"][0]["id"]:
            link["enabled"] = False
    population = [flat, *deep, idle, flat]
    batch = cppn.render(population, 40)
    for genome, image in zip(population, batch, strict=True):
        assert np.array_equal(_pixels(image), _pixels(cppn.render([genome], 40)[0]))


def test_perturbing_draws_the_same_stream_as_one_draw_per_gene(cppn: CPPN) -> None:
    from imagery import cppn_mutation

    def gene_by_gene(g: dict, rng: np.random.Generator, genes: list, strength: float) -> None:
        draws = [rng.random() for _ in genes]
        chosen = [gene for gene, u in zip(genes, draws, strict=True) if u < 0.15 + 0.6 * strength]
        for kind, i in chosen or [genes[int(rng.integers(len(genes)))]]:
            target, key = (g["links"][i], "weight") if kind == "link" else (g["nodes"][i], "bias")
            old = target[key]
            while target[key] == old:  # a step lost to clipping is drawn again
                target[key] = min(8.0, max(-8.0, float(old + rng.normal(0.0, 0.15 + 1.1 * strength))))

    pinned = copy.deepcopy(_evolved(cppn, seed=42, n=1, rounds=6)[0])
    for link in pinned["links"]:
        link["weight"] = 8.0  # every step up is lost to clipping and drawn again
    for genome in (_evolved(cppn, seed=43, n=1, rounds=6)[0], pinned):
        genes = cppn_mutation._perturb_candidates(genome, frozenset())
        for seed in range(20):
            fast, slow = copy.deepcopy(genome), copy.deepcopy(genome)
            rng_fast, rng_slow = np.random.default_rng(seed), np.random.default_rng(seed)
            cppn_mutation._perturb(fast, rng_fast, genes, 0.8)
            gene_by_gene(slow, rng_slow, genes, 0.8)
            assert fast == slow and rng_fast.random() == rng_slow.random()


def test_thumbnail_and_full_size_are_the_same_picture(cppn: CPPN) -> None:
    population = _evolved(cppn, seed=50, n=4, rounds=3)
    thumbs = cppn.render(population, 48)
    fulls = cppn.render(population, 384)
    for thumb, full in zip(thumbs, fulls, strict=True):
        assert full.size == (384, 384)
        diff = np.abs(_pixels(full.reduce(8)) - _pixels(thumb))
        assert diff.mean() < 3.0


def test_first_generation_is_smooth_patterns_not_noise_or_blank(cppn: CPPN) -> None:
    images = [
        _pixels(im).astype(float)
        for im in cppn.render(cppn.random(np.random.default_rng(60), 24), 64)
    ]
    varied = [im for im in images if im.std(axis=(0, 1)).max() > 12]
    assert len(varied) >= 18  # most pictures show a pattern
    for im in varied:
        step = np.abs(np.diff(im, axis=1)).mean()
        assert step < 0.25 * im.std() + 2  # neighbours agree: smooth, not noise


def test_progress_reports_the_whole_batch(cppn: CPPN) -> None:
    calls: list[tuple[int, int]] = []
    population = cppn.random(np.random.default_rng(70), 3)
    cppn.render(population, 200, progress=lambda done, total: calls.append((done, total)))
    assert calls and calls[-1] == (3, 3)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


def test_rgb_and_hsv_colour_modes_differ() -> None:
    genome = CPPN.from_config({}).random(np.random.default_rng(80), 1)
    hsv = CPPN.from_config({"color": "hsv", "device": "cpu"}).render(genome, 32)[0]
    rgb = CPPN.from_config({"color": "rgb", "device": "cpu"}).render(genome, 32)[0]
    assert not np.array_equal(_pixels(hsv), _pixels(rgb))


def test_asking_for_cuda_without_a_gpu_is_one_clear_line() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    generator = CPPN.from_config({"device": "cuda"})  # building stays cheap and device-free
    with pytest.raises(GeneratorError, match="CUDA"):
        generator.render(generator.random(np.random.default_rng(0), 1), 32)


def test_rendering_leaves_torch_thread_setting_as_it_was(cppn: CPPN) -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        cppn.render(cppn.random(np.random.default_rng(90), 2), 32)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_the_three_ways_of_counting_link_candidates_agree(cppn: CPPN) -> None:
    from imagery import cppn_mutation

    for genome in _evolved(cppn, seed=44, n=6, rounds=8):
        count = cppn_mutation._link_count(genome, frozenset())
        enabled = sum(1 for link in genome["links"] if link["enabled"])
        assert cppn_mutation._open_link_count(genome, enabled) == count
        pairs = {cppn_mutation._nth_link_candidate(genome, frozenset(), i) for i in range(count)}
        joined = {(link["src"], link["dst"]) for link in genome["links"] if link["enabled"]}
        assert len(pairs) == count and not pairs & joined
        with pytest.raises(IndexError):
            cppn_mutation._nth_link_candidate(genome, frozenset(), count)
