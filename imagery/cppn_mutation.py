"""CPPN mutation: Picbreeder's operators, drawn with their weights, within the gene locks.

Kept apart from ``cppn_genome`` (the genome's structure, validation, random genomes and
crossover). ``mutate`` runs k times per child when the agent screens, tens of thousands of
times a session, so the operator draw avoids listing what it only needs to count: without
locks it counts every operator's candidates in closed form and lists just the chosen
operator's; with locks set, counting builds the other operators' lists to take their
lengths. New links are never listed (that list is quadratic in the
nodes): they are counted, and the drawn one found, by walking the nodes.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterable

import numpy as np

from imagery.cppn_genome import (
    ACTIVATIONS,
    INPUT_IDS,
    OPERATORS,
    OUTPUT_IDS,
    _copy,
    _fresh_id,
    _gene,
    _pick,
    _trust,
    _weight,
    check_locks,
    validate,
)
from imagery.protocol import GeneratorError, Genome


def _open_to(dst: int, locks: frozenset[str], group: str) -> bool:
    """Whether genes owned by node ``dst`` may change: outputs are 'color', hidden ``group``."""
    return "color" not in locks if dst in OUTPUT_IDS else group not in locks


def _perturb_candidates(g: Genome, locks: frozenset[str]) -> list[tuple[str, int]]:
    genes = [
        ("link", i)
        for i, link in enumerate(g["links"])
        if link["enabled"] and _open_to(link["dst"], locks, "weights")
    ]
    return genes + [
        ("node", i) for i, n in enumerate(g["nodes"]) if _open_to(n["id"], locks, "weights")
    ]


def _split_candidates(g: Genome, locks: frozenset[str], max_nodes: int) -> list[int]:
    if "topology" in locks or len(g["nodes"]) - len(OUTPUT_IDS) >= max_nodes:
        return []
    return [
        i
        for i, link in enumerate(g["links"])
        if link["enabled"] and _open_to(link["dst"], locks, "topology")
    ]


def _link_count(g: Genome, locks: frozenset[str]) -> int:
    """How many link candidates ``g`` has, counted without listing them.

    A link candidate is a pair (source, destination) that ``add_link`` may join: the source
    an input or a hidden node earlier in the genome's order (never an output), the
    destination a node whose links the locks leave open, and the two not already joined by
    an enabled link. With 'topology' locked there are none. (With no locks at all,
    ``_open_link_count`` counts them without the walk.)
    """
    if "topology" in locks:
        return 0
    count, sources = 0, len(INPUT_IDS)
    open_dst: set[int] = set()
    for n in g["nodes"]:
        if _open_to(n["id"], locks, "topology"):
            count += sources
            open_dst.add(n["id"])
        if n["id"] not in OUTPUT_IDS:
            sources += 1
    return count - sum(1 for link in g["links"] if link["enabled"] and link["dst"] in open_dst)


def _activation_candidates(g: Genome, locks: frozenset[str]) -> list[int]:
    return [i for i, n in enumerate(g["nodes"]) if _open_to(n["id"], locks, "activations")]


def _perturb(
    g: Genome, rng: np.random.Generator, genes: list[tuple[str, int]], strength: float
) -> None:
    sigma = 0.15 + 1.1 * strength
    # One draw per gene, all at once: the same stream as a draw per gene in turn.
    draws = rng.random(len(genes)).tolist()
    share = 0.15 + 0.6 * strength
    chosen = [gene for gene, u in zip(genes, draws, strict=True) if u < share] or [_pick(rng, genes)]
    for kind, i in chosen:
        target, key = (g["links"][i], "weight") if kind == "link" else (g["nodes"][i], "bias")
        old = target[key]
        while target[key] == old:  # a step lost to clipping is drawn again
            target[key] = _gene(old + rng.normal(0.0, sigma))


def _split(g: Genome, rng: np.random.Generator, link_index: int) -> None:
    old = g["links"][link_index]
    old["enabled"] = False
    new_id = _fresh_id(rng, {n["id"] for n in g["nodes"]})
    act = _pick(rng, list(ACTIVATIONS))
    # Just before the old target (outputs stay last) keeps the order topological (src < new < dst).
    first = OUTPUT_IDS[0] if old["dst"] in OUTPUT_IDS else old["dst"]
    at = next(i for i, n in enumerate(g["nodes"]) if n["id"] == first)
    g["nodes"].insert(at, {"id": new_id, "act": act, "bias": 0.0})
    g["links"].append({"src": old["src"], "dst": new_id, "weight": 1.0, "enabled": True})
    g["links"].append({"src": new_id, "dst": old["dst"], "weight": old["weight"], "enabled": True})


def _add_link(g: Genome, rng: np.random.Generator, pair: tuple[int, int]) -> None:
    src, dst = pair
    for link in g["links"]:
        if (link["src"], link["dst"]) == pair:  # re-enable, with its old weight, a link a
            link["enabled"] = True  # split turned off: the weight is not this operator's to change
            return
    g["links"].append({"src": src, "dst": dst, "weight": _weight(rng), "enabled": True})


def _change_activation(g: Genome, rng: np.random.Generator, node_index: int) -> None:
    node = g["nodes"][node_index]
    node["act"] = _pick(rng, [a for a in ACTIVATIONS if a != node["act"]])


def mutate(
    genome: Genome,
    rng: np.random.Generator,
    strength: float,
    locks: Iterable[str] = (),
    max_nodes: int = 64,
) -> Genome:
    """Return a mutated copy: 1 to 4 operator applications, more and bigger as strength grows.

    Operators are drawn with Picbreeder's weights (``OPERATORS``) among those the locks and
    the ``max_nodes`` cap leave possible. A locked gene group is never touched.
    """
    validate(genome)
    if isinstance(strength, bool) or not isinstance(strength, int | float):
        strength = math.nan  # fails the range check below with the value in the message
    if not 0.0 <= strength <= 1.0:
        raise GeneratorError(f"mutation strength must be a number from 0 to 1, got {strength!r}")
    locks = check_locks(locks)
    g = _copy(genome)
    for _ in range(1 + int(rng.binomial(3, strength))):
        possible = _operator_counts(g, locks, max_nodes)
        names = [name for name in OPERATORS if possible[name]]
        if not names:
            break
        name = names[_weighted_index(rng, [OPERATORS[name] for name in names])]
        if name == "perturb":
            _perturb(g, rng, _perturb_candidates(g, locks), strength)
        elif name == "add_node":
            _split(g, rng, _pick(rng, _split_candidates(g, locks, max_nodes)))
        elif name == "add_link":
            _add_link(g, rng, _nth_link_candidate(g, locks, int(rng.integers(possible[name]))))
        else:
            _change_activation(g, rng, _pick(rng, _activation_candidates(g, locks)))
    return _trust(g)


def _weighted_index(rng: np.random.Generator, weights: list[float]) -> int:
    """``rng.choice(len(weights), p=normalised weights)`` without its overhead: the same single
    uniform draw against the same cumulative sums, so the same answer and the same stream."""
    total = 0.0
    for w in weights:
        total += w
    cdf, running = [], 0.0
    for w in weights:
        running += w / total
        cdf.append(running)
    u = rng.random()
    return bisect.bisect_right([c / cdf[-1] for c in cdf], u)


def _nth_link_candidate(g: Genome, locks: frozenset[str], index: int) -> tuple[int, int]:
    """The ``index``-th link candidate (see ``_link_count``), found without listing them all.

    Candidates run destination by destination in node order, each destination's sources in
    order (inputs first, then the hidden nodes before it).
    """
    # A valid genome joins a pair at most once, always from an earlier node: a destination
    # has as many taken sources as enabled links into it. Only the one found is listed.
    into: dict[int, int] = {}
    for link in g["links"]:
        if link["enabled"]:
            into[link["dst"]] = into.get(link["dst"], 0) + 1
    sources = list(INPUT_IDS)  # the nodes before the current one that may feed it
    for node in g["nodes"]:
        dst = node["id"]
        if _open_to(dst, locks, "topology"):
            count = len(sources) - into.get(dst, 0)
            if index < count:
                taken = {link["src"] for link in g["links"] if link["enabled"] and link["dst"] == dst}
                free = (src for src in sources if src not in taken)
                return next(itertools.islice(free, index, None)), dst
            index -= count
        if dst not in OUTPUT_IDS:
            sources.append(dst)
    raise IndexError("link candidate index out of range")


def _operator_counts(g: Genome, locks: frozenset[str], max_nodes: int) -> dict[str, int]:
    """How many candidates each operator has (0: it cannot apply)."""
    if locks:
        return {
            "perturb": len(_perturb_candidates(g, locks)),
            "add_node": len(_split_candidates(g, locks, max_nodes)),
            "add_link": _link_count(g, locks),
            "change_activation": len(_activation_candidates(g, locks)),
        }
    enabled = sum(1 for link in g["links"] if link["enabled"])
    room = len(g["nodes"]) - len(OUTPUT_IDS) < max_nodes
    return {
        "perturb": enabled + len(g["nodes"]),
        "add_node": enabled if room else 0,
        "add_link": _open_link_count(g, enabled),
        "change_activation": len(g["nodes"]),
    }


def _open_link_count(g: Genome, enabled: int) -> int:
    """``_link_count`` with no locks, given the number of enabled links: a closed form."""
    hidden = len(g["nodes"]) - len(OUTPUT_IDS)
    # Hidden node j may take links from the inputs and the j hidden nodes before it (the sum
    # of 4 + j over j < hidden); each output from the inputs and every hidden node.
    inputs = len(INPUT_IDS)
    count = inputs * hidden + hidden * (hidden - 1) // 2 + len(OUTPUT_IDS) * (inputs + hidden)
    return count - enabled
