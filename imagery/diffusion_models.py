"""Loading Stable Diffusion pipelines with no network, ever.

Three sources, named by the config key ``"model"``:

- a local diffusers folder (``model_index.json``, ``unet/``, ``vae/``, ...),
- a single ``.safetensors`` checkpoint plus ``"model_config"``: a local diffusers folder that
  supplies the configs and tokenizer (diffusers would otherwise fetch them from the hub),
- a built-in random-weight architecture: ``"tiny"`` (64 px, for tests and the offline smoke
  check) or ``"random-sd-turbo"`` (SD-Turbo's shapes at 512 px, for GPU benchmarks). Their
  weights come from a fixed seed, so every build is identical, and their CLIP tokenizer is
  written from a small in-code vocabulary.

Every failure is one ``GeneratorError`` line. Pickled checkpoints (.ckpt, .bin) are refused:
only safetensors are read.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

# Before diffusers/transformers/huggingface_hub are imported: they read these at import time.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
# Library chatter (progress bars, optional-dependency notes) is not for our users' terminals.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

import huggingface_hub.constants  # noqa: E402
import torch  # noqa: E402
from diffusers import (  # noqa: E402
    AutoencoderKL,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from diffusers.utils import deprecation_utils  # noqa: E402
from diffusers.utils import logging as diffusers_logging  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer  # noqa: E402
from transformers.utils import logging as transformers_logging  # noqa: E402

from imagery.prompt_vocab import all_words  # noqa: E402
from imagery.protocol import GeneratorError  # noqa: E402

# huggingface_hub may have been imported earlier (Gradio imports it) and read the variable
# before we set it; the flag is looked up at call time, so setting it here still holds.
huggingface_hub.constants.HF_HUB_OFFLINE = True
diffusers_logging.set_verbosity_error()
diffusers_logging.disable_progress_bar()
transformers_logging.disable_progress_bar()

BUILTIN_RESOLUTION = {"tiny": 64, "random-sd-turbo": 512}
SUPPORTED_PIPELINES = ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline")
_PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth", ".pkl")
_BUILTIN_SEED = 20240601
# Newer diffusers renamed ``torch_dtype`` to ``dtype`` (the old name warns); older lack ``dtype``.
_DTYPE_KEY = "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"


def model_resolution(model: str, model_config: str | None = None) -> int | None:
    """The native image size of a model, read from its JSON configs (no weights), or None."""
    if model in BUILTIN_RESOLUTION:
        return BUILTIN_RESOLUTION[model]
    folder = Path(model_config if model_config else model).expanduser()
    try:
        unet = json.loads((folder / "unet" / "config.json").read_text())
        vae = json.loads((folder / "vae" / "config.json").read_text())
        return int(unet["sample_size"]) * 2 ** (len(vae["block_out_channels"]) - 1)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_model(model: str, model_config: str | None = None) -> None:
    """Cheap checks that a model can be loaded (files present, right kind); loads nothing.

    Raises:
        GeneratorError: One line saying what is missing or wrong.
    """
    if model in BUILTIN_RESOLUTION:
        return
    path = Path(model).expanduser()
    if path.suffix.lower() in _PICKLE_SUFFIXES:
        raise GeneratorError(
            f"refusing pickled checkpoint {path.name}: loading it could run code; use .safetensors"
        )
    if not path.exists():
        raise GeneratorError(f"diffusion model not found: {path}")
    if path.is_dir():
        _check_folder(path, "model folder")
        return
    if path.suffix.lower() != ".safetensors":
        raise GeneratorError(
            f"diffusion model must be a diffusers folder or a .safetensors file: {path}"
        )
    if not model_config:
        raise GeneratorError(
            f"single-file checkpoint {path.name} needs 'model_config': a local diffusers folder "
            "with its configs and tokenizer (fetching them from the hub is disabled)"
        )
    config_dir = Path(model_config).expanduser()
    if not config_dir.is_dir():
        raise GeneratorError(f"model config folder not found: {config_dir}")
    _check_folder(config_dir, "model config folder")


def _check_folder(folder: Path, what: str) -> None:
    index = folder / "model_index.json"
    try:
        name = json.loads(index.read_text()).get("_class_name")
    except OSError:
        raise GeneratorError(f"{what} {folder} has no model_index.json") from None
    except (ValueError, AttributeError):
        raise GeneratorError(f"{what} {folder} has a broken model_index.json") from None
    if name not in SUPPORTED_PIPELINES:
        raise GeneratorError(
            f"{what} {folder} holds a {name}; only Stable Diffusion 1.x/2.x pipelines "
            "(SD-Turbo included) are supported"
        )


def load_pipeline(
    model: str, model_config: str | None, device: torch.device, dtype: torch.dtype
) -> StableDiffusionPipeline:
    """Load (or build) a Stable Diffusion pipeline on ``device`` in ``dtype``, offline.

    Raises:
        GeneratorError: One line when the model is missing, of the wrong kind or broken.
    """
    check_model(model, model_config)
    common: dict[str, Any] = {
        _DTYPE_KEY: dtype,
        "local_files_only": True,
        "safety_checker": None,
        "requires_safety_checker": False,
    }
    try:
        if model in BUILTIN_RESOLUTION:
            pipe = build_builtin(model).to(dtype=dtype)
        elif Path(model).expanduser().is_dir():
            pipe = StableDiffusionPipeline.from_pretrained(
                str(Path(model).expanduser()), use_safetensors=True, **common
            )
        else:
            pipe = StableDiffusionPipeline.from_single_file(
                str(Path(model).expanduser()),
                config=str(Path(model_config or "").expanduser()),
                **common,
            )
        pipe = pipe.to(device)
    except GeneratorError:
        raise
    except Exception as exc:  # diffusers, transformers and safetensors raise many kinds
        raise GeneratorError(f"cannot load diffusion model {model}: {_one_line(exc)}") from exc
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


# ---- built-in random-weight pipelines -------------------------------------------------------


def build_builtin(name: str) -> StableDiffusionPipeline:
    """Build ``"tiny"`` or ``"random-sd-turbo"`` in float32 on the CPU, identically every time."""
    tokenizer = build_tokenizer()
    unet_kwargs, vae_kwargs, text_kwargs, scheduler = _ARCHITECTURES[name]()
    text_config = CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        max_position_embeddings=tokenizer.model_max_length,
        **text_kwargs,
    )
    # A private RNG stream: the same weights every build, the caller's global RNG untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_BUILTIN_SEED)
        unet = UNet2DConditionModel(**unet_kwargs)
        vae = AutoencoderKL(**vae_kwargs)
        text_encoder = CLIPTextModel(text_config)
    return StableDiffusionPipeline(
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        unet=unet.eval(),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _tiny() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], Any]:
    unet = {
        "sample_size": 8,
        "block_out_channels": (16, 32),
        "layers_per_block": 1,
        "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
        "cross_attention_dim": 16,
        "attention_head_dim": 4,
        "norm_num_groups": 8,
    }
    # Four VAE blocks keep the usual 8x downsampling, so latents are resolution // 8 here too.
    vae = {
        "block_out_channels": (8, 8, 16, 16),
        "down_block_types": ("DownEncoderBlock2D",) * 4,
        "up_block_types": ("UpDecoderBlock2D",) * 4,
        "layers_per_block": 1,
        "latent_channels": 4,
        "norm_num_groups": 4,
        "sample_size": 64,
    }
    text = {
        "vocab_size": _vocab_size(),
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
    }
    # An ancestral sampler, so tests also cover the per-image sampler noise.
    scheduler = EulerAncestralDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
    )
    return unet, vae, text, scheduler


def _sd_turbo() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], Any]:
    unet = {
        "sample_size": 64,
        "block_out_channels": (320, 640, 1280, 1280),
        "layers_per_block": 2,
        "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        "cross_attention_dim": 1024,
        "attention_head_dim": (5, 10, 20, 20),
        "use_linear_projection": True,
    }
    vae = {
        "block_out_channels": (128, 256, 512, 512),
        "down_block_types": ("DownEncoderBlock2D",) * 4,
        "up_block_types": ("UpDecoderBlock2D",) * 4,
        "layers_per_block": 2,
        "latent_channels": 4,
        "sample_size": 768,
    }
    text = {
        "vocab_size": 49408,
        "hidden_size": 1024,
        "intermediate_size": 4096,
        "num_hidden_layers": 23,
        "num_attention_heads": 16,
        "hidden_act": "gelu",
        "projection_dim": 512,
    }
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        timestep_spacing="trailing",
    )
    return unet, vae, text, scheduler


_ARCHITECTURES = {"tiny": _tiny, "random-sd-turbo": _sd_turbo}


# ---- the in-code CLIP tokenizer ---------------------------------------------------------------

_EXTRA_WORDS = (
    "a an the of and in on with at by portrait painting photo of cat dog fox bird tree "
    "house lighthouse mountain river forest city sky sea flower woman man child robot castle "
    "red blue green yellow purple orange black white blurry ugly"
)


def _byte_symbols() -> list[str]:
    """CLIP's byte-level alphabet: printable bytes map to themselves, the rest above 255."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    codes, extra = [], 0
    for byte in range(256):
        if byte in printable:
            codes.append(byte)
        else:
            codes.append(256 + extra)
            extra += 1
    return [chr(code) for code in codes]


