"""Content-addressed object files: ``objects/ab/cdef...`` named by the sha256 of their bytes.

The root is a local folder (the default, and the fast path: the UI serves thumbnails straight
from ``path()``) or any fsspec URL (``memory://`` in tests, ``s3://bucket/objects`` or a
shared mount for a cluster). Local writes are atomic (temp file in the target folder, fsync,
``os.replace``, fsync the folder); a batch of them (``stage``, then ``publish``) shares two
``syncfs`` calls instead of two fsyncs an object. Remote writes go to a temp name and are
moved into place, except on object stores whose single writes are atomic anyway. A reader
sees a whole object or none. Identical bytes are stored once.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import itertools
import os
import re
import secrets
import sys
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from spark_runtime.store.errors import StoreError

_SHA_RE = re.compile(r"[0-9a-f]{64}")
_TEMP_PREFIX = ".tmp-"
PUT_WORKERS = 8
# Object stores where one write lands whole or not at all: no temp name and move needed.
_ATOMIC_PUT = {"memory", "s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"}


def check_sha(sha: str) -> str:
    """Return ``sha`` if it is 64 lower-case hex digits; anything else could escape the folder."""
    if not isinstance(sha, str) or not _SHA_RE.fullmatch(sha):
        raise StoreError(f"not an object id (64 lower-case hex digits): {str(sha)[:80]!r}")
    return sha


@dataclass
class StagedObjects:
    """Blobs written under temp names by ``ObjectStore.stage``: their sha256s in order, and
    the (temp file, final path) renames ``publish`` still has to make."""

    shas: list[str]
    pending: list[tuple[str, str]] = field(default_factory=list)
    # The store's count of write errors its syncs had reported when these were staged.
    errors_before: int = 0


# Random per process (processes on several machines may share the folder), then a counter.
_TEMP_TOKEN = secrets.token_hex(6)
_temp_names = itertools.count()


def _write_temp(folder: str, data: bytes, sync: bool = False) -> str:
    """Write ``data`` to a new temp file in ``folder`` (created if missing); returns its path.

    Cheaper than ``tempfile.mkstemp``: the name is unique from a random per-process token
    and a counter, so one exclusive create is enough. ``sync`` fsyncs the file before it is
    closed.
    """
    name = f"{folder}{os.sep}{_TEMP_PREFIX}{_TEMP_TOKEN}-{next(_temp_names)}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(name, flags, 0o644)
    except FileNotFoundError:
        with contextlib.suppress(FileExistsError):
            os.mkdir(folder)
        fd = os.open(name, flags, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if sync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
        raise
    os.close(fd)
    return name


def _kept(final: str) -> bool:
    """Whether object file ``final`` is already there; if so its mtime is refreshed, so that
    a collection running with a grace period leaves it to the commit about to reference it."""
    if not os.path.isfile(final):
        return False
    with contextlib.suppress(FileNotFoundError):
        os.utime(final)
    return os.path.isfile(final)  # a collection may have taken it just before the refresh


def _fsync_dir(path: Path) -> None:
    # A rename is durable only once its folder entry is; Windows cannot open folders, skip there.
    if os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _write_errors(where: str) -> Iterator[None]:
    """A failed write (disk full, an I/O error, a read-only folder) as one line for the user."""
    try:
        yield
    except OSError as exc:
        raise StoreError(f"cannot write objects to {where}: {exc.strerror or exc}") from None


def _find_syncfs() -> Any:
    """``syncfs(fd)``: flush the file system that ``fd`` is on, in one call (Linux); None
    where unavailable."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        call = libc.syncfs
    except (OSError, AttributeError):
        return None

    def syncfs(fd: int) -> None:
        if call(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    return syncfs


_SYNCFS = _find_syncfs()


@contextlib.contextmanager
def _open_errors(root: str | Path) -> Iterator[None]:
    """Whatever opening an object store raises, as one line: a file in the way, no such
    protocol, no driver or server, a URL missing its host (fsspec raises all sorts)."""
    try:
        yield
    except StoreError:
        raise
    except Exception as exc:
        text = str(exc)
        reason = getattr(exc, "strerror", None) or (text.splitlines()[0] if text else type(exc).__name__)
        raise StoreError(f"cannot open object store {str(root)!r}: {reason}") from None


def _local(root: str | Path) -> Path | None:
    if isinstance(root, Path):
        return root
    if root.startswith("file://"):
        return Path(root.removeprefix("file://"))
    return None if "://" in root else Path(root)


class ObjectStore:
    """Immutable blobs addressed by sha256, in a local folder or behind an fsspec URL.

    Args:
        root: the ``objects`` folder, or an fsspec URL such as ``memory://objects``;
            created if missing.
        storage_options: passed to fsspec for a URL root (credentials, endpoints).
    """

    def __init__(self, root: str | Path, storage_options: dict[str, Any] | None = None) -> None:
        with _open_errors(root):
            self._open(root, storage_options)

    @staticmethod
    def check(root: str | Path, storage_options: dict[str, Any] | None = None) -> None:
        """Refuse, creating nothing, a root that opening would fail on: a file where a folder
        should be, an unknown protocol, a filesystem that does not start (``StoreError``)."""
        with _open_errors(root):
            local = _local(root)
            if local is None:
                import fsspec

                fsspec.core.url_to_fs(str(root), **(storage_options or {}))
                return
            for folder in (local, *local.absolute().parents):
                if folder.exists():
                    if not folder.is_dir():
                        code = errno.EEXIST if folder == local else errno.ENOTDIR
                        raise OSError(code, os.strerror(code))
                    return

    def _open(self, root: str | Path, storage_options: dict[str, Any] | None) -> None:
        local = _local(root)
        self._fs: Any | None = None
        if local is not None:
            self.root: Path | str = local
            self._root_text = str(local)
            self.url = local.absolute().as_uri()
            local.mkdir(parents=True, exist_ok=True)
            if _SYNCFS is not None:
                # Every sync goes through this one descriptor, open as long as the store (closed
                # when it is collected). Since Linux 5.8 a sync reports each write error on the
                # file system once per open descriptor: one opened for each sync would miss an
                # error that another sync, this store's or another process's, reported first.
                # An error one sync reports is counted, so that a batch staged before it, whose
                # bytes may be what was lost, is never published by a sync that sees nothing.
                self._sync_fd = os.open(local, os.O_RDONLY)
                weakref.finalize(self, os.close, self._sync_fd)
                self._sync_lock = threading.Lock()
                self._sync_errors = 0
            return
        import fsspec

        self._fs, self._base = fsspec.core.url_to_fs(str(root), **(storage_options or {}))
        self.root = self.url = str(root)
        self._base = self._base.rstrip("/")
        self._fs.makedirs(self._base, exist_ok=True)
        protocols = self._fs.protocol
        protocols = (protocols,) if isinstance(protocols, str) else protocols
        self._atomic_put = bool(_ATOMIC_PUT.intersection(protocols))

    @property
    def is_local(self) -> bool:
        """Whether objects are files on this machine (``path()`` works)."""
        return self._fs is None

    def path(self, sha: str) -> Path:
        """Where the object ``sha`` lives on the local disk (whether or not it exists).

        Raises:
            StoreError: the store is not local (use ``get``).
        """
        check_sha(sha)
        if self._fs is not None:
            raise StoreError(f"objects at {self.url} are not on a local disk: read them with get()")
        assert isinstance(self.root, Path)
        return self.root / sha[:2] / sha[2:]

    def _key(self, sha: str) -> str:
        check_sha(sha)
        return f"{self._base}/{sha[:2]}/{sha[2:]}"

    def _local_file(self, sha: str) -> tuple[str, str]:
        """The shard folder and file of object ``sha`` on the local disk, as strings: a commit
        checks every image it references, and Path objects cost more than the system calls."""
        check_sha(sha)
        folder = f"{self._root_text}{os.sep}{sha[:2]}"
        return folder, f"{folder}{os.sep}{sha[2:]}"

    def exists(self, sha: str) -> bool:
        if self._fs is None:
            return os.path.isfile(self._local_file(sha)[1])
        return bool(self._fs.isfile(self._key(sha)))

    def size(self, sha: str) -> int:
        """Size in bytes of object ``sha``; StoreError if it is missing."""
        try:
            if self._fs is None:
                return self.path(sha).stat().st_size
            return int(self._fs.size(self._key(sha)))
        except FileNotFoundError:
            raise StoreError(f"object {sha} is missing") from None

    def put(self, data: bytes) -> str:
        """Store ``data`` and return its sha256 hex; storing the same bytes again is a no-op.

        An existing object gets its mtime refreshed so that a collection running with a grace
        period does not remove it between this call and the commit that references it.
        """
        data = self._bytes(data)
        sha = hashlib.sha256(data).hexdigest()
        with _write_errors(str(self.root)):
            self._put(sha, data)
        return sha

    def _put(self, sha: str, data: bytes) -> None:
        """Store ``data``, whose sha256 hex is ``sha``."""
        if self._fs is None:
            self._put_local(sha, data)
        else:
            # Rewriting an existing object is the portable way to refresh its mtime.
            self._put_remote(sha, data)

    def put_many(self, blobs: Sequence[bytes]) -> list[str]:
        """``put`` each blob, as one batch (``stage`` then ``publish``); returns their sha256s
        in order."""
        staged = self.stage(blobs)
        self.publish([staged])
        return staged.shas

    def stage(self, blobs: Sequence[bytes]) -> StagedObjects:
        """Write blobs under temporary names: neither durable nor visible until ``publish``.

        Several writer threads stage their batches and one ``publish`` makes them all durable
        with two ``syncfs`` calls: every temp file is written, one sync makes their bytes
        durable, all are renamed into place, and a second sync makes the names durable. A
        crash at any point leaves whole objects or stray temp files (swept by ``gc``), never
        a torn object. Where that path does not apply (no ``syncfs``, a remote store) the
        blobs are stored at once and ``publish`` has nothing left to do.
        """
        blobs = [self._bytes(b) for b in blobs]
        shas = [hashlib.sha256(b).hexdigest() for b in blobs]
        with _write_errors(str(self.root)):
            return self._stage(shas, blobs)

    def _stage(self, shas: list[str], blobs: list[bytes]) -> StagedObjects:
        if self._fs is not None or _SYNCFS is None:
            if len(blobs) <= 1:
                for sha, data in zip(shas, blobs, strict=True):
                    self._put(sha, data)
            else:
                with ThreadPoolExecutor(min(PUT_WORKERS, len(blobs)), thread_name_prefix="put") as pool:
                    list(pool.map(self._put, shas, blobs))
            return StagedObjects(shas, [])
        pending: list[tuple[str, str]] = []
        errors_before = self._sync_errors
        try:
            for sha, data in dict(zip(shas, blobs, strict=True)).items():
                folder, final = self._local_file(sha)
                if not _kept(final):
                    pending.append((_write_temp(folder, data), final))
        except BaseException:
            self.discard([StagedObjects(shas, pending)])
            raise
        return StagedObjects(shas, pending, errors_before)

    def publish(self, batches: Sequence[StagedObjects]) -> None:
        """Make staged objects durable and visible (two file-system syncs in all)."""
        pending = [entry for batch in batches for entry in batch.pending]
        if not pending:
            return
        assert isinstance(self.root, Path) and _SYNCFS is not None
        try:
            self._sync()
            if any(batch.errors_before != self._sync_errors for batch in batches if batch.pending):
                raise StoreError(
                    f"cannot write objects to {self.root}: a write error was reported since these were written"
                )
            with _write_errors(str(self.root)):
                while pending:
                    tmp, final = pending[-1]
                    os.replace(tmp, final)
                    pending.pop()
            self._sync()
        finally:
            for tmp, _ in pending:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
            for batch in batches:
                batch.pending.clear()

    def settle(self) -> None:
        """Make what is staged so far durable ahead of ``publish`` (whose first sync then
        has less left to write); nothing becomes visible. A no-op where staging stores at once.

        Raises:
            StoreError: a write on the file system failed; what is staged must not be published.
        """
        if self._fs is None and _SYNCFS is not None:
            self._sync()

    def _sync(self) -> None:
        """One ``syncfs`` through the store's descriptor; an error it reports is counted."""
        with self._sync_lock, _write_errors(str(self.root)):
            try:
                _SYNCFS(self._sync_fd)
            except OSError:
                self._sync_errors += 1
                raise

    @staticmethod
    def discard(batches: Sequence[StagedObjects]) -> None:
        """Remove the temp files of staged objects that will not be published."""
        for batch in batches:
            for tmp, _ in batch.pending:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
            batch.pending.clear()

    @staticmethod
    def _bytes(data: Any) -> bytes:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise StoreError(f"object data must be bytes, got {type(data).__name__}")
        return bytes(data)

    def _put_local(self, sha: str, data: bytes) -> None:
        folder, final = self._local_file(sha)
        if _kept(final):
            return
        shard = Path(folder)
        if not shard.is_dir():
            shard.mkdir(exist_ok=True)
            _fsync_dir(shard.parent)
        tmp = _write_temp(folder, data, sync=True)
        try:
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        _fsync_dir(shard)

    def _put_remote(self, sha: str, data: bytes) -> None:
        assert self._fs is not None
        key = self._key(sha)
        if self._atomic_put:
            self._fs.pipe_file(key, data)
            return
        tmp = f"{self._base}/{sha[:2]}/{_TEMP_PREFIX}{secrets.token_hex(8)}"
        try:
            self._fs.pipe_file(tmp, data)
            self._fs.mv(tmp, key)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                self._fs.rm_file(tmp)
            raise

    def get(self, sha: str) -> bytes:
        """The bytes of object ``sha``; StoreError if it is missing."""
        try:
            if self._fs is None:
                return self.path(sha).read_bytes()
            return bytes(self._fs.cat_file(self._key(sha)))
        except FileNotFoundError:
            raise StoreError(f"object {sha} is missing") from None

    def delete(self, sha: str) -> bool:
        """Remove object ``sha``; returns whether it existed."""
        try:
            if self._fs is None:
                self.path(sha).unlink()
            else:
                self._fs.rm_file(self._key(sha))
        except FileNotFoundError:
            return False
        return True

    def iter_objects(self) -> Iterator[tuple[str, float]]:
        """Yield ``(sha, mtime)`` of every stored object; temp files and strays are skipped."""
        if self._fs is not None:
            for name, mtime in self._remote_files():
                sha = "".join(name.split("/")[-2:])
                if _SHA_RE.fullmatch(sha):
                    yield sha, mtime
            return
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
        if self._fs is not None:
            for name, mtime in self._remote_files():
                if name.rsplit("/", 1)[-1].startswith(_TEMP_PREFIX) and mtime <= cutoff:
                    with contextlib.suppress(FileNotFoundError):
                        self._fs.rm_file(name)
                        removed += 1
            return removed
        for shard in self._shards():
            for tmp in shard.glob(_TEMP_PREFIX + "*"):
                with contextlib.suppress(FileNotFoundError):
                    if tmp.stat().st_mtime <= cutoff:
                        tmp.unlink()
                        removed += 1
        return removed

    def _remote_files(self) -> Iterator[tuple[str, float]]:
        assert self._fs is not None
        for name, info in sorted(self._fs.find(self._base, detail=True).items()):
            if info.get("type", "file") == "file" and len(name.split("/")[-2]) == 2:
                yield name, _mtime(info)

    def _shards(self) -> Iterator[Path]:
        assert isinstance(self.root, Path)
        with os.scandir(self.root) as entries:
            shards = [
                Path(e.path)
                for e in entries
                if len(e.name) == 2 and e.is_dir(follow_symlinks=False) and _is_hex(e.name)
            ]
        yield from sorted(shards)


def _mtime(info: dict[str, Any]) -> float:
    """Modification time from an fsspec listing, whichever key and type the backend uses."""
    for key in ("mtime", "LastModified", "last_modified", "updated", "modified", "created"):
        value = info.get(key)
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    # Unknown age: treat as brand new, so a collection's grace period keeps it.
    return time.time()


def _is_hex(name: str) -> bool:
    return all(c in "0123456789abcdef" for c in name)
