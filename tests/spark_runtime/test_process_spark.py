"""Process sparks: a generator loaded once in a spawned child; its crash costs a retry."""

from __future__ import annotations

import math
import os
import signal

import numpy as np
import pytest
import torch

from evolve.session import RunSpec, Session
from spark_runtime import shared_pixels
from spark_runtime.image_codec import decode
from spark_runtime.pool import SparkLost, SparkPool
from spark_runtime.process_spark import (
    ProcessSpark,
    pack,
    pack_images,
    pack_request,
    serve,
    unpack,
    unpack_images,
    unpack_request,
)
from spark_runtime.spark import InProcessSpark, SparkError
from spark_runtime.store import Store
from tests.spark_runtime.conftest import FAKE, fake_genomes, fake_image, fake_values

CPPN = "imagery.cppn:CPPN"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers signal 0; its state in /proc says it has exited.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _cppn_genomes(n: int, seed: int = 0) -> list[dict]:
    generator = InProcessSpark(CPPN, {}).generator
    return generator.random(np.random.default_rng(seed), n)


def _same(images, reference) -> bool:
    return [im.tobytes() for im in images] == [im.tobytes() for im in reference]


@pytest.fixture(scope="module")
def cppn_pair():
    """Two CPPN process sparks, loading in parallel, shared by this module's CPPN tests."""
    sparks = [ProcessSpark(CPPN, {}, threads=1) for _ in range(2)]
    for spark in sparks:
        spark.launch()
    yield sparks
    for spark in sparks:
        spark.close()


@pytest.fixture(scope="module")
def fake_spark():
    with ProcessSpark(FAKE, {"delay": 0.0}, threads=1) as spark:
        spark.start()
        yield spark


# Wire format: no pickle, strict framing


def test_genomes_with_tensors_cross_as_json_and_safetensors():
    genome = {"kind": "x", "seed": 3, "tensors": {"latent": torch.arange(6.0).reshape(2, 3)}}
    header, blobs = unpack(pack_request([genome, {"plain": True}], 64))
    genomes, size = unpack_request(header, blobs)
    assert size == 64
    assert genomes[1] == {"plain": True}
    assert genomes[0]["seed"] == 3
    assert torch.equal(genomes[0]["tensors"]["latent"], genome["tensors"]["latent"])


def test_genomes_orjson_could_change_cross_through_json_exactly():
    plain = {"nodes": [{"id": 1, "bias": 0.1, "act": "sin"}], "seed": 2**64 - 1, "scale": -0.0}
    huge, empty = {"seed": 2**64}, {"note": None, "w": 1e-7}
    for genomes, parser in (([plain], "orjson"), ([plain, huge], "json"), ([empty], "json")):
        header, blobs = unpack(pack_request(genomes, 8))
        assert header["parser"] == parser
        back, _ = unpack_request(header, blobs)
        assert back == genomes
        assert all(math.copysign(1.0, g["scale"]) == -1.0 for g in back if "scale" in g)  # -0.0 stays
        assert [type(g["seed"]) for g in back if "seed" in g] == [int] * sum("seed" in g for g in genomes)
    with pytest.raises(ValueError, match="Out of range float"):
        pack_request([{"w": float("nan")}], 8)


@pytest.mark.parametrize(
    "header, blobs, message",
    [
        ({"size": 8, "tensors": [None], "parser": "pickle"}, [b"[{}]"], "no genome document"),
        ({"size": 8, "tensors": [None], "parser": "orjson"}, [], "no genome document"),
        ({"size": 8, "tensors": [None], "parser": "orjson"}, [b"[{"], "not JSON"),
        ({"size": 8, "tensors": [None], "parser": "json"}, [b"\xff"], "not JSON"),
        ({"size": 8, "tensors": [None, None], "parser": "orjson"}, [b"[{}]"], "do not match"),
        ({"size": 8, "tensors": [None], "parser": "orjson"}, [b"[3]"], "do not match"),
        ({"size": 8, "tensors": [None], "parser": ["orjson"]}, [b"[{}]"], "no genome document"),
        ({"tensors": [None], "parser": "orjson"}, [b"[{}]"], "no image size"),
        ({"size": "8", "tensors": [None], "parser": "orjson"}, [b"[{}]"], "no image size"),
        ({"size": 8, "tensors": [1], "parser": "orjson"}, [b"[{}]"], "tensor slots out of range"),
        ({"size": 8, "tensors": [0], "parser": "orjson"}, [b"[{}]", b"x"], "tensor slots out of range"),
        ({"size": 8, "tensors": None, "parser": "orjson"}, [b"[{}]"], "tensor slots out of range"),
    ],
)
def test_malformed_render_requests_are_refused_in_one_line(header, blobs, message):
    with pytest.raises(SparkError, match=message):
        unpack_request({"op": "render", **header}, [memoryview(b) for b in blobs])


