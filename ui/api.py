"""The UI's JSON and file routes: thin HTTP over ``ui.handlers`` and ``ui.live``.

Every failure is ``{"error": "one line"}`` with status 400 (bad request), 404 (no such object)
or 409 (branch busy or moved on), and leaves the store unchanged. Object files are named by
their sha256, so they are served with a year-long immutable cache header.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from base64 import b64decode
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from spark_runtime.spark import one_line
from spark_runtime.store import StoreError
from spark_runtime.store.objects import check_sha
from ui import agent_handlers, browse, handlers
from ui.handlers import USER_ERRORS, UIError, Workbench
from ui.live import start_evolve

STATIC_DIR = Path(__file__).parent / "static"
IMMUTABLE = "public, max-age=31536000, immutable"
_JSONBody = Annotated[Any, Body()]  # any JSON value: the handlers check its shape


def error_response(exc: BaseException) -> JSONResponse:
    status = getattr(exc, "status", 400)
    return JSONResponse({"error": one_line(exc)}, status_code=status)


def _sniff(head: bytes) -> str:
    """The media type of an object from its first 12 bytes."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if head[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    return "application/octet-stream"


def router(wb: Workbench) -> APIRouter:
    """The ``/api`` routes bound to one workbench."""
    api = APIRouter(prefix="/api")

    def call(fn: Any, *args: Any) -> Any:
        try:
            return fn(wb, *args)
        except USER_ERRORS as exc:
            return error_response(exc)

    @api.get("/runs")
    def runs() -> Any:
        return call(handlers.list_runs)

    @api.post("/runs")
    def create(body: _JSONBody = None) -> Any:
        return call(handlers.create_run, body)

    @api.get("/state")
    def state(request: Request) -> Any:
        return call(handlers.state, dict(request.query_params))

    @api.post("/ratings")
    def ratings(body: _JSONBody = None) -> Any:
        return call(handlers.rate, body)

    @api.post("/undo")
    def undo(body: _JSONBody = None) -> Any:
        return call(handlers.undo, body)

    @api.post("/fork")
    def fork(body: _JSONBody = None) -> Any:
        return call(handlers.fork, body)

    @api.get("/history")
    def history(request: Request) -> Any:
        return call(browse.history, dict(request.query_params))

    @api.get("/lineage")
    def lineage(request: Request) -> Any:
        return call(browse.lineage, dict(request.query_params))

    @api.get("/export")
    def export(request: Request) -> Any:
        result = call(browse.export_picks, dict(request.query_params))
        if isinstance(result, Response):
            return result
        name, data = result
        headers = {"Content-Disposition": f'attachment; filename="{name}"'}
        return Response(data, media_type="application/zip", headers=headers)

    @api.post("/evolve")
    def evolve(body: _JSONBody = None) -> Any:
        return _stream(start_evolve, wb, body)

    @api.get("/agent")
    def agent(request: Request) -> Any:
        return call(agent_handlers.agent_info, dict(request.query_params))

    @api.post("/pairs")
    def pairs(body: _JSONBody = None) -> Any:
        return call(agent_handlers.pair_queue, body)

    @api.post("/autopilot")
    def autopilot(body: _JSONBody = None) -> Any:
        return _stream(agent_handlers.start_autopilot, wb, body)

    @api.get("/object/{sha}")
    def obj(sha: str, download: str | None = None) -> Any:
        try:
            check_sha(sha)
        except StoreError as exc:
            return error_response(exc)
        objects = wb.store.objects
        # A local object goes out as its file; one behind a URL (shared storage) as its
        # bytes, fetched in one request (``get`` says when it is missing).
        data: bytes | None = None
        if objects.is_local:
            found = objects.exists(sha)
        else:
            with contextlib.suppress(StoreError):
                data = objects.get(sha)
            found = data is not None
        if not found:
            return JSONResponse({"error": f"object {sha} is not stored"}, status_code=404)
        headers = {"Cache-Control": IMMUTABLE}
        if download:
            safe = "".join(c for c in download if c.isalnum() or c in "._-")[:100] or sha
            headers["Content-Disposition"] = f'attachment; filename="{safe}"'
        if data is not None:
            return Response(data, media_type=_sniff(data), headers=headers)
        path = objects.path(sha)
        with path.open("rb") as fh:
            media = _sniff(fh.read(12))
        return FileResponse(path, media_type=media, headers=headers)

    return api


def _stream(start: Any, wb: Workbench, body: Any) -> Any:
    """A checked request's events as NDJSON, or its one-line error before anything started."""
    try:
        events = start(wb, body)
    except USER_ERRORS as exc:
        return error_response(exc)
    return StreamingResponse(
        _ndjson(events),
        media_type="application/x-ndjson",
        headers={"Cache-Control": "no-store"},
    )


def _ndjson(events: Iterator[dict[str, Any]]) -> Iterator[bytes]:
    for event in events:
        yield (json.dumps(event, separators=(",", ":")) + "\n").encode()


def install(app: FastAPI, wb: Workbench) -> None:
    """Add the API routes, the static files and one-line error bodies to ``app``."""
    app.include_router(router(wb))

    @app.exception_handler(RequestValidationError)
    async def _malformed(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        kind = errors[0].get("type", "") if errors else ""
        message = (
            "malformed request: the body is not valid JSON"
            if kind == "json_invalid"
            else "malformed request"
        )
        return JSONResponse({"error": message}, status_code=400)

    @app.get("/ui-static/{name}")
    def static(name: str) -> Any:
        path = STATIC_DIR / name
        if "/" in name or name.startswith(".") or not path.is_file():
            return JSONResponse({"error": f"no static file {name!r}"}, status_code=404)
        media = {"js": "text/javascript", "css": "text/css"}.get(
            path.suffix.lstrip("."), "application/octet-stream"
        )
        return FileResponse(path, media_type=media, headers={"Cache-Control": "no-cache"})


class BasicAuth:
    """HTTP Basic authentication in front of the whole app (pages, API, objects).

    Args:
        app: the ASGI app to protect.
        credentials: accepted ``(user, password)`` pairs.
    """

    def __init__(self, app: ASGIApp, credentials: list[tuple[str, str]]) -> None:
        self.app = app
        self.credentials = credentials

    def _ok(self, header: bytes | None) -> bool:
        if not header or not header.lower().startswith(b"basic "):
            return False
        try:
            user, _, password = b64decode(header[6:].strip()).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        # Compare every pair in full so timing does not tell which part was wrong.
        matches = [
            secrets.compare_digest(user, u) & secrets.compare_digest(password, p)
            for u, p in self.credentials
        ]
        return any(matches)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            header = dict(scope.get("headers") or []).get(b"authorization")
            if not self._ok(header):
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                    return
                response = JSONResponse(
                    {"error": "authentication required"},
                    status_code=401,
                    headers={"WWW-Authenticate": 'Basic realm="imagery", charset="UTF-8"'},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


__all__ = ["BasicAuth", "UIError", "error_response", "install", "router"]
