"""A spark in a spawned subprocess: its crash costs a retry, never the app.

The child builds the generator once and keeps it loaded between batches. Parent and child
talk over a ``multiprocessing`` pipe with ``send_bytes``/``recv_bytes`` and a framing of our
own (JSON header plus raw blobs), so nothing either side loads is ever unpickled: genomes go
over as one JSON document plus safetensors bytes, images come back as raw RGB arrays, through
memory shared with the child where the platform has it (``shared_pixels``).

A child that dies mid-batch (killed, out of memory, a segfault in a native library) shows up
as end-of-file on the pipe; the spark raises ``SparkLost`` and starts a fresh child on its
next render, so a pool can retry the chunk here or on another spark.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import struct
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import orjson
from PIL import Image

from spark_runtime import genome_codec, shared_pixels
from spark_runtime.heap import keep_freed_memory
from spark_runtime.image_codec import rgb_pixels
from spark_runtime.pool import SparkLost
from spark_runtime.shared_pixels import ChildPixels, ParentPixels
from spark_runtime.spark import (
    ProgressCallback,
    SparkError,
    load_spark_generator,
    one_line,
    one_per_genome,
)

_HEADER = struct.Struct(">I")
MAX_HEADER_BYTES = 64 << 20
START_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 5.0


# Wire format: shared with the Ray spark, which moves the same byte strings.


def pack(header: dict[str, Any], blobs: Sequence[bytes | memoryview] = ()) -> bytes:
    """One frame: 4-byte header length, JSON header (with blob lengths), then the blobs
    (bytes, or flat byte views, copied once into the frame)."""
    head = json.dumps({**header, "blobs": [len(b) for b in blobs]}, allow_nan=False).encode()
    return b"".join([_HEADER.pack(len(head)), head, *blobs])


def unpack(frame: bytes) -> tuple[dict[str, Any], list[memoryview]]:
    """Split a frame from :func:`pack` into its header and views of its blobs (no copies:
    a reply's pixels go into images as they lie in the frame); a malformed frame raises a
    one-line ``SparkError``."""
    view = memoryview(frame)
    if len(view) < _HEADER.size:
        raise SparkError("malformed spark frame: shorter than its header")
    (size,) = _HEADER.unpack_from(view)
    if size > MAX_HEADER_BYTES or _HEADER.size + size > len(view):
        raise SparkError("malformed spark frame: header length out of range")
    try:
        header = json.loads(bytes(view[_HEADER.size : _HEADER.size + size]))
        lengths = header["blobs"]
    except (ValueError, KeyError, TypeError):
        raise SparkError("malformed spark frame: header is not a JSON object") from None
    offset = _HEADER.size + size
    ok = isinstance(lengths, list) and all(type(n) is int and n >= 0 for n in lengths)
    if not ok or offset + sum(lengths) != len(view):
        raise SparkError("malformed spark frame: blob lengths do not add up")
    blobs = []
    for n in lengths:
        blobs.append(view[offset : offset + n])
        offset += n
    return header, blobs


def pack_request(genomes: Sequence[dict[str, Any]], size: int, progress: bool = True) -> bytes:
    """A render request: the genomes' JSON parts as one document (blob 0), their tensors (if
    any) as safetensors blobs. ``progress``: whether the spark should send progress frames
    while it renders."""
    parts, slots, blobs = [], [], []
    for genome in genomes:
        data, tensors = genome_codec.split(genome)
        parts.append(data)
        blob = genome_codec.encode_tensors(tensors)
        slots.append(None if blob is None else 1 + len(blobs))
        if blob is not None:
            blobs.append(blob)
    document, parser = _dump_genomes(parts)
    header = {"op": "render", "size": size, "parser": parser, "tensors": slots, "progress": progress}
    return pack(header, [document, *blobs])


def unpack_request(header: dict[str, Any], blobs: Sequence[bytes | memoryview]) -> tuple[list[dict[str, Any]], int]:
    slots, parser, size = header.get("tensors"), header.get("parser"), header.get("size")
    if not isinstance(parser, str) or parser not in _PARSERS or not blobs:
        raise SparkError("malformed render request: no genome document")
    if type(size) is not int or size < 1:
        raise SparkError("malformed render request: no image size")
    fits = isinstance(slots, list) and all(
        slot is None or (type(slot) is int and 1 <= slot < len(blobs)) for slot in slots
    )
    if not fits:
        raise SparkError("malformed render request: tensor slots out of range")
    try:
        parts = _PARSERS[parser](blobs[0])
    except ValueError:
        raise SparkError("malformed render request: the genome document is not JSON") from None
    if not isinstance(parts, list) or len(parts) != len(slots) or not all(isinstance(p, dict) for p in parts):
        raise SparkError("malformed render request: genomes and tensors do not match")
    genomes = [genome_codec.join(part, None if slot is None else bytes(blobs[slot])) for part, slot in zip(parts, slots, strict=True)]
    return genomes, size


# The genomes cross as one JSON document, which orjson writes and reads several times faster
# than json (16 evolved CPPN genomes on the 2-core VM, bench/sparks.py part 1: packed in
# 0.1-0.2 ms and read in 0.3 ms; as canonical texts escaped inside the header, the format
# before this one, 0.7 + 1.2 ms, timed in a scratch script), unless orjson could
# change a JSON value: it writes NaN and infinity as null and reads integers past 64 bits as
# floats (it refuses to write those). A document with null in it, or one orjson cannot write,
# goes through json, and the header names the parser that reads it back. (Genomes are JSON
# by contract; orjson also writes datetimes and UUIDs as strings, as genome ids always have.)
def _dump_genomes(parts: list[dict[str, Any]]) -> tuple[bytes, str]:
    try:
        document = orjson.dumps(parts)
    except (TypeError, orjson.JSONEncodeError):
        document = None
    if document is not None and b"null" not in document:
        return document, "orjson"
    return json.dumps(parts, allow_nan=False).encode(), "json"


_PARSERS = {"orjson": orjson.loads, "json": lambda blob: json.loads(bytes(blob))}


def pack_images(images: Sequence[Image.Image] | np.ndarray, shared: ChildPixels | None = None) -> bytes:
    """Images (or ``[n, h, w, 3]`` uint8 pixels) as raw RGB bytes: lossless and cheaper than
    PNG on both sides. Pixel arrays are copied once, straight into the frame, or into
    ``shared`` memory when given (the frame then carries only the sizes)."""
    pixels = [np.ascontiguousarray(rgb_pixels(im)) for im in images]
    header: dict[str, Any] = {"op": "images", "sizes": [[p.shape[1], p.shape[0]] for p in pixels]}
    if shared is not None:
        return pack({**header, "shared": shared.write(pixels)})
    return pack(header, [memoryview(p).cast("B") for p in pixels])


def unpack_images(header: dict[str, Any], blobs: Sequence[bytes | memoryview]) -> list[Image.Image]:
    """Images over the reply's pixel bytes, one blob per image."""
    sizes = header.get("sizes")
    if not isinstance(sizes, list) or len(sizes) != len(blobs):
        raise SparkError("malformed image reply: sizes do not match the images")
    images = []
    for (width, height), blob in zip(sizes, blobs, strict=True):
        if len(blob) != width * height * 3:
            raise SparkError(f"malformed image reply: {len(blob)} bytes for {width}x{height} RGB")
        # Read-only images over the frame's own bytes (Pillow copies if one is drawn on).
        images.append(Image.frombuffer("RGB", (width, height), blob, "raw", "RGB", 0, 1))
    return images


