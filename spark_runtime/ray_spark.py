"""A spark as a Ray actor: one generator kept loaded per actor, on a GPU when asked for.

Ray is an optional extra (``pip install .[ray]``) and is imported only when a Ray spark is
made. ``connect()`` joins a running cluster (``ray:ADDRESS``) or starts a small local one
(``ray``). Each actor is created with ``num_cpus``/``num_gpus`` from ``RayOptions`` and with
``max_restarts`` and ``max_task_retries``: Ray restarts a dead actor and re-runs its chunk by
itself. That retry is safe because a chunk's images are a pure function of its genomes and
the generator config. When Ray gives up, the spark raises ``SparkLost`` (the pool retries the
chunk on another spark) and makes a fresh actor for its next render.

Requests and replies are the byte frames of ``process_spark`` (JSON + safetensors in, raw RGB
out), so no genome or image object is handed to Ray's serialiser.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
from dataclasses import asdict, dataclass
from typing import Any

from PIL import Image

from spark_runtime.heap import keep_freed_memory
from spark_runtime.pool import SparkLost
from spark_runtime.process_spark import (
    pack,
    pack_request,
    read_images,
    serve,
    set_threads,
    unpack,
)
from spark_runtime.spark import ProgressCallback, SparkError, load_spark_generator, one_line

LOCAL_OBJECT_STORE_BYTES = 256 << 20


@dataclass(frozen=True)
class RayOptions:
    """Resources and fault tolerance of each Ray spark actor.

    Args:
        num_cpus: CPUs reserved per actor (also its torch thread count).
        num_gpus: GPUs per actor; 0 renders on CPU.
        max_restarts: how often Ray restarts a dead actor.
        max_task_retries: how often Ray re-runs a chunk whose actor died.
    """

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    max_restarts: int = 3
    max_task_retries: int = 3

    def __post_init__(self) -> None:
        if self.num_cpus < 0 or self.num_gpus < 0 or (self.num_cpus == 0 and self.num_gpus == 0):
            raise SparkError(
                f"a Ray spark needs some CPUs or GPUs, got num_cpus={self.num_cpus}, "
                f"num_gpus={self.num_gpus}"
            )
        if self.max_restarts < 0 or self.max_task_retries < 0:
            raise SparkError("max_restarts and max_task_retries must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RayOptions:
        return cls(**data)


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise SparkError("Ray sparks need Ray: pip install 'imagery[ray]'") from None
    return ray


# Ray's own log lines in this process: errors only. Its start-up notes ("Started a local Ray
# instance", the token-authentication notice) would print around the CLI's progress bar at
# every run; a failure still reaches the user, as one line (SparkError).
RAY_LOGGING_LEVEL = logging.ERROR


def connect(address: str | None = None) -> Any:
    """Join the Ray cluster at ``address``, or start a local one; returns the ``ray`` module.

    Does nothing when this process is already connected (a test session's cluster, or an
    earlier call), so many sparks share one connection.
    """
    ray = import_ray()
    if ray.is_initialized():
        return ray
    try:
        if address is None:
            # "local": a cluster of its own. Without it Ray joins whatever cluster RAY_ADDRESS
            # or an earlier `ray start` on this machine names, and then refuses the resources
            # given here; `ray:auto` is the way to join that one.
            ray.init(
                address="local",
                num_cpus=os.cpu_count() or 1,
                include_dashboard=False,
                object_store_memory=LOCAL_OBJECT_STORE_BYTES,
                log_to_driver=False,
                logging_level=RAY_LOGGING_LEVEL,
            )
        else:
            _check_reachable(address)
            ray.init(address=address, log_to_driver=False, logging_level=RAY_LOGGING_LEVEL)
    except SparkError:
        raise
    except Exception as exc:
        where = f"at {address!r}" if address else "locally"
        raise SparkError(f"cannot start Ray {where}: {one_line(exc)}") from None
    return ray


# How long connecting to a cluster's address may take before it counts as nobody there.
REACH_TIMEOUT_S = 5.0


def _check_reachable(address: str) -> None:
    """Fail at once, in one line, on a ``host:port`` nothing answers at: Ray itself keeps
    retrying for a minute or more, printing warnings, and ignores Ctrl+C meanwhile."""
    host, sep, port = address.split("://", 1)[-1].rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto", or a form Ray knows and judges itself
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=REACH_TIMEOUT_S):
            pass
    except OSError as exc:
        raise SparkError(f"cannot reach Ray at {address!r}: {exc.strerror or exc}") from None


def cluster_resources(free_only: bool = False) -> dict[str, float]:
    """The connected cluster's resources (``CPU``, ``GPU``, ...): all, or only those free now."""
    ray = import_ray()
    return dict(ray.available_resources() if free_only else ray.cluster_resources())


