"""``--sparks`` parsing, pools built from it, and per-session sparks for the browser UI."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from spark_runtime.pool import SparkLost
from spark_runtime.process_spark import ProcessSpark
from spark_runtime.spark import InProcessSpark, SparkError
from spark_runtime.sparks import SessionSparks, SparkSpec, make_pool, parse_sparks
from spark_runtime.store import Store
from tests.spark_runtime.conftest import FAKE, fake_genomes, fake_values
from ui import cli

# Parsing


@pytest.mark.parametrize(
    "text, spec",
    [
        ("local", SparkSpec("local")),
        (" LOCAL ", SparkSpec("local")),
        ("process", SparkSpec("process", 1)),
        ("process:4", SparkSpec("process", 4)),
        ("ray", SparkSpec("ray")),
        ("ray:auto", SparkSpec("ray", 1, "auto")),
        ("ray:ray://head.example:10001", SparkSpec("ray", 1, "ray://head.example:10001")),
        (None, SparkSpec("local")),
    ],
)
def test_parse_sparks(text, spec):
    assert parse_sparks(text) == spec
    assert parse_sparks(str(spec)) == spec
    assert SparkSpec.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize(
    "text, message",
    [
        ("gpu", "bad --sparks 'gpu': use local, process:N or ray"),
        ("process:0", "process:N needs a whole number N from 1 to 64"),
        ("process:two", "process:N needs a whole number"),
        ("process:-1", "process:N needs a whole number"),
        ("ray:", "ray:ADDRESS needs an address"),
        ("local:3", "bad --sparks 'local:3'"),
    ],
)
def test_bad_spark_specs_are_one_line_errors(text, message):
    with pytest.raises(SparkError, match=message) as info:
        parse_sparks(text)
    assert "\n" not in str(info.value)


def test_make_pool_builds_the_sparks_the_spec_names():
    with make_pool("local", FAKE, {"delay": 0.0}) as pool:
        assert [type(s) for s in pool.sparks] == [InProcessSpark]
        assert pool.render(fake_genomes(2), 8)[1].getpixel((0, 0)) == (1, 0, 7)
    with make_pool("process:3", FAKE, {}, start=False) as pool:
        assert [type(s) for s in pool.sparks] == [ProcessSpark] * 3
        assert all(s.pid is None for s in pool.sparks)  # nothing spawned until asked


def test_make_pool_fails_on_a_bad_config_before_rendering():
    with pytest.raises(ValueError, match="unknown fake config key 'x'"):
        make_pool("local", FAKE, {"x": 1})


# Per-session sparks


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingFactory:
    """Builds in-process fake sparks and remembers every one it made."""

    def __init__(self) -> None:
        self.made: list[TrackedSpark] = []

    def __call__(self, target, config):
        spark = TrackedSpark(target, config)
        self.made.append(spark)
        return spark


class TrackedSpark(InProcessSpark):
    def __init__(self, target, config):
        super().__init__(target, config)
        self.closed = False
        self.lose_next = 0

    def render(self, genomes, size, progress=None):
        if self.lose_next:
            self.lose_next -= 1
            raise SparkLost("worker died")
        return super().render(genomes, size, progress)

    def close(self):
        self.closed = True


def manager(capacity=None, **kw):
    factory, clock = CountingFactory(), Clock()
    sparks = SessionSparks(
        factory=factory, capacity=capacity, clock=clock, reap_interval_s=None, **kw
    )
    return sparks, factory, clock


def test_a_session_gets_its_spark_on_first_render_and_keeps_it():
    sparks, factory, _ = manager(idle_timeout_s=60)
    handle = sparks.spark("tab-1", FAKE, {})
    assert factory.made == [] and sparks.leased() == {}
    handle.render(fake_genomes(1), 8)
    handle.render(fake_genomes(2), 8)
    assert len(factory.made) == 1
    assert sparks.leased() == {"tab-1": 0}
    sparks.spark("tab-2", FAKE, {}).render(fake_genomes(1), 8)
    assert len(factory.made) == 2  # each session its own


def test_idle_sparks_are_released_and_come_back_on_the_next_render():
    sparks, factory, clock = manager(idle_timeout_s=60)
    a, b = sparks.spark("a", FAKE, {}), sparks.spark("b", FAKE, {})
    a.render(fake_genomes(1), 8)
    clock.now += 50
    b.render(fake_genomes(1), 8)
    clock.now += 20
    assert sparks.reap() == 1  # a idle 70 s, b only 20 s
    assert factory.made[0].closed and not factory.made[1].closed
    assert sparks.leased() == {"b": 0}
    a.render(fake_genomes(1), 8)
    assert len(factory.made) == 3


def test_at_capacity_the_least_recently_used_idle_spark_makes_room():
    sparks, factory, clock = manager(capacity=2, idle_timeout_s=600, evict_after_s=2)
    for number, sid in enumerate(("a", "b", "c")):  # three runs: three generators
        sparks.spark(sid, FAKE, {"delay": number / 1000}).render(fake_genomes(1), 8)
        clock.now += 2
    assert [s.closed for s in factory.made] == [True, False, False]
    assert sorted(sparks.leased()) == ["b", "c"]


def test_at_capacity_a_new_session_takes_an_idle_spark_of_its_generator_as_it_is():
    sparks, factory, clock = manager(capacity=2, idle_timeout_s=600)
    for sid in ("a", "b", "c", "a"):
        sparks.spark(sid, FAKE, {}).render(fake_genomes(1), 8)
        clock.now += 1
    # Nothing closed, nothing started again: c took a's spark, then a took b's.
    assert len(factory.made) == 2 and not any(s.closed for s in factory.made)
    assert sorted(sparks.leased()) == ["a", "c"]


def test_a_spark_handed_back_goes_to_the_next_session_of_its_generator():
    sparks, factory, _ = manager(capacity=4)
    sparks.spark("lent", FAKE, {}).render(fake_genomes(1), 8)
    sparks.hand_back("lent")
    assert sparks.leased() == {}
    sparks.spark("other-run", FAKE, {"delay": 0.001}).render(fake_genomes(1), 8)  # another generator
    sparks.spark("tab", FAKE, {}).render(fake_genomes(1), 8)
    assert len(factory.made) == 2 and not any(s.closed for s in factory.made)
    assert sparks.leased() == {"other-run": 0, "tab": 0}


def test_more_sessions_than_sparks_share_them_without_restarting_any():
    sparks = SessionSparks(factory=CountingFactory(), capacity=2, reap_interval_s=None)
    factory, results = sparks._factory, {}

    def session(sid: str) -> None:
        handle = sparks.spark(sid, FAKE, {"delay": 0.01})
        results[sid] = [fake_values(handle.render(fake_genomes(3), 8)) for _ in range(5)]

    threads = [threading.Thread(target=session, args=(sid,)) for sid in "abc"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results == {sid: [[0, 1, 2]] * 5 for sid in "abc"}
    assert len(factory.made) == 2 and not any(s.closed for s in factory.made)


def test_a_spark_between_two_calls_of_a_generation_is_not_evicted_at_once():
    sparks, factory, clock = manager(capacity=2, evict_after_s=2.0, wait_timeout_s=10.0)
    sparks.spark("a", FAKE, {"delay": 0.0}).render(fake_genomes(1), 8)
    sparks.spark("b", FAKE, {"delay": 0.001}).render(fake_genomes(1), 8)
    third = threading.Thread(target=sparks.spark("c", FAKE, {"delay": 0.002}).render, args=(fake_genomes(1), 8))
    third.start()
    time.sleep(0.3)  # a's spark has been idle for no time at all on the clock: c waits
    assert third.is_alive() and len(factory.made) == 2 and not factory.made[0].closed
    clock.now += 2.0  # now a's has been idle long enough to be a finished session's
    third.join(5)
    assert not third.is_alive()
    assert [s.closed for s in factory.made] == [True, False, False]


def one_busy_spark(wait_timeout_s: float):
    """A manager with one spark, rendering for session "a" (in ``busy``) until ``gate`` is set."""
    gate = threading.Event()

    class Gated(TrackedSpark):
        def render(self, genomes, size, progress=None):
            gate.wait(5)
            return super().render(genomes, size, progress)

    sparks = SessionSparks(
        factory=Gated, capacity=1, reap_interval_s=None, wait_timeout_s=wait_timeout_s
    )
    busy = threading.Thread(target=sparks.spark("a", FAKE, {}).render, args=(fake_genomes(1), 8))
    busy.start()
    while sparks.leased() != {"a": 1}:
        time.sleep(0.005)
    return sparks, gate, busy


def test_when_every_spark_is_rendering_a_new_session_waits_its_turn():
    sparks, gate, busy = one_busy_spark(wait_timeout_s=5)
    waited = []
    second = threading.Thread(
        target=lambda: waited.append(sparks.spark("b", FAKE, {}).render(fake_genomes(1), 8))
    )
    second.start()
    time.sleep(0.1)
    assert waited == [] and sparks.leased() == {"a": 1}
    gate.set()
    busy.join(5)
    second.join(5)
    assert len(waited) == 1 and sorted(sparks.leased()) == ["b"]


def test_waiting_too_long_for_a_spark_is_a_one_line_error():
    sparks, gate, busy = one_busy_spark(wait_timeout_s=0.1)
    with pytest.raises(SparkError, match="all 1 sparks are busy rendering for other sessions"):
        sparks.spark("b", FAKE, {}).render(fake_genomes(1), 8)
    gate.set()
    busy.join(5)
    assert sparks.leased() == {"a": 0}


def test_one_persons_heavy_render_does_not_stall_another():
    with SessionSparks("local", reap_interval_s=None) as sparks:
        heavy = sparks.spark("heavy", FAKE, {"delay": 0.3})
        light = sparks.spark("light", FAKE, {"delay": 0.0})
        thread = threading.Thread(target=heavy.render, args=(fake_genomes(4), 8))
        thread.start()
        time.sleep(0.05)
        start = time.monotonic()
        light.render(fake_genomes(2), 8)
        light_seconds = time.monotonic() - start
        assert thread.is_alive()  # the heavy render (1.2 s) is still going
        thread.join()
    assert light_seconds < 0.5


def test_switching_run_replaces_the_sessions_generator():
    sparks, factory, _ = manager()
    sparks.spark("tab", FAKE, {"delay": 0.0}).render(fake_genomes(1), 8)
    sparks.spark("tab", FAKE, {"delay": 0.001}).render(fake_genomes(1), 8)
    assert [s.config for s in factory.made] == [{"delay": 0.0}, {"delay": 0.001}]
    assert factory.made[0].closed and list(sparks.leased()) == ["tab"]


def test_a_lost_spark_is_retried_and_release_closes_it():
    sparks, factory, _ = manager()
    handle = sparks.spark("tab", FAKE, {})
    handle.render(fake_genomes(1), 8)
    factory.made[0].lose_next = 2
    assert len(handle.render(fake_genomes(3), 8)) == 3
    factory.made[0].lose_next = 3
    with pytest.raises(SparkError, match="rendering failed 3 times, giving up: worker died"):
        handle.render(fake_genomes(1), 8)
    handle.close()
    assert factory.made[0].closed and sparks.leased() == {}
    sparks.close()
    with pytest.raises(SparkError, match="the spark manager is closed"):
        handle.render(fake_genomes(1), 8)


# The CLI


def _new_run(store: list[str], name: str) -> None:
    args = [*store, "new", "--name", name, "--population", "4", "--size", "32"]
    assert cli.main(args) == 0


@pytest.mark.postgres
def test_cli_run_on_process_sparks_and_postgresql_makes_the_same_generations(
    tmp_path, capsys, postgres_url
):
    """The reference: in-process sparks on SQLite. The other: two process sparks with the
    rows in PostgreSQL. Where a batch renders and where it is stored change nothing."""
    heads = {}
    for sparks, db in (("local", []), ("process:2", ["--db", postgres_url])):
        store = ["--store", str(tmp_path / sparks.replace(":", "-")), *db]
        _new_run(store, "r")
        assert cli.main([*store, "run", "r", "--generations", "1", "--sparks", sparks]) == 0
        assert "r:main is at generation 1" in capsys.readouterr().out
        with Store(store[1], db_url=db[1] if db else None) as opened:
            heads[sparks] = [s.images for s in opened.history(opened.get_branch("r"))]
    assert len(heads["local"]) == 2
    assert heads["local"] == heads["process:2"]


def test_cli_bad_sparks_is_one_line_and_changes_nothing(tmp_path, capsys):
    store = str(tmp_path / "s")
    _new_run(["--store", store], "r")
    capsys.readouterr()
    assert cli.main(["--store", store, "run", "r", "--generations", "1", "--sparks", "gpu:9"]) == 2
    err = capsys.readouterr().err
    assert err == "imagery: error: bad --sparks 'gpu:9': use local, process:N or ray[:ADDRESS]\n"
    assert cli.main(["--store", store, "status", "r", "--json"]) == 0
    assert '"generations": 1' in capsys.readouterr().out


def test_render_pixels_are_the_images_pixels_with_or_without_the_generators_own():
    import numpy as np

    cppn = InProcessSpark("imagery.cppn:CPPN", {})
    genomes = cppn.generator.random(np.random.default_rng(4), 3)
    images = cppn.render(genomes, 24)
    pixels = cppn.render_pixels(genomes, 24)
    assert pixels.shape == (3, 24, 24, 3) and pixels.dtype == np.uint8
    assert np.array_equal(pixels, np.stack([np.asarray(im) for im in images]))
    assert cppn.render_pixels([], 24).shape == (0, 24, 24, 3)
    fake = InProcessSpark(FAKE, {})  # no render_pixels of its own: made from its images
    assert not hasattr(fake.generator, "render_pixels")
    assert np.array_equal(
        fake.render_pixels(fake_genomes(2), 16),
        np.stack([np.asarray(im) for im in fake.render(fake_genomes(2), 16)]),
    )


def test_a_process_spark_that_dies_while_idle_leaves_no_zombie_and_comes_back():
    sparks = SessionSparks("process:1", reap_interval_s=None, idle_timeout_s=600)
    try:
        handle = sparks.spark("tab", FAKE, {})
        assert fake_values(handle.render(fake_genomes(2), 8)) == [0, 1]
        (pid,) = [lease.spark.pid for lease in sparks._leases.values()]
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while _state(pid) is not None and time.monotonic() < deadline:  # till its threads are gone
            sparks.reap()
            time.sleep(0.01)
        assert _state(pid) is None  # collected by the reaper, not a zombie until the next render
        assert fake_values(handle.render(fake_genomes(2), 8)) == [0, 1]
    finally:
        sparks.close()


def _state(pid: int) -> str | None:
    """A process's state letter from /proc (Z: a zombie), or None once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return None


