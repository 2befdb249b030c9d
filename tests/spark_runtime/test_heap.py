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

RENDERS = """
import resource
import numpy as np
from spark_runtime.heap import keep_freed_memory
from spark_runtime.spark import build_generator
kept = keep_freed_memory()
generator = build_generator("imagery.cppn:CPPN", {})
populations = [generator.random(np.random.default_rng(seed), 8) for seed in range(3)]
def renders():
    for _ in range(3):
        for genomes in populations:
            generator.render_pixels(genomes, 128)
renders()  # the heap takes the shape of the work
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
renders()
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults_with_the_heap_kept() -> tuple[str, int]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    out = subprocess.run([sys.executable, "-c", RENDERS], env=env, capture_output=True, text=True, check=True)
    kept, count = out.stdout.split()
    return kept, int(count)


@pytest.mark.skipif(not ON_GLIBC, reason="the thresholds are glibc's")
def test_steady_renders_fault_no_pages_in_once_the_heap_is_kept() -> None:
    kept, count = faults_with_the_heap_kept()
    assert kept == "True"
    # Nine renders of 8 genomes at 128 px allocate and free megabytes each; with glibc's
    # default thresholds they faulted 1,100 to 12,400 pages in again over twelve runs, kept
    # 0 to 235 (Python's own object arenas come and go outside malloc).
    assert count < 500


def test_keeping_the_heap_is_idempotent_and_reports_where_it_applies() -> None:
    assert keep_freed_memory() is ON_GLIBC
    assert keep_freed_memory() is ON_GLIBC
