"""The UI's HTTP endpoints: JSON in and out, one-line errors, nothing stored on a bad request."""

from __future__ import annotations

import base64
import io
import json
import socket
import zipfile
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from spark_runtime.store import Store
from tests.ui.conftest import SMALL
from ui import api, handlers
from ui.app import build_app, check_address, parse_auth

TAB = "tab-api1"


def _head(client: TestClient, run: dict[str, Any], tab: str = TAB) -> dict[str, Any]:
    response = client.get(
        "/api/state", params={"run": run["run"], "branch": "main", "session": tab}
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_state_and_thumbnail_files_with_long_cache(client: TestClient, run: dict[str, Any]) -> None:
    st = _head(client, run)
    thumb = client.get(f"/api/object/{st['snapshot']['thumbs'][0]}")
    full = client.get(f"/api/object/{st['snapshot']['images'][0]}", params={"download": "a b.png"})
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert "immutable" in thumb.headers["cache-control"]
    assert full.headers["content-type"] == "image/png" and full.content.startswith(b"\x89PNG")
    assert full.headers["content-disposition"] == 'attachment; filename="ab.png"'


def test_objects_behind_a_url_are_served_as_their_bytes(tmp_path: Path) -> None:
    with Store(tmp_path / "rows", objects_url=f"memory://{tmp_path.name}/objects") as store:
        wb = handlers.Workbench(store)
        app = FastAPI()
        api.install(app, wb)
        client = TestClient(app)
        run = handlers.create_run(wb, {**SMALL, "name": "shared"})
        st = _head(client, run)
        thumb = client.get(f"/api/object/{st['snapshot']['thumbs'][0]}")
        full = client.get(f"/api/object/{st['snapshot']['images'][0]}", params={"download": "a.png"})
        missing = client.get("/api/object/" + "0" * 64)
        wb.close()
    assert not (tmp_path / "rows" / "objects").exists()  # nothing went to the local folder
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert thumb.content == store.objects.get(st["snapshot"]["thumbs"][0])
    assert full.headers["content-type"] == "image/png" and full.content.startswith(b"\x89PNG")
    assert full.headers["content-disposition"] == 'attachment; filename="a.png"'
    assert missing.status_code == 404 and "not stored" in missing.json()["error"]


@pytest.mark.parametrize(
    ("path", "status", "needle"),
    [
        ("/api/object/zzz", 400, "not an object id"),
        ("/api/object/" + "0" * 64, 404, "not stored"),
        ("/api/state?run=ghost&session=" + TAB, 400, "unknown run 'ghost'"),
        ("/api/state?run=small&branch=nope&session=" + TAB, 400, "unknown branch 'nope'"),
        ("/api/state?run=small", 400, "bad session id"),
        ("/api/lineage?snapshot=nope&position=0", 400, "unknown snapshot"),
        ("/ui-static/.secret", 404, "no static file"),
    ],
)
def test_bad_reads_answer_one_line(
    client: TestClient, run: dict[str, Any], path: str, status: int, needle: str
) -> None:
    response = client.get(path)
    assert response.status_code == status
    message = response.json()["error"]
    assert needle in message and "\n" not in message


def test_a_path_escaping_the_static_folder_is_not_served(client: TestClient) -> None:
    # Over HTTP the router already refuses a name with a slash in it...
    assert client.get("/ui-static/..%2Fapi.py").status_code == 404
    # ...so the handler's own check is reached only by calling it.
    static = next(r.endpoint for r in client.app.routes if getattr(r, "path", "") == "/ui-static/{name}")
    for name in ("../api.py", ".hidden", "no-such-file.js"):
        assert static(name=name).status_code == 404
    assert static(name="imagery.js").status_code == 200


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ('{"session": "tab-api1", "snapshot": ', "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        (
            '{"session": "tab-api1", "snapshot": "SNAP", "events": [{"position": 0, "kind": "score", "value": 6}]}',
            "out of range 0..5",
        ),
        (
            '{"session": "tab-api1", "snapshot": "SNAP", "events": [{"position": 0, "kind": "score", "value": "4"}]}',
            "finite number",
        ),
        (
            '{"session": "tab-api1", "snapshot": "SNAP", "events": [{"position": -1, "kind": "pick"}]}',
            "out of range",
        ),
        (
            '{"session": "tab-api1", "snapshot": "nope", "events": [{"position": 0, "kind": "pick"}]}',
            "unknown snapshot",
        ),
    ],
)
def test_bad_rating_posts_change_nothing(
    client: TestClient, run: dict[str, Any], counts: Any, body: str, needle: str
) -> None:
    snap = _head(client, run)["snapshot"]["id"]
    before = counts()
    response = client.post(
        "/api/ratings",
        content=body.replace("SNAP", snap),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert needle in response.json()["error"]
    assert counts() == before


def test_rating_events_are_appended_and_shown_back(
    client: TestClient, run: dict[str, Any], counts: Any
) -> None:
    snap = _head(client, run)["snapshot"]["id"]
    events = [
        {"position": 1, "kind": "score", "value": 4},
        {"position": 1, "kind": "score", "value": 2},
        {"position": 3, "kind": "pick"},
    ]
    response = client.post(
        "/api/ratings", json={"session": TAB, "snapshot": snap, "events": events}
    )
    assert response.status_code == 200 and response.json()["stored"] == 3
    assert counts()["rating"] == 3  # append-only: the overwritten score is still a row
    assert _head(client, run)["marks"] == {"scores": {"1": 2.0}, "picks": [3]}


def _stream(response: Any) -> list[dict[str, Any]]:
    return [json.loads(line) for line in response.text.splitlines() if line]


def test_evolve_streams_ndjson_and_undo_fork_follow(
    client: TestClient, run: dict[str, Any], counts: Any
) -> None:
    head = _head(client, run)["snapshot"]["id"]
    body = {"run": run["run"], "branch": "main", "session": TAB, "parent": head, "strength": 0.5}
    response = client.post("/api/evolve", json=body)
    assert (
        response.status_code == 200 and response.headers["content-type"] == "application/x-ndjson"
    )
    events = _stream(response)
    assert sum(e["type"] == "image" for e in events) == 8 and events[-1]["type"] == "done"
    assert _head(client, run)["snapshot"]["generation"] == 1

    before = counts()
    stale = client.post("/api/evolve", json=body)  # the tab still thinks generation 0 is the head
    assert stale.status_code == 409 and "moved to generation 1" in stale.json()["error"]
    assert (
        client.post(
            "/api/evolve",
            json={**body, "parent": events[-1]["state"]["snapshot"]["id"], "strength": "lots"},
        ).status_code
        == 400
    )
    assert counts() == before

    back = client.post("/api/undo", json={"run": run["run"], "branch": "main", "session": TAB})
    assert back.status_code == 200 and back.json()["snapshot"]["generation"] == 0
    fork = client.post(
        "/api/fork",
        json={"run": run["run"], "branch": "main", "session": TAB, "generation": 0, "name": "side"},
    )
    assert fork.status_code == 200 and fork.json()["branch"] == "side"
    assert counts()["snapshot"] == before["snapshot"] and counts()["branch"] == before["branch"] + 1


def test_export_downloads_a_zip_of_picks(client: TestClient, run: dict[str, Any]) -> None:
    snap = _head(client, run)["snapshot"]["id"]
    assert client.get("/api/export", params={"run": run["run"], "session": TAB}).status_code == 400
    client.post(
        "/api/ratings",
        json={"session": TAB, "snapshot": snap, "events": [{"position": 4, "kind": "pick"}]},
    )
    response = client.get(
        "/api/export", params={"run": run["run"], "branch": "main", "session": TAB}
    )
    assert response.status_code == 200 and response.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(response.content)) as zf:
        assert zf.namelist() == ["small-main-g0000-04.png"]


