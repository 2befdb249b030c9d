"""Genome identity and serialisation: canonical JSON plus optional safetensors bytes.

A genome is a JSON dict; tensors (if any) live under ``"tensors"``. Its id is the sha256
of the canonical JSON and the tensors' raw bytes, so equal genomes share one id whichever
branch or run made them. Nothing here unpickles: safetensors holds only raw arrays.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

import orjson

TENSORS_KEY = "tensors"


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces, no NaN: ``json.dumps(value, sort_keys=True, separators=(",", ":"),
    allow_nan=False)``, byte for byte, since ids are hashed from it.

    orjson writes those same bytes several times faster (hashing the children sits between the
    render and the commit), except for what it writes its own way; that output goes through
    ``json`` instead (see ``_written_as_json_would``).
    """
    try:
        data = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except (TypeError, orjson.JSONEncodeError):  # ints over 64 bits, non-string keys...
        data = None
    if data is not None and _written_as_json_would(data):
        return data.decode()
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


# One-digit exponents: orjson writes 1e-5 where json writes 1e-05.
_SHORT_EXPONENT = re.compile(rb"e-[0-9](?![0-9])")


def _written_as_json_would(data: bytes) -> bool:
    """False where orjson's output may differ from ``json.dumps``'s: floats under 1e-4
    (``0.00001``, ``1e-5``), NaN and infinity (orjson writes null; json refuses them),
    non-ASCII text and DEL (json escapes them), and escapes in strings. Text that only looks
    like one of these (a string "null") just takes the slower path to the same bytes."""
    return (
        data.isascii()
        and b"\\" not in data
        and b"\x7f" not in data
        and b"null" not in data
        and b"0.0000" not in data
        and not (b"e-" in data and _SHORT_EXPONENT.search(data))
    )


def split(genome: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return (json part, tensors) of a genome."""
    data = {k: v for k, v in genome.items() if k != TENSORS_KEY}
    return data, dict(genome.get(TENSORS_KEY) or {})


def encode_tensors(tensors: dict[str, Any]) -> bytes | None:
    if not tensors:
        return None
    from safetensors.torch import save

    clean = {name: t.detach().to("cpu").contiguous() for name, t in sorted(tensors.items())}
    return save(clean)


def decode_tensors(blob: bytes | None) -> dict[str, Any]:
    if not blob:
        return {}
    from safetensors.torch import load

    return load(blob)


def encode(genome: dict[str, Any]) -> tuple[str, bytes | None]:
    """Serialise a genome to (canonical json, safetensors bytes or None)."""
    data, tensors = split(genome)
    return canonical_json(data), encode_tensors(tensors)


def decode(data_json: str, tensor_blob: bytes | None = None) -> dict[str, Any]:
    return join(json.loads(data_json), tensor_blob)


def join(data: dict[str, Any], tensor_blob: bytes | None = None) -> dict[str, Any]:
    """The genome from its parsed JSON part (completed in place) and its safetensors bytes:
    the inverse of ``split`` plus ``encode_tensors``."""
    tensors = decode_tensors(tensor_blob)
    if tensors:
        data[TENSORS_KEY] = tensors
    return data


@dataclass(frozen=True)
class Identity:
    """A genome's id and the canonical JSON it was hashed from (see ``identify``): whoever
    made the id can hand both on, and the store does not encode the genome a second time."""

    id: str
    json: str


def identify(genome: dict[str, Any]) -> Identity:
    data, tensors = split(genome)
    text = canonical_json(data)
    return Identity(_content_hash(text, tensors), text)


def genome_id(genome: dict[str, Any]) -> str:
    """Content hash of a genome: sha256 over its canonical JSON and its tensors' bytes."""
    return identify(genome).id


def encode_with_id(genome: dict[str, Any], identity: Identity | None = None) -> tuple[str, str, bytes | None]:
    """``(genome_id, canonical json, safetensors bytes or None)``; ``identity`` is what
    ``identify`` returned for this same genome, if the caller has it."""
    identity = identity or identify(genome)
    return identity.id, identity.json, encode_tensors(split(genome)[1])


def _content_hash(text: str, tensors: dict[str, Any]) -> str:
    import torch

    h = hashlib.sha256(text.encode())
    for name in sorted(tensors):
        if not isinstance(tensors[name], torch.Tensor):
            raise TypeError(f"genome tensor {name!r} is not a torch.Tensor")
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        # Raw bytes through a uint8 view: works for every dtype, bfloat16 included.
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
