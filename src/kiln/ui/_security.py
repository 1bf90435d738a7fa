"""Who may look and who may act: the token, CSRF and the headers every answer carries.

With a token, a request must carry it: ``Authorization: Bearer <token>``, or the
``kiln_ui_token`` cookie that ``/login`` sets (HttpOnly, SameSite=Strict) after the
token was typed or given once as ``?token=``. Tokens are compared in constant time.
A request that changes anything is a POST with a CSRF token (a random cookie repeated
in the form, compared in constant time) from this origin, and is refused unless the
server runs with ``allow_writes``. Every answer forbids framing and inline scripts (the
pages load their JavaScript from ``/static`` only).
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl, urlsplit

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

__all__ = [
    "CSRF_COOKIE",
    "TOKEN_COOKIE",
    "check_write",
    "csrf_token",
    "form_fields",
    "guard",
    "same_token",
]

TOKEN_COOKIE = "kiln_ui_token"
CSRF_COOKIE = "kiln_csrf"
_OPEN = ("/login", "/static/", "/healthz")
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "frame-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}

Handler = Callable[[Request], Awaitable[Response]]


def same_token(given: str | None, token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def _authorized(request: Request, token: str) -> bool:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer ") and same_token(header[7:].strip(), token):
        return True
    return same_token(request.cookies.get(TOKEN_COOKIE), token)


def csrf_token(request: Request) -> str:
    """This browser's CSRF token: its cookie's, or a new one the answer will set."""
    known = request.cookies.get(CSRF_COOKIE)
    if known and len(known) == 43:
        return known
    fresh = getattr(request.state, "new_csrf", None)
    if fresh is None:
        # Kept on the request's state (shared by every Request object of one request),
        # so the middleware sets the cookie the page's form relies on.
        fresh = request.state.new_csrf = secrets.token_urlsafe(32)
    return str(fresh)


async def guard(request: Request, call_next: Handler, token: str | None) -> Response:
    """The middleware: authentication, then the page, then headers and timing."""
    started = time.perf_counter()
    path = request.url.path
    if token is not None and not path.startswith(_OPEN):
        given = request.query_params.get("token")
        if given is not None and same_token(given, token):
            # Once by URL, then by cookie: the token leaves the address bar and history.
            target = request.url.remove_query_params("token")
            response: Response = RedirectResponse(
                str(target.path) + (f"?{target.query}" if target.query else ""), status_code=303
            )
            _set_token_cookie(response, token, request)
            return _finish(response, request, started)
        if not _authorized(request, token):
            if request.method == "GET" and "text/html" in request.headers.get("accept", ""):
                return _finish(
                    RedirectResponse(f"/login?next={path}", status_code=303), request, started
                )
            return _finish(
                PlainTextResponse("a token is required (Authorization: Bearer ...)", 401),
                request,
                started,
            )
    response = await call_next(request)
    return _finish(response, request, started)


def _set_token_cookie(response: Response, token: str, request: Request) -> None:
    response.set_cookie(
        TOKEN_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )


def _finish(response: Response, request: Request, started: float) -> Response:
    for name, value in _HEADERS.items():
        response.headers.setdefault(name, value)
    fresh = getattr(request.state, "new_csrf", None)
    if fresh is not None:
        response.set_cookie(CSRF_COOKIE, fresh, httponly=True, samesite="strict", path="/")
    elapsed_ms = (time.perf_counter() - started) * 1000.0
    response.headers["Server-Timing"] = f"app;dur={elapsed_ms:.1f}"
    return response


def check_write(request: Request, form_token: str | None, allow_writes: bool) -> str | None:
    """Why a write must be refused (None: it may go ahead)."""
    if not allow_writes:
        return "this dashboard is read-only: start it with --allow-writes to act from it"
    origin = request.headers.get("origin") or request.headers.get("referer")
    if origin is not None and urlsplit(origin).netloc != request.url.netloc:
        return f"the request came from another site ({urlsplit(origin).netloc})"
    cookie = request.cookies.get(CSRF_COOKIE)
    if not cookie or form_token is None or not hmac.compare_digest(cookie, form_token):
        return "the form's CSRF token is missing or stale: reload the page and try again"
    return None


async def form_fields(request: Request, limit: int = 64 * 1024) -> dict[str, str]:
    """A urlencoded form's fields (the first value of each); the dashboard's forms are
    small, so a larger body is refused rather than read."""
    body = await request.body()
    if len(body) > limit:
        return {}
    pairs = parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    fields: dict[str, str] = {}
    for key, value in pairs:
        fields.setdefault(key, value)
    return fields


def login_response(request: Request, token: str | None, given: str | None, next_: str) -> Response:
    """After the login form: the cookie and the page asked for, or the form again."""
    target = next_ if next_.startswith("/") and not next_.startswith("//") else "/"
    if token is None:
        return RedirectResponse(target, status_code=303)
    if not same_token(given, token):
        return RedirectResponse(f"/login?next={target}&failed=1", status_code=303)
    response = RedirectResponse(target, status_code=303)
    _set_token_cookie(response, token, request)
    return response
