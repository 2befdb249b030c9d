"""PNG export that carries everything needed to render the image again, exactly.

Each exported PNG holds text chunks: the genome (JSON; tensors as base64 safetensors), the
generator import path and config, run, branch, generation, position and lineage. Reading
them back never executes anything: JSON and safetensors only.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin

from spark_runtime.genome_codec import decode, encode, genome_id
from spark_runtime.image_codec import decode as decode_image
from spark_runtime.spark import build_generator

PREFIX = "imagery:"


class ExportError(ValueError):
    """An image that does not carry imagery metadata; the message is one line."""


def png_with_metadata(image_bytes: bytes, metadata: dict[str, Any]) -> bytes:
    image = decode_image(image_bytes)
    info = PngImagePlugin.PngInfo()
    for key, value in metadata.items():
        info.add_itxt(PREFIX + key, json.dumps(value, sort_keys=True), zip=True)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def export_metadata(store: Any, run: Any, branch_name: str, snapshot: Any, position: int, genome: dict[str, Any]) -> dict[str, Any]:
    data_json, tensors = encode(genome)
    individual_id = snapshot.population[position]
    return {
        "version": 1,
        "genome": json.loads(data_json),
        "tensors": base64.b64encode(tensors).decode() if tensors else None,
        "genome_id": individual_id,
        "generator": {"kind": run.generator, "target": run.target, "config": snapshot.generator_config},
        "size": run.size,
        "run": {"id": run.id, "name": run.name},
        "branch": branch_name,
        "generation": snapshot.generation,
        "position": position,
        "lineage": store.lineage(individual_id, max_depth=snapshot.generation + 1),
    }


def export_snapshot(store: Any, run: Any, branch_name: str, snapshot: Any, directory: Path, positions: list[int] | None = None) -> list[Path]:
    """Write one PNG per candidate (or per chosen position) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    genomes = store.genomes(snapshot)
    written = []
    for position in positions if positions is not None else range(len(snapshot.population)):
        metadata = export_metadata(store, run, branch_name, snapshot, position, genomes[position])
        data = png_with_metadata(store.objects.get(snapshot.images[position]), metadata)
        path = directory / f"{run.name}-{branch_name}-g{snapshot.generation:04d}-{position:02d}.png"
        path.write_bytes(data)
        written.append(path)
    return written


def read_metadata(path: str | Path) -> dict[str, Any]:
    try:
        with Image.open(path) as image:
            text = dict(getattr(image, "text", {}) or {})
    except OSError as exc:
        raise ExportError(f"cannot read {str(path)!r}: not a readable image") from exc
    found = {k[len(PREFIX) :]: json.loads(v) for k, v in text.items() if k.startswith(PREFIX)}
    if "genome" not in found or "generator" not in found:
        raise ExportError(f"{str(path)!r} carries no imagery genome (was it exported by imagery?)")
    return found


def genome_from_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    tensors = base64.b64decode(metadata["tensors"]) if metadata.get("tensors") else None
    genome = decode(json.dumps(metadata["genome"]), tensors)
    if metadata.get("genome_id") not in (None, genome_id(genome)):
        raise ExportError("the embedded genome does not match its id: the file was altered")
    return genome


def rerender(path: str | Path, size: int | None = None) -> Image.Image:
    """Render an exported PNG's genome again from its embedded metadata alone."""
    metadata = read_metadata(path)
    generator = build_generator(metadata["generator"]["target"], metadata["generator"]["config"])
    return generator.render([genome_from_metadata(metadata)], size or int(metadata["size"]))[0]
