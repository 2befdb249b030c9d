"""Benchmark: how long the rating UI makes a person wait, in a real browser, in one run.

1. Enter to the last image of the new generation on screen (decoded and painted: the grid-size
   JPEG preview the server streams as each batch finishes; the stored JPEG thumbnail replaces
   it once the generation is committed, also reported), against the pure render time
   of the same generation (the generator rendering all its genomes in one call, in this
   process, right after, on a fresh thread like the server's; median of 3). Target: at most
   1.25x the render time plus 150 ms.
2. A score key press to its rating row committed in the store (read by a separate database
   connection): p50 and p95 over ``--presses`` presses, one at a time. Target: p95 <= 100 ms.
   Then a burst of the same number of presses typed without waiting: all must arrive.
3. With ``--agent-rounds N``: what the agent's first pass adds to a generation as the person
   sees it. Two runs of the same spec, one tab each (own browser profile), the agent off in
   one and at k = 4 (the UI default) in the other, N generations each in alternation, Enter
   pressed right after the last rating (so the background refit may still be running). The
   runs show different pictures, so each generation's time beyond its own pure render is
   compared; the difference of the medians is printed against the plain Enter->last image.

Parts 1 and 2 run with the UI's default agent setting (k = 4).

The browser is Debian's Chromium (``/usr/bin/chromium``) driven by Playwright; the server is
the real app (Gradio page + API) on a free port with a temp store.

Usage::

    python bench/ui_latency.py [--population 16] [--size 256] [--rounds 5] [--presses 50]
                               [--agent-rounds 20] [--screenshot docs/screenshot.png]
"""

from __future__ import annotations

import argparse
import os
import socket
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.args import at_least  # noqa: E402
from spark_runtime.spark import build_generator  # noqa: E402
from spark_runtime.store import Store  # noqa: E402
from ui import handlers  # noqa: E402
from ui.app import build_app  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ALL_SHOWN = "n => document.querySelectorAll('.im-cell').length === n && !document.querySelector('.im-cell.im-wait')"
VIEWPORT = {"width": 1280, "height": 900}


def _serve(app: Any) -> tuple[Any, str]:
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.02)
    return server, f"http://127.0.0.1:{port}"


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def evolve_rounds(
    page: Any, store: Store, run: Any, rounds: int
) -> list[tuple[float, float, float]]:
    """Per round, in s: Enter to the last image on screen, the pure render of that generation,
    and Enter to the generation committed (the tab told so; its ratings can then be stored)."""
    generator = build_generator(run.target, run.generator_config)
    out = []
    for i in range(rounds):
        ui_s, render_s, committed_s = evolve_round(page, store, run, generator, i)
        out.append((ui_s, render_s, committed_s))
        verdict = "met" if ui_s <= 1.25 * render_s + 0.150 else "missed"
        print(
            f"  round {i + 1}: Enter->last thumbnail {ui_s * 1000:6.1f} ms, pure render {render_s * 1000:6.1f} ms, ratio {ui_s / render_s:4.2f}, 1.25x render + 150 ms {verdict}",
            flush=True,
        )
    return out


def evolve_round(page: Any, store: Store, run: Any, generator: Any, i: int) -> tuple[float, float, float]:
    """One generation from the keyboard; see ``evolve_rounds``."""
    # A few decisions first, as a person would make; then Enter at once (so a background
    # refit of the agent, if on, may still be running).
    page.keyboard.press(str(1 + i % 5))
    page.keyboard.press("ArrowRight")
    page.keyboard.press(" ")
    page.wait_for_function(
        "() => { const d = window.Imagery.debug(); return !d.rendering && d.unsaved === 0; }"
    )
    seen = page.evaluate("() => window.Imagery.debug().perf.length")
    page.keyboard.press("Enter")
    page.wait_for_function("n => window.Imagery.debug().perf.length > n", arg=seen, timeout=60_000)
    page.wait_for_function("() => !window.Imagery.debug().rendering", timeout=60_000)
    entry = page.evaluate("() => window.Imagery.debug().perf.at(-1)")
    ui_s = (entry["visible"] - entry["start"]) / 1000.0
    committed = [t for kind, t in entry["trace"] if kind == "done"]
    head = store.get_snapshot(store.get_branch(run.id).head_snapshot_id)
    genomes = store.genomes(head)
    render_s = statistics.median(_render_in_thread(generator, genomes, run.size) for _ in range(3))
    return ui_s, render_s, committed[0] / 1000.0 if committed else float("nan")


