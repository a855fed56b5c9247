"""The web app's door: the token on every route, CSRF and same-origin on every change, loopback by default.

Against the real server as `<package> ui` starts it, with raw HTTP requests (no client that would add or drop a
header). Each refusal is paired with the same request done right, so a check that were silently skipped fails.
"""

from __future__ import annotations

import importlib
import json
import socket
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import ui_support as ui  # noqa: E402

GET_PATHS = ["/", "/configure", "/pipeline", "/launch", "/watch", "/compare", "/provenance", "/fragment/queue",
             "/fragment/jobs", "/report/workspace", "/api/log?job=x", "/api/experiments", "/api/pipeline",
             "/api/provenance", "/api/watch", "/static/app.js", "/static/app.css", "/static/plotly.min.js",
             "/no/such/page"]
EXPECTED = {"/report/workspace": 404, "/api/log?job=x": 400, "/no/such/page": 404}  # with the token; others: 200


@pytest.fixture(scope="module")
def app(pkg_name, project_root, tmp_path_factory):
    project = ui.copy_project(project_root, tmp_path_factory.mktemp("ui-security") / "project")
    with ui.App(pkg_name, project) as running:
        yield running


@pytest.fixture(scope="module")
def post_paths(pkg_name) -> list[str]:
    api = importlib.import_module(f"{pkg_name}.ui.api")
    return [r.path for r in api.routes() if "POST" in (r.methods or ())]


@pytest.fixture(scope="module")
def csrf(pkg_name, app) -> str:
    return importlib.import_module(f"{pkg_name}.ui.security").csrf_token(app.token)


def cookie(app) -> dict[str, str]:
    return {"Cookie": f"forge_ui_{app.port}={app.token}"}


def test_prints_a_loopback_address_with_a_token(app):
    assert app.host == "127.0.0.1" and len(app.token) >= 32
    assert f"ssh -L {app.port}:127.0.0.1:{app.port}" in app.output()


def test_listens_on_loopback_only(app):
    """The kernel's table of listening sockets: the app's port is bound to 127.0.0.1, not to every interface."""
    table = Path("/proc/net/tcp").read_text().splitlines()[1:]
    local = [line.split()[1] for line in table if line.split()[3] == "0A"]  # state LISTEN
    ours = [addr for addr in local if int(addr.split(":")[1], 16) == app.port]
    assert ours == ["0100007F:" + f"{app.port:04X}"], ours


def test_every_route_needs_the_token(app, post_paths):
    for path in GET_PATHS:
        assert ui.request(app.port, "GET", path)[0] == 403, path
        assert ui.request(app.port, "GET", path + ("&" if "?" in path else "?") + "token=wrong")[0] == 403, path
        assert ui.request(app.port, "GET", path, {"Cookie": f"forge_ui_{app.port}=wrong"})[0] == 403, path
    for path in post_paths:
        status, _, body = ui.request(app.port, "POST", path, {"Content-Type": "application/json"}, b"{}")
        assert status == 403 and b"token" in body, path


def test_token_in_the_url_becomes_a_cookie(app):
    status, headers, _ = ui.request(app.port, "GET", f"/compare?lead=24h&token={app.token}")
    assert status == 303 and headers["location"] == "/compare?lead=24h"  # the token leaves the address bar
    set_cookie = headers["set-cookie"]
    assert f"forge_ui_{app.port}={app.token}" in set_cookie
    assert "HttpOnly" in set_cookie and "samesite=strict" in set_cookie.lower()
    for path in GET_PATHS:
        status, headers, _ = ui.request(app.port, "GET", path, cookie(app))
        assert status == EXPECTED.get(path, 200), path
        assert "script-src 'self'" in headers["content-security-policy"], path


def test_scripts_may_send_the_token_as_a_header(app):
    assert ui.request(app.port, "GET", "/api/experiments", {"Authorization": f"token {app.token}"})[0] == 200


def _post(app, path: str, headers: dict, body: dict | None = None) -> tuple[int, bytes]:
    status, _, content = ui.request(app.port, "POST", path, {**cookie(app), **headers},
                                    json.dumps(body or {"values": {"model.width": "48"}}).encode())
    return status, content


def test_a_cross_site_post_is_refused(app, csrf, post_paths):
    good = {"Content-Type": "application/json", "X-CSRF-Token": csrf, "Origin": app.base}
    assert _post(app, "/api/validate", good)[0] == 200  # done right, it works
    refused = {
        "no CSRF token": {"Content-Type": "application/json", "Origin": app.base},
        "wrong CSRF token": {**good, "X-CSRF-Token": "0" * 64},
        "foreign Origin": {**good, "Origin": "http://evil.example"},
        "cross-site fetch": {**good, "Sec-Fetch-Site": "cross-site"},
        "form post": {**good, "Content-Type": "application/x-www-form-urlencoded"},
        "text/plain post": {**good, "Content-Type": "text/plain"},
    }
    for path in post_paths:
        for why, headers in refused.items():
            status, body = _post(app, path, headers)
            assert status == 403, (path, why, body)
    params = (app.project / "params.yaml").read_bytes()
    _post(app, "/api/params", refused["foreign Origin"], {"values": {"model.width": "48"}})
    assert (app.project / "params.yaml").read_bytes() == params


def test_a_get_cannot_change_anything(app):
    for path in ("/api/params", "/api/queue", "/api/run", "/api/exp/apply"):
        assert ui.request(app.port, "GET", path, cookie(app))[0] == 405, path


def test_dns_rebinding_is_refused(app):
    """A page on evil.example that resolves its name to 127.0.0.1 sends Host: evil.example."""
    status, _, _ = ui.request(app.port, "GET", "/configure", {**cookie(app), "Host": f"evil.example:{app.port}"})
    assert status == 403
    assert ui.request(app.port, "GET", "/configure", {**cookie(app), "Host": f"localhost:{app.port}"})[0] == 200


def test_busy_port_is_a_clear_error(pkg_name, app):
    server = importlib.import_module(f"{pkg_name}.ui.server")
    errors = importlib.import_module(f"{pkg_name}.errors")
    with pytest.raises(errors.ForgeError, match=rf"--port {app.port + 1}, or --port 0"):
        server._bind("127.0.0.1", app.port)
    free = server._bind("127.0.0.1", 0)
    assert free.getsockname()[0] == "127.0.0.1" and free.type == socket.SOCK_STREAM
    free.close()
