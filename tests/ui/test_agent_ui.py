"""The agent in the UI, as plain functions and over HTTP: what a tab sees and what it stores.

The agent is on by default in every tab; these tests check what it shows (predicted scores,
agreement, what it chose), pairwise decisions as append-only events, the autopilot, and that a
bad request to any of the new endpoints is a one-line message that stores nothing.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from evolve.agent import AGENT_SESSION
from spark_runtime.store import Store
from ui import agent_handlers, handlers
from ui.agent_view import score_bands, screening
from ui.handlers import USER_ERRORS, Conflict, UIError
from ui.live import start_evolve

A, B = "tab-aaaa", "tab-bbbb"


def _q(run: dict[str, Any], tab: str = A, **extra: Any) -> dict[str, Any]:
    return {"run": run["run"], "branch": "main", "session": tab, **extra}


def _head(wb: handlers.Workbench, run: dict[str, Any], tab: str = A) -> dict[str, Any]:
    return handlers.state(wb, _q(run, tab))


def _evolve(wb: handlers.Workbench, run: dict[str, Any], tab: str = A, **extra: Any) -> Any:
    parent = _head(wb, run, tab)["snapshot"]["id"]
    return list(start_evolve(wb, _q(run, tab, parent=parent, **extra)))[-1]["state"]


def _rate(wb: handlers.Workbench, snapshot: str, *events: dict[str, Any], tab: str = A) -> Any:
    return handlers.rate(wb, {"session": tab, "snapshot": snapshot, "events": list(events)})


# --- the first pass ------------------------------------------------------------------------
def test_the_agent_screens_by_default_and_each_generation_says_what_it_chose(
    wb: handlers.Workbench, run: dict[str, Any], store: Store
) -> None:
    assert _head(wb, run)["agent"] is None  # generation 0 is random: nothing was screened
    snap = _head(wb, run)["snapshot"]["id"]
    _rate(wb, snap, {"position": 2, "kind": "score", "value": 5})
    st = _evolve(wb, run)
    chose = st["agent"]
    # 8 places: 2 elites, 5 children chosen from 4 x 5 bred, 1 newcomer (engine defaults).
    assert chose["k"] == 4 and chose["bred"] == 20 and chose["chosen"] == 5
    assert chose["roles"] == ["elite"] * 2 + ["chosen"] * 5 + ["newcomer"]
    assert store.get_snapshot(st["snapshot"]["id"]).settings["agent"]["k"] == 4
    assert _evolve(wb, run, agent=2)["agent"]["k"] == 2  # the tab's k applies at once
    assert _evolve(wb, run)["agent"]["k"] == 2  # and is kept for the tab
    assert _evolve(wb, run, agent=0)["agent"] is None  # off: no first pass


@pytest.mark.parametrize(
    ("k", "needle"), [(99, "from 0 to 64"), (-1, "from 0 to 64"), ("x", "'agent'")]
)
def test_a_bad_agent_setting_starts_nothing(
    wb: handlers.Workbench, run: dict[str, Any], counts: Any, k: Any, needle: str
) -> None:
    before = counts()
    with pytest.raises(UIError, match=needle):
        _evolve(wb, run, agent=k)
    assert counts() == before and not wb.busy


def test_screening_reads_roles_from_the_engine_settings() -> None:
    settings = {"engine": {"elite": 1, "newcomers": 0}, "agent": {"k": 8, "explore": 0.25}}
    out = screening(settings, 4)
    assert out is not None and out["roles"] == ["elite", "chosen", "chosen", "chosen"]
    assert (out["bred"], out["chosen"], out["explore"]) == (24, 3, 0.25)
    assert screening({"engine": {}}, 4) is None


def test_score_bands_put_the_uncertainty_on_the_score_scale() -> None:
    u = np.array([-2.0, 0.0, 1.0, 4.0])
    scores = np.clip(2.0 + 0.5 * u, 0, 5)  # a linear calibration, as the model makes
    bands = score_bands(scores, u, [1.0, 2.0, 0.5, 2.0])
    assert bands == [[0.5, 1.5], [1.0, 3.0], [2.25, 2.75], [3.0, 5.0]]  # the last one clipped
    assert score_bands([2.5] * 4, [0.0] * 4, [20.0] * 4) is None  # no model: unknown
    assert score_bands([1.0, 2.0], [0.0, 1.0], [float("nan"), 1.0]) is None


def test_ratings_refit_the_agent_in_the_background_so_enter_finds_it_ready(
    wb: handlers.Workbench, run: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from evolve import agent as agent_module

    fits = []
    real = agent_module.agent_data.fit

    def counting(*args: Any, **kwargs: Any) -> Any:
        fits.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(agent_module.agent_data, "fit", counting)
    snap = _head(wb, run)["snapshot"]["id"]
    _rate(
        wb,
        snap,
        {"position": 1, "kind": "score", "value": 5},
        {"position": 3, "kind": "score", "value": 1},
    )
    wb._prefits.submit(lambda: None).result()  # the background fit has run
    assert len(fits) == 1
    _evolve(wb, run)
    assert len(fits) == 1  # the evolve used the fit made while the person was rating
    # A rating on a generation that is not a head of this tab's sessions fits nothing.
    _rate(wb, snap, {"position": 0, "kind": "score", "value": 2})
    wb._prefits.submit(lambda: None).result()
    assert len(fits) == 1


# --- predictions and agreement ---------------------------------------------------------------
def test_predictions_and_agreement_follow_the_persons_choices(
    wb: handlers.Workbench, run: dict[str, Any], store: Store
) -> None:
    first = agent_handlers.agent_info(wb, _q(run))
    assert first["comparisons"] == 0 and first["agreement"] is None and first["bands"] is None
    assert first["predicted"] == [2.5] * 8 and first["k"] == 4
    g0 = _head(wb, run)["snapshot"]["id"]
    _rate(
        wb,
        g0,
        {"position": 1, "kind": "score", "value": 5},
        {"position": 4, "kind": "score", "value": 1},
        {"position": 6, "kind": "pick"},
    )
    g1 = _evolve(wb, run)["snapshot"]["id"]
    info = agent_handlers.agent_info(wb, _q(run))
    record = store.get_snapshot(g1).settings["agent"]
    assert info["snapshot"] == g1 and info["recorded"] and info["comparisons"] > 0
    assert info["predicted"] == [round(v, 2) for v in record["predicted"]]
    assert all(lo <= p <= hi for p, (lo, hi) in zip(info["predicted"], info["bands"], strict=True))
    assert info["agreement"] is None  # nothing chosen yet in a generation the agent made

    utility = record["utility"]
    best, worst = int(np.argmax(utility)), int(np.argmin(utility))
    _rate(wb, g1, {"position": best, "kind": "pick"})
    assert agent_handlers.agent_info(wb, _q(run))["agreement"] == 1.0
    _rate(wb, g1, {"position": worst, "kind": "pick"})
    assert agent_handlers.agent_info(wb, _q(run, B))["agreement"] == 0.5  # any tab sees it
    older = agent_handlers.agent_info(wb, _q(run, generation=0))
    assert older["snapshot"] == g0 and older["screening"] is None


# --- pairwise mode ---------------------------------------------------------------------------
def test_pair_decisions_are_stored_as_append_only_pair_events(
    wb: handlers.Workbench, run: dict[str, Any], store: Store, counts: Any
) -> None:
    snap = _head(wb, run)["snapshot"]["id"]
    before = counts()["rating"]
    out = _rate(
        wb,
        snap,
        {"position": 3, "kind": "pair", "other": 5, "value": 1},  # 3 beat 5
        {"position": 0, "kind": "pair", "other": 7, "value": 0},  # both bad
        {"position": 5, "kind": "pair", "other": 3},  # the default value: 5 beat 3
    )
    assert out["stored"] == 3 and out["stats"]["decisions"] == 3
    assert counts()["rating"] == before + 3
    assert [(p.first, p.second, p.outcome, p.session) for p in store.pairs(snap)] == [
        (3, 5, "first", A),
        (0, 7, "both_bad", A),
        (5, 3, "first", A),
    ]
    assert _head(wb, run)["marks"] == {"scores": {}, "picks": []}  # pairs are not marks


@pytest.mark.parametrize(
    ("event", "needle"),
    [
        ({"position": 2, "kind": "pair", "value": 1}, "needs 'other'"),
        ({"position": 2, "kind": "pair", "other": 2, "value": 1}, "two different positions"),
        ({"position": 2, "kind": "pair", "other": 8, "value": 1}, "out of range"),
        ({"position": -1, "kind": "pair", "other": 3}, "out of range"),
        ({"position": 2, "kind": "pair", "other": 3, "value": 3}, "pair value"),
        ({"position": 2, "kind": "pair", "other": "3"}, "must be an integer"),
        ({"position": 2, "kind": "score", "value": 3, "other": 3}, "only for pair"),
    ],
)
def test_a_bad_pair_event_stores_nothing_of_its_batch(
    wb: handlers.Workbench, run: dict[str, Any], counts: Any, event: dict[str, Any], needle: str
) -> None:
    snap = _head(wb, run)["snapshot"]["id"]
    good = {"position": 0, "kind": "pair", "other": 1, "value": 1}
    before = counts()
    with pytest.raises(USER_ERRORS, match=needle):
        _rate(wb, snap, good, event)
    assert counts() == before


def test_the_pair_queue_is_what_the_agent_would_suggest_step_by_step(
    wb: handlers.Workbench, run: dict[str, Any], store: Store
) -> None:
    snap = _head(wb, run)["snapshot"]["id"]
    body = _q(run, snapshot=snap, count=5)
    queue = agent_handlers.pair_queue(wb, body)
    pairs = queue["pairs"]
    assert queue["judged"] == 0 and len(pairs) == 5
    assert len({frozenset(p) for p in pairs}) == 5 and all(0 <= a != b < 8 for a, b in pairs)
    session = wb.session(run["run"], "main", A)
    assert tuple(pairs[0]) == wb.agent(session).suggest_pair(session, store.get_snapshot(snap))
    # Pending (decided, maybe not stored yet) pairs are looked past, as stored ones are.
    ahead = agent_handlers.pair_queue(wb, {**body, "pending": [pairs[0]], "showing": pairs[1]})
    assert ahead["pairs"][:3] == pairs[2:] and ahead["judged"] == 1  # the shown one is not judged
    a, b = pairs[0]
    _rate(wb, snap, {"position": b, "kind": "pair", "other": a})
    stored = agent_handlers.pair_queue(wb, body)
    assert stored["pairs"][:4] == pairs[1:] and stored["judged"] == 1
    assert agent_handlers.pair_queue(wb, {**body, "session": B})["judged"] == 0  # per tab


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"run": "ghost"}, "unknown run 'ghost'"),
        ({"snapshot": "nope"}, "unknown snapshot"),
        ({"pending": [[1, 1]]}, "two different positions"),
        ({"pending": [[1, 8]]}, "within 0..7"),
        ({"pending": [[1]]}, r"expected \[a, b\]"),
        ({"pending": "1-2"}, "must be a list"),
        ({"showing": [3, 3]}, "'showing': a pair compares two different positions"),
        ({"count": 0}, "'count'"),
        ({"session": "agent"}, "reserved"),
    ],
)
def test_bad_pair_requests_answer_one_line(
    wb: handlers.Workbench, run: dict[str, Any], counts: Any, change: dict[str, Any], needle: str
) -> None:
    snap = _head(wb, run)["snapshot"]["id"]
    before = counts()
    with pytest.raises(USER_ERRORS, match=needle) as caught:
        agent_handlers.pair_queue(wb, {**_q(run, snapshot=snap), **change})
    assert "\n" not in str(caught.value)
    assert counts() == before


def test_a_snapshot_of_another_run_is_refused(wb: handlers.Workbench, run: dict[str, Any]) -> None:
    other = handlers.create_run(wb, {"population": 4, "size": 16, "name": "other"})
    snap = _head(wb, other)["snapshot"]["id"]
    with pytest.raises(UIError, match="is not in run 'small'"):
        agent_handlers.pair_queue(wb, _q(run, snapshot=snap))
    with pytest.raises(UIError, match="is not in run 'small'"):
        agent_handlers.agent_info(wb, _q(run, snapshot=snap))


# --- autopilot ---------------------------------------------------------------------------------
def test_autopilot_evolves_n_generations_then_hands_back(
    wb: handlers.Workbench, run: dict[str, Any], store: Store
) -> None:
    head = _head(wb, run)["snapshot"]["id"]
    _rate(wb, head, {"position": 0, "kind": "score", "value": 5})
    events = list(agent_handlers.start_autopilot(wb, _q(run, parent=head, generations=2)))
    assert [e["type"] for e in events] == ["start", "generation", "generation", "done"]
    assert [e["generation"] for e in events[1:3]] == [1, 2] and events[2]["done"] == 2
    done = events[-1]["state"]
    assert done["snapshot"]["generation"] == 2 and done["is_head"]
    assert done["snapshot"]["thumbs"] == events[2]["thumbs"]
    branch = store.get_branch(run["run"])
    assert store.get_snapshot(branch.head_snapshot_id).generation == 2
    g1 = store.snapshot_at(branch, 1)
    # The agent scored generation 1 itself, under its own session; the person's tab has no marks.
    assert {r.session for r in store.ratings(g1.id)} == {AGENT_SESSION}
    assert _head(wb, run)["marks"] == {"scores": {}, "picks": []}
    assert not wb.busy


BAD_N = "'generations' must be a whole number from 1 to 100"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        *[({"generations": n}, BAD_N) for n in (0, 101, "five", True, None, 2.5)],
        ({"generations": 2, "strength": 1.5}, "mutation strength"),
        ({"generations": 2, "locks": ["tails"]}, "cannot lock 'tails'"),
    ],
)
def test_a_bad_autopilot_request_stores_nothing(
    wb: handlers.Workbench, run: dict[str, Any], counts: Any, extra: dict[str, Any], message: str
) -> None:
    head = _head(wb, run)["snapshot"]["id"]
    before = counts()
    with pytest.raises(UIError, match=message):
        agent_handlers.start_autopilot(wb, _q(run, parent=head, **extra))
    assert counts() == before and not wb.busy


def test_autopilot_uses_the_tabs_mutation_strength_and_locks(
    wb: handlers.Workbench, run: dict[str, Any], store: Store
) -> None:
    head = _head(wb, run)["snapshot"]["id"]
    body = _q(run, parent=head, generations=2, strength=0.8, locks=["color"])
    assert [e["type"] for e in agent_handlers.start_autopilot(wb, body)][-1] == "done"
    branch = store.get_branch(run["run"])
    for generation in (1, 2):
        engine = store.snapshot_at(branch, generation).settings["engine"]
        assert engine["mutation_strength"] == 0.8 and engine["locks"] == ["color"]


def test_autopilot_refuses_a_stale_or_busy_branch(
    wb: handlers.Workbench, run: dict[str, Any], store: Store, counts: Any
) -> None:
    head = _head(wb, run)["snapshot"]["id"]
    before = counts()
    with pytest.raises(Conflict, match="moved"):
        agent_handlers.start_autopilot(wb, _q(run, parent="0" * 16, generations=2))
    branch_id = store.get_branch(run["run"]).id
    wb.busy.add(branch_id)
    with pytest.raises(Conflict, match="already rendering"):
        agent_handlers.start_autopilot(wb, _q(run, parent=head, generations=2))
    wb.busy.discard(branch_id)
    assert counts() == before


def test_other_tabs_work_while_the_autopilot_flies(
    wb: handlers.Workbench, run: dict[str, Any], store: Store
) -> None:
    side = handlers.fork(wb, _q(run, B, generation=0, name="side"))
    head = _head(wb, run)["snapshot"]["id"]
    stream = agent_handlers.start_autopilot(wb, _q(run, parent=head, generations=3))
    # While it runs: the other tab rates and evolves its own branch; main is busy meanwhile.
    _rate(wb, side["snapshot"]["id"], {"position": 1, "kind": "score", "value": 4}, tab=B)
    body = {**_q(run, B), "branch": "side", "parent": side["snapshot"]["id"]}
    assert list(start_evolve(wb, body))[-1]["state"]["snapshot"]["generation"] == 1
    assert [e["type"] for e in stream][-1] == "done"
    assert store.get_snapshot(store.get_branch(run["run"]).head_snapshot_id).generation == 3


# --- over HTTP --------------------------------------------------------------------------------
def test_agent_endpoints_over_http(
    client: TestClient, wb: handlers.Workbench, run: dict[str, Any], counts: Any
) -> None:
    head = _head(wb, run)["snapshot"]["id"]
    info = client.get("/api/agent", params=_q(run))
    assert info.status_code == 200 and info.json()["predicted"] == [2.5] * 8
    pairs = client.post("/api/pairs", json=_q(run, snapshot=head, count=3))
    assert pairs.status_code == 200 and len(pairs.json()["pairs"]) == 3
    before = counts()
    bad = [
        client.get("/api/agent", params={**_q(run), "run": "ghost"}),
        client.get("/api/agent", params=_q(run, generation="7")),
        client.post("/api/pairs", content=b"{", headers={"Content-Type": "application/json"}),
        client.post("/api/pairs", json=[1, 2]),
        client.post("/api/autopilot", json=_q(run, parent=head, generations=0)),
        client.post("/api/autopilot", json=_q(run, parent=head, generations=2, agent=100)),
        client.post("/api/autopilot", json={**_q(run, parent=head), "run": "ghost"}),
    ]
    assert [r.status_code for r in bad] == [400] * 7
    assert all("\n" not in r.json()["error"] for r in bad)
    assert "not valid JSON" in bad[2].json()["error"] and "JSON object" in bad[3].json()["error"]
    assert counts() == before

    flown = client.post("/api/autopilot", json=_q(run, parent=head, generations=1))
    assert flown.headers["content-type"] == "application/x-ndjson"
    events = [json.loads(line) for line in flown.text.splitlines() if line]
    assert events[-1]["type"] == "done" and events[-1]["state"]["snapshot"]["generation"] == 1
    stale = client.post("/api/autopilot", json=_q(run, parent=head, generations=1))
    assert stale.status_code == 409 and "moved to generation 1" in stale.json()["error"]
