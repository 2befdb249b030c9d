"""Canonical genome JSON: the bytes ids are hashed from never change, whichever encoder wrote them."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from imagery.cppn import CPPN
from spark_runtime.genome_codec import canonical_json, genome_id


def reference(value: object) -> str:
    """What ids were always hashed from."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def test_evolved_cppn_genomes_encode_exactly_as_json_does() -> None:
    cppn = CPPN.from_config({})
    rng = np.random.default_rng(7)
    genomes = cppn.random(rng, 40)
    for _ in range(6):
        genomes = [cppn.mutate(g, rng, 1.0) for g in genomes]
        genomes += [cppn.crossover(genomes[i], genomes[-1 - i], rng) for i in range(5)]
    for genome in genomes:
        assert canonical_json(genome) == reference(genome)


@pytest.mark.parametrize("exponent", range(-325, 309, 7))
def test_floats_of_every_magnitude_encode_exactly_as_json_does(exponent: int) -> None:
    rng = np.random.default_rng(exponent + 400)
    values = [float(m * 10.0**exponent) for m in rng.uniform(-9.99, 9.99, 40)]
    values += [0.0, -0.0, 5e-324, 1e-5, 1e-4, 9.999e-5, 1e16, 1e-100, 1.7976931348623157e308]
    for value in values:
        assert canonical_json({"w": value, "v": [value]}) == reference({"w": value, "v": [value]})


@pytest.mark.parametrize(
    "value",
    [
        {"text": "tab\there, newline\n, quote \" and backslash \\"},
        {"text": "caf\u00e9 \u2028 \U0001f600", "del": "\x7f", "ctrl": "\x01\x1f"},
        {"text": "null", "also": None, "exp": "e-5 and 0.00001 as text"},
        {"big": 2**64, "bigger": 2**100, "negative": -(2**63) - 1, "edge": 2**63},
        {2: "int keys", 10: {"z": [1, 2.5, True, False], "a": []}},
        {"numpy": np.float64(0.1), "tuple": (1, 2)},
        [{"b": 1, "a": 2}, "x", 3],
    ],
)
def test_awkward_values_encode_exactly_as_json_does(value: object) -> None:
    assert canonical_json(value) == reference(value)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_are_refused_as_before(bad: float) -> None:
    with pytest.raises(ValueError):
        canonical_json({"weight": bad})


def test_a_genome_id_is_the_sha256_of_its_canonical_json() -> None:
    import hashlib

    genome = {"kind": "cppn", "nodes": [{"id": 4, "bias": 1e-05}], "links": []}
    assert genome_id(genome) == hashlib.sha256(reference(genome).encode()).hexdigest()
