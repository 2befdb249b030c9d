"""A UI session on process sparks, on Ray sparks, and with its rows in PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from spark_runtime.spark import InProcessSpark
from spark_runtime.sparks import SessionSparks
from spark_runtime.store import Store
from tests.ui.conftest import SMALL
from ui import handlers
from ui.live import start_evolve

TABS = ("tab-one", "tab-two")


def _session_round(wb: handlers.Workbench) -> list[dict[str, Any]]:
    """Two tabs on one run: each scores, then each evolves its own branch."""
    run = handlers.create_run(wb, {**SMALL, "name": "scaled"})
    handlers.fork(
        wb,
        {"run": run["run"], "branch": "main", "session": TABS[1], "generation": 0, "name": "other"},
    )
    done = []
    for tab, branch in zip(TABS, ("main", "other"), strict=True):
        state = handlers.state(wb, {"run": run["run"], "branch": branch, "session": tab})
        snapshot = state["snapshot"]["id"]
        handlers.rate(
            wb,
            {
                "session": tab,
                "snapshot": snapshot,
                "events": [{"position": 2, "kind": "score", "value": 5}],
            },
        )
        events = list(
            start_evolve(
                wb, {"run": run["run"], "branch": branch, "session": tab, "parent": snapshot}
            )
        )
        assert events[-1]["type"] == "done", events[-1]
        done.append(events[-1]["state"]["snapshot"])
    return done


def _same_as_local(tmp_path: Path, done: list[dict[str, Any]]) -> None:
    with Store(tmp_path / "local") as store:
        local = _session_round(handlers.Workbench(store))
    for scaled, plain in zip(done, local, strict=True):
        assert scaled["population"] == plain["population"]
        assert scaled["images"] == plain["images"]


def test_ui_session_on_process_sparks_leases_one_spark_per_tab(tmp_path: Path) -> None:
    sparks = SessionSparks("process:2", reap_interval_s=None)
    try:
        with Store(tmp_path / "store") as store:
            wb = handlers.Workbench(store, sparks=sparks)
            done = _session_round(wb)
            assert set(sparks.leased()) == set(TABS)
    finally:
        sparks.close()
    _same_as_local(tmp_path, done)


def test_generation_0_renders_on_a_spark_that_the_runs_first_tab_keeps(tmp_path: Path) -> None:
    made = []

    def counted(target: str, config: dict[str, Any]) -> InProcessSpark:  # stands in for a process
        made.append(config)
        return InProcessSpark(target, config)

    sparks = SessionSparks("process:2", factory=counted, capacity=2, reap_interval_s=None)
    with Store(tmp_path / "store") as store:
        wb = handlers.Workbench(store, sparks=sparks)
        lent = handlers.create_run(wb, {**SMALL, "name": "lent"})  # the start form names no tab
        assert len(made) == 1 and sparks.leased() == {}  # rendered on a spark, handed back
        handlers.create_run(wb, {**SMALL, "name": "own", "session": "tab-own"})
        assert len(made) == 1 and sparks.leased() == {"tab-own": 0}  # the same spark, now the tab's
        head = handlers.state(wb, {"run": lent["run"], "session": "tab-new"})["snapshot"]["id"]
        body = {"run": lent["run"], "branch": "main", "session": "tab-new", "parent": head}
        assert list(start_evolve(wb, body))[-1]["type"] == "done"
        assert len(made) == 2 and set(sparks.leased()) == {"tab-own", "tab-new"}
        wb.close()
    sparks.close()


@pytest.mark.ray
def test_ui_session_on_ray_sparks(tmp_path: Path, ray_cluster: Any) -> None:
    sparks = SessionSparks("ray", reap_interval_s=None)
    try:
        with Store(tmp_path / "store") as store:
            done = _session_round(handlers.Workbench(store, sparks=sparks))
    finally:
        sparks.close()
    _same_as_local(tmp_path, done)


@pytest.mark.postgres
def test_ui_session_with_rows_in_postgresql(tmp_path: Path, postgres_url: str) -> None:
    with Store(tmp_path / "objects", db_url=postgres_url) as store:
        done = _session_round(handlers.Workbench(store))
        assert len(store.list_runs()) == 1
    _same_as_local(tmp_path, done)
