"""The object store behind an fsspec URL (``memory://`` here; S3 or a shared mount in a
cluster): same content addressing and API as the local folder, no local paths."""

from __future__ import annotations

import hashlib
import time
import uuid

import fsspec
import pytest

from spark_runtime.store.errors import StoreError
from spark_runtime.store.objects import ObjectStore


@pytest.fixture
def remote():
    url = f"memory://objects-{uuid.uuid4().hex[:8]}"
    yield ObjectStore(url)
    fs, path = fsspec.core.url_to_fs(url)
    fs.rm(path, recursive=True)


def test_put_get_round_trip_by_sha256(remote):
    sha = remote.put(b"remote bytes")
    assert sha == hashlib.sha256(b"remote bytes").hexdigest()
    assert remote.get(sha) == b"remote bytes"
    assert remote.exists(sha)
    assert remote.size(sha) == len(b"remote bytes")
    assert not remote.is_local
    assert remote.url.startswith("memory://objects-")


def test_identical_bytes_are_stored_once_and_listed(remote):
    a = remote.put(b"same")
    assert remote.put(bytearray(b"same")) == a
    b = remote.put(b"other")
    listed = dict(remote.iter_objects())
    assert sorted(listed) == sorted([a, b])
    assert all(abs(mtime - time.time()) < 60 for mtime in listed.values())


def test_delete_missing_and_bad_ids(remote):
    sha = remote.put(b"doomed")
    assert remote.delete(sha) is True
    assert remote.delete(sha) is False
    assert not remote.exists(sha)
    with pytest.raises(StoreError, match=f"object {sha} is missing"):
        remote.get(sha)
    with pytest.raises(StoreError, match="not an object id"):
        remote.get("../../etc/passwd")


def test_path_is_refused_with_a_clear_message(remote):
    sha = remote.put(b"thumb")
    with pytest.raises(StoreError, match="not on a local disk: read them with get"):
        remote.path(sha)


def test_stale_temp_files_are_swept_and_never_listed(remote):
    sha = remote.put(b"real")
    fs, base = fsspec.core.url_to_fs(remote.url)
    fs.pipe_file(f"{base}/{sha[:2]}/.tmp-deadbeef", b"half written")
    assert [s for s, _ in remote.iter_objects()] == [sha]
    assert remote.sweep_temp(older_than_s=3600) == 0
    assert remote.sweep_temp(older_than_s=-1) == 1
    assert remote.get(sha) == b"real"


def test_file_urls_and_plain_paths_are_local(tmp_path):
    by_url = ObjectStore(f"file://{tmp_path}/objects")
    sha = by_url.put(b"x")
    assert by_url.is_local
    assert by_url.path(sha).read_bytes() == b"x"
    assert ObjectStore(str(tmp_path / "objects")).get(sha) == b"x"


@pytest.mark.parametrize("where", ["local", "memory"])
def test_put_many_stores_every_blob_and_keeps_the_order(tmp_path, where):
    root = tmp_path / "objects" if where == "local" else f"memory://many-{uuid.uuid4().hex[:8]}"
    objects = ObjectStore(root)
    blobs = [f"image {i}".encode() for i in range(20)] + [b"image 3"]
    shas = objects.put_many(blobs)
    assert shas == [hashlib.sha256(b).hexdigest() for b in blobs]
    assert [objects.get(sha) for sha in shas] == blobs
    assert len(dict(objects.iter_objects())) == 20
    with pytest.raises(StoreError, match="object data must be bytes, got str"):
        objects.put_many([b"ok", "not bytes"])
