from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from evolve.features import (
    FEATURE_NAMES,
    GENOME_FEATURE_NAMES,
    genome_features,
    image_features,
)

COL = {name: i for i, name in enumerate(FEATURE_NAMES)}


def _img(array: np.ndarray) -> Image.Image:
    return Image.fromarray(np.asarray(array, dtype=np.uint8))


def _noise(rng: np.random.Generator, size: int = 64) -> Image.Image:
    return _img(rng.integers(0, 256, (size, size, 3)))


def test_flat_black_and_white_images_give_finite_features() -> None:
    images = [Image.new("RGB", (64, 64), c) for c in [(0, 0, 0), (255, 255, 255), (128, 128, 128)]]
    f = image_features(images)
    assert f.shape == (3, len(FEATURE_NAMES))
    assert np.all(np.isfinite(f))
    # Flat images have no contrast, edges, entropy or detail, and are perfectly symmetric.
    for name in ("contrast", "edge_mean", "entropy", "detail_fine", "detail_coarse", "sat_mean"):
        assert np.all(f[:, COL[name]] == 0.0), name
    assert np.all(f[:, COL["symmetry_lr"]] == 1.0)
    assert f[0, COL["dark_fraction"]] == 1.0 and f[1, COL["bright_fraction"]] == 1.0


def test_features_are_deterministic_and_do_not_depend_on_the_batch() -> None:
    rng = np.random.default_rng(0)
    images = [_noise(rng, 96) for _ in range(5)]
    batch = image_features(images)
    again = image_features(images)
    alone = image_features(images[2:3])
    assert np.array_equal(batch, again)
    # Float32 sums may round differently in another batch, by far less than any feature's scale.
    np.testing.assert_allclose(batch[2], alone[0], rtol=1e-5, atol=1e-6)


def test_any_mode_and_size_is_accepted() -> None:
    rng = np.random.default_rng(1)
    rgb = _noise(rng, 200)
    images = [
        rgb.convert("L"),
        rgb.convert("RGBA"),
        rgb.convert("P"),
        rgb.resize((100, 30)),
        Image.new("RGB", (16, 16), (10, 200, 30)),
    ]
    f = image_features(images)
    assert f.shape == (5, len(FEATURE_NAMES)) and np.all(np.isfinite(f))
    # A grey-scale image has no saturation and no hue direction.
    assert f[0, COL["sat_mean"]] == 0.0 and f[0, COL["hue_concentration"]] == 0.0


def test_colour_features_tell_colours_apart() -> None:
    red, blue, grey = (
        Image.new("RGB", (64, 64), c) for c in [(255, 0, 0), (0, 0, 255), (90, 90, 90)]
    )
    f = image_features([red, blue, grey])
    assert f[0, COL["mean_r"]] == 1.0 and f[1, COL["mean_b"]] == 1.0
    assert f[0, COL["hue_cos"]] == pytest.approx(1.0)  # red sits at hue angle 0
    assert f[1, COL["hue_cos"]] < 0 and f[1, COL["hue_sin"]] < 0  # blue at 240 degrees
    assert f[0, COL["sat_mean"]] == 1.0 and f[2, COL["sat_mean"]] == 0.0
    assert f[0, COL["colourfulness"]] > 0.2 and f[2, COL["colourfulness"]] == 0.0


def test_symmetry_features_detect_mirrored_images() -> None:
    rng = np.random.default_rng(2)
    half = rng.integers(0, 256, (64, 32, 3))
    mirrored_lr = _img(np.concatenate([half, half[:, ::-1]], axis=1))
    top = rng.integers(0, 256, (32, 64, 3))
    mirrored_tb = _img(np.concatenate([top, top[::-1]], axis=0))
    f = image_features([mirrored_lr, mirrored_tb, _noise(rng)])
    assert f[0, COL["symmetry_lr"]] == pytest.approx(1.0)
    assert f[1, COL["symmetry_tb"]] == pytest.approx(1.0)
    assert f[2, COL["symmetry_lr"]] < 0.8 and f[2, COL["symmetry_tb"]] < 0.8
    assert f[0, COL["symmetry_tb"]] < 0.8


