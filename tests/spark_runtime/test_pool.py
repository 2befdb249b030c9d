"""The spark pool: chunks across sparks, images in order, lost chunks retried elsewhere."""

from __future__ import annotations

import threading

import pytest

from spark_runtime.pool import SparkLost, SparkPool
from spark_runtime.spark import InProcessSpark, SparkError
from tests.spark_runtime.conftest import FAKE, fake_genomes, fake_values


class ScriptedSpark:
    """A fake spark that renders through the fake generator, and loses the batches whose
    call numbers are in ``lose`` (as a killed process would)."""

    def __init__(self, name: str, lose: tuple[int, ...] = (), gate: threading.Event | None = None):
        self.name = name
        self.lose = lose
        self.gate = gate
        self.target, self.config = FAKE, {}
        self.inner = InProcessSpark(FAKE, {})
        self.calls: list[list[int]] = []
        self.listened: list[bool] = []  # per call: whether a progress callback came with it
        self.closed = False

    def render(self, genomes, size, progress=None):
        self.calls.append([g.get("value") for g in genomes])
        self.listened.append(progress is not None)
        if self.gate is not None:
            self.gate.wait(5)
        if len(self.calls) in self.lose:
            if progress:
                progress(1, len(genomes))  # got part way, then died
            raise SparkLost(f"{self.name} died")
        return self.inner.render(genomes, size, progress)

    def close(self):
        self.closed = True


def test_a_generation_is_split_across_the_sparks_and_comes_back_in_order():
    sparks = [ScriptedSpark(n) for n in "abc"]
    pool = SparkPool(sparks)
    images = pool.render(fake_genomes(10), 8)
    assert fake_values(images) == list(range(10))
    assert pool.chunks(10) == [(0, 4), (4, 8), (8, 10)]
    assert sorted(v for s in sparks for call in s.calls for v in call) == list(range(10))
    assert all(len(s.calls) == 1 for s in sparks)


def test_sparks_get_a_progress_callback_only_when_the_caller_listens():
    # No callback means no progress frames from a spark in another process.
    sparks = [ScriptedSpark(n) for n in "ab"]
    pool = SparkPool(sparks)
    pool.render(fake_genomes(6), 8)
    assert [s.listened for s in sparks] == [[False], [False]]
    reports = []
    pool.render(fake_genomes(6), 8, progress=lambda done, total: reports.append((done, total)))
    assert [s.listened for s in sparks] == [[False, True], [False, True]]
    assert reports and reports[-1] == (6, 6)


def test_fixed_chunk_size_for_compiled_models():
    sparks = [ScriptedSpark("a"), ScriptedSpark("b")]
    pool = SparkPool(sparks, chunk_size=3)
    assert fake_values(pool.render(fake_genomes(7), 8)) == list(range(7))
    assert sorted(len(call) for s in sparks for call in s.calls) == [1, 3, 3]


def test_a_lost_chunk_is_retried_on_another_spark_without_duplicates():
    # Both sparks hold their first chunk until both have started, so "a" surely has one.
    gate = threading.Event()
    a, b = ScriptedSpark("a", lose=(1,), gate=gate), ScriptedSpark("b", gate=gate)
    pool = SparkPool([a, b])
    threading.Timer(0.05, gate.set).start()
    seen = []
    images = pool.render(fake_genomes(6), 8, progress=lambda d, t: seen.append((d, t)))
    assert fake_values(images) == list(range(6))
    assert pool.retries == 1
    assert a.calls == [[0, 1, 2]]
    assert b.calls == [[3, 4, 5], [0, 1, 2]]
    # Progress never moves back, even though the lost chunk had reported some.
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert seen[-1] == (6, 6)


def test_a_chunk_that_keeps_dying_fails_the_render_in_one_line():
    pool = SparkPool([ScriptedSpark("a", lose=(1, 2, 3)), ScriptedSpark("b", lose=(1, 2, 3))])
    with pytest.raises(SparkError, match="a chunk failed 3 times, giving up: . died") as info:
        pool.render(fake_genomes(2), 8)
    assert "\n" not in str(info.value)


def test_one_spark_pool_retries_on_the_same_spark():
    spark = ScriptedSpark("only", lose=(1,))
    pool = SparkPool([spark])
    assert fake_values(pool.render(fake_genomes(3), 8)) == [0, 1, 2]
    assert spark.calls == [[0, 1, 2], [0, 1, 2]]
    assert pool.retries == 1


def test_a_refused_genome_is_not_retried():
    sparks = [ScriptedSpark("a"), ScriptedSpark("b")]
    pool = SparkPool(sparks)
    genomes = fake_genomes(4)
    genomes[3] = {"bad": True}
    with pytest.raises(ValueError, match="fake genome 1 is bad"):
        pool.render(genomes, 8)
    assert sum(len(s.calls) for s in sparks) == 2
    assert pool.retries == 0


def test_empty_batch_renders_nothing_and_close_closes_every_spark():
    sparks = [ScriptedSpark("a"), ScriptedSpark("b")]
    with SparkPool(sparks) as pool:
        assert pool.render([], 8) == []
        assert pool.target == FAKE
    assert all(s.calls == [] and s.closed for s in sparks)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"sparks": []}, "needs at least one spark"),
        ({"chunk_size": 0}, "chunk size must be at least 1"),
        ({"max_attempts": 0}, "max attempts must be at least 1"),
    ],
)
def test_bad_pool_settings(kwargs, message):
    args = {"sparks": [ScriptedSpark("a")], **kwargs}
    with pytest.raises(SparkError, match=message):
        SparkPool(args.pop("sparks"), **args)
