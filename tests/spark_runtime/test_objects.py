"""Object store: content addressing, idempotent atomic writes, path safety."""

from __future__ import annotations

import errno
import hashlib
import os
import time

import pytest

from spark_runtime.store import objects as objects_module
from spark_runtime.store.errors import StoreError
from spark_runtime.store.objects import ObjectStore
from tests.conftest import needs_syncfs


@pytest.fixture
def objects(tmp_path):
    return ObjectStore(tmp_path / "objects")


def _files(root):
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_put_get_round_trip_names_object_by_sha256(objects):
    data = b"\x89PNG fake image bytes"
    sha = objects.put(data)
    assert sha == hashlib.sha256(data).hexdigest()
    assert objects.get(sha) == data
    assert objects.path(sha) == objects.root / sha[:2] / sha[2:]
    assert objects.exists(sha)


def test_identical_bytes_are_stored_once(objects):
    first = objects.put(b"same")
    second = objects.put(bytearray(b"same"))
    other = objects.put(b"different")
    assert first == second != other
    assert len(_files(objects.root)) == 2
    assert sorted(sha for sha, _ in objects.iter_objects()) == sorted([first, other])


def test_put_again_refreshes_mtime_so_gc_grace_protects_it(objects):
    sha = objects.put(b"old object")
    old = time.time() - 7200
    os.utime(objects.path(sha), (old, old))
    objects.put(b"old object")
    assert objects.path(sha).stat().st_mtime > old + 3600


def test_failed_write_leaves_neither_object_nor_temp_file(objects, monkeypatch):
    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(StoreError, match=r"^cannot write objects to .*objects: disk full$"):
        objects.put(b"never lands")
    sha = hashlib.sha256(b"never lands").hexdigest()
    assert not objects.exists(sha)
    assert _files(objects.root) == []


def test_temp_files_of_dead_writers_are_ignored_then_swept(objects):
    sha = objects.put(b"real")
    stray = objects.path(sha).parent / ".tmp-deadbeef"
    stray.write_bytes(b"half written")
    assert [s for s, _ in objects.iter_objects()] == [sha]
    assert objects.sweep_temp(older_than_s=3600) == 0
    old = time.time() - 7200
    os.utime(stray, (old, old))
    assert objects.sweep_temp(older_than_s=3600) == 1
    assert not stray.exists()
    assert objects.get(sha) == b"real"


def test_delete_and_missing_object(objects):
    sha = objects.put(b"doomed")
    assert objects.delete(sha) is True
    assert objects.delete(sha) is False
    assert not objects.exists(sha)
    with pytest.raises(StoreError, match=f"object {sha} is missing"):
        objects.get(sha)


@pytest.mark.parametrize(
    "bad",
    [
        "../../etc/passwd",
        "ab/../../" + "0" * 55,
        "A" * 64,  # upper case: would alias a lower-case object on some file systems
        "0" * 63,
        "0" * 65,
        "g" * 64,
        "",
        None,
    ],
)
def test_object_ids_that_could_escape_the_folder_are_rejected(objects, bad):
    for call in (objects.path, objects.get, objects.exists, objects.delete):
        with pytest.raises(StoreError, match="not an object id"):
            call(bad)


def test_put_rejects_non_bytes(objects):
    with pytest.raises(StoreError, match="must be bytes"):
        objects.put("text is not bytes")


def test_put_many_stores_a_batch_once_each_and_leaves_no_temp_files(tmp_path) -> None:
    store = ObjectStore(tmp_path / "objects")
    blobs = [f"image {i}".encode() for i in range(20)] + [b"image 3"]
    shas = store.put_many(blobs)
    assert len(shas) == 21 and shas[3] == shas[20]
    assert all(store.get(sha) == blob for sha, blob in zip(shas, blobs, strict=True))
    assert store.put_many(blobs) == shas  # idempotent
    assert not [p for p in (tmp_path / "objects").rglob(".tmp-*")]
    assert sum(1 for _ in store.iter_objects()) == 20


@needs_syncfs
def test_staged_objects_are_invisible_until_published(tmp_path) -> None:
    store = ObjectStore(tmp_path / "objects")
    first = store.stage([b"image a", b"thumb a"])
    second = store.stage([b"image b"])
    assert not any(store.exists(sha) for sha in first.shas + second.shas)
    store.publish([first, second])
    assert [store.get(sha) for sha in first.shas + second.shas] == [b"image a", b"thumb a", b"image b"]
    assert not [p for p in (tmp_path / "objects").rglob(".tmp-*")]
    store.publish([first])  # publishing again has nothing left to do
    assert first.pending == []