def _open_run(page: Any, url: str, run_id: str) -> Any:
    """Load the app in ``page`` and open the run's main branch in it."""
    page.goto(url)
    page.wait_for_function("() => window.Imagery && document.querySelector('.im-top')")
    page.evaluate("r => window.Imagery.open(r, 'main')", run_id)
    return page


def agent_in_the_ui(browser: Any, url: str, wb: Any, store: Store, form: dict, rounds: int) -> None:
    """Enter to the last image with the agent's first pass off and at the UI's default k, in
    alternating rounds on two runs of the same spec (each in its own browser profile)."""
    tabs, contexts = {}, []
    for label, k in (("agent off", 0), ("agent k=4", 4)):
        made = handlers.create_run(wb, {**form, "name": f"bench-{k}"})
        context = browser.new_context(viewport=VIEWPORT)
        context.add_init_script(f"sessionStorage.setItem('imagery.agentK', '{k}')")
        contexts.append(context)
        page = _open_run(context.new_page(), url, made["run"])
        page.wait_for_function(ALL_SHOWN, arg=form["population"], timeout=60_000)
        assert page.evaluate("() => window.Imagery.debug().agent.k") == k
        run = store.get_run(made["run"])
        tabs[label] = (page, run, build_generator(run.target, run.generator_config), [])
    for i in range(rounds):
        for page, run, generator, results in tabs.values():
            results.append(evolve_round(page, store, run, generator, i))
    print(f"agent in the UI: {rounds} alternating generations each, Enter right after the last rating")
    extra = {}
    for label, (_, _, _, results) in tabs.items():
        ui_med = statistics.median(r[0] for r in results)
        # The two runs show different pictures: what the generation adds to its own render.
        extra[label] = statistics.median(r[0] - r[1] for r in results)
        print(f"  {label}: Enter->last thumbnail median {ui_med * 1000:6.1f} ms, beyond its render {extra[label] * 1000:6.1f} ms")
    plain = statistics.median(r[0] for r in tabs["agent off"][3])
    added = extra["agent k=4"] - extra["agent off"]
    print(f"  the agent adds {added * 1000:.1f} ms = {added / plain:.2f} of the plain Enter->last thumbnail")
    for context in contexts:
        context.close()


def _render_in_thread(generator: Any, genomes: list[Any], size: int) -> float:
    """One render on a fresh thread, as the server renders each generation.

    On a busy machine torch's OpenMP workers spin-wait on the main thread and a render there
    can take many times longer than on a fresh thread; the server never renders there.
    """
    took: list[float] = []

    def work() -> None:
        start = time.perf_counter()
        generator.render(genomes, size)
        took.append(time.perf_counter() - start)

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    return took[0]


def _max_rating_id(db: sqlite3.Connection) -> int:
    return db.execute("SELECT coalesce(max(id), 0) FROM rating").fetchone()[0]


def score_latency(page: Any, db_path: Path, presses: int) -> tuple[list[float], float, int]:
    """Per-press latency to commit (s), then the burst: time to commit all, rows that arrived."""
    db = sqlite3.connect(db_path, isolation_level=None)
    latencies = []
    for i in range(presses):
        before = _max_rating_id(db)
        start = time.perf_counter()
        page.keyboard.press(str(1 + i % 5))
        while _max_rating_id(db) == before:
            time.sleep(0.0005)
        latencies.append(time.perf_counter() - start)
        if i % 5 == 4:
            page.keyboard.press("ArrowRight")
    before = _max_rating_id(db)
    start = time.perf_counter()
    for i in range(presses):
        page.keyboard.press(str(1 + i % 5))
    while _max_rating_id(db) < before + presses:
        time.sleep(0.0005)
        if time.perf_counter() - start > 30:
            break
    burst = time.perf_counter() - start
    arrived = _max_rating_id(db) - before
    db.close()
    return latencies, burst, arrived


