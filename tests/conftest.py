"""Suite-wide settings (no network, no analytics, deterministic CPU threads) and the
session-wide servers: a throwaway PostgreSQL and a small local Ray cluster."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator

import pytest

from spark_runtime.store import objects as objects_module

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


# Session-wide servers: one PostgreSQL and one Ray cluster per test run, started on demand.


IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(reason: str) -> None:
    """Skip on a workstation; fail in CI, where every test must run (``make test``
    installs the PostgreSQL server and Ray)."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: these tests may not be skipped)", pytrace=False)
    pytest.skip(reason)


def _pg_bindir() -> str | None:
    initdb = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_pg_version)
    found = initdb[-1] if initdb else shutil.which("initdb")
    return os.path.dirname(found) if found else None


def _pg_version(path: str) -> float:
    with contextlib.suppress(ValueError):
        return float(path.split("/")[4])
    return 0.0


def _pg_user() -> str | None:
    """The unprivileged account to run the server as when we are root (it refuses root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "imagery"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "imagery"],
        check=True,
        capture_output=True,
    )
    return "imagery"


# Without syncfs (off Linux) ``stage`` stores at once: nothing waits for ``publish``, and a
# failed generation cannot take back what it staged.
needs_syncfs = pytest.mark.skipif(objects_module._SYNCFS is None, reason="stage stores at once without syncfs")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on (just released by the OS)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A throwaway PostgreSQL server (initdb + pg_ctl in a temp dir, on a free port).

    Yields the SQLAlchemy URL of its ``postgres`` database; ``IMAGERY_TEST_PG_URL`` points
    the tests at an existing server instead.
    """
    external = os.environ.get("IMAGERY_TEST_PG_URL")
    if external:
        yield external
        return
    bindir = _pg_bindir()
    if bindir is None:
        unavailable(
            "PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql"
        )
    user = _pg_user()
    # /tmp when root: the server's account must be able to reach the folder, and a private
    # $TMPDIR under /root would not let it.
    root = tempfile.mkdtemp(prefix="imagery-pg-", dir="/tmp" if user else None)
    if user is not None:
        shutil.chown(root, user)
    data, log, port = os.path.join(root, "data"), os.path.join(root, "log"), free_port()

    def run(*args: str) -> None:
        subprocess.run(args, check=True, capture_output=True, user=user, timeout=120)

    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c synchronous_commit=off"
    try:
        run(
            f"{bindir}/initdb",
            "-D",
            data,
            "-U",
            "imagery",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
        )
        run(f"{bindir}/pg_ctl", "-D", data, "-o", options, "-l", log, "-w", "-t", "60", "start")
    except (subprocess.SubprocessError, OSError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        shutil.rmtree(root, ignore_errors=True)
        unavailable(f"cannot start PostgreSQL: {exc} {detail.decode(errors='replace')[-300:]}")
    try:
        yield f"postgresql+psycopg://imagery@127.0.0.1:{port}/postgres"
    finally:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            run(f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty database on the session's server, dropped after the test."""
    import psycopg
    from sqlalchemy.engine import make_url

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = make_url(postgres_server).set(drivername="postgresql")
    dsn = admin.render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield make_url(postgres_server).set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[object]:
    """One small local Ray cluster for the whole test run; yields the ``ray`` module."""
    try:
        import ray
    except ImportError:
        unavailable("Ray is not installed: pip install '.[ray]'")
    if not ray.is_initialized():
        ray.init(
            address="local",  # never a cluster RAY_ADDRESS or `ray start` left on this machine
            num_cpus=2,
            include_dashboard=False,
            object_store_memory=80 << 20,
            log_to_driver=False,
            configure_logging=False,
        )
    yield ray
    ray.shutdown()
