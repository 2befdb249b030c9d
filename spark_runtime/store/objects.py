"""Content-addressed object files: ``objects/ab/cdef...`` named by the sha256 of their bytes.

Writes are atomic (temp file in the target folder, fsync, ``os.replace``, fsync the folder), so
a reader sees a whole object or none. Identical bytes are stored once. The interface is kept
small on purpose: a later change moves it behind fsspec.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from spark_runtime.store.errors import StoreError

_SHA_RE = re.compile(r"[0-9a-f]{64}")
_TEMP_PREFIX = ".tmp-"


def check_sha(sha: str) -> str:
    """Return ``sha`` if it is 64 lower-case hex digits; anything else could escape the folder."""
    if not isinstance(sha, str) or not _SHA_RE.fullmatch(sha):
        raise StoreError(f"not an object id (64 lower-case hex digits): {str(sha)[:80]!r}")
    return sha


def _fsync_dir(path: Path) -> None:
    # A rename is durable only once its folder entry is; Windows cannot open folders, skip there.
    if os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ObjectStore:
    """Immutable blobs on a local disk, addressed by sha256.

    Args:
        root_dir: the ``objects`` folder; created if missing.
    """

    def __init__(self, root_dir: str | Path) -> None:
        self.root = Path(root_dir)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, sha: str) -> Path:
        """Where the object ``sha`` lives (whether or not it exists)."""
        check_sha(sha)
        return self.root / sha[:2] / sha[2:]

    def exists(self, sha: str) -> bool:
        return self.path(sha).is_file()

    def put(self, data: bytes) -> str:
        """Store ``data`` and return its sha256 hex; storing the same bytes again is a no-op.

        An existing object gets its mtime refreshed so that a collection running with a grace
        period does not remove it between this call and the commit that references it.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise StoreError(f"object data must be bytes, got {type(data).__name__}")
        data = bytes(data)
        sha = hashlib.sha256(data).hexdigest()
        final = self.path(sha)
        if final.is_file():
            with contextlib.suppress(FileNotFoundError):
                os.utime(final)
            if final.is_file():
                return sha
        shard = final.parent
        if not shard.is_dir():
            shard.mkdir(exist_ok=True)
            _fsync_dir(self.root)
        fd, tmp = tempfile.mkstemp(prefix=_TEMP_PREFIX, dir=shard)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        _fsync_dir(shard)
        return sha

    def get(self, sha: str) -> bytes:
        """The bytes of object ``sha``; StoreError if it is missing."""
        try:
            return self.path(sha).read_bytes()
        except FileNotFoundError:
            raise StoreError(f"object {sha} is missing") from None

    def delete(self, sha: str) -> bool:
        """Remove object ``sha``; returns whether it existed."""
        try:
            self.path(sha).unlink()
        except FileNotFoundError:
            return False
        return True

    def iter_objects(self) -> Iterator[tuple[str, float]]:
        """Yield ``(sha, mtime)`` of every stored object; temp files and strays are skipped."""
        for shard in self._shards():
            with os.scandir(shard) as entries:
                for entry in entries:
                    sha = shard.name + entry.name
                    if _SHA_RE.fullmatch(sha) and entry.is_file(follow_symlinks=False):
                        with contextlib.suppress(FileNotFoundError):
                            yield sha, entry.stat(follow_symlinks=False).st_mtime

    def sweep_temp(self, older_than_s: float) -> int:
        """Remove temp files left by writers that died mid-write; returns how many."""
        cutoff = time.time() - older_than_s
        removed = 0
        for shard in self._shards():
            for tmp in shard.glob(_TEMP_PREFIX + "*"):
                with contextlib.suppress(FileNotFoundError):
                    if tmp.stat().st_mtime <= cutoff:
                        tmp.unlink()
                        removed += 1
        return removed

    def _shards(self) -> Iterator[Path]:
        with os.scandir(self.root) as entries:
            shards = [
                Path(e.path)
                for e in entries
                if len(e.name) == 2 and e.is_dir(follow_symlinks=False) and _is_hex(e.name)
            ]
        yield from sorted(shards)


def _is_hex(name: str) -> bool:
    return all(c in "0123456789abcdef" for c in name)
