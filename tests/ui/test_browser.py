"""End to end in headless Chromium: a person driving the grid with the keyboard.

The server runs in a thread over a temp store (``live``); each test opens its own browser
context, so each tab has its own sessionStorage and therefore its own rating session.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.ui.conftest import row_counts
from ui import agent_handlers, handlers

pytestmark = [
    pytest.mark.browser,
    # Gradio's queue calls pandas APIs that pandas 3 deprecates; not ours to fix.
    pytest.mark.filterwarnings("ignore:.*no_silent_downcasting:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated:DeprecationWarning"),
]
SMALL = {"generator": "cppn", "population": 8, "size": 64}
ALL_SHOWN = "n => document.querySelectorAll('.im-cell').length === n && !document.querySelector('.im-cell.im-wait')"


class Tab:
    """One browser tab on the live server; records any request that leaves the machine."""

    def __init__(self, browser: Any, live: Any) -> None:
        self.live = live
        self.context = browser.new_context(
            viewport={"width": 1280, "height": 900}, accept_downloads=True
        )
        self.page = self.context.new_page()
        self.outside: list[str] = []
        self.errors: list[str] = []
        self.expected: list[str] = []  # error messages a test provokes on purpose
        self.page.on("request", self._request)
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.goto(live.url)
        self.page.wait_for_function("() => window.Imagery && document.querySelector('.im-top')")

    def _request(self, request: Any) -> None:
        if not request.url.startswith((self.live.url, "data:", "blob:")):
            self.outside.append(request.url)

    def open(self, run: str, branch: str = "main", n: int = 8) -> None:
        self.page.evaluate("([r, b]) => window.Imagery.open(r, b)", [run, branch])
        self.wait_shown(n)

    def wait_shown(self, n: int = 8) -> None:
        self.page.wait_for_function(ALL_SHOWN, arg=n, timeout=20_000)

    def keys(self, *keys: str) -> None:
        for key in keys:
            self.page.keyboard.press(key)

    def saved(self) -> dict[str, Any]:
        """Waits until the outbox is empty; returns the page's view of things."""
        self.page.wait_for_function("() => window.Imagery.debug().unsaved === 0", timeout=10_000)
        return self.page.evaluate(
            "() => { const d = window.Imagery.debug(); return {...d, st: null, snapshot: d.st && d.st.snapshot.id, generation: d.st && d.st.snapshot.generation, branch: d.st && d.st.branch}; }"
        )

    def generation_shown(self, generation: int) -> None:
        self.page.wait_for_function(
            "g => { const d = window.Imagery.debug(); return d.st && d.st.snapshot.generation === g && !d.rendering; }",
            arg=generation,
            timeout=20_000,
        )
        self.wait_shown()

    def close(self) -> None:
        assert self.outside == [], f"requests left the machine: {self.outside}"
        assert self.errors == [], f"script errors: {self.errors}"
        shown = self.page.evaluate("() => window.Imagery.debug().errors")
        assert [m for m in shown if not any(e in m for e in self.expected)] == [], (
            f"error messages shown: {shown}"
        )
        self.context.close()


@pytest.fixture
def tabs(browser: Any, live: Any) -> Iterator[Any]:
    opened: list[Tab] = []

    def new_tab() -> Tab:
        opened.append(Tab(browser, live))
        return opened[-1]

    yield new_tab
    for tab in opened:
        tab.close()


def _run(live: Any, name: str) -> str:
    return handlers.create_run(live.wb, {**SMALL, "seed": 11, "name": name})["run"]


def test_start_a_run_from_the_start_view(tabs: Any, live: Any) -> None:
    tab = tabs()
    page = tab.page
    page.fill("#new-population input", "8")
    page.fill("#new-size input", "64")
    page.locator("#new-name textarea, #new-name input").first.fill("from-form")
    page.click("#new-create")
    tab.wait_shown(8)
    run = live.store.get_run("from-form")
    assert (run.population_size, run.size) == (8, 64)
    assert page.locator(".im-title").inner_text() == "from-form"


