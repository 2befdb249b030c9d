"""Offline model loading: built-in tiny pipeline, saved folders, single files, and failures."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from imagery.diffusion import DiffusionGenerator
from imagery.diffusion_models import build_builtin, build_tokenizer, model_resolution
from imagery.protocol import GeneratorError

TINY = {"model": "tiny", "prompt": "a lighthouse", "steps": 2}


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-sd")
    build_builtin("tiny").save_pretrained(folder)
    return folder


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _error(config: dict) -> str:
    generator = DiffusionGenerator.from_config(config)  # cheap: nothing is read yet
    genomes = generator.random(np.random.default_rng(0), 1)
    with pytest.raises(GeneratorError) as info:
        generator.render(genomes, 64)
    message = str(info.value)
    assert "\n" not in message
    print(message)  # shown with pytest -s: what a user would read
    return message


def test_tiny_builds_are_identical_and_leave_the_global_rng_alone():
    state = torch.get_rng_state()
    first, second = build_builtin("tiny"), build_builtin("tiny")
    assert torch.equal(torch.get_rng_state(), state)
    for name in ("unet", "vae", "text_encoder"):
        a = getattr(first, name).state_dict()
        b = getattr(second, name).state_dict()
        assert all(torch.equal(a[key], b[key]) for key in a)


def test_in_code_tokenizer_reads_any_text_without_unknown_tokens():
    tokenizer = build_tokenizer()
    ids = tokenizer("Ünïcode 🎨 lighthouse, oil painting!").input_ids
    assert tokenizer.unk_token_id not in ids[1:-1]
    # Vocabulary words merge into few tokens (not one per letter) and decode back.
    words = tokenizer("golden hour watercolor", add_special_tokens=False).input_ids
    assert len(words) < len("goldenhourwatercolor") / 2
    assert tokenizer.decode(words) == "golden hour watercolor"


def test_saved_folder_loads_offline_and_renders_like_tiny(saved, no_network):
    assert model_resolution(str(saved)) == 64  # read from JSON, no weights
    from_folder = DiffusionGenerator.from_config(dict(TINY, model=str(saved)))
    tiny = DiffusionGenerator.from_config(TINY)
    genomes = tiny.random(np.random.default_rng(1), 3)
    a, b = from_folder.render_tensor(genomes), tiny.render_tensor(genomes)
    assert (a - b).abs().max().item() <= 1e-5


def test_missing_model_path_is_one_clear_line(tmp_path):
    missing = tmp_path / "nowhere"
    config = dict(TINY, model=str(missing), resolution=64)
    assert f"diffusion model not found: {missing}" in _error(config)


def test_single_file_without_config_refuses_to_reach_for_the_hub(tmp_path, no_network):
    checkpoint = tmp_path / "model.safetensors"
    checkpoint.write_bytes(b"\0" * 16)
    message = _error(dict(TINY, model=str(checkpoint), resolution=64))
    assert "needs 'model_config'" in message
    generator = DiffusionGenerator.from_config(dict(TINY, model=str(checkpoint), resolution=64))
    with pytest.raises(GeneratorError, match="needs 'model_config'"):
        generator.check_model()


def test_broken_weights_in_a_folder_are_one_clear_line(saved, tmp_path, no_network):
    broken = tmp_path / "broken"
    shutil.copytree(saved, broken)
    (broken / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"not safetensors")
    message = _error(dict(TINY, model=str(broken)))
    assert message.startswith(f"cannot load diffusion model {broken}")


def test_broken_single_file_is_one_clear_line(saved, tmp_path, no_network):
    checkpoint = tmp_path / "broken.safetensors"
    checkpoint.write_bytes(b"\x08\0\0\0\0\0\0\0garbage!")
    config = dict(TINY, model=str(checkpoint), model_config=str(saved))
    assert _error(config).startswith(f"cannot load diffusion model {checkpoint}")


def test_pickled_checkpoints_are_refused(tmp_path):
    checkpoint = tmp_path / "model.ckpt"
    checkpoint.write_bytes(b"\x80\x04")
    assert "refusing pickled checkpoint model.ckpt" in _error(
        dict(TINY, model=str(checkpoint), resolution=64)
    )


def test_unsupported_pipeline_kind_is_named(saved, tmp_path):
    other = tmp_path / "xl"
    shutil.copytree(saved, other)
    index = json.loads((other / "model_index.json").read_text())
    index["_class_name"] = "StableDiffusionXLPipeline"
    (other / "model_index.json").write_text(json.dumps(index))
    assert "holds a StableDiffusionXLPipeline" in _error(dict(TINY, model=str(other)))


def test_unknown_resolution_asks_for_the_config_key(tmp_path):
    generator = DiffusionGenerator.from_config(dict(TINY, model=str(tmp_path / "none")))
    with pytest.raises(GeneratorError, match="set 'resolution'"):
        generator.random(np.random.default_rng(0), 1)