def read_images(header: dict[str, Any], blobs: Sequence[bytes | memoryview], count: int) -> list[Image.Image]:
    """The images of a render reply for ``count`` genomes; an error frame raises its one-line
    message as ``SparkError``, and so does a reply with the wrong number of images."""
    if header.get("op") == "error":
        raise SparkError(str(header.get("message")))
    images = unpack_images(header, blobs)
    if len(images) != count:
        raise SparkError(f"spark returned {len(images)} images for {count} genomes")
    return images


# The child (and the Ray actor)


def serve(
    generator: Any,
    header: dict[str, Any],
    blobs: Sequence[bytes | memoryview],
    send: Any | None = None,
    shared: ChildPixels | None = None,
) -> bytes:
    """Answer one render request with an image frame, or an error frame carrying the
    generator's one-line message; ``send`` (if given) carries progress frames meanwhile,
    and ``shared`` (if given) takes the pixels instead of the frame."""
    try:
        genomes, size = unpack_request(header, blobs)
        sent = -1

        def progress(done: int, total: int) -> None:
            # Each frame wakes the parent, on a core the render or the writer is using: send
            # one only when the count moves, and none when the parent did not ask.
            nonlocal sent
            if int(done) != sent:
                sent = int(done)
                send(pack({"op": "progress", "done": sent, "total": int(total)}))

        # A generator that renders to one pixel array (CPPN) skips making images here: the
        # frame takes the pixels as they are.
        render = getattr(generator, "render_pixels", None) or generator.render
        wanted = send is not None and header.get("progress", True) is not False
        images = one_per_genome(render(genomes, size, progress=progress if wanted else None), genomes)
        return pack_images(images, shared)
    except Exception as exc:
        return pack({"op": "error", "message": one_line(exc)})


