"""One BLAS thread for the agent's small matrix work.

The preference model multiplies matrices of a few thousand rows by ~100 columns. For sizes
like that, OpenBLAS's worker threads cost more to wake and synchronise than they save, and on
a busy machine (the renderer, a browser, other processes) a fit slowed down four-fold in
measurements. ``single_blas_thread()`` pins BLAS to one thread for the duration of a block and
puts the old setting back.

It calls the thread setters of the OpenBLAS that numpy wheels bundle, found next to numpy
once, on first use. Where there is none (another BLAS, an unusual build), it does nothing:
the result is the same, only slower.
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

# (get, set) symbol names: numpy's bundled scipy-openblas (ILP64 and LP64), plain OpenBLAS.
_SYMBOLS = (
    ("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
    ("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
    ("openblas_get_num_threads", "openblas_set_num_threads"),
)
_setters: list[tuple[Callable[[], int], Callable[[int], None]]] | None = None


def _bundled_openblas() -> list[tuple[Callable[[], int], Callable[[int], None]]]:
    found = []
    libs = Path(np.__file__).resolve().parent.parent / "numpy.libs"
    for path in sorted(libs.glob("lib*openblas*.so*")) + sorted(libs.glob("*openblas*.dylib")):
        try:
            lib = ctypes.CDLL(str(path))  # numpy already loaded it: this is the same handle
        except OSError:
            continue
        for get_name, set_name in _SYMBOLS:
            get, put = getattr(lib, get_name, None), getattr(lib, set_name, None)
            if get is not None and put is not None:
                get.restype = ctypes.c_int
                put.argtypes = [ctypes.c_int]
                found.append((get, put))
                break
    return found


@contextlib.contextmanager
def single_blas_thread() -> Iterator[None]:
    """Run the block with one BLAS thread, restoring the previous count afterwards."""
    global _setters
    if _setters is None:
        _setters = _bundled_openblas()
    saved = [(get(), put) for get, put in _setters]
    for _, put in saved:
        put(1)
    try:
        yield
    finally:
        for count, put in saved:
            put(count)