def test_keyboard_scores_every_key_and_a_reload_shows_them(tabs: Any, live: Any) -> None:
    run = _run(live, "keys")
    tab = tabs()
    tab.open(run)
    # Typed as fast as Playwright can: nothing may be lost while requests are in flight.
    tab.keys("3", "ArrowRight", "5", "ArrowRight", " ", "ArrowRight", "4", "0", "ArrowDown", "2")
    for _ in range(6):
        tab.keys("1", "2", "3", "4", "5")
    seen = tab.saved()
    rows = live.store.ratings(seen["snapshot"], seen["session"])
    assert len(rows) == 2 + 1 + 2 + 1 + 30
    below = min(7, 3 + seen["cols"])  # ArrowDown moves one row, or to the last cell
    assert seen["focus"] == below
    expected = {0: 3.0, 1: 5.0, below: 5.0}
    assert live.store.current_scores(seen["snapshot"], seen["session"]) == expected
    assert live.store.current_picks(seen["snapshot"], seen["session"]) == {2}

    tab.page.reload()
    tab.page.wait_for_function("() => window.Imagery && window.Imagery.debug().st")
    tab.wait_shown()
    cells = tab.page.locator(".im-cell")
    assert cells.nth(0).locator(".im-score").inner_text() == "3"
    assert cells.nth(1).locator(".im-score").inner_text() == "5"
    assert "im-picked" in cells.nth(2).get_attribute("class")
    assert cells.nth(3).locator(".im-score").inner_text() == ""
    assert tab.saved()["session"] == seen["session"]  # the reload kept the tab's session


def test_evolve_undo_and_fork_from_the_keyboard(tabs: Any, live: Any) -> None:
    run = _run(live, "evolving")
    tab = tabs()
    tab.open(run)
    tab.keys("5", "ArrowRight", " ", "Enter")
    tab.generation_shown(1)
    branch = live.store.get_branch(run)
    gen1 = branch.head_snapshot_id
    assert live.store.get_snapshot(gen1).generation == 1
    assert "generation 1" in tab.page.locator(".im-gen").inner_text()
    # The history strip loads after the grid, beside the agent's predictions: wait for it.
    tab.page.wait_for_function(
        "() => document.querySelectorAll('.im-history .im-gen-tile').length === 2"
    )

    tab.keys("Backspace")  # back one generation: the head moves, nothing is deleted
    tab.generation_shown(0)
    assert live.store.get_snapshot(live.store.get_branch(run).head_snapshot_id).generation == 0
    assert live.store.get_snapshot(gen1).generation == 1

    tab.keys("Enter")
    tab.generation_shown(1)
    tab.keys("[")  # look at generation 0 again, then fork from it
    tab.page.wait_for_selector(".im-gen.im-old")
    tab.keys("f")
    tab.page.wait_for_function("() => window.Imagery.debug().st.branch === 'main-g0'")
    forked = live.store.get_branch(run, "main-g0")
    assert live.store.get_snapshot(forked.head_snapshot_id).generation == 0
    assert tab.page.locator(".im-branch").input_value() == "main-g0"
    assert live.store.get_snapshot(live.store.get_branch(run).head_snapshot_id).generation == 1


def test_two_tabs_rate_the_same_run_without_overwriting(tabs: Any, live: Any) -> None:
    run = _run(live, "shared")
    first, second = tabs(), tabs()
    first.open(run)
    second.open(run)
    first.keys("5", "ArrowRight", " ")
    second.keys("1")
    a, b = first.saved(), second.saved()
    assert a["session"] != b["session"] and a["snapshot"] == b["snapshot"]
    snap = a["snapshot"]
    assert live.store.current_scores(snap, a["session"]) == {0: 5.0}
    assert live.store.current_scores(snap, b["session"]) == {0: 1.0}
    assert live.store.current_scores(snap) == {0: 3.0}
    assert second.page.locator(".im-cell").nth(0).locator(".im-score").inner_text() == "1"

    # The first tab evolves; the second, still showing generation 0, gets a clear message.
    first.keys("Enter")
    first.generation_shown(1)
    second.expected.append("moved to generation 1 in another tab")
    second.keys("Enter")
    second.page.wait_for_selector(".im-message.im-error.im-show")
    assert "moved to generation 1 in another tab" in second.page.locator(".im-message").inner_text()
    second.generation_shown(1)


def test_full_size_lineage_and_export(tabs: Any, live: Any) -> None:
    run = _run(live, "panels")
    tab = tabs()
    tab.open(run)
    tab.keys(" ", "Enter")
    tab.generation_shown(1)
    st = tab.page.evaluate("() => window.Imagery.debug().st.snapshot")
    tab.keys("ArrowRight", "ArrowRight", "v")
    assert (
        tab.page.locator(".im-overlay.im-show img").get_attribute("src")
        == f"/api/object/{st['images'][2]}"
    )
    tab.keys("Escape", "l")
    tab.page.wait_for_selector(
        ".im-lineage .im-arrow"
    )  # a child of generation 0: "← 1" then its parents
    assert tab.page.locator(".im-lineage img").count() >= 2
    tab.keys(" ")
    tab.saved()
    with tab.page.expect_download() as download:
        tab.keys("e")
    assert download.value.suggested_filename == "panels-main-picks.zip"


