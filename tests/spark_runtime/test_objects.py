"""Object store: content addressing, idempotent atomic writes, path safety."""

from __future__ import annotations

import hashlib
import os
import time

import pytest

from spark_runtime.store.errors import StoreError
from spark_runtime.store.objects import ObjectStore


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
    with pytest.raises(OSError, match="disk full"):
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
    from spark_runtime.store.objects import ObjectStore

    store = ObjectStore(tmp_path / "objects")
    blobs = [f"image {i}".encode() for i in range(20)] + [b"image 3"]
    shas = store.put_many(blobs)
    assert len(shas) == 21 and shas[3] == shas[20]
    assert all(store.get(sha) == blob for sha, blob in zip(shas, blobs, strict=True))
    assert store.put_many(blobs) == shas  # idempotent
    assert not [p for p in (tmp_path / "objects").rglob(".tmp-*")]
    assert sum(1 for _ in store.iter_objects()) == 20
