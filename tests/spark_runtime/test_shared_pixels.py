"""Image replies through shared memory: one copy on each side, a new file only when a reply
outgrows the last, and a malformed entry refused in one line."""

from __future__ import annotations

import multiprocessing
import os

import numpy as np
import pytest

from spark_runtime import shared_pixels
from spark_runtime.process_spark import pack_images, unpack, unpack_images
from spark_runtime.shared_pixels import ChildPixels, ParentPixels
from spark_runtime.spark import SparkError

pytestmark = pytest.mark.skipif(not shared_pixels.supported(), reason="memfd is Linux only")


@pytest.fixture
def channel():
    """Both ends of a connection (in one process) with a child and a parent buffer."""
    child_end, parent_end = multiprocessing.Pipe(duplex=True)
    child, parent = ChildPixels(), ParentPixels()
    yield child, child_end, parent, parent_end
    child.close()
    parent.close()
    child_end.close()
    parent_end.close()


def _send(child, child_end, parent, parent_end, pixels):
    """What the child and ``ProcessSpark._exchange`` do with one reply."""
    child_end.send_bytes(pack_images(pixels, child))
    child.hand_over(child_end)
    header, blobs = unpack(parent_end.recv_bytes())
    assert blobs == []  # nothing but the sizes went through the socket
    return header, unpack_images(header, parent.read(parent_end, header["shared"], header["sizes"]))


def _pixels(n: int, size: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_replies_cross_exactly_and_the_file_is_reused_until_outgrown(channel):
    small, big, smaller = _pixels(3, 64, 0), _pixels(8, 256, 1), _pixels(2, 32, 2)
    seen = []
    for pixels in (small, big, smaller):
        header, images = _send(*channel, pixels)
        seen.append(header["shared"]["new"])
        assert [np.asarray(im).tobytes() for im in images] == [p.tobytes() for p in pixels]
    # 1.5 MiB of pixels outgrow the first MiB; the smaller reply after it fits.
    assert seen == [True, True, False]


def _open_memory_files() -> list[str]:
    """This process's descriptors on a spark's shared-memory file."""
    links = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            links.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue
    return [link for link in links if "spark-pixels" in link]


def test_the_child_keeps_no_descriptor_once_the_parent_has_the_file(channel):
    # Python's mmap keeps a duplicate of the descriptor it maps: each side's mapping holds one.
    child, child_end, parent, parent_end = channel
    child_end.send_bytes(pack_images(_pixels(2, 16, 5), child))
    assert len(_open_memory_files()) == 2  # the child's own and its mapping's
    child.hand_over(child_end)
    assert child._fd is None and len(_open_memory_files()) == 1  # the message carries its own
    header, _ = unpack(parent_end.recv_bytes())
    images = unpack_images(header, parent.read(parent_end, header["shared"], header["sizes"]))
    assert len(images) == 2 and len(_open_memory_files()) == 2  # and now the parent's mapping
    # The file is still there for the child to write the next reply into.
    pixels = _pixels(2, 16, 6)
    header, images = _send(*channel, pixels)
    assert header["shared"]["new"] is False
    assert [np.asarray(im).tobytes() for im in images] == [p.tobytes() for p in pixels]


def test_images_stay_valid_after_the_child_overwrites_the_file(channel):
    first = _pixels(2, 16, 3)
    _, images = _send(*channel, first)
    _send(*channel, _pixels(2, 16, 4))
    assert [np.asarray(im).tobytes() for im in images] == [p.tobytes() for p in first]


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"bytes": "12"}, "bad shared-memory entry"),
        ({"bytes": -1}, "bad shared-memory entry"),
        ([], "bad shared-memory entry"),
        ({"bytes": 1 << 30, "new": False}, "pixels beyond the shared memory"),
    ],
)
def test_malformed_shared_entries_are_refused_in_one_line(channel, entry, message):
    child, child_end, parent, parent_end = channel
    _send(child, child_end, parent, parent_end, _pixels(1, 8, 5))
    with pytest.raises(SparkError, match=message):
        parent.read(parent_end, entry, [[1, 1]])


def test_shared_bytes_that_do_not_match_the_sizes_are_refused(channel):
    child, child_end, parent, parent_end = channel
    _send(child, child_end, parent, parent_end, _pixels(1, 8, 6))
    with pytest.raises(SparkError, match="47 shared bytes for 48 bytes of images"):
        parent.read(parent_end, {"bytes": 47, "new": False}, [[4, 4]])
