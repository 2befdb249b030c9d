"""Pluggable image embeddings for the preference model.

An ``EmbeddingExtractor`` turns a batch of images into one vector each. The default,
``StatsExtractor``, uses the hand-made ``image_features`` (no weights, fast on a CPU);
``ClipExtractor`` loads a CLIP vision tower from a folder on disk, for taste that depends on
content rather than colour and texture. Nothing here downloads: a model that is not on disk is
a one-line ``ValueError``.

``make_extractor`` builds one from a short spec string, as given on the command line:
``None`` or ``"stats"`` for the default, ``"clip:/path/to/model"`` for CLIP.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image

from evolve.features import FEATURE_NAMES, image_features


@runtime_checkable
class EmbeddingExtractor(Protocol):
    """Maps images to fixed-length feature vectors."""

    #: Short name saved with a preference model, so a model is never fed the wrong features.
    name: str
    #: Length of each vector.
    dim: int

    def __call__(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Return a ``float64`` array ``[len(images), dim]``."""
        ...


class StatsExtractor:
    """Colour, contrast, edge, symmetry and multi-scale statistics (``evolve.features``)."""

    name = "stats"
    dim = len(FEATURE_NAMES)

    def __call__(self, images: Sequence[Image.Image]) -> np.ndarray:
        return image_features(images)


class ClipExtractor:
    """Image embeddings from a local CLIP checkpoint folder (``save_pretrained`` layout).

    The folder needs ``config.json``, ``model.safetensors`` (pickled ``.bin`` weights are
    refused) and ``preprocessor_config.json``. Either a full ``CLIPModel`` or a
    ``CLIPVisionModelWithProjection`` checkpoint works: only the vision tower and its
    projection are loaded. Vectors are L2-normalised, as CLIP similarities expect.

    Args:
        path: the checkpoint folder.
        device: torch device to run on ("cpu", "cuda", ...).
        batch_size: images per forward pass, bounding memory on large populations.

    Raises:
        ValueError: the folder or one of its files is missing, or the model cannot be loaded.
    """

    def __init__(self, path: str | os.PathLike[str], device: str = "cpu", batch_size: int = 32):
        folder = Path(path).expanduser()
        for needed in ("config.json", "preprocessor_config.json", "model.safetensors"):
            if not (folder / needed).is_file():
                raise ValueError(f"no CLIP model at {folder}: {needed} is missing")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        # Belt and braces: local_files_only already forbids the hub; this covers any helper
        # that transformers may call without passing it on.
        os.environ["HF_HUB_OFFLINE"] = "1"
        import torch
        from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection
        from transformers.utils import logging as hf_logging

        # A full CLIP checkpoint carries a text tower we skip on purpose; the library's
        # multi-line load report about those keys is noise here.
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            self._processor = CLIPImageProcessor.from_pretrained(folder, local_files_only=True)
            model = CLIPVisionModelWithProjection.from_pretrained(
                folder,
                config=_vision_config(folder),
                local_files_only=True,
                use_safetensors=True,
            )
        except Exception as exc:  # corrupt files raise library-specific error types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"cannot load CLIP model from {folder}: {first}") from None
        finally:
            hf_logging.set_verbosity(verbosity)
        self._torch = torch
        self._device = torch.device(device)
        self._model = model.to(self._device).eval()
        self._batch_size = batch_size
        self.name = f"clip:{folder.name}"
        self.dim = int(model.config.projection_dim)

    def __call__(self, images: Sequence[Image.Image]) -> np.ndarray:
        if len(images) == 0:
            return np.zeros((0, self.dim))
        for img in images:
            if not isinstance(img, Image.Image):
                raise ValueError(f"ClipExtractor needs PIL images, got {type(img).__name__}")
        rgb = [img if img.mode == "RGB" else img.convert("RGB") for img in images]
        chunks = []
        with self._torch.inference_mode():
            for start in range(0, len(rgb), self._batch_size):
                batch = self._processor(
                    images=rgb[start : start + self._batch_size], return_tensors="pt"
                )
                pixels = batch["pixel_values"].to(self._device)
                embeds = self._model(pixel_values=pixels).image_embeds.float()
                embeds = embeds / embeds.norm(dim=-1, keepdim=True).clamp_min(1e-12)
                chunks.append(embeds.cpu().numpy())
        return np.concatenate(chunks).astype(np.float64)


def _vision_config(folder: Path):
    """The vision tower's config, also from a full CLIP checkpoint.

    A full ``CLIPModel`` keeps ``projection_dim`` at the top level; the nested vision config
    would otherwise fall back to the library default and mismatch the saved projection.
    """
    from transformers import CLIPVisionConfig

    data = json.loads((folder / "config.json").read_text())
    if data.get("model_type") == "clip" and isinstance(data.get("vision_config"), dict):
        vision = dict(data["vision_config"])
        vision["projection_dim"] = data.get("projection_dim", vision.get("projection_dim"))
        vision.pop("model_type", None)
        return CLIPVisionConfig(**vision)
    return CLIPVisionConfig.from_pretrained(folder, local_files_only=True)


def make_extractor(spec: str | None) -> EmbeddingExtractor:
    """Build an extractor from a spec: ``None``/``"stats"``, or ``"clip:/path/to/model"``.

    Raises:
        ValueError: the spec is not one of those forms, or the CLIP folder is unusable.
    """
    if spec is None or spec.strip() in ("", "stats"):
        return StatsExtractor()
    kind, sep, rest = spec.strip().partition(":")
    if kind == "clip" and sep and rest.strip():
        return ClipExtractor(rest.strip())
    raise ValueError(f"unknown feature extractor {spec!r}: use 'stats' or 'clip:/path/to/model'")
