"""Input checks shared by the store facade: each failure is a one-line StoreError."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from spark_runtime import genome_codec
from spark_runtime.store.errors import StoreError


def name(value: Any, what: str) -> str:
    """A non-empty, single-line name."""
    if not isinstance(value, str) or not value.strip():
        raise StoreError(f"{what} name must be a non-empty string, got {value!r}")
    if any(c in value for c in "\r\n\t") or len(value) > 200:
        raise StoreError(f"{what} name must be one line of at most 200 characters")
    return value.strip()


def integer(value: Any, what: str, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise StoreError(f"{what} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise StoreError(f"{what} must be >= {minimum}, got {value}")
    return value


def json_value(value: Any, what: str, kind: type = dict) -> Any:
    """A JSON-serialisable value of the given top-level type, as a plain copy."""
    if not isinstance(value, kind):
        raise StoreError(f"{what} must be a {kind.__name__}, got {type(value).__name__}")
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise StoreError(f"{what} is not plain JSON: {exc}") from None


def blobs(values: Any, what: str, n: int) -> list[bytes | str]:
    """One entry per individual: the bytes to store, or the sha256 of an object already stored."""
    if not isinstance(values, Sequence) or len(values) != n:
        got = len(values) if isinstance(values, Sequence) else type(values).__name__
        raise StoreError(
            f"{what} must be a list of {n} byte strings or object hashes (one per individual), got {got}"
        )
    out: list[bytes | str] = []
    for i, v in enumerate(values):
        if isinstance(v, str):
            out.append(v)
        elif isinstance(v, bytes | bytearray | memoryview):
            out.append(bytes(v))
        else:
            raise StoreError(f"{what}[{i}] must be bytes or an object hash, got {type(v).__name__}")
    return out


@dataclass(frozen=True)
class PreparedIndividual:
    """A genome ready to store: its id, canonical JSON, tensor bytes and parent ids."""

    id: str
    genome_json: str
    tensors: bytes | None
    parents: list[str]


def individuals(items: Any) -> list[PreparedIndividual]:
    """Validate ``(genome, parent_ids)`` pairs and encode each genome.

    A third element, the ``genome_codec.Identity`` made for that genome, saves encoding it again.
    """
    if not isinstance(items, Sequence) or not items:
        raise StoreError("a generation needs at least one individual")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, Sequence) or len(item) not in (2, 3):
            raise StoreError(f"individual {i} must be a (genome, parent_ids) pair")
        genome, parents, identity = (*item, None)[:3]
        if not isinstance(genome, dict):
            raise StoreError(f"individual {i}: genome must be a dict, got {type(genome).__name__}")
        if isinstance(parents, str) or not isinstance(parents, Sequence):
            raise StoreError(f"individual {i}: parent_ids must be a list of ids")
        if not all(isinstance(p, str) for p in parents):
            raise StoreError(f"individual {i}: parent ids must be strings")
        if identity is not None and not isinstance(identity, genome_codec.Identity):
            raise StoreError(f"individual {i}: the third element must be the genome's Identity")
        try:
            gid, genome_json, tensors = genome_codec.encode_with_id(genome, identity)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise StoreError(f"individual {i}: genome cannot be encoded: {exc}") from None
        out.append(PreparedIndividual(gid, genome_json, tensors, list(parents)))
    return out
