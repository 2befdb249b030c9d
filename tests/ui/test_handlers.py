"""The UI's handlers as plain functions: what a tab sees and what each decision stores."""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from evolve.agent import Agent, AgentConfig
from evolve.export import read_metadata
from evolve.session import RunSpec, Session
from spark_runtime.store import Store
from tests.ui.conftest import SMALL
from ui import browse, handlers
from ui.handlers import USER_ERRORS, Conflict, UIError
from ui.live import start_evolve

A, B = "tab-aaaa", "tab-bbbb"


def _state(
    wb: handlers.Workbench, run: dict[str, Any], tab: str = A, **extra: Any
) -> dict[str, Any]:
    return handlers.state(wb, {"run": run["run"], "branch": "main", "session": tab, **extra})


def _rate(
    wb: handlers.Workbench, snapshot: str, *events: tuple[int, str, Any], tab: str = A
) -> dict[str, Any]:
    body = {
        "session": tab,
        "snapshot": snapshot,
        "events": [{"position": p, "kind": k, "value": v} for p, k, v in events],
    }
    return handlers.rate(wb, body)


def _evolve(
    wb: handlers.Workbench, run: dict[str, Any], tab: str = A, **extra: Any
) -> list[dict[str, Any]]:
    head = _state(wb, run, tab)["snapshot"]["id"]
    return list(
        start_evolve(
            wb, {"run": run["run"], "branch": "main", "session": tab, "parent": head, **extra}
        )
    )


def test_create_run_shows_generation_zero(wb: handlers.Workbench, run: dict[str, Any]) -> None:
    st = _state(wb, run)
    assert st["snapshot"]["generation"] == 0 and st["is_head"]
    assert len(st["snapshot"]["thumbs"]) == 8
    assert all(wb.store.objects.exists(sha) for sha in st["snapshot"]["thumbs"])
    assert set(st["lockable"]) >= {"topology", "weights"}
    assert st["marks"] == {"scores": {}, "picks": []}


@pytest.mark.parametrize(
    ("form", "needle"),
    [
        ({"generator": "nope"}, "unknown generator"),
        ({"population": 0}, "population"),
        ({"size": 5}, "size"),
        ({"seed": -1}, "seed"),
        ({"name": "has space"}, "bad run name"),
        ({"generator": "diffusion", "model": ""}, "needs a model"),
    ],
)
def test_create_run_bad_input_stores_nothing(
    wb: handlers.Workbench, store: Store, form: dict[str, Any], needle: str, counts: Any
) -> None:
    before = counts()
    with pytest.raises(USER_ERRORS, match=needle):
        handlers.create_run(wb, {**SMALL, **form})
    assert counts() == before
    assert handlers.list_runs(wb) == []


def test_ratings_show_per_tab_and_never_overwrite_each_other(
    wb: handlers.Workbench, run: dict[str, Any], store: Store
) -> None:
    snap = _state(wb, run)["snapshot"]["id"]
    _rate(wb, snap, (0, "score", 5), (1, "pick", None), tab=A)
    _rate(wb, snap, (0, "score", 1), tab=B)
    _rate(wb, snap, (2, "score", 3), (2, "clear", None), tab=A)
    mine, theirs = _state(wb, run, A)["marks"], _state(wb, run, B)["marks"]
    assert mine == {"scores": {"0": 5.0}, "picks": [1]}
    assert theirs == {"scores": {"0": 1.0}, "picks": []}
    assert store.current_scores(snap) == {0: 3.0}  # both tabs count


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"events": [{"position": 0, "kind": "score", "value": 7}]}, "out of range"),
        ({"events": [{"position": 99, "kind": "score", "value": 3}]}, "out of range"),
        ({"events": [{"position": 0, "kind": "vote", "value": 1}]}, "unknown kind"),
        ({"events": "3"}, "must be a list"),
        ({"events": []}, "must be a list"),
        (
            {
                "events": [
                    {"position": 0, "kind": "score", "value": 2},
                    {"position": 0, "kind": "score", "value": 9},
                ]
            },
            "out of range",
        ),
        ({"snapshot": "nope"}, "unknown snapshot"),
        ({"session": "x y"}, "bad session id"),
    ],
)
def test_bad_rating_changes_nothing(
    wb: handlers.Workbench,
    run: dict[str, Any],
    store: Store,
    body: dict[str, Any],
    needle: str,
    counts: Any,
) -> None:
    snap = _state(wb, run)["snapshot"]["id"]
    good = {
        "session": A,
        "snapshot": snap,
        "events": [{"position": 0, "kind": "score", "value": 3}],
    }
    before = counts()
    with pytest.raises(USER_ERRORS, match=needle):
        handlers.rate(wb, {**good, **body})
    assert counts() == before


