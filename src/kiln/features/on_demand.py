"""On-demand features: one function, run over a training set and over each request.

The feature store gathers a function's inputs (request fields and the features it names,
fetched under hidden names) and hands them over as a DataFrame; offline that is the whole
training set at once, online the rows of one request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from kiln.core import InvalidInput
from kiln.features.definitions import OnDemandFeatureView
from kiln.features.offline import RetrievalJob

__all__ = [
    "HIDDEN",
    "OnDemandJob",
    "Resolved",
    "columns_dict",
    "columns_of",
    "hidden",
    "records",
    "run_on_demand",
]

HIDDEN = "__kiln_input__"


def hidden(ref: str) -> str:
    return HIDDEN + ref.replace(":", "__")


@dataclass(frozen=True)
class Resolved:
    """A request resolved once: per view the (feature, output name) pairs to read, the
    outputs in the order asked for, and the on-demand views with their outputs."""

    wanted: dict[str, list[tuple[str, str]]]
    outputs: list[str]
    on_demand: list[tuple[OnDemandFeatureView, list[tuple[str, str]]]]


def columns_of(spine: Any) -> list[str]:
    return list(spine.columns) if hasattr(spine, "columns") else list(spine.column_names)


def records(entity_rows: Any) -> list[Mapping[str, Any]]:
    if isinstance(entity_rows, Mapping):
        names = list(entity_rows)
        return [
            dict(zip(names, values, strict=True))
            for values in zip(*entity_rows.values(), strict=True)
        ]
    return list(entity_rows)


def columns_dict(entity_rows: Any) -> dict[str, list[Any]]:
    if isinstance(entity_rows, Mapping):
        return {k: list(v) for k, v in entity_rows.items()}
    rows = list(entity_rows)
    names = list(dict.fromkeys(k for r in rows for k in r))
    return {n: [r.get(n) for r in rows] for n in names}


def run_on_demand(resolved: Resolved, out: dict[str, Any], request: Mapping[str, Any]) -> None:
    """Run each on-demand function over the gathered inputs; add its outputs to ``out``."""
    import pandas as pd

    for view, pairs in resolved.on_demand:
        frame: dict[str, Any] = {}
        for field in view.request_fields:
            if field.name not in request:
                raise InvalidInput(
                    f"on-demand view {view.name!r} needs the request field {field.name!r}; "
                    "pass it with the entity rows (online) or as a spine column (offline)"
                )
            frame[field.name] = request[field.name]
        for ref in view.inputs:
            frame[ref.partition(":")[2]] = out[hidden(ref)]
        result = view.function(pd.DataFrame(frame))
        for feature, output in pairs:
            try:
                column = result[feature]
            except (KeyError, IndexError, TypeError):
                raise InvalidInput(
                    f"on-demand view {view.name!r}: its function returned no column {feature!r}"
                ) from None
            out[output] = column.tolist() if hasattr(column, "tolist") else list(column)


class OnDemandJob:
    """A training set whose on-demand features are computed from the joined result."""

    def __init__(self, job: RetrievalJob, resolved: Resolved, *, spine_columns: list[str]) -> None:
        self._job = job
        self._resolved = resolved
        self._spine_columns = spine_columns
        self._table: pa.Table | None = None

    @property
    def columns(self) -> list[str]:
        return [*self._spine_columns, *self._resolved.outputs]

    def to_arrow(self) -> pa.Table:
        if self._table is None:
            base = self._job.to_arrow()
            data: dict[str, Any] = {}
            for view_name, pairs in self._resolved.wanted.items():
                for feature, output in pairs:
                    data[output] = base.column(f"{view_name}__{feature}").to_pylist()
            request = {c: base.column(c).to_pylist() for c in self._spine_columns}
            run_on_demand(self._resolved, data, request)
            table = base.select(self._spine_columns)
            for name in self._resolved.outputs:
                table = table.append_column(name, pa.array(data[name]))
            self._table = table
        return self._table

    def to_pandas(self) -> Any:
        return self.to_arrow().to_pandas()