def test_images_cross_as_raw_rgb_bytes():
    images = [fake_image({"value": 300}, 8), fake_image({"value": 5}, 16).convert("L")]
    header, blobs = unpack(pack_images(images))
    back = unpack_images(header, blobs)
    assert [im.size for im in back] == [(8, 8), (16, 16)]
    assert back[0].getpixel((0, 0)) == (44, 1, 7)
    assert back[1].mode == "RGB"


@pytest.mark.parametrize(
    "frame, message",
    [
        (b"\x00\x00", "shorter than its header"),
        (b"\xff\xff\xff\xff{}", "header length out of range"),
        (b"\x00\x00\x00\x02[]", "header is not a JSON object"),
        (pack({"op": "images"}, [b"abc"])[:-1], "blob lengths do not add up"),
        (b"\x00\x00\x00\x0b\x80\x04K\x01.garbage", "header is not a JSON object"),
    ],
)
def test_malformed_frames_are_refused_in_one_line(frame, message):
    with pytest.raises(SparkError, match=message):
        unpack(frame)


def test_image_reply_with_wrong_byte_count_is_refused():
    header, blobs = unpack(pack({"op": "images", "sizes": [[4, 4]]}, [b"\x00" * 47]))
    with pytest.raises(SparkError, match="47 bytes for 4x4 RGB"):
        unpack_images(header, blobs)


def test_progress_frames_only_when_asked_and_only_when_the_count_moves():
    class Repeating:
        """Reports every count twice, as a renderer working in pixel chunks does."""

        def render(self, genomes, size, progress=None):
            for i in range(len(genomes)):
                if progress is not None:
                    progress(i + 1, len(genomes))
                    progress(i + 1, len(genomes))
            return [fake_image(g, size) for g in genomes]

    genomes = fake_genomes(3)
    for asked, expected in ((True, [1, 2, 3]), (False, [])):
        sent: list[bytes] = []
        reply = serve(Repeating(), *unpack(pack_request(genomes, 8, progress=asked)), send=sent.append)
        assert [unpack(frame)[0]["done"] for frame in sent] == expected
        assert len(unpack_images(*unpack(reply))) == 3


# The spark


def test_renders_cppn_exactly_like_the_in_process_spark_and_reports_progress(cppn_pair):
    genomes = _cppn_genomes(4)
    reference = InProcessSpark(CPPN, {}).render(genomes, 256)
    spark, seen = cppn_pair[0], []
    first = spark.render(genomes, 256, progress=lambda d, t: seen.append((d, t)))
    pid = spark.pid
    second = spark.render(genomes[:2], 256)
    # The generator stays loaded: the same child served both batches.
    assert spark.pid == pid and spark.restarts == 0
    assert _same(first, reference)
    assert _same(second, reference[:2])
    # Progress crosses the process boundary as the child renders, not only at the end.
    assert len(seen) > 1 and seen[-1] == (4, 4)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_a_reply_larger_than_the_shared_memory_grows_it_and_arrives_intact(cppn_pair):
    # 6 images at 256 px are 1.1 MiB of pixels, more than the first shared file holds.
    genomes = _cppn_genomes(6, seed=4)
    reference = InProcessSpark(CPPN, {}).render(genomes, 256)
    spark = cppn_pair[1]
    assert _same(spark.render(genomes[:1], 256), reference[:1])
    assert _same(spark.render(genomes, 256), reference)
    assert _same(spark.render(genomes[2:4], 256), reference[2:4])
    assert spark.restarts == 0
    if shared_pixels.supported():  # the replies really came through the grown file
        assert spark._pixels._map is not None and len(spark._pixels._map) >= 6 * 256 * 256 * 3


def test_without_shared_memory_images_come_back_in_the_frames():
    genomes = _cppn_genomes(3, seed=5)
    with ProcessSpark(CPPN, {}, threads=1, shared_memory=False) as spark:
        assert _same(spark.render(genomes, 64), InProcessSpark(CPPN, {}).render(genomes, 64))
        assert spark._pixels._map is None  # no shared file was ever handed over