def _vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    symbols = _byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols]
    merges: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    words = sorted(set(all_words()) | set(_EXTRA_WORDS.split()))
    for word in (w for w in words if w.isascii() and w.isalpha() and len(w) > 1):
        # Merge left to right: "cat" -> ("c","a") -> ("ca","t</w>"); each result is a token.
        current = word[0]
        for i, char in enumerate(word[1:], start=1):
            piece = char + "</w>" if i == len(word) - 1 else char
            pair = (current, piece)
            if pair not in seen:
                seen.add(pair)
                merges.append(pair)
                tokens.append(current + piece)
            current += piece
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab: dict[str, int] = {}
    for token in tokens:
        vocab.setdefault(token, len(vocab))
    return vocab, merges


def _vocab_size() -> int:
    return len(_vocab_and_merges()[0])


def build_tokenizer() -> CLIPTokenizer:
    """A CLIP tokenizer from the in-code vocabulary: any text tokenizes, common words whole."""
    vocab, merges = _vocab_and_merges()
    with tempfile.TemporaryDirectory(prefix="imagery-tokenizer-") as folder:
        (Path(folder) / "vocab.json").write_text(json.dumps(vocab))
        lines = "\n".join(f"{a} {b}" for a, b in merges)
        (Path(folder) / "merges.txt").write_text(f"#version: 0.2\n{lines}\n")
        return CLIPTokenizer.from_pretrained(folder, model_max_length=77, local_files_only=True)