def set_threads(threads: int | None) -> None:
    """Limit torch to ``threads`` CPU threads in this worker (None leaves the default)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def _child_main(conn: Any, target: str, config_json: str, threads: int | None, share: bool) -> None:
    """Build the generator once, then serve render requests until told to stop or orphaned."""
    try:
        set_threads(threads)
        generator = load_spark_generator(target, json.loads(config_json))
    except Exception as exc:
        conn.send_bytes(pack({"op": "error", "message": one_line(exc)}))
        return
    conn.send_bytes(pack({"op": "ready"}))
    shared = ChildPixels() if share and shared_pixels.supported() else None
    while True:
        try:
            header, blobs = unpack(conn.recv_bytes())
        except EOFError:
            return  # the parent went away: nothing left to serve
        except SparkError as exc:
            # Each frame is one message: a malformed one is answered, and the next is whole.
            conn.send_bytes(pack({"op": "error", "message": str(exc)}))
            continue
        if header.get("op") != "render":
            return
        conn.send_bytes(serve(generator, header, blobs, conn.send_bytes, shared))
        if shared is not None:
            shared.hand_over(conn)


# The parent

_MAIN_LOCK = threading.Lock()


@contextlib.contextmanager
def _main_not_imported() -> Iterator[None]:
    """Spawn without re-importing the parent's ``__main__`` in the child.

    ``spawn`` re-runs the parent's main script (the ``imagery`` CLI, a notebook, pytest) in
    the child unless it cannot find it. The child needs nothing from there: its entry point
    lives in this module. Hiding the script for the instant of ``start`` saves the child a
    second or two of imports (gradio, the whole app) and any side effects of that script.
    """
    main = sys.modules.get("__main__")
    with _MAIN_LOCK:
        saved = {
            k: main.__dict__[k] for k in ("__file__", "__spec__") if main and k in main.__dict__
        }
        try:
            if main is not None:
                main.__dict__.pop("__file__", None)
                main.__spec__ = None
            yield
        finally:
            if main is not None:
                main.__dict__.update(saved)
                if "__spec__" not in saved:
                    main.__dict__.pop("__spec__", None)


class ProcessSpark:
    """A generator kept loaded in a spawned child process.

    Args:
        target: ``"package.module:Class"`` of the generator.
        config: its JSON config.
        threads: torch threads for the child (None: torch's default); several sparks on one
            machine should split the cores between them.
        start_timeout_s: how long the child may take to build the generator.
        shared_memory: images come back through shared memory where the platform has it
            (False: inside the reply frames, as from a Ray actor).
    """

    def __init__(
        self,
        target: str,
        config: dict[str, Any],
        *,
        threads: int | None = None,
        start_timeout_s: float = START_TIMEOUT_S,
        shared_memory: bool = True,
    ) -> None:
        self.target = target
        self.config = json.loads(json.dumps(config))
        self.threads = threads
        self.start_timeout_s = start_timeout_s
        self.shared_memory = shared_memory
        self.restarts = 0
        self._lock = threading.Lock()
        self._process: Any | None = None
        self._conn: Any | None = None
        self._ready = False
        self._started_once = False
        self._pixels = ParentPixels()  # the child's shared reply memory, once it sends it
        keep_freed_memory()  # replies land in fresh buffers: see spark_runtime.heap

    @property
    def pid(self) -> int | None:
        """The child's process id, or None while no child is running."""
        return self._process.pid if self._process is not None else None

    def launch(self) -> None:
        """Spawn the child without waiting for it (several sparks then load in parallel)."""
        if self._process is not None:
            return
        ctx = multiprocessing.get_context("spawn")
        parent_conn, child_conn = ctx.Pipe(duplex=True)
        process = ctx.Process(
            target=_child_main,
            args=(child_conn, self.target, json.dumps(self.config), self.threads, self.shared_memory),
            name=f"spark {self.target}",
            daemon=True,
        )
        with _main_not_imported():
            process.start()
        # Only the child may hold its end, so that its death reads as EOF here.
        child_conn.close()
        self._process, self._conn, self._ready = process, parent_conn, False
        if self._started_once:
            self.restarts += 1
        self._started_once = True

    def start(self) -> None:
        """Spawn the child if needed and wait until its generator is built.

        Raises:
            SparkError: the generator cannot be built (bad target or config).
            SparkLost: the child died or did not answer within ``start_timeout_s``.
        """
        self.launch()
        if self._ready:
            return
        assert self._conn is not None
        try:
            if not self._conn.poll(self.start_timeout_s):
                raise SparkLost(f"process spark did not start within {self.start_timeout_s:g} s")
            header, _ = unpack(self._conn.recv_bytes())
        except (EOFError, OSError):
            raise self._lost("while starting") from None
        except SparkError:
            self._stop(kill=True)
            raise
        if header.get("op") == "error":
            self._stop(kill=True)
            raise SparkError(f"spark cannot build {self.target}: {header.get('message')}")
        self._ready = True

    def render(
        self,
        genomes: Sequence[dict[str, Any]],
        size: int,
        progress: ProgressCallback | None = None,
    ) -> list[Image.Image]:
        """Render a batch in the child; restarts the child first if an earlier one died.

        Raises:
            SparkError: the generator refused the batch (its message, one line).
            SparkLost: the child died before answering; the batch may be retried.
        """
        if not genomes:
            return []
        request = pack_request(genomes, size, progress=progress is not None)
        with self._lock:
            self.start()
            try:
                header, blobs = self._exchange(request, progress)
            except (EOFError, OSError):
                raise self._lost("mid-batch") from None
            except BaseException:
                # A malformed frame or an interrupted exchange: the pipe may hold stale
                # frames, so this child is not trusted with another batch.
                self._stop(kill=True)
                raise
        return read_images(header, blobs, len(genomes))

    def _exchange(
        self, request: bytes, progress: ProgressCallback | None
    ) -> tuple[dict[str, Any], list[memoryview]]:
        """Send one request; forward progress frames until the final reply arrives."""
        assert self._conn is not None
        self._conn.send_bytes(request)
        while True:
            header, blobs = unpack(self._conn.recv_bytes())
            if header.get("op") != "progress":
                if "shared" in header and not blobs:
                    # Copied out now, under the lock: the next request may overwrite it.
                    blobs = self._pixels.read(self._conn, header["shared"], header.get("sizes"))
                return header, blobs
            if progress is not None:
                progress(int(header["done"]), int(header["total"]))

    def poll(self) -> bool:
        """Whether the child is running. One that died while idle is cleaned up now rather
        than at the next render (which starts a fresh one), so it lingers as no zombie; a
        spark that is rendering is not disturbed (its render finds out)."""
        if not self._lock.acquire(blocking=False):
            return True
        try:
            if self._process is None:
                return False
            if self._process.is_alive():  # also collects a dead child's exit status
                return True
            self._stop(kill=True)
            return False
        finally:
            self._lock.release()

    def close(self) -> None:
        """Ask the child to stop, then make sure it has; safe to call twice."""
        with self._lock:
            self._stop(kill=False)

    def __enter__(self) -> ProcessSpark:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _lost(self, when: str) -> SparkLost:
        process = self._process
        pid = code = None
        if process is not None:
            pid = process.pid
            process.join(1.0)  # EOF usually means it has exited already
            code = process.exitcode
        self._stop(kill=True)
        return SparkLost(f"process spark (pid {pid}) died {when}, exit code {code}")

    def _stop(self, kill: bool) -> None:
        process, conn = self._process, self._conn
        self._process, self._conn, self._ready = None, None, False
        self._pixels.close()
        if conn is not None:
            if not kill:
                with contextlib.suppress(OSError):
                    conn.send_bytes(pack({"op": "close"}))
            conn.close()
        if process is not None:
            process.join(0 if kill else STOP_TIMEOUT_S)
            if process.is_alive():
                process.kill()
                process.join(STOP_TIMEOUT_S)
            process.close()
