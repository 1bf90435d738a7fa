"""An experiment's runs: filter, sort, choose columns, page; nested runs folded.

Everything is in the URL (``?q=``, ``?sort=``, ``?col=``, ``?page=``), so a view can be
shared. Without a filter the table pages through top-level runs and folds each one's
nested runs under it; with one, it lists every matching run. One page is one ``count``
and one ``search`` of ``page_size`` runs (plus their children): the database does the
filtering, sorting and paging, so an experiment of 100,000 runs answers as fast as one of
a hundred.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

import kiln
from kiln.core import InvalidInput
from kiln.ui._render import page

DEFAULT_COLUMNS = 6  # metrics then params shown when the URL names none
_KINDS = ("metrics", "params", "tags")
_ATTRIBUTES = ("attributes.start_time", "attributes.name", "attributes.status")


@dataclass(frozen=True)
class Column:
    key: str  # "metrics.val_auc"
    kind: str  # metrics, params, tags
    name: str

    def value(self, run: Any) -> Any:
        return getattr(run, self.kind).get(self.name)


def _columns(request: Request, keys: Any) -> tuple[list[Column], list[Column]]:
    """The columns chosen (from ``?col=``) and every column there is to choose from."""
    available = [
        Column(f"{kind}.{name}", kind, name) for kind in _KINDS for name in getattr(keys, kind)
    ]
    chosen_keys = request.query_params.getlist("col")
    if not chosen_keys:
        defaults = [c for c in available if c.kind == "metrics"][: DEFAULT_COLUMNS // 2]
        defaults += [c for c in available if c.kind == "params"][: DEFAULT_COLUMNS - len(defaults)]
        return defaults, available
    known = {c.key: c for c in available}
    chosen = []
    for key in chosen_keys:
        kind, _, name = key.partition(".")
        if kind not in _KINDS or not name:
            raise InvalidInput(f"col {key!r}: a column is metrics.NAME, params.NAME or tags.NAME")
        chosen.append(known.get(key, Column(key, kind, name)))
    return chosen, available


def _page_number(request: Request) -> int:
    text = request.query_params.get("page", "1")
    if not text.isdigit() or int(text) < 1:
        raise InvalidInput(f"page must be a whole number >= 1; got {text!r}")
    return int(text)


def _sort(request: Request) -> str:
    sort = request.query_params.get("sort", "-attributes.start_time")
    key = sort.removeprefix("-")
    if key not in _ATTRIBUTES and key.partition(".")[0] not in _KINDS:
        raise InvalidInput(
            f"sort {sort!r}: sort by attributes.start_time, attributes.name, "
            "attributes.status, or a metrics./params./tags. key (a leading - for descending)"
        )
    return sort


def _table(name: str, request: Request) -> dict[str, Any]:
    size = request.app.state.ui.page_size
    experiment = kiln.experiments.get(name)  # NotFound with close matches
    keys = kiln.experiments.keys(name)
    columns, available = _columns(request, keys)
    query = request.query_params.get("q", "").strip() or None
    sort = _sort(request)
    number = _page_number(request)
    folded = query is None
    total = kiln.runs.count(name, query, top_level=folded)
    found = kiln.runs.search(
        name, query, order_by=[sort], limit=size, offset=(number - 1) * size, top_level=folded
    )
    nested = kiln.runs.children([r.id for r in found]) if folded else {}
    pages = max(1, -(-total // size))
    return {
        "experiment": experiment,
        "runs": found,
        "nested": nested,
        "columns": columns,
        "available": available,
        "chosen": {c.key for c in columns},
        "query": query or "",
        "sort": sort,
        "page_number": number,
        "pages": pages,
        "total": total,
        "folded": folded,
        "first": (number - 1) * size + 1 if found else 0,
        "last": (number - 1) * size + len(found),
    }


async def runs_table(request: Request) -> Response:
    name = request.path_params["name"]
    try:
        context = await run_in_threadpool(_table, name, request)
    except InvalidInput as exc:
        # A bad filter or sort: the page again, empty, with the message beside the box.
        experiment = await run_in_threadpool(kiln.experiments.get, name)
        return page(
            request,
            "runs.html",
            status_code=400,
            experiment=experiment,
            error=str(exc),
            runs=[],
            nested={},
            columns=[],
            available=[],
            chosen=set(),
            query=request.query_params.get("q", ""),
            sort=request.query_params.get("sort", "-attributes.start_time"),
            page_number=1,
            pages=1,
            total=0,
            folded=False,
            first=0,
            last=0,
        )
    return page(request, "runs.html", error=None, **context)