def test_detail_features_separate_fine_texture_from_large_shapes() -> None:
    yy, xx = np.mgrid[0:64, 0:64]
    fine = ((yy + xx) % 2 * 255)[..., None].repeat(3, axis=2)  # 1-pixel checkerboard
    coarse = ((yy // 16 + xx // 16) % 2 * 255)[..., None].repeat(3, axis=2)  # 16-pixel blocks
    f = image_features([_img(fine), _img(coarse)])
    assert f[0, COL["detail_fine"]] > 0.9
    assert f[1, COL["detail_fine"]] == pytest.approx(0.0, abs=1e-6)
    assert f[1, COL["detail_coarse"]] == pytest.approx(1.0)
    assert f[0, COL["detail_coarse"]] == pytest.approx(0.0, abs=1e-6)
    assert f[0, COL["edge_density"]] > f[1, COL["edge_density"]] > 0
    # Both are half black, half white: maximal contrast, one bit of entropy out of five.
    np.testing.assert_allclose(f[:, COL["contrast"]], 0.5, atol=1e-6)
    np.testing.assert_allclose(f[:, COL["entropy"]], 1 / 5, atol=1e-6)


def test_layout_features_locate_the_subject() -> None:
    left = np.zeros((64, 64, 3))
    left[24:40, 0:16] = 255
    centre = np.zeros((64, 64, 3))
    centre[24:40, 24:40] = 255
    f = image_features([_img(left), _img(centre)])
    assert f[0, COL["centroid_x"]] < -0.2
    assert f[1, COL["centroid_x"]] == pytest.approx(0.0, abs=1e-6)
    assert f[1, COL["centre_contrast"]] > 0 > f[0, COL["centre_contrast"]]


def test_image_features_reject_bad_input() -> None:
    assert image_features([]).shape == (0, len(FEATURE_NAMES))
    with pytest.raises(ValueError, match="PIL images") as err:
        image_features([np.zeros((8, 8, 3))])
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="multiple of 8"):
        image_features([Image.new("RGB", (8, 8))], size=20)


def _cppn(n_nodes: int, rng: np.random.Generator) -> dict:
    nodes = [{"id": i, "activation": "sin", "bias": float(rng.normal())} for i in range(n_nodes)]
    links = [[i, i + 1, float(rng.normal())] for i in range(n_nodes - 1)]
    return {"nodes": nodes, "links": links, "seed": 3}


def test_genome_features_have_fixed_width_for_any_genome_kind() -> None:
    rng = np.random.default_rng(3)
    genomes = [
        _cppn(3, rng),
        _cppn(30, rng),
        {"prompt": ["a red fox", "in snow"], "guidance": 7.5, "seed": 11},
        {},
    ]
    f = genome_features(genomes)
    assert f.shape == (4, len(GENOME_FEATURE_NAMES)) and np.all(np.isfinite(f))
    col = {name: i for i, name in enumerate(GENOME_FEATURE_NAMES)}
    # A bigger network has more numbers and a longer node list.
    assert f[1, col["n_numbers"]] > f[0, col["n_numbers"]]
    assert f[1, 11:].max() > f[0, 11:].max()
    assert f[2, col["n_strings"]] > 0 and f[2, col["string_chars"]] > 0
    assert np.all(f[3] == 0.0)


def test_genome_features_ignore_tensors_and_survive_json() -> None:
    rng = np.random.default_rng(4)
    genome = _cppn(5, rng)
    with_tensors = dict(genome, tensors={"latents": object()})
    round_tripped = json.loads(json.dumps(genome))
    f = genome_features([genome, with_tensors, round_tripped])
    assert np.array_equal(f[0], f[1]) and np.array_equal(f[0], f[2])


def test_genome_features_reject_non_dicts() -> None:
    with pytest.raises(ValueError, match="dict genomes"):
        genome_features([[1, 2, 3]])
    assert genome_features([]).shape == (0, len(GENOME_FEATURE_NAMES))
