"""The C heap of a process that renders: freed buffers kept for the next render.

A CPPN render allocates and frees the same few-megabyte tensors hundreds of times. glibc
serves blocks that large with ``mmap`` until it has seen them freed, and hands the top of the
heap back to the kernel whenever more than twice that lies free there; the next render then
faults every page in again. With the renderer's loop dispatched from Python, that was about
7,800 page faults a 16-genome 256 px render on a 2-core VM, and renders took 1.3x to 1.4x as
long as with the memory kept (``bench/heap.py``). The compiled kernel allocates differently:
at that size neither heap faults any more (0.93x, within noise), so this now guards other
allocation patterns (other sizes, other generators) rather than that one. Fixing the two
thresholds keeps it: blocks under 32 MB (glibc's ceiling) come from the heap, and up to
64 MB of free heap stays mapped. Memory a render never touches again is not lost, only kept
for the process's next render.

The process on the other side of a process or Ray spark has the same pattern: each reply's
pixels (3 MB for 16 images at 256 px) are copied into a fresh buffer. Depending on the heap's
history, glibc's defaults faulted about 1,700 pages in per reply: in the reply-transport part
of ``bench/sparks.py`` before spark handles kept the heap, 5-6 ms a process spark's reply
against 2.0 ms kept (2-core VM), and a Ray spark's 11 ms against 7 ms (timed once, in a
scratch script). In a CPPN run the parent's heap settled by itself after two replies. Spark
handles keep the heap there too, so it never depends on that.
"""

from __future__ import annotations

import ctypes
import platform
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # the largest glibc accepts on 64-bit
TRIM_THRESHOLD = 64 << 20

_kept = False


def keep_freed_memory() -> bool:
    """Set this process's thresholds (glibc on Linux; elsewhere nothing); True once set.

    Process-wide and idempotent: sparks call it as they load their generator, and process and
    Ray spark handles as they are made.
    """
    global _kept
    if _kept:
        return True
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _kept = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    return _kept
