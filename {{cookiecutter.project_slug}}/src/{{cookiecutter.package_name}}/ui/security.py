"""Who may talk to the app: whoever has the token printed at start (like Jupyter), from this app's own pages.

Every request needs the token: `?token=` once (answered with a cookie and a redirect to the same page without
it), then the cookie; scripts may send `Authorization: token <token>`. A request without it gets 403, whatever
the route (static files included). A request that changes anything must be a POST with the page's CSRF token in
the X-CSRF-Token header and JSON content (neither can be sent by a form on another site), must not come from
another origin (Origin, Sec-Fetch-Site), and the Host header must name this machine (no DNS rebinding).
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlencode

from starlette.datastructures import URL
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

SAFE_METHODS = ("GET", "HEAD")
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


def csrf_token(token: str) -> str:
    """Derived from the access token: the same for every page of this app, unknown to other sites."""
    return hmac.new(token.encode(), b"forge-ui-csrf", hashlib.sha256).hexdigest()


def cookie_name(port: int) -> str:
    return f"forge_ui_{port}"  # browsers share cookies across ports: one name per app


def _hostname(host_header: str) -> str:
    if host_header.startswith("["):  # [::1]:8765
        return host_header.split("]")[0] + "]"
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


class Guard:
    """ASGI middleware in front of every route."""

    def __init__(self, app: ASGIApp, token: str, port: int, hosts: set[str] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        self.app = app
        self.headers = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
        self.token = token
        self.csrf = csrf_token(token)
        self.cookie = cookie_name(port)
        self.hosts = None if hosts is None else {h.lower() for h in hosts | LOOPBACK}  # None: any (0.0.0.0)

    def _same(self, given: str | None, expected: str) -> bool:
        return bool(given) and hmac.compare_digest(given.encode(), expected.encode())

    def _authorized(self, request: Request) -> tuple[bool, bool]:
        """(has the token, came with ?token= and needs the cookie set)"""
        if self._same(request.query_params.get("token"), self.token):
            return True, True
        if self._same(request.cookies.get(self.cookie), self.token):
            return True, False
        auth = request.headers.get("authorization", "")
        return auth.lower().startswith("token ") and self._same(auth[6:].strip(), self.token), False

    def _cross_site(self, request: Request) -> str | None:
        """Why a state-changing request is refused, or None."""
        if request.method != "POST":
            return "only POST may change anything"
        if not self._same(request.headers.get("x-csrf-token"), self.csrf):
            return "missing or wrong X-CSRF-Token"
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return "the body must be JSON"
        origin = request.headers.get("origin")
        if origin and origin != f"{request.url.scheme}://{request.headers.get('host', '')}":
            return f"cross-origin request from {origin}"
        if request.headers.get("sec-fetch-site") in ("cross-site", "same-site"):
            return "cross-site request"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":
            await PlainTextResponse("Forbidden", status_code=403)(scope, receive, send)
            return
        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in self.headers if k not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        request = Request(scope, receive)
        response = self._check(request)
        if response is None:
            await self.app(scope, receive, send_with_headers)
        else:
            await response(scope, receive, send_with_headers)

    def _check(self, request: Request) -> Response | None:
        host = _hostname(request.headers.get("host", "")).lower()
        if self.hosts is not None and host not in self.hosts:
            return PlainTextResponse(f"Forbidden: unexpected Host {host!r}.", status_code=403)
        authorized, set_cookie = self._authorized(request)
        if not authorized:
            return PlainTextResponse("Forbidden: open the address that `ui` printed (it ends in ?token=...).",
                                     status_code=403)
        if request.method not in SAFE_METHODS:
            why = self._cross_site(request)
            if why:
                return PlainTextResponse(f"Forbidden: {why}.", status_code=403)
        if set_cookie and request.method in SAFE_METHODS:
            query = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
            clean = URL(path=request.url.path, query=urlencode(query))
            response = RedirectResponse(str(clean), status_code=303)
            response.set_cookie(self.cookie, self.token, httponly=True, samesite="strict", path="/")
            return response
        return None
