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
        self._fd: int | None = None
        self._map: mmap.mmap | None = None
        # A file made by the last ``write``, still to be handed over after its reply frame.
        self.handoff: int | None = None

    def write(self, pixels: Sequence[np.ndarray]) -> dict[str, Any]:
        """Copy ``pixels`` into the shared file, back to back; returns the ``shared`` entry
        of the reply header (``handoff`` is set when the file is new)."""
        total = sum(p.nbytes for p in pixels)
        if self._map is None or total > len(self._map):
            self.handoff = self._grow(total)
        assert self._map is not None
        offset = 0
        for p in pixels:
            target = np.frombuffer(self._map, np.uint8, count=p.nbytes, offset=offset)
            target.reshape(p.shape)[...] = p
            offset += p.nbytes
        return {"bytes": total, "new": self.handoff is not None}

    def hand_over(self, conn: Any) -> None:
        """Send a new file's descriptor to the parent (right after the frame that says so)."""
        if self.handoff is not None:
            reduction.send_handle(conn, self.handoff, os.getppid())
            self.handoff = None

    def _grow(self, total: int) -> int:
        self.close()
        self.handoff = None
        capacity = max(_GROWTH, -(-total // _GROWTH) * _GROWTH)
        fd = os.memfd_create("spark-pixels", os.MFD_CLOEXEC)
        os.ftruncate(fd, capacity)
        self._fd, self._map = fd, mmap.mmap(fd, capacity)
        return fd

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

    def read(self, conn: Any, shared: Any) -> bytes:
        """The reply's pixel bytes, copied out of the shared file (receiving a new file from
        ``conn`` first when the header says the child made one).

        Raises:
            SparkError: the header's ``shared`` entry is malformed or out of range.
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
        return self._map[:total]

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