class RenderActor:
    """The body of a Ray spark actor; builds its generator lazily so a restart rebuilds it."""

    def __init__(self, target: str, config_json: str, threads: int | None) -> None:
        self._target = target
        self._config = json.loads(config_json)
        self._threads = threads
        self._generator: Any | None = None

    def _built(self) -> Any:
        if self._generator is None:
            set_threads(self._threads)
            self._generator = load_spark_generator(self._target, self._config)
        return self._generator

    def ready(self) -> bytes:
        try:
            self._built()
        except Exception as exc:
            return pack({"op": "error", "message": one_line(exc)})
        return pack({"op": "ready"})

    def render(self, request: bytes) -> bytes:
        header, blobs = unpack(request)
        return serve(self._built(), header, blobs)

    def pid(self) -> int:
        return os.getpid()


_ACTOR_CLASS: Any | None = None
_ACTOR_LOCK = threading.Lock()


def _actor_class() -> Any:
    global _ACTOR_CLASS
    with _ACTOR_LOCK:
        if _ACTOR_CLASS is None:
            _ACTOR_CLASS = import_ray().remote(RenderActor)
        return _ACTOR_CLASS


class RaySpark:
    """A generator kept loaded in a Ray actor.

    Args:
        target: ``"package.module:Class"`` of the generator.
        config: its JSON config.
        options: resources and restart policy of the actor.
        address: the cluster to join if this process is not connected yet (None: local).
    """

    def __init__(
        self,
        target: str,
        config: dict[str, Any],
        *,
        options: RayOptions | None = None,
        address: str | None = None,
    ) -> None:
        self.target = target
        self.config = json.loads(json.dumps(config))
        self.options = options or RayOptions()
        self._ray = connect(address)
        self._lock = threading.Lock()
        self._actor: Any | None = None
        self._ready_ref: Any | None = None
        self.restarts = 0
        keep_freed_memory()  # replies land in fresh buffers: see spark_runtime.heap
        self.launch()

    def launch(self) -> None:
        """Create the actor (Ray places it and loads the generator in the background)."""
        if self._actor is not None:
            return
        threads = max(1, int(self.options.num_cpus)) if self.options.num_cpus else None
        self._actor = (
            _actor_class()
            .options(
                num_cpus=self.options.num_cpus,
                num_gpus=self.options.num_gpus,
                max_restarts=self.options.max_restarts,
                max_task_retries=self.options.max_task_retries,
            )
            .remote(self.target, json.dumps(self.config), threads)
        )
        self._ready_ref = self._actor.ready.remote()

    def start(self) -> None:
        """Create the actor if needed and wait until its generator is built.

        Raises:
            SparkError: the generator cannot be built (bad target or config).
            SparkLost: the actor died while starting.
        """
        self.launch()
        if self._ready_ref is None:
            return
        header, _ = unpack(self._call(self._ready_ref, "while starting"))
        if header.get("op") == "error":
            self._kill()
            raise SparkError(f"spark cannot build {self.target}: {header.get('message')}")
        self._ready_ref = None

    @property
    def actor(self) -> Any:
        """The current actor handle (for tests and monitoring), creating it if needed."""
        self.launch()
        return self._actor

    def pid(self) -> int:
        """The process id of the actor's worker."""
        return int(self._call(self.actor.pid.remote(), "asked for its pid"))

    def render(
        self,
        genomes: list[dict[str, Any]],
        size: int,
        progress: ProgressCallback | None = None,
    ) -> list[Image.Image]:
        """Render a batch on the actor; progress is reported when the batch is done.

        Raises:
            SparkError: the generator refused the batch (its message, one line).
            SparkLost: Ray gave up on the actor; the batch may be retried elsewhere.
        """
        if not genomes:
            return []
        request = pack_request(genomes, size, progress=False)  # an actor answers once, with no progress frames
        with self._lock:
            self.start()
            reply = self._call(self.actor.render.remote(request), "mid-batch")
        header, blobs = unpack(reply)
        images = read_images(header, blobs, len(genomes))
        if progress is not None:
            progress(len(images), len(images))
        return images

    def close(self) -> None:
        """Kill the actor (not the cluster); safe to call twice."""
        with self._lock:
            self._kill()

    def __enter__(self) -> RaySpark:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, ref: Any, when: str) -> Any:
        exceptions = self._ray.exceptions
        lost = (
            exceptions.RayActorError,
            exceptions.WorkerCrashedError,
            exceptions.ObjectLostError,
            exceptions.OwnerDiedError,
            exceptions.NodeDiedError,
        )
        try:
            return self._ray.get(ref)
        except lost as exc:
            # Ray has used up its own restarts and retries: start afresh next time.
            self._kill()
            self.restarts += 1
            raise SparkLost(f"Ray spark died {when}: {one_line(exc)}") from None
        except exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None) or exc
            raise SparkError(f"Ray spark failed {when}: {one_line(cause)}") from None

    def _kill(self) -> None:
        actor, self._actor, self._ready_ref = self._actor, None, None
        if actor is not None:
            # Already gone: nothing left to release.
            with contextlib.suppress(Exception):
                self._ray.kill(actor, no_restart=True)
