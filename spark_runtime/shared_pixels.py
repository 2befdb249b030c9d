"""Image replies through shared memory between a process spark's child and its parent.

A reply of 16 images at 256 px is 3 MB. Through the connection's socket it is copied into a
frame, into the kernel, out again in socket-buffer pieces (each one waking the parent on a
core the render or the writer is using) and joined. Here the child copies its pixels once
into a memory file it shares with the parent, and the reply frame carries only their sizes;
the parent copies them out once. The child writes there only while it answers a request, and
the parent has copied the previous reply out before it sends the next one, so one buffer is
enough. The file is an anonymous ``memfd`` (no name to leak if either side dies), handed to the
parent over the connection when it is made or grown. Linux only: elsewhere, and for Ray
actors on other machines, replies keep their pixels in the frame.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Sequence
from multiprocessing import reduction
from typing import Any

import numpy as np

from spark_runtime.spark import SparkError

_GROWTH = 1 << 20  # capacity is rounded up to whole MiB, so slightly larger replies reuse it


def supported() -> bool:
    return hasattr(os, "memfd_create") and hasattr(reduction, "send_handle")


class ChildPixels:
    """The child's side: one memory file, grown to the largest reply so far."""

    def __init__(self) -> None:
        # Open only while the parent has yet to get the file (after the reply frame that
        # says it is new); closed once handed over, as the mapping keeps the file alive.
        self._fd: int | None = None
        self._map: mmap.mmap | None = None

    def write(self, pixels: Sequence[np.ndarray]) -> dict[str, Any]:
        """Copy ``pixels`` into the shared file, back to back; returns the ``shared`` entry
        of the reply header (``hand_over`` then sends the file when it is new)."""
        total = sum(p.nbytes for p in pixels)
        if self._map is None or total > len(self._map):
            self._grow(total)
        assert self._map is not None
        offset = 0
        for p in pixels:
            target = np.frombuffer(self._map, np.uint8, count=p.nbytes, offset=offset)
            target.reshape(p.shape)[...] = p
            offset += p.nbytes
        return {"bytes": total, "new": self._fd is not None}

    def hand_over(self, conn: Any) -> None:
        """Send a new file's descriptor to the parent (right after the frame that says so),
        then close it here: the mapping keeps the file alive, and nothing sends it again."""
        if self._fd is not None:
            reduction.send_handle(conn, self._fd, os.getppid())
            os.close(self._fd)
            self._fd = None

    def _grow(self, total: int) -> None:
        self.close()
        capacity = max(_GROWTH, -(-total // _GROWTH) * _GROWTH)
        fd = os.memfd_create("spark-pixels", os.MFD_CLOEXEC)
        os.ftruncate(fd, capacity)
        self._fd, self._map = fd, mmap.mmap(fd, capacity)

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self._map = None, None


class ParentPixels:
    """The parent's side: the child's current memory file, mapped read-only."""

    def __init__(self) -> None:
        self._map: mmap.mmap | None = None

    def read(self, conn: Any, shared: Any, sizes: Any) -> list[memoryview]:
        """Each image's pixel bytes, copied out of the shared file in one piece (receiving a
        new file from ``conn`` first when the header says the child made one); ``sizes`` are
        the reply's ``[width, height]`` of each image.

        Raises:
            SparkError: the ``shared`` entry or the sizes are malformed or out of range.
        """
        if not isinstance(shared, dict) or type(shared.get("bytes")) is not int or shared["bytes"] < 0:
            raise SparkError("malformed image reply: bad shared-memory entry")
        if shared.get("new") is True:
            fd = reduction.recv_handle(conn)
            try:
                fresh = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
            finally:
                os.close(fd)  # the mapping keeps the file alive
            self.close()
            self._map = fresh
        total = shared["bytes"]
        if self._map is None or total > len(self._map):
            raise SparkError("malformed image reply: pixels beyond the shared memory")
        return _per_image(self._map[:total], sizes)

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None


def _per_image(data: bytes, sizes: Any) -> list[memoryview]:
    """``data`` cut into each image's RGB bytes, back to back as the child wrote them."""
    if not isinstance(sizes, list):
        raise SparkError("malformed image reply: sizes do not match the images")
    view, parts, offset = memoryview(data), [], 0
    for size in sizes:
        ok = isinstance(size, list) and len(size) == 2 and all(type(n) is int and n >= 0 for n in size)
        if not ok:
            raise SparkError("malformed image reply: sizes do not match the images")
        n = size[0] * size[1] * 3
        parts.append(view[offset : offset + n])
        offset += n
    if offset != len(view):
        raise SparkError(f"malformed image reply: {len(view)} shared bytes for {offset} bytes of images")
    return parts