def test_a_session_waiting_for_its_own_busy_spark_sleeps_rather_than_spins():
    gate = threading.Event()

    class Gated(TrackedSpark):
        def render(self, genomes, size, progress=None):
            if self.config.get("delay") == 0.0:
                gate.wait(5)
            return super().render(genomes, size, progress)

    clock = Clock()
    sparks = SessionSparks(factory=Gated, capacity=None, reap_interval_s=None, clock=clock, evict_after_s=2.0)
    sparks.spark("other", FAKE, {"delay": 0.002}).render(fake_genomes(1), 8)
    clock.now += 60  # an idle spark long past its eviction time, which nobody needs evicted
    busy = threading.Thread(target=sparks.spark("tab", FAKE, {"delay": 0.0}).render, args=(fake_genomes(1), 8))
    busy.start()
    while sparks.leased().get("tab") != 1:
        time.sleep(0.005)
    waits, real_wait = [], sparks._cond.wait
    sparks._cond.wait = lambda timeout=None: waits.append(timeout) or real_wait(timeout)  # type: ignore[method-assign]
    # The same tab moved to another run while its first render goes on: it waits for that one.
    switched = threading.Thread(target=sparks.spark("tab", FAKE, {"delay": 0.001}).render, args=(fake_genomes(1), 8))
    switched.start()
    time.sleep(0.3)
    gate.set()
    busy.join(5)
    switched.join(5)
    assert 1 <= len(waits) <= 3  # woken by the render's end, not a thousand times a second