def test_bad_config_and_bad_target_fail_on_start_in_one_line():
    with pytest.raises(SparkError, match="spark cannot build .*unknown fake config key 'nope'"):
        ProcessSpark(FAKE, {"nope": 1}).start()
    with pytest.raises(SparkError, match="cannot load generator 'no_such_module:X'") as info:
        ProcessSpark("no_such_module:X", {}).start()
    assert "\n" not in str(info.value)


def test_a_malformed_frame_is_answered_in_one_line_and_the_child_serves_on(fake_spark):
    pid = fake_spark.pid
    with fake_spark._lock:  # what a render holds while it talks to the child
        fake_spark._conn.send_bytes(b"\x00\x00")
        header, _ = unpack(fake_spark._conn.recv_bytes())
    assert header == {"op": "error", "message": "malformed spark frame: shorter than its header", "blobs": []}
    assert fake_values(fake_spark.render(fake_genomes(2), 8)) == [0, 1]
    assert fake_spark.pid == pid


def test_refused_genome_is_the_callers_error_and_the_child_lives_on(fake_spark):
    pid = fake_spark.pid
    with pytest.raises(SparkError, match="fake genome 1 is bad"):
        fake_spark.render([{"value": 1}, {"bad": True}], 8)
    assert fake_spark.pid == pid
    assert fake_spark.render(fake_genomes(2), 8)[1].getpixel((0, 0)) == (1, 0, 7)


def test_crashed_child_raises_spark_lost_then_restarts(fake_spark):
    with pytest.raises(SparkLost, match=r"died mid-batch, exit code 3"):
        fake_spark.render([{"value": 1}, {"exit": 3}], 8)
    images = fake_spark.render(fake_genomes(3), 8)
    assert [im.getpixel((0, 0))[0] for im in images] == [0, 1, 2]
    assert fake_spark.restarts == 1


def test_killed_mid_batch_the_pool_completes_the_generation_once(tmp_path, cppn_pair):
    """SIGKILL a spark's child while it renders: the chunk is re-rendered, the generation
    is committed with every image exactly once, identical to an undisturbed render."""
    # 256 px: CPPN reports progress several times per batch, so the kill lands mid-render.
    spec = RunSpec(name="killed", population=8, size=256, seed=11)
    with Store(tmp_path / "calm") as calm_store:
        calm = Session.create(calm_store, spec)
        expected = [calm_store.objects.get(h) for h in calm.head().images]

    killer, other = cppn_pair
    victims = []

    def kill_once(done: int, total: int) -> None:
        if not victims and done < total:
            victims.append(killer.pid)
            os.kill(killer.pid, signal.SIGKILL)

    class KillMidBatch:
        target, config = CPPN, {}

        def render(self, genomes, size, progress=None):
            return killer.render(genomes, size, progress=kill_once)

        def close(self):
            killer.close()

    with (
        SparkPool([KillMidBatch(), other]) as pool,
        Store(tmp_path / "killed") as store,
    ):
        session = Session.create(store, spec, spark=pool)
        head = session.head()
        assert victims and not _alive(victims[0])
        assert pool.retries == 1
        assert [store.objects.get(h) for h in head.images] == expected
        assert len(set(head.population)) == len(head.population) == 8
        # Nothing duplicated: one row per individual, one object per image and thumbnail.
        assert len(store.history(session.branch)) == 1
        stored = {sha for sha, _ in store.objects.iter_objects()}
        assert stored == set(head.images) | set(head.thumbs)
        assert all(decode(store.objects.get(h)).size == (256, 256) for h in head.images)


def test_close_ends_the_child_and_a_later_render_starts_a_new_one():
    spark = ProcessSpark(FAKE, {})
    spark.render(fake_genomes(1), 8)
    pid = spark.pid
    spark.close()
    spark.close()
    assert spark.pid is None and not _alive(pid)
    assert spark.render(fake_genomes(1), 8)[0].size == (8, 8)
    spark.close()


def test_the_process_taking_replies_in_keeps_its_freed_heap(monkeypatch):
    # Each reply's pixels are copied into a fresh buffer here (spark_runtime.heap): made
    # without the child, so nothing else in the test process sets the heap first.
    calls = []
    monkeypatch.setattr("spark_runtime.process_spark.keep_freed_memory", lambda: calls.append(1) or True)
    ProcessSpark(FAKE, {})
    assert calls == [1]