def test_agent_predictions_pairwise_keys_and_autopilot(tabs: Any, live: Any) -> None:
    run = _run(live, "agentic")
    tab = tabs()
    tab.open(run)
    assert tab.page.locator(".im-agree").inner_text() == "agreement —"
    tab.keys("5", "ArrowRight", " ", "Enter")  # the agent (k = 4) screens generation 1
    tab.generation_shown(1)
    assert "agent chose 5 of 20 (k=4)" in tab.page.locator(".im-agentline").inner_text()
    seen = tab.saved()

    # p: the agent's predicted score on every thumbnail, as the server computes it.
    tab.keys("p")
    tab.page.wait_for_function(
        "() => document.querySelectorAll('#imagery-root.im-predict .im-pred b').length === 8"
    )
    info = agent_handlers.agent_info(live.wb, {"run": run, "session": seen["session"]})
    badges = tab.page.locator(".im-cell .im-pred b").all_inner_texts()
    assert badges == [f"≈{v:.1f}" for v in info["predicted"]]
    tab.keys("p")
    assert not tab.page.locator(".im-cell .im-pred").first.is_visible()

    # m: pairwise mode. The first three pairs are the agent's suggestions, decided with the
    # keyboard as fast as Playwright types; every decision is stored as a pair event.
    snap = seen["snapshot"]
    expected = agent_handlers.pair_queue(
        live.wb, {"run": run, "session": seen["session"], "snapshot": snap, "count": 3}
    )["pairs"]
    tab.keys("m")
    tab.page.wait_for_function("() => (window.Imagery.debug().agent.pair || {}).current")
    assert tab.page.locator(".im-pairview").is_visible()
    assert not tab.page.locator(".im-grid").is_visible()
    tab.keys("ArrowLeft", "ArrowRight", "ArrowDown", "ArrowLeft", "ArrowLeft")
    tab.saved()
    pairs = live.store.pairs(snap, seen["session"])
    (a, b), (c, d), (e, f) = expected
    assert [(p.first, p.second, p.outcome) for p in pairs[:3]] == [
        (a, b, "first"),
        (d, c, "first"),
        (e, f, "both_bad"),
    ]
    assert len(pairs) == 5 and len({frozenset((p.first, p.second)) for p in pairs}) == 5
    assert "5 pair(s) judged" in tab.page.locator(".im-judged").inner_text()

    tab.keys("Enter")  # Enter still evolves; the pair view comes back for the new generation
    tab.generation_shown(2)
    tab.page.wait_for_function(
        "s => { const p = window.Imagery.debug().agent.pair; return p && p.current && window.Imagery.debug().st.snapshot.id !== s; }",
        arg=snap,
    )
    tab.keys("m")

    # a: the autopilot. A bad N is one line and stores nothing; N = 2 makes two generations.
    field = tab.page.locator(".im-autopilot-n")
    before = row_counts(live.root)
    field.fill("0")
    tab.page.evaluate("() => document.activeElement.blur()")
    tab.expected.append("'generations' must be a whole number from 1 to 100")
    tab.keys("a")
    tab.page.wait_for_selector(".im-message.im-error.im-show")
    assert "'generations' must be a whole number" in tab.page.locator(".im-message").inner_text()
    tab.page.wait_for_function("() => !window.Imagery.debug().rendering")
    assert row_counts(live.root) == before
    field.fill("2")
    tab.page.evaluate("() => document.activeElement.blur()")
    tab.keys("=", "=")  # the exploration slider: the autopilot's generations use it too
    strength = tab.page.evaluate("() => window.Imagery.debug().strength")
    tab.keys("a")
    tab.generation_shown(4)
    assert "autopilot made 2 generation(s)" in tab.page.locator(".im-message").inner_text()
    head = live.store.get_snapshot(live.store.get_branch(run).head_snapshot_id)
    assert head.generation == 4 and tab.saved()["snapshot"] == head.id
    assert head.settings["engine"]["mutation_strength"] == pytest.approx(strength)
