"""The dashboard's ASGI app: routes, the security middleware and error pages.

Pages are rendered on the server from the public SDK (``kiln.runs``, ``kiln.models``,
...); the little JavaScript there is draws charts and is loaded from ``/static``. A
user's mistake in a URL (an unknown run, a bad filter) is a 4xx page that says what was
wrong, never a 500.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from kiln.core import InvalidInput, KilnError, NotFound
from kiln.ui import pages
from kiln.ui._render import STATIC, page
from kiln.ui._security import form_fields, guard, login_response

__all__ = ["UISettings", "create_app"]


@dataclass(frozen=True)
class UISettings:
    """``token``: required of every request when set; ``allow_writes``: the rollout,
    resume and cancel actions work (read-only otherwise); ``page_size``: rows per table
    page."""

    token: str | None = None
    allow_writes: bool = False
    page_size: int = 50


async def _login(request: Request) -> Response:
    settings: UISettings = request.app.state.ui
    if request.method == "POST":
        form = await form_fields(request)
        return login_response(request, settings.token, form.get("token"), form.get("next") or "/")
    return page(
        request,
        "login.html",
        next=request.query_params.get("next", "/"),
        failed=bool(request.query_params.get("failed")),
    )


async def _healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/")


async def _not_found(request: Request, exc: Exception) -> Response:
    if _wants_json(request):
        return JSONResponse({"error": str(exc)}, status_code=404)
    return page(request, "error.html", status_code=404, title="Not found", message=str(exc))


async def _bad_input(request: Request, exc: Exception) -> Response:
    if _wants_json(request):
        return JSONResponse({"error": str(exc)}, status_code=400)
    return page(request, "error.html", status_code=400, title="Bad request", message=str(exc))


async def _failed(request: Request, exc: Exception) -> Response:
    if _wants_json(request):
        return JSONResponse({"error": str(exc)}, status_code=503)
    return page(request, "error.html", status_code=503, title="Unavailable", message=str(exc))


async def _http_error(request: Request, exc: Any) -> Response:
    status = getattr(exc, "status_code", 500)
    detail = getattr(exc, "detail", "") or "no such page"
    if _wants_json(request):
        return JSONResponse({"error": detail}, status_code=status)
    return page(request, "error.html", status_code=status, title=str(status), message=detail)


def create_app(settings: UISettings | None = None) -> Starlette:
    """The dashboard as an ASGI app (``kiln ui`` serves it with uvicorn)."""
    settings = settings or UISettings()
    if settings.token is not None and not settings.token.strip():
        raise InvalidInput("token must not be empty")

    async def middleware(request: Request, call_next: Any) -> Response:
        return await guard(request, call_next, settings.token)

    app = Starlette(
        routes=[
            Route("/", pages.home, name="home"),
            Route("/login", _login, methods=["GET", "POST"]),
            Route("/healthz", _healthz),
            Route("/experiments", pages.experiments),
            Route("/experiments/{name:path}", pages.runs_table),
            Route("/runs/{run_id}", pages.run_page),
            Route("/runs/{run_id}/artifacts/{path:path}", pages.artifact_page),
            Route("/api/runs/{run_id}/artifacts/{path:path}", pages.artifact_raw),
            Route("/compare", pages.compare),
            Route("/search", pages.search),
            Route("/api/runs/{run_id}/metrics/{key:path}", pages.metric_series),
            Route("/features", pages.features),
            Route("/features/{kind}/{name}", pages.feature_definition),
            Route("/flows", pages.flow_runs),
            Route("/flows/{run_id}", pages.flow_run),
            Route("/flows/{run_id}/{action}", pages.flow_action, methods=["GET", "POST"]),
            Route("/studies", pages.studies),
            Route("/studies/{name:path}", pages.study_page),
            Route("/models", pages.models),
            Route("/models/{name}", pages.model_page),
            Route("/models/{name}/{version}", pages.version_page),
            Route("/deployments", pages.deployments),
            Route("/deployments/{name}", pages.deployment_page),
            Route("/deployments/{name}/{action}", pages.deployment_action, methods=["GET", "POST"]),
            Route("/monitoring", pages.monitoring),
            Route("/monitoring/{name}", pages.monitoring_deployment),
            Route("/monitoring/{name}/skew", pages.monitoring_skew),
            Route("/monitoring/{name}/events/{event_id}", pages.monitoring_event),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        middleware=[Middleware(BaseHTTPMiddleware, dispatch=middleware)],
        exception_handlers={
            NotFound: _not_found,
            InvalidInput: _bad_input,
            KilnError: _failed,
            404: _http_error,
            405: _http_error,
        },
    )
    app.state.ui = settings
    return app
