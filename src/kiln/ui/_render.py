"""Templates and the small formatting helpers every page uses.

Jinja2 escapes everything it prints (autoescape on every template), so a run name or tag
holding ``<script>`` is shown as text; nothing is marked safe except what this module
builds from escaped parts.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

from kiln.ui._security import csrf_token

__all__ = ["STATIC", "page", "url_with"]

HERE = Path(__file__).parent
STATIC = HERE / "static"
_env = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def number(value: Any, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "∞" if value > 0 else "-∞"
        if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
            return f"{value:.{digits - 1}e}"
        return f"{value:.{digits}g}"
    return str(value)


def when(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def url_with(request: Request, **changes: Any) -> str:
    """This page's URL with some query parameters changed (None removes one): every
    filter, sort and page is in the address, so it can be shared."""
    params = [(k, v) for k, v in request.query_params.multi_items() if k not in changes]
    for key, value in changes.items():
        if value is None:
            continue
        if isinstance(value, list | tuple):
            params += [(key, str(v)) for v in value]
        else:
            params.append((key, str(value)))
    query = urlencode(params)
    return request.url.path + (f"?{query}" if query else "")


_env.filters.update(number=number, when=when, duration=duration)


def page(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    settings = request.app.state.ui
    body = _env.get_template(template).render(
        request=request,
        csrf=csrf_token(request),
        writes=settings.allow_writes,
        url_with=lambda **kw: url_with(request, **kw),
        **context,
    )
    return HTMLResponse(body, status_code=status_code)
