"""Deterministic skip pointers: find any ancestor generation in O(log n) hops.

Every snapshot at generation ``g`` stores one extra pointer, to its ancestor at generation
``skip_generation(g)``, a height read off ``g``'s binary representation (clear the lowest set
bit; for odd ``g``, of ``g - 1`` twice). The heights interleave long and short jumps so that
a walk from any generation down to any other takes O(log n) hops, each one row fetch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar


def _clear_lowest_bit(n: int) -> int:
    return n & (n - 1)


def skip_generation(generation: int) -> int | None:
    """Generation the skip pointer of ``generation`` points at, or None for the root."""
    if generation < 1:
        return None
    if generation == 1:
        return 0
    if generation & 1:
        return _clear_lowest_bit(_clear_lowest_bit(generation - 1)) + 1
    return _clear_lowest_bit(generation)


class Node(Protocol):
    generation: int
    parent_id: str | None
    skip_id: str | None


N = TypeVar("N", bound=Node)


def walk_to(start: N, generation: int, fetch: Callable[[str], N]) -> N:
    """Ancestor of ``start`` (inclusive) at ``generation``, fetching one node per hop.

    Args:
        start: the node to walk down from.
        generation: target generation, ``0 <= generation <= start.generation``.
        fetch: loads a node by id (one row fetch).
    """
    if not 0 <= generation <= start.generation:
        raise ValueError(f"generation {generation} is not an ancestor of {start.generation}")
    node = start
    while node.generation > generation:
        here = node.generation
        skip = skip_generation(here)
        # Take our skip when it lands on the target or stays above it, unless the parent's
        # skip reaches much farther down without passing the target: then step to the parent.
        prev_skip = skip_generation(here - 1)
        parent_better = prev_skip is not None and skip - 2 > prev_skip >= generation
        if node.skip_id is not None and (
            skip == generation or (skip > generation and not parent_better)
        ):
            node = fetch(node.skip_id)
        else:
            assert node.parent_id is not None, "a non-root snapshot always has a parent"
            node = fetch(node.parent_id)
    return node