def test_unknown_run_and_bad_generation_are_one_line_errors(
    wb: handlers.Workbench, run: dict[str, Any]
) -> None:
    with pytest.raises(USER_ERRORS, match="unknown run 'ghost'"):
        handlers.state(wb, {"run": "ghost", "session": A})
    with pytest.raises(UIError, match="generation"):
        _state(wb, run, generation="4")
    with pytest.raises(UIError, match="expected a JSON object"):
        handlers.rate(wb, ["not", "an", "object"])


def test_live_evolve_streams_every_image_then_commits(
    wb: handlers.Workbench, run: dict[str, Any], store: Store
) -> None:
    snap = _state(wb, run)["snapshot"]["id"]
    _rate(wb, snap, (3, "score", 5), (4, "pick", None))
    events = _evolve(wb, run, strength=0.6, locks=["color"])
    kinds = [e["type"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done"
    shown = [e for e in events if e["type"] == "image"]
    done = events[-1]["state"]
    assert sorted(e["position"] for e in shown) == list(range(8))  # each image once
    for e in shown:
        if "thumb" in e:  # an elite: its stored thumbnail, as the commit has it
            assert e["thumb"] == done["snapshot"]["thumbs"][e["position"]]
        else:  # a new image: its thumbnail as soon as it is encoded, the bytes the commit stores
            data = base64.b64decode(e["preview"].removeprefix("data:image/jpeg;base64,"))
            assert Image.open(io.BytesIO(data)).size == (32, 32)
            assert hashlib.sha256(data).hexdigest() == done["snapshot"]["thumbs"][e["position"]]
    assert done["snapshot"]["generation"] == 1 and done["snapshot"]["parent_id"] == snap
    assert done["settings"] == {"mutation_strength": 0.6, "locks": ["color"]}
    assert store.get_snapshot(done["snapshot"]["id"]).consumed_ratings == [
        r.id for r in store.ratings(snap)
    ]
    assert [e["done"] for e in events if e["type"] == "progress"][-1] == 8


@pytest.mark.parametrize("k", [None, 0, 2])
def test_live_evolve_makes_the_same_generation_as_evolve(
    tmp_path: Path, wb: handlers.Workbench, run: dict[str, Any], k: int | None
) -> None:
    snap = _state(wb, run)["snapshot"]["id"]
    _rate(wb, snap, (0, "score", 4), (5, "pick", None))
    extra = {} if k is None else {"agent": k}
    live = _evolve(wb, run, **extra)[-1]["state"]
    # The agent is on by default (k = 4); "agent": 0 turns its first pass off.
    assert (live["agent"] or {}).get("k") == {None: 4, 0: None, 2: 2}[k]
    live = live["snapshot"]
    with Store(tmp_path / "twin") as twin:
        session = Session.create(
            twin, RunSpec(name="small", generator="cppn", population=8, size=32, seed=5)
        )
        if k != 0:
            Agent.for_session(session, AgentConfig(offspring_factor=k or 4))
        session.rate({0: 4.0}, picks={5: True})
        plain = session.evolve()
        assert plain.population == live["population"]
        assert plain.images == live["images"] and plain.thumbs == live["thumbs"]


def test_evolve_refuses_stale_busy_or_bad_requests_and_changes_nothing(
    wb: handlers.Workbench, run: dict[str, Any], store: Store, counts: Any
) -> None:
    head = _state(wb, run)["snapshot"]["id"]
    body = {"run": run["run"], "branch": "main", "session": A, "parent": head}
    before = counts()
    with pytest.raises(Conflict, match="moved"):
        start_evolve(wb, {**body, "parent": "0" * 32})
    with pytest.raises(UIError, match="mutation strength"):
        start_evolve(wb, {**body, "strength": 3})
    with pytest.raises(UIError, match="cannot lock 'wings'"):
        start_evolve(wb, {**body, "locks": ["wings"]})
    branch_id = store.get_branch(run["run"]).id
    wb.busy.add(branch_id)
    with pytest.raises(Conflict, match="already rendering"):
        start_evolve(wb, body)
    wb.busy.discard(branch_id)
    assert counts() == before


def test_undo_moves_the_head_back_and_deletes_nothing(
    wb: handlers.Workbench, run: dict[str, Any], store: Store, counts: Any
) -> None:
    with pytest.raises(USER_ERRORS, match="already at generation 0"):
        handlers.undo(wb, {"run": run["run"], "session": A})
    _evolve(wb, run)
    before = counts()
    st = handlers.undo(wb, {"run": run["run"], "branch": "main", "session": A})
    assert st["snapshot"]["generation"] == 0 and st["is_head"]
    assert counts() == before


def test_fork_opens_a_new_branch_at_the_shown_generation(
    wb: handlers.Workbench, run: dict[str, Any], store: Store, counts: Any
) -> None:
    _evolve(wb, run)
    _evolve(wb, run)
    first = handlers.fork(wb, {"run": run["run"], "branch": "main", "session": A, "generation": 1})
    again = handlers.fork(wb, {"run": run["run"], "branch": "main", "session": A, "generation": 1})
    assert (first["branch"], again["branch"]) == ("main-g1", "main-g1-2")
    assert first["snapshot"]["generation"] == 1 and first["is_head"]
    assert first["snapshot"]["id"] == store.snapshot_at(store.get_branch(run["run"]), 1).id
    before = counts()
    with pytest.raises(UIError, match="generation"):
        handlers.fork(wb, {"run": run["run"], "session": A, "generation": 9})
    with pytest.raises(USER_ERRORS, match="already exists"):
        handlers.fork(wb, {"run": run["run"], "session": A, "generation": 0, "name": "main-g1"})
    assert counts() == before


def test_history_lineage_and_export_of_picks(wb: handlers.Workbench, run: dict[str, Any]) -> None:
    g0 = _state(wb, run)["snapshot"]
    _rate(wb, g0["id"], (2, "pick", None), (6, "pick", None), (6, "unpick", None))
    g1 = _evolve(wb, run)[-1]["state"]["snapshot"]
    _rate(wb, g1["id"], (7, "pick", None))
    gens = browse.history(wb, {"run": run["run"], "branch": "main"})
    assert [g["generation"] for g in gens] == [0, 1]
    assert gens[0]["picks"] == [g0["thumbs"][2]] and gens[1]["picks"] == [g1["thumbs"][7]]

    child = next(i for i, ind in enumerate(g1["population"]) if ind not in g0["population"])
    tree = browse.lineage(wb, {"snapshot": g1["id"], "position": child})
    parents = tree["levels"][0]
    assert parents and all(p["generation"] == 0 and p["thumb"] in g0["thumbs"] for p in parents)

    name, data = browse.export_picks(wb, {"run": run["run"], "branch": "main", "session": A})
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = sorted(zf.namelist())
        assert names == ["small-main-g0000-02.png", "small-main-g0001-07.png"]
        meta = read_metadata(io.BytesIO(zf.read(names[1])))
    assert name == "small-main-picks.zip"
    assert meta["genome_id"] == g1["population"][7] and meta["generation"] == 1
    with pytest.raises(UIError, match="no picks"):
        browse.export_picks(wb, {"run": run["run"], "branch": "main", "session": B})


def test_session_stats_count_decisions_and_skip_breaks() -> None:
    assert handlers.session_stats([]) == {
        "decisions": 0,
        "ratings_per_minute": None,
        "median_seconds": None,
    }
    stats = handlers.session_stats([100.0, 102.0, 103.0, 107.0, 1000.0, 1001.0])
    # gaps 2, 1, 4 and 1 (the 893 s break is left out): 4 decisions timed over 8 s
    assert stats == {"decisions": 6, "ratings_per_minute": 30.0, "median_seconds": 1.5}


def test_rating_returns_live_stats_for_the_tab(wb: handlers.Workbench, run: dict[str, Any]) -> None:
    snap = _state(wb, run)["snapshot"]["id"]
    assert _rate(wb, snap, (0, "score", 2))["stats"]["decisions"] == 1
    out = _rate(wb, snap, (1, "score", 3), (2, "pick", None))
    assert out["stored"] == 2 and out["stats"]["decisions"] == 3
    assert _state(wb, run, B)["stats"]["decisions"] == 0
    fresh = handlers.Workbench(wb.store)  # a restarted server reads the stats back from the store
    assert _state(fresh, run, A)["stats"]["decisions"] == 3
