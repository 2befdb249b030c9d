"""The rating UI: a Gradio start view next to a keyboard-first grid, on one FastAPI app.

Gradio draws the page and the start view (create a run, open a run and branch). The grid,
history strip, lineage and keyboard live in ``ui/static/imagery.js``: one HTML component whose
marks change in the browser at once, while every decision goes to ``/api`` (``ui/api.py``) as
an append-only event through a client-side queue. Nothing is fetched from the internet.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Before gradio is imported anywhere: no analytics, no hub calls, no telemetry.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import gradio as gr  # noqa: E402
from fastapi import FastAPI  # noqa: E402

from imagery import GENERATORS  # noqa: E402
from spark_runtime.spark import one_line  # noqa: E402
from spark_runtime.sparks import SessionSparks  # noqa: E402
from spark_runtime.store import Store  # noqa: E402
from ui import api, handlers  # noqa: E402
from ui.handlers import USER_ERRORS, UIError, Workbench  # noqa: E402

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860

_HEAD = (
    '<link rel="stylesheet" href="/ui-static/imagery.css">'
    '<script src="/ui-static/outbox.js"></script><script src="/ui-static/panels.js"></script>'
    '<script src="/ui-static/agent.js"></script><script src="/ui-static/imagery.js"></script>'
)
_MOUNT_JS = "window.Imagery.mount(element);"
# The start view hands a run to the grid through this component: its value changes, the
# watcher reads the data attributes and the grid opens that run and branch.
_HANDOFF_JS = """
watch('value', () => {
  const d = element.querySelector('[data-run]');
  if (d && window.Imagery) window.Imagery.open(d.dataset.run, d.dataset.branch);
});
"""
_PAGE_JS = "() => { document.body.classList.add('dark'); }"


# --- auth and address ---------------------------------------------------------------------
def parse_auth(
    auth: str | None = None, auth_file: str | Path | None = None
) -> list[tuple[str, str]]:
    """``USER:PASS`` and/or a file of such lines (blank lines and ``#`` comments skipped)."""
    lines: list[tuple[str, str]] = []
    if auth is not None:
        lines.append(("--auth", auth))
    if auth_file is not None:
        try:
            content = Path(auth_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise UIError(
                f"cannot read auth file {str(auth_file)!r}: {exc.strerror or exc}"
            ) from None
        lines += [
            (str(auth_file), ln.strip())
            for ln in content.splitlines()
            if ln.strip() and not ln.startswith("#")
        ]
        if not any(src == str(auth_file) for src, _ in lines):
            raise UIError(f"auth file {str(auth_file)!r} holds no USER:PASS line")
    credentials = []
    for source, line in lines:
        user, sep, password = line.partition(":")
        if not sep or not user or not password:
            raise UIError(
                f"bad credentials in {source}: expected USER:PASS with both parts non-empty"
            )
        credentials.append((user, password))
    return credentials


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_address(host: str, port: int, credentials: Sequence[tuple[str, str]]) -> None:
    """Refuse a non-loopback address without credentials, and a port already taken."""
    if not is_loopback(host) and not credentials:
        raise UIError(
            f"refusing to listen on {host} without --auth USER:PASS or --auth-file FILE: anyone who can reach it could change your runs"
        )
    if not 1 <= port <= 65535:
        raise UIError(f"port must be from 1 to 65535, got {port}")
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host.strip("[]"), port))
        except OSError as exc:
            raise UIError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc} (try another --port)"
            ) from None


# --- the Gradio start view ----------------------------------------------------------------
def _handoff(run: str, branch: str) -> str:
    # The nonce makes the value change even when the same run is opened twice.
    return (
        f'<div hidden data-run="{run}" data-branch="{branch}" data-nonce="{time.time_ns()}"></div>'
    )


def _run_choices(wb: Workbench) -> list[tuple[str, str]]:
    return [
        (f"{r['name']} ({r['generator']}, {r['population']} @ {r['size']} px)", r["id"])
        for r in handlers.list_runs(wb)
    ]


