"""Fixtures for the UI tests: a temp store with a small CPPN run, and a live server + browser."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from spark_runtime.store import Store
from tests.conftest import free_port, unavailable
from ui import api, handlers

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SMALL = {"generator": "cppn", "population": 8, "size": 32, "seed": 5}


def row_counts(root: Path) -> dict[str, int]:
    """Rows per table, read straight from the SQLite file (what 'nothing changed' means)."""
    with sqlite3.connect(root / "imagery.db") as db:
        return {
            t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("run", "branch", "snapshot", "individual", "rating")
        }


@pytest.fixture
def counts(store: Store) -> Any:
    """``counts()``: the store's rows per table now."""
    return lambda: row_counts(store.root)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "store") as s:
        yield s


@pytest.fixture
def wb(store: Store) -> Iterator[handlers.Workbench]:
    bench = handlers.Workbench(store)
    yield bench
    bench.close()


@pytest.fixture
def run(wb: handlers.Workbench) -> dict[str, Any]:
    """A fresh 8-image, 32 px CPPN run at generation 0."""
    return handlers.create_run(wb, {**SMALL, "name": "small"})


@pytest.fixture
def client(wb: handlers.Workbench) -> TestClient:
    """The API endpoints alone (no Gradio page) over the temp store's workbench."""
    app = FastAPI()
    api.install(app, wb)
    return TestClient(app)


# --- live server and browser (browser tests only) --------------------------------------------
class LiveServer:
    """The whole app (Gradio page + API) on a free port, in a thread, over a temp store."""

    def __init__(self, root: Path) -> None:
        import uvicorn

        from ui.app import build_app

        self.root = root
        self.store = Store(root)
        self.app = build_app(self.store)
        self.wb: handlers.Workbench = self.app.state.workbench
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(
            uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the UI server did not start")
            time.sleep(0.02)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.store.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path_factory.mktemp("live") / "store")
    yield server
    server.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        unavailable(f"{CHROMIUM} is missing: install Debian's chromium package (make system-deps)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
