from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from evolve.embeddings import (
    ClipExtractor,
    EmbeddingExtractor,
    StatsExtractor,
    make_extractor,
)
from evolve.features import FEATURE_NAMES, image_features

_VISION = dict(
    hidden_size=32,
    intermediate_size=37,
    num_hidden_layers=2,
    num_attention_heads=4,
    image_size=32,
    patch_size=8,
)


def _processor():
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})


@pytest.fixture(scope="module")
def vision_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight CLIP vision tower with projection, saved like a real checkpoint."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("clip_vision")
    CLIPVisionModelWithProjection(CLIPVisionConfig(projection_dim=16, **_VISION)).save_pretrained(
        folder
    )
    _processor().save_pretrained(folder)
    return folder


def _images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)) for _ in range(n)]


def test_stats_extractor_is_the_default_and_wraps_image_features() -> None:
    for spec in (None, "stats", ""):
        extractor = make_extractor(spec)
        assert isinstance(extractor, StatsExtractor)
        assert isinstance(extractor, EmbeddingExtractor)
    images = _images(3)
    out = StatsExtractor()(images)
    assert StatsExtractor.dim == len(FEATURE_NAMES) == out.shape[1]
    assert np.array_equal(out, image_features(images))


def test_clip_extractor_loads_a_local_checkpoint_by_path(vision_dir: Path) -> None:
    extractor = make_extractor(f"clip:{vision_dir}")
    assert isinstance(extractor, ClipExtractor) and isinstance(extractor, EmbeddingExtractor)
    assert extractor.dim == 16 and extractor.name.startswith("clip:")
    images = _images(5)
    emb = extractor(images)
    assert emb.shape == (5, 16) and emb.dtype == np.float64
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    # Different images embed differently; the same images embed the same, in any chunking.
    assert np.abs(emb[0] - emb[1]).max() > 1e-3
    chunked = ClipExtractor(vision_dir, batch_size=2)(images)
    np.testing.assert_allclose(chunked, emb, atol=1e-5)
    assert extractor([]).shape == (0, 16)


def test_clip_extractor_reads_a_full_clip_checkpoint(tmp_path: Path) -> None:
    import torch
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(1)
    text = dict(
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=1,
        num_attention_heads=4,
        vocab_size=99,
        max_position_embeddings=16,
    )
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=_VISION, projection_dim=24))
    model.save_pretrained(tmp_path)
    processor = _processor()
    processor.save_pretrained(tmp_path)
    images = _images(3, seed=4)
    emb = ClipExtractor(tmp_path)(images)
    # Same numbers as the full model's vision tower followed by its projection.
    with torch.no_grad():
        pixels = processor(images=images, return_tensors="pt")["pixel_values"]
        ref = model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)
    ref = (ref / ref.norm(dim=-1, keepdim=True)).numpy()
    assert emb.shape == (3, 24)
    np.testing.assert_allclose(emb, ref, atol=1e-5)


def test_missing_or_pickled_checkpoints_are_refused_in_one_line(
    tmp_path: Path, vision_dir: Path
) -> None:
    with pytest.raises(ValueError, match="no CLIP model") as err:
        make_extractor(f"clip:{tmp_path / 'nowhere'}")
    assert "\n" not in str(err.value)
    # A checkpoint with only pickled weights is not loaded: loading a pickle can run code.
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    for name in ("config.json", "preprocessor_config.json"):
        (pickled / name).write_bytes((vision_dir / name).read_bytes())
    (pickled / "pytorch_model.bin").write_bytes(b"not to be unpickled")
    with pytest.raises(ValueError, match=r"model\.safetensors is missing"):
        ClipExtractor(pickled)
    # Corrupt weights fail as a one-line ValueError too.
    (pickled / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot load CLIP model") as err:
        ClipExtractor(pickled)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("spec", ["clip", "clip:", "resnet:/models/x", "stats2"])
def test_unknown_extractor_specs_are_refused(spec: str) -> None:
    with pytest.raises(ValueError, match="unknown feature extractor"):
        make_extractor(spec)