def blocks(wb: Workbench) -> gr.Blocks:
    """The page: the start view on the left, the grid (driven by imagery.js) on the right."""
    with gr.Blocks(title="imagery", analytics_enabled=False) as demo:
        with gr.Row(elem_id="imagery-main", equal_height=False):
            with gr.Column(scale=1, min_width=260, elem_id="imagery-start"):
                gr.Markdown("## imagery\nEvolve images with the keyboard. Press **?** for keys.")
                with gr.Tab("New run"):
                    generator = gr.Dropdown(
                        list(GENERATORS), value="cppn", label="Generator", elem_id="new-generator"
                    )
                    with gr.Row():
                        population = gr.Number(
                            16,
                            precision=0,
                            label="Population",
                            minimum=1,
                            maximum=1024,
                            elem_id="new-population",
                        )
                        size = gr.Number(
                            256,
                            precision=0,
                            label="Size (px)",
                            minimum=16,
                            maximum=2048,
                            elem_id="new-size",
                        )
                        seed = gr.Number(
                            1, precision=0, label="Seed", minimum=0, elem_id="new-seed"
                        )
                    name = gr.Textbox(label="Name (optional)", elem_id="new-name")
                    with gr.Group(visible=False) as diffusion:
                        model = gr.Textbox(
                            label="Model",
                            placeholder="diffusers folder, FILE.safetensors, or tiny",
                            elem_id="new-model",
                        )
                        prompt = gr.Textbox(label="Prompt", elem_id="new-prompt")
                        negative = gr.Textbox(label="Negative prompt", elem_id="new-negative")
                    create = gr.Button("Create run", variant="primary", elem_id="new-create")
                with gr.Tab("Open"):
                    run = gr.Dropdown([], label="Run", elem_id="open-run")
                    branch = gr.Dropdown([], label="Branch", elem_id="open-branch")
                    open_button = gr.Button("Open", elem_id="open-button")
                message = gr.Markdown("", elem_id="imagery-message")
                handoff = gr.HTML("", elem_id="imagery-handoff", js_on_load=_HANDOFF_JS)
            with gr.Column(scale=4, elem_id="imagery-work"):
                gr.HTML(
                    '<div id="imagery-root"></div>',
                    head=_HEAD,
                    js_on_load=_MOUNT_JS,
                    elem_id="imagery-grid",
                )

        def on_generator(kind: str) -> Any:
            return gr.Group(visible=kind == "diffusion")

        def on_create(
            kind: str,
            pop: Any,
            px: Any,
            sd: Any,
            nm: str,
            mdl: str,
            prm: str,
            neg: str,
            progress: Any = gr.Progress(),  # noqa: B008 (gradio's idiom)
        ) -> Any:
            form = {
                "generator": kind,
                "population": pop,
                "size": px,
                "seed": sd,
                "name": nm,
                "model": mdl,
                "prompt": prm,
                "negative": neg,
            }
            try:
                made = handlers.create_run(
                    wb, form, progress=lambda d, t: progress((d, t), desc="rendering generation 0")
                )
            except USER_ERRORS as exc:
                return (
                    gr.skip(),
                    f"**Could not create the run:** {one_line(exc)}",
                    gr.skip(),
                )
            choices = _run_choices(wb)
            return (
                _handoff(made["run"], "main"),
                f"Created **{made['name']}**.",
                gr.Dropdown(choices=choices, value=made["run"]),
            )

        def on_refresh() -> Any:
            return gr.Dropdown(choices=_run_choices(wb))

        def on_run(run_id: str | None) -> Any:
            if not run_id:
                return gr.Dropdown(choices=[], value=None)
            try:
                names = [b.name for b in wb.store.list_branches(run_id)]
            except USER_ERRORS:
                names = []
            return gr.Dropdown(choices=names, value=names[0] if names else None)

        def on_open(run_id: str | None, branch_name: str | None) -> Any:
            if not run_id or not branch_name:
                return gr.skip(), "Choose a run and a branch first."
            return _handoff(run_id, branch_name), ""

        generator.change(on_generator, generator, diffusion)
        create.click(
            on_create,
            [generator, population, size, seed, name, model, prompt, negative],
            [handoff, message, run],
            # Gradio runs one of an event at a time unless told: with sparks, one person's
            # heavy generation 0 would hold up everyone else's new run (the sparks' number
            # bounds them). Rendered in this process, creates stay one at a time.
            concurrency_limit=None if wb.sparks is not None else 1,
        )
        demo.load(on_refresh, None, run)
        run.focus(on_refresh, None, run)
        run.change(on_run, run, branch)
        open_button.click(on_open, [run, branch], [handoff, message])
    return demo


def build_app(
    store: Store,
    credentials: Sequence[tuple[str, str]] = (),
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    sparks: SessionSparks | None = None,
) -> Any:
    """The whole ASGI app: ``/api`` routes, static files and the Gradio page at ``/``."""
    wb = Workbench(store, sparks=sparks)
    app = FastAPI(title="imagery", docs_url=None, redoc_url=None, openapi_url=None)
    api.install(app, wb)
    theme = gr.themes.Base(
        primary_hue="amber",
        neutral_hue="zinc",
        font=["ui-sans-serif", "system-ui", "sans-serif"],
        font_mono=["ui-monospace", "monospace"],
    )
    gr.mount_gradio_app(
        app,
        blocks(wb),
        path="/",
        server_name=host,
        server_port=port,
        footer_links=[],
        theme=theme,
        js=_PAGE_JS,
        ssr_mode=False,
    )
    app.state.workbench = wb
    return api.BasicAuth(app, list(credentials)) if credentials else app


def serve(
    store_root: str | Path,
    db_url: str | None,
    objects_url: str | None = None,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    auth: str | None = None,
    auth_file: str | None = None,
    sparks: str = "local",
    spark_idle_s: float = 600.0,
) -> None:
    """Check the address and credentials, print the URL and serve until Ctrl+C.
    ``spark_idle_s``: a session's spark is released after this long without a render."""
    import uvicorn

    credentials = parse_auth(auth, auth_file)
    check_address(host, port, credentials)
    # The store first: a bad --db is one line before any spark (a whole Ray cluster) starts.
    store = Store(store_root, db_url=db_url, objects_url=objects_url)
    try:
        # Reaped at least every half of the idle time, so a spark goes within 1.5 times it.
        session_sparks = SessionSparks(
            sparks, idle_timeout_s=spark_idle_s, reap_interval_s=min(30.0, max(1.0, spark_idle_s / 2))
        )
    except BaseException:
        store.close()
        raise
    app = build_app(store, credentials, host, port, sparks=session_sparks)
    shown = f"[{host}]" if ":" in host else host
    print(f"imagery UI on http://{shown}:{port}  (store {store_root}; Ctrl+C stops)", flush=True)
    inner = app.app if isinstance(app, api.BasicAuth) else app
    try:
        uvicorn.run(app, host=host.strip("[]"), port=port, log_level="warning")
    finally:
        inner.state.workbench.close()  # background fits end before the store closes
        session_sparks.close()
        store.close()
