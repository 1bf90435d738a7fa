"""The prediction log's on-disk format, shared by its writer and its reader.

The fixed columns, the hive-style path (``deployment=<name>/hour=<YYYY-MM-DDTHH>``), the
file names (``part-<worker>-<seq>-<schema>.parquet``) and how one value becomes JSON text
where Arrow cannot type a column. :mod:`kiln.serving.predlog` documents the format.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.dataset as ds

from kiln.core import InvalidInput, get_settings

PREDICTION_SCHEMA = pa.schema(
    [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("row", pa.int32(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("version", pa.int64(), nullable=False),
        pa.field("arm", pa.string(), nullable=False),
        pa.field("latency_ms", pa.float64(), nullable=False),
        pa.field("at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("fallback", pa.bool_(), nullable=False),
        pa.field("shadow", pa.bool_(), nullable=False),
    ]
)
"""The columns every file has; ``features`` and the output columns follow, typed per file."""

PARTITION_FIELDS: Final = [pa.field("deployment", pa.string()), pa.field("hour", pa.string())]
PARTITIONING: Final = ds.partitioning(pa.schema(PARTITION_FIELDS), flavor="hive")
HOUR_US: Final = 3_600_000_000
FILE_RE: Final = re.compile(r"^part-.+-\d+-([0-9a-f]{8})\.parquet$")
"""A published file's name; the group is its schema's digest."""
JSON_OPTS: Final = orjson.OPT_SERIALIZE_NUMPY
ARROW_CAST_ERRORS: Final = (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError)
"""What Arrow raises when values do not fit one type."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def default_root() -> Path:
    """``<offline_dir>/predictions`` from the Kiln settings."""
    settings = get_settings()
    return (settings.offline_dir or settings.home / "offline") / "predictions"


def epoch_us(value: datetime | int, request_id: str) -> int:
    """An aware datetime (naive means UTC) or epoch µs, as epoch µs."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return (value - _EPOCH) // _US
    if isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_):
        return int(value)
    raise InvalidInput(
        f"prediction {request_id!r}: 'at' must be a datetime or epoch microseconds (int); "
        f"got {value!r}"
    )


def hour_label(hour: int) -> str:
    """The ``hour=`` partition value of hour ``hour`` since the epoch."""
    return (_EPOCH + timedelta(hours=hour)).strftime("%Y-%m-%dT%H")


def json_text(value: Any) -> str | None:
    """Text as is, ``None`` as null, anything else as JSON: for columns Arrow cannot type."""
    if value is None or type(value) is str:
        return value
    return orjson.dumps(value, option=JSON_OPTS).decode()