def _failing_sync(fd: int) -> None:
    """A sync that meets a write error (EIO), as ``syncfs`` reports one."""
    raise OSError(errno.EIO, os.strerror(errno.EIO))


def _same_folder(fd: int, folder) -> bool:
    return os.path.samestat(os.fstat(fd), os.stat(folder))


@needs_syncfs
def test_settling_syncs_staged_bytes_without_making_them_visible(tmp_path, monkeypatch) -> None:
    store = ObjectStore(tmp_path / "objects")
    staged = store.stage([b"rendered early"])
    synced = []
    monkeypatch.setattr(objects_module, "_SYNCFS", synced.append)
    store.settle()
    assert not store.exists(staged.shas[0])
    store.publish([staged])  # still to be published: the rename and its sync
    assert store.get(staged.shas[0]) == b"rendered early"
    # Every sync through the one descriptor the store opened on its folder, so that each
    # sees the write errors on the file system since then, whoever met them first.
    assert len(synced) == 3 and len(set(synced)) == 1 and _same_folder(synced[0], tmp_path / "objects")


@needs_syncfs
def test_a_write_error_a_sync_meets_is_one_line_and_publishes_nothing(tmp_path, monkeypatch) -> None:
    store = ObjectStore(tmp_path / "objects")
    staged = store.stage([b"never durable"])

    monkeypatch.setattr(objects_module, "_SYNCFS", _failing_sync)
    for call in (store.settle, lambda: store.publish([staged])):
        with pytest.raises(StoreError, match=r"^cannot write objects to .*objects: Input/output error$"):
            call()
    assert not store.exists(staged.shas[0])
    assert _files(tmp_path / "objects") == []  # publish removed the temp file it could not make durable


@needs_syncfs
def test_a_batch_staged_before_a_reported_write_error_is_never_published(tmp_path, monkeypatch) -> None:
    # The error is reported once, to the sync that meets it (another session's, say): the
    # syncs after it succeed, but the bytes lost may be this batch's.
    store = ObjectStore(tmp_path / "objects")
    before = store.stage([b"staged before the error"])
    real = objects_module._SYNCFS

    monkeypatch.setattr(objects_module, "_SYNCFS", _failing_sync)
    with pytest.raises(StoreError, match="Input/output error"):
        store.settle()
    monkeypatch.setattr(objects_module, "_SYNCFS", real)
    with pytest.raises(StoreError, match=r"^cannot write objects to .*: a write error was reported since"):
        store.publish([before])
    assert not store.exists(before.shas[0]) and _files(tmp_path / "objects") == []
    after = store.stage([b"staged after it"])
    store.publish([after])
    assert store.get(after.shas[0]) == b"staged after it"


def test_settling_a_remote_store_has_nothing_to_sync(monkeypatch) -> None:
    synced = []
    monkeypatch.setattr(objects_module, "_SYNCFS", synced.append)
    ObjectStore("memory://settle-test/objects").settle()
    assert synced == []


@needs_syncfs
def test_discarded_stage_leaves_nothing(tmp_path) -> None:
    store = ObjectStore(tmp_path / "objects")
    staged = store.stage([b"never committed", b"also not"])
    store.discard([staged])
    assert _files(tmp_path / "objects") == []
    assert not any(store.exists(sha) for sha in staged.shas)


def test_staging_a_stored_object_refreshes_it_and_writes_nothing(tmp_path) -> None:
    store = ObjectStore(tmp_path / "objects")
    sha = store.put(b"kept")
    os.utime(store.path(sha), (1, 1))
    staged = store.stage([b"kept"])
    assert staged.shas == [sha] and staged.pending == []
    assert store.path(sha).stat().st_mtime > 1


def test_staged_objects_get_readable_permissions(tmp_path) -> None:
    store = ObjectStore(tmp_path / "objects")
    staged = store.stage([b"shared with the ui"])
    store.publish([staged])
    umask = os.umask(0)
    os.umask(umask)
    # 0644 less the umask, as a plain open() makes it (mkstemp's 0600 would hide objects
    # from a UI running as another user on a shared store).
    assert store.path(staged.shas[0]).stat().st_mode & 0o777 == 0o644 & ~umask