def test_create_run_over_http(client: TestClient, counts: Any) -> None:
    bad = client.post("/api/runs", json={"generator": "cppn", "population": 2000})
    assert bad.status_code == 400 and "population" in bad.json()["error"]
    assert counts()["run"] == 0
    made = client.post(
        "/api/runs", json={"generator": "cppn", "population": 4, "size": 32, "name": "tiny"}
    )
    assert made.status_code == 200 and made.json()["name"] == "tiny"
    assert [r["name"] for r in client.get("/api/runs").json()] == ["tiny"]


def test_whole_app_serves_page_and_scripts_and_guards_with_basic_auth(store: Store) -> None:
    open_app = TestClient(build_app(store))
    page = open_app.get("/")
    assert page.status_code == 200 and "<html" in page.text.lower()
    script = open_app.get("/ui-static/imagery.js")
    assert script.status_code == 200 and "window.Imagery" in script.text

    guarded = TestClient(build_app(store, [("ann", "s3cret")]))
    assert guarded.get("/api/runs").status_code == 401
    assert guarded.get("/").status_code == 401
    wrong = base64.b64encode(b"ann:guess").decode()
    assert guarded.get("/api/runs", headers={"Authorization": f"Basic {wrong}"}).status_code == 401
    right = base64.b64encode(b"ann:s3cret").decode()
    assert guarded.get("/api/runs", headers={"Authorization": f"Basic {right}"}).status_code == 200


def test_only_loopback_may_listen_without_credentials(tmp_path: Path) -> None:
    with pytest.raises(handlers.UIError, match="refusing to listen on 0.0.0.0 without --auth"):
        check_address("0.0.0.0", 7860, [])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(handlers.UIError, match=f"cannot listen on 127.0.0.1:{port}"):
            check_address("127.0.0.1", port, [])
    check_address("127.0.0.1", port, [])  # loopback needs no credentials
    auth_file = tmp_path / "users"
    auth_file.write_text("# who may rate\nann:s3cret\n\nbob:pw:with:colons\n")
    assert parse_auth(None, auth_file) == [("ann", "s3cret"), ("bob", "pw:with:colons")]
    assert parse_auth("eve:x") == [("eve", "x")]
    with pytest.raises(handlers.UIError, match="expected USER:PASS"):
        parse_auth("nopassword")
    with pytest.raises(handlers.UIError, match="cannot read auth file"):
        parse_auth(None, tmp_path / "missing")


def test_cli_refuses_a_public_address_without_auth(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ui.cli import main

    assert main(["--store", str(tmp_path / "s"), "ui", "--host", "0.0.0.0", "--port", "7861"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("imagery: error: refusing to listen on 0.0.0.0") and "\n" not in err
