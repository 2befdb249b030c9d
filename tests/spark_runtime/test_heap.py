"""The render process keeps its freed heap: steady renders stop faulting pages in."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from spark_runtime.heap import keep_freed_memory

ON_GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"

# A render's pattern at its simplest: a 20 MB buffer allocated, written and freed, again and
# again. glibc's defaults hand it back to the kernel each time (5,109 pages faulted in per
# cycle here); kept, the second cycle faults none. Direct malloc, not a render, so the count
# depends on the heap alone and not on what torch's allocator happens to do.
RENDERS = """
import ctypes
import resource
from spark_runtime.heap import keep_freed_memory
kept = keep_freed_memory()
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
def cycle(size=20 << 20):
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)
cycle()  # the heap takes the shape of the work
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
cycle()
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults_with_the_heap_kept() -> tuple[str, int]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    out = subprocess.run([sys.executable, "-c", RENDERS], env=env, capture_output=True, text=True, check=True)
    kept, count = out.stdout.split()
    return kept, int(count)


@pytest.mark.skipif(not ON_GLIBC, reason="the thresholds are glibc's")
def test_a_freed_buffer_is_reused_without_faulting_pages_in_once_the_heap_is_kept() -> None:
    kept, count = faults_with_the_heap_kept()
    assert kept == "True"
    assert count < 500


def test_keeping_the_heap_is_idempotent_and_reports_where_it_applies() -> None:
    assert keep_freed_memory() is ON_GLIBC
    assert keep_freed_memory() is ON_GLIBC