def screenshot(browser: Any, url: str, run_id: str, path: Path) -> None:
    """A fresh tab on the run: one more generation, a few marks at a person's pace, lineage."""
    page = _open_run(browser.new_page(viewport=VIEWPORT), url, run_id)
    page.wait_for_function("() => window.Imagery.debug().st")
    page.keyboard.press("Enter")
    page.wait_for_function("() => window.Imagery.debug().perf.length > 0", timeout=60_000)
    page.wait_for_function("() => !window.Imagery.debug().rendering")
    for key in [
        "5",
        "ArrowRight",
        "ArrowRight",
        "3",
        " ",
        "ArrowDown",
        "4",
        "ArrowRight",
        "5",
        " ",
        "ArrowLeft",
        "ArrowLeft",
        "2",
    ]:
        page.keyboard.press(key)
        time.sleep(0.35 if key[0].isdigit() or key == " " else 0.1)
    page.keyboard.press("l")
    page.wait_for_function("() => window.Imagery.debug().unsaved === 0")
    time.sleep(0.5)
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path))
    page.close()
    print(f"screenshot: {path}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--population", type=at_least(1), default=16)
    parser.add_argument("--size", type=at_least(1), default=256)
    parser.add_argument("--rounds", type=at_least(1), default=5)
    parser.add_argument("--presses", type=at_least(1), default=50)
    parser.add_argument("--seed", type=at_least(0), default=7)
    parser.add_argument("--screenshot", type=Path)
    parser.add_argument(
        "--agent-rounds", type=at_least(0), default=0,
        help="also time generations with the agent off and at k=4, alternating, this many each",
    )
    args = parser.parse_args()
    if not os.path.exists(CHROMIUM):
        print(f"needs {CHROMIUM}: apt-get install chromium", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "store"
        store = Store(root)
        app = build_app(store)
        wb: handlers.Workbench = app.state.workbench
        form = {
            "generator": "cppn",
            "population": args.population,
            "size": args.size,
            "seed": args.seed,
            "name": "bench",
        }
        made = handlers.create_run(wb, form)
        run = store.get_run(made["run"])
        server, url = _serve(app)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = _open_run(browser.new_page(viewport=VIEWPORT), url, made["run"])
            page.wait_for_function(ALL_SHOWN, arg=args.population, timeout=60_000)

            print(
                f"CPPN population {args.population} at {args.size} px, {args.rounds} generations (cpu count {os.cpu_count()}), "
                f"agent first pass k={page.evaluate('() => window.Imagery.debug().agent.k')} (the UI default)"
            )
            rounds = evolve_rounds(page, store, run, args.rounds)
            ui_med = statistics.median(r[0] for r in rounds)
            render_med = statistics.median(r[1] for r in rounds)
            budget = 1.25 * render_med + 0.150
            print(
                f"Enter->last thumbnail: median {ui_med * 1000:.1f} ms; pure render: median {render_med * 1000:.1f} ms"
            )
            within = sum(u <= 1.25 * r + 0.150 for u, r, _ in rounds)
            commit_med = statistics.median(r[2] for r in rounds)
            print(f"  target met in {within} of {len(rounds)} rounds")
            print(
                f"  ratio {ui_med / render_med:.2f}x; target <= 1.25x render + 150 ms = {budget * 1000:.1f} ms: {'met' if ui_med <= budget else 'MISSED'}"
            )

            print(
                f"  (Enter->generation committed in the store: median {commit_med * 1000:.1f} ms; images show before it as previews)"
            )
            latencies, burst, arrived = score_latency(page, root / "imagery.db", args.presses)
            p50, p95 = _pct(latencies, 0.5), _pct(latencies, 0.95)
            print(
                f"score key -> rating row committed, {len(latencies)} presses: p50 {p50 * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms"
            )
            print(f"  target p95 <= 100 ms: {'met' if p95 <= 0.100 else 'MISSED'}")
            print(
                f"burst of {args.presses} presses without waiting: {arrived}/{args.presses} committed in {burst * 1000:.0f} ms"
            )
            if args.agent_rounds:
                agent_in_the_ui(browser, url, wb, store, form, args.agent_rounds)
            if args.screenshot:
                screenshot(browser, url, made["run"], args.screenshot)
            browser.close()
        server.should_exit = True
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
