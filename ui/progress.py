"""A small text progress bar on stderr for headless runs: redrawn in place on a TTY, else one
line per tenth of the way (and one at the end), so logs stay readable in CI."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    def __init__(self, label: str, total: int, stream: TextIO | None = None, width: int = 30) -> None:
        self.label, self.total, self.width = label, max(1, total), width
        self.stream = stream or sys.stderr
        self.start = time.perf_counter()
        self.live = self.stream.isatty()

    def __call__(self, done: int, total: int | None = None) -> None:
        total = total or self.total
        filled = int(self.width * done / max(1, total))
        elapsed = time.perf_counter() - self.start
        line = f"{self.label} [{'#' * filled}{'.' * (self.width - filled)}] {done}/{total} {elapsed:5.1f}s"
        if self.live:
            self.stream.write("\r" + line)
            if done >= total:
                self.stream.write("\n")
        elif done >= total or done * 10 // total != (done - 1) * 10 // total:
            self.stream.write(line + "\n")
        self.stream.flush()
