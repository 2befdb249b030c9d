"""CPPN genomes, their validation and crossover, in the Picbreeder / NEAT tradition
(mutation is in ``imagery.cppn_mutation``).

A genome is a plain JSON dict::

    {"kind": "cppn", "version": 1,
     "nodes": [{"id": 912..., "act": "sin", "bias": 0.1}, ...,   # hidden, topological order
               {"id": 4, ...}, {"id": 5, ...}, {"id": 6, ...}],  # then the three outputs
     "links": [{"src": 0, "dst": 912..., "weight": 1.3, "enabled": true}, ...]}

Inputs are implicit (ids 0..3 = x, y, distance from centre, bias). Hidden node ids are
random 52-bit integers drawn when a node is born and kept by every descendant, so they play
the part of NEAT's innovation numbers without a global counter: crossover aligns nodes by
id and links by ``(src, dst)``. A link may only run forward in the node order, so every
genome is a feed-forward network by construction.
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import numpy as np

from imagery.protocol import GeneratorError, Genome

KIND = "cppn"
VERSION = 1
INPUT_IDS = (0, 1, 2, 3)  # x, y, d, bias
OUTPUT_IDS = (4, 5, 6)  # r, g, b  or  h, s, v
FIRST_HIDDEN_ID = 16
MAX_GENOME_NODES = 1024  # a hand-made genome bigger than this would stall a spark
ACTIVATIONS = ("sin", "cos", "gaussian", "sigmoid", "tanh", "abs", "identity")
# Outputs start from functions whose range maps well onto their channel: hue and saturation
# take any smooth function; the third output (value, or blue) starts from a bipolar one so
# a first picture is rarely black all over.
OUTPUT_START_ACTIVATIONS = {
    4: ("sigmoid", "gaussian", "sin", "tanh"),
    5: ("sigmoid", "gaussian", "sin", "tanh"),
    6: ("sin", "tanh"),
}
WEIGHT_LIMIT = 8.0  # bound on |weight| and |bias|
INIT_SIGMA = 2.5  # input -> hidden: a few bands across the picture
OUTPUT_WEIGHT = (0.5, 2.0)  # |hidden -> output| at birth: never ~0 (a black picture), never huge
# Picbreeder's mix of mutation operators: perturb weights, add node, add link, new activation.
OPERATORS = {"perturb": 10.0, "add_node": 6.0, "add_link": 4.0, "change_activation": 1.0}
# Gene groups a user may lock. "color" is the output layer: output activations and biases
# and the links into the outputs; "weights" and "activations" cover the hidden nodes.
LOCKABLE = ("topology", "weights", "activations", "color")


def _bad(message: str) -> GeneratorError:
    return GeneratorError(f"invalid CPPN genome: {message}")


def _in_range(value: Any) -> bool:
    """Whether a gene value is a plain finite number within the weight limit (the fast test
    ``_validate`` runs on every gene before it words an error with ``_number``)."""
    kind = type(value)
    return (kind is float or kind is int) and -WEIGHT_LIMIT <= value <= WEIGHT_LIMIT


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _bad(f"{what} must be a finite number, got {value!r}")
    if abs(value) > WEIGHT_LIMIT:
        raise _bad(f"{what} must lie within +-{WEIGHT_LIMIT:g}, got {value!r}")
    return float(value)


# Genomes already checked, or made by this module's own operators: the engine mutates the same
# parents many times per generation (k times more with the agent screening), and re-checking
# every one added a good part of a mutation's cost again. Keyed by id() with the object kept alive, so an
# id is never reused while its entry stands; a bounded FIFO keeps memory flat.
_CHECKED: OrderedDict[int, Genome] = OrderedDict()
_CHECKED_MAX = 4096


def _trust(genome: Genome) -> Genome:
    _CHECKED[id(genome)] = genome
    if len(_CHECKED) > _CHECKED_MAX:
        _CHECKED.popitem(last=False)
    return genome


def validate(genome: Any) -> None:
    """Check a genome's structure, raising a one-line ``GeneratorError`` when it is unusable.

    Genome dicts are assumed immutable once checked (the engine, store and renderers never
    change one in place): a genome seen before is not checked again.
    """
    if _CHECKED.get(id(genome)) is genome:
        return
    _validate(genome)
    _trust(genome)


def _validate(genome: Any) -> None:
    if not isinstance(genome, dict) or genome.get("kind") != KIND:
        raise _bad("expected a dict with kind 'cppn'")
    if genome.get("version") != VERSION:
        raise _bad(f"unsupported version {genome.get('version')!r} (this build reads {VERSION})")
    nodes, links = genome.get("nodes"), genome.get("links")
    if not isinstance(nodes, list) or not isinstance(links, list):
        raise _bad("'nodes' and 'links' must be lists")
    if len(nodes) > MAX_GENOME_NODES:
        raise _bad(f"{len(nodes)} nodes is more than the {MAX_GENOME_NODES} a genome may have")
    position = {nid: i - len(INPUT_IDS) for i, nid in enumerate(INPUT_IDS)}
    for i, node in enumerate(nodes):
        nid = node.get("id") if isinstance(node, dict) else None
        if isinstance(nid, bool) or not isinstance(nid, int) or nid in position:
            raise _bad(f"node {i} has a missing or repeated id")
        if node.get("act") not in ACTIVATIONS:
            raise _bad(f"node {nid} has unknown activation {node.get('act')!r}")
        if not _in_range(node.get("bias")):
            _number(node.get("bias"), f"bias of node {nid}")
        position[nid] = i
    if [n["id"] for n in nodes[-len(OUTPUT_IDS) :]] != list(OUTPUT_IDS):
        raise _bad(f"the last nodes must be the outputs {list(OUTPUT_IDS)}")
    if any(n["id"] < FIRST_HIDDEN_ID for n in nodes[: -len(OUTPUT_IDS)]):
        raise _bad(f"hidden node ids must be >= {FIRST_HIDDEN_ID}")
    seen = set()
    for link in links:
        if not isinstance(link, dict):
            raise _bad("every link must be a dict")
        src, dst = link.get("src"), link.get("dst")
        if src not in position or dst not in position or src in OUTPUT_IDS:
            raise _bad(f"link {src!r}->{dst!r} names an unknown or wrong-kind node")
        if position[src] >= position[dst]:
            raise _bad(f"link {src}->{dst} runs backwards in the node order")
        if (src, dst) in seen:
            raise _bad(f"link {src}->{dst} appears twice")
        seen.add((src, dst))
        if not _in_range(link.get("weight")):
            _number(link.get("weight"), f"weight of link {src}->{dst}")
        if not isinstance(link.get("enabled"), bool):
            raise _bad(f"link {src}->{dst} needs a boolean 'enabled'")


def _copy(genome: Genome) -> Genome:
    return {
        "kind": KIND,
        "version": VERSION,
        "nodes": [dict(n) for n in genome["nodes"]],
        "links": [dict(link) for link in genome["links"]],
    }


def _fresh_id(rng: np.random.Generator, used: set[int]) -> int:
    while True:
        nid = int(rng.integers(FIRST_HIDDEN_ID, 2**52))
        if nid not in used:
            used.add(nid)
            return nid


def _gene(value: float) -> float:
    # Plain min/max: the same value as np.clip, at a fraction of its call overhead.
    return min(WEIGHT_LIMIT, max(-WEIGHT_LIMIT, float(value)))


def _weight(rng: np.random.Generator, sigma: float = INIT_SIGMA) -> float:
    return _gene(rng.normal(0.0, sigma))


def _pick(rng: np.random.Generator, items: list[Any]) -> Any:
    return items[int(rng.integers(len(items)))]


def random_genome(rng: np.random.Generator, hidden: int) -> Genome:
    """A fresh genome: ``hidden`` nodes fed by a random subset of the inputs, feeding the outputs.

    Each hidden node sees only some of x, y and d, which is what gives the first generation
    its Picbreeder look: radial, mirrored and striped patterns rather than noise.
    """
    used: set[int] = set()
    hidden_ids = [_fresh_id(rng, used) for _ in range(hidden)]
    nodes = [{"id": h, "act": _pick(rng, list(ACTIVATIONS)), "bias": 0.0} for h in hidden_ids]
    links = []
    for h in hidden_ids:
        chosen = [i for i in INPUT_IDS if rng.random() < 0.5]
        if not any(i in chosen for i in INPUT_IDS[:3]):
            chosen.append(int(rng.integers(3)))
        links += [
            {"src": i, "dst": h, "weight": _weight(rng), "enabled": True} for i in sorted(chosen)
        ]
    sources = hidden_ids or list(INPUT_IDS[:3])
    for out in OUTPUT_IDS:
        nodes.append(
            {"id": out, "act": _pick(rng, list(OUTPUT_START_ACTIVATIONS[out])), "bias": 0.0}
        )
        chosen = [s for s in sources if rng.random() < 0.6] or [_pick(rng, sources)]
        for s in chosen:
            weight = rng.choice((-1.0, 1.0)) * rng.uniform(*OUTPUT_WEIGHT)
            links.append({"src": s, "dst": out, "weight": _gene(weight), "enabled": True})
    return {"kind": KIND, "version": VERSION, "nodes": nodes, "links": links}


def check_locks(locks: Iterable[str]) -> frozenset[str]:
    """Normalise a set of lock names, rejecting unknown ones with a one-line error."""
    locks = frozenset(locks)
    unknown = sorted(locks - set(LOCKABLE))
    if unknown:
        raise GeneratorError(f"unknown CPPN lock {unknown[0]!r}; choose from {', '.join(LOCKABLE)}")
    return locks


# --- crossover ----------------------------------------------------------------------------


def _reaches(out: dict[int, list[int]], start: int, goal: int) -> bool:
    """Whether a path of links leads from ``start`` to ``goal``; ``out`` lists each node's
    link targets."""
    stack, seen = [start], {start}
    while stack:
        node = stack.pop()
        if node == goal:
            return True
        for nxt in out.get(node, ()):
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return False


def _topological(
    nodes: dict[int, dict[str, Any]], links: list[dict[str, Any]], rank: dict[int, tuple]
) -> list[dict[str, Any]]:
    """Order nodes so every link runs forward; ties follow the parents' orders (``rank``)."""
    indegree = dict.fromkeys(nodes, 0)
    children: dict[int, list[int]] = {}
    for link in links:
        if link["src"] in nodes:
            indegree[link["dst"]] += 1
            children.setdefault(link["src"], []).append(link["dst"])
    ready = [(rank[n], n) for n, d in indegree.items() if d == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        _, nid = heapq.heappop(ready)
        order.append(nodes[nid])
        for child in children.get(nid, ()):
            indegree[child] -= 1
            if indegree[child] == 0:
                heapq.heappush(ready, (rank[child], child))
    return order


def crossover(a: Genome, b: Genome, rng: np.random.Generator, max_nodes: int = 64) -> Genome:
    """NEAT-style crossover with ``a`` as the primary parent.

    The child keeps all of ``a``'s structure; genes both parents share (same node id, same
    link ``(src, dst)``) come from either parent with equal odds; each of ``b``'s own nodes
    and links joins with probability 1/2 where it fits (below ``max_nodes``, no cycle).
    """
    validate(a)
    validate(b)
    a_nodes = {n["id"]: n for n in a["nodes"]}
    b_nodes = {n["id"]: n for n in b["nodes"]}
    nodes = {
        nid: dict(b_nodes[nid] if nid in b_nodes and rng.random() < 0.5 else n)
        for nid, n in a_nodes.items()
    }
    room = max_nodes - (len(nodes) - len(OUTPUT_IDS))
    for nid, n in b_nodes.items():
        if nid not in nodes and rng.random() < 0.5 and room > 0:
            nodes[nid] = dict(n)
            room -= 1
    b_links = {(link["src"], link["dst"]): link for link in b["links"]}
    links = []
    for link in a["links"]:
        other = b_links.pop((link["src"], link["dst"]), None)
        links.append(dict(other if other is not None and rng.random() < 0.5 else link))
    targets: dict[int, list[int]] = {}  # kept up to date as links join: no rebuild per test
    for link in links:
        targets.setdefault(link["src"], []).append(link["dst"])
    for (src, dst), link in b_links.items():
        joins = rng.random() < 0.5
        if (
            joins
            and (src in nodes or src in INPUT_IDS)
            and dst in nodes
            and not _reaches(targets, dst, src)
        ):
            links.append(dict(link))
            targets.setdefault(src, []).append(dst)
    # Drop b's nodes that ended up feeding nothing: they would only cost render time.
    while True:
        feeding = {link["src"] for link in links if link["enabled"]}
        dead = [nid for nid in nodes if nid not in a_nodes and nid not in feeding]
        if not dead:
            break
        for nid in dead:
            del nodes[nid]
        links = [link for link in links if link["src"] in nodes or link["src"] in INPUT_IDS]
        links = [link for link in links if link["dst"] in nodes]
    rank: dict[int, tuple] = {}
    for parent, tag in ((b, 1), (a, 0)):
        hidden = parent["nodes"][: -len(OUTPUT_IDS)]
        rank.update({n["id"]: (0, i / len(hidden), tag) for i, n in enumerate(hidden)})
    rank.update({nid: (1, nid, 0) for nid in OUTPUT_IDS})
    child = {
        "kind": KIND,
        "version": VERSION,
        "nodes": _topological(nodes, links, rank),
        "links": links,
    }
    validate(child)
    return child
