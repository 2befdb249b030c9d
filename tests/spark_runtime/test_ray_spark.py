"""Ray sparks on one small local cluster per test run: actors that keep a generator loaded,
restart when killed, and never lose or duplicate an image."""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import socket
import threading

import pytest

from spark_runtime import ray_spark
from spark_runtime.image_codec import encode_png
from spark_runtime.pool import SparkPool
from spark_runtime.ray_spark import RayOptions, RaySpark
from spark_runtime.spark import InProcessSpark, SparkError
from spark_runtime.store import Store
from tests.spark_runtime.conftest import FAKE, fake_genomes, fake_values
from ui import cli

pytestmark = pytest.mark.ray
CPPN = "imagery.cppn:CPPN"


def _kill_soon(pid: int, after_s: float) -> threading.Timer:
    timer = threading.Timer(after_s, os.kill, (pid, signal.SIGKILL))
    timer.start()
    return timer


# First, while the cluster is still empty: the batch run takes an actor per free CPU.
def test_cli_batch_run_on_ray_matches_local_rendering(ray_cluster, tmp_path, capsys):
    store = str(tmp_path / "s")
    assert (
        cli.main(["--store", store, "new", "--name", "r", "--population", "4", "--size", "32"]) == 0
    )
    assert cli.main(["--store", store, "run", "r", "--generations", "1", "--sparks", "ray"]) == 0
    assert "r:main is at generation 1" in capsys.readouterr().out
    with Store(store) as opened:
        head = opened.history(opened.get_branch("r"))[-1]
        genomes = opened.genomes(head)
        config = opened.get_run("r").generator_config
    local = InProcessSpark(CPPN, config).render(genomes, 32)
    assert [hashlib.sha256(encode_png(im)).hexdigest() for im in local] == head.images


@pytest.fixture(scope="module")
def steady(ray_cluster):
    """A fake-generator actor shared by the tests below; 0.25 s per image leaves time to
    kill things mid-batch."""
    with RaySpark(FAKE, {"delay": 0.25}, options=RayOptions(num_cpus=0.5)) as spark:
        spark.start()
        yield spark


def test_the_process_taking_replies_in_keeps_its_freed_heap(ray_cluster, monkeypatch):
    # Each reply frame arrives as a fresh few-megabyte bytes object (spark_runtime.heap).
    calls = []
    monkeypatch.setattr("spark_runtime.ray_spark.keep_freed_memory", lambda: calls.append(1) or True)
    with RaySpark(FAKE, {}, options=RayOptions(num_cpus=0.5)):
        assert calls == [1]


def test_bad_config_fails_on_start_and_a_refused_genome_keeps_the_actor(steady):
    with pytest.raises(SparkError, match="spark cannot build .*unknown fake config key 'x'"):
        RaySpark(FAKE, {"x": 1}, options=RayOptions(num_cpus=0.5)).start()
    pid = steady.pid()
    with pytest.raises(SparkError, match="fake genome 0 is bad") as info:
        steady.render([{"bad": True}], 8)
    assert "\n" not in str(info.value)
    assert steady.pid() == pid
    assert fake_values(steady.render(fake_genomes(2), 8)) == [0, 1]


def test_ray_restarts_a_killed_actor_and_reruns_its_chunk(steady):
    pid = steady.pid()
    timer = _kill_soon(pid, 0.15)
    images = steady.render(fake_genomes(3), 8)
    timer.join()
    assert fake_values(images) == [0, 1, 2]
    # Ray's own restart and retry: a new worker, and the spark never saw a failure.
    assert steady.pid() != pid and steady.restarts == 0


def test_when_ray_gives_up_the_pool_moves_the_chunk_to_another_actor(steady):
    options = RayOptions(num_cpus=0.5, max_restarts=0, max_task_retries=0)
    fragile = RaySpark(FAKE, {"delay": 0.25}, options=options)
    fragile.start()
    pool = SparkPool([fragile, steady])
    timer = _kill_soon(fragile.pid(), 0.15)
    images = pool.render(fake_genomes(4), 8)
    timer.join()
    fragile.close()
    # Every image once, in order, although half the generation died with its actor.
    assert fake_values(images) == [0, 1, 2, 3]
    assert pool.retries == 1 and fragile.restarts == 1


def test_ray_options_round_trip_and_refuse_nonsense():
    options = RayOptions(num_cpus=2, num_gpus=1, max_restarts=5)
    assert RayOptions.from_dict(options.to_dict()) == options
    with pytest.raises(SparkError, match="needs some CPUs or GPUs"):
        RayOptions(num_cpus=0, num_gpus=0)
    with pytest.raises(SparkError, match="max_restarts and max_task_retries must be >= 0"):
        RayOptions(max_restarts=-1)


@pytest.fixture
def ray_init_calls(monkeypatch):
    """``connect`` talking to a stand-in for Ray that records what ``ray.init`` was asked."""
    calls = []

    class FakeRay:
        def is_initialized(self):
            return False

        def init(self, **kwargs):
            calls.append(kwargs)

    monkeypatch.setattr(ray_spark, "import_ray", FakeRay)
    return calls


def test_plain_ray_starts_a_cluster_of_its_own_even_beside_another(monkeypatch, ray_init_calls):
    """``--sparks ray`` means a local cluster: not the one RAY_ADDRESS or ``ray start`` names,
    which would refuse the CPUs asked for (``ray:auto`` joins that one)."""
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    ray_spark.connect()
    ray_spark.connect("auto")
    assert ray_init_calls[0]["address"] == "local" and ray_init_calls[0]["num_cpus"] >= 1
    assert ray_init_calls[1] == {"address": "auto", "log_to_driver": False, "logging_level": logging.ERROR}
    assert ray_init_calls[0]["logging_level"] == logging.ERROR  # no start-up notes around the progress bar


def test_a_cluster_address_nothing_answers_at_is_one_line_at_once(ray_init_calls):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(SparkError, match=rf"^cannot reach Ray at '127.0.0.1:{port}': Connection refused$"):
        ray_spark.connect(f"127.0.0.1:{port}")
    assert ray_init_calls == []  # Ray was never asked
