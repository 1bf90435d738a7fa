"""Batch inference: a registered model over a whole dataset, partition by partition.

``batch_predict`` is a flow (``kiln.serving.batch:batch_scoring``), so a scoring job is a
flow run like any other: listed by ``kiln flows list``, resumable with ``kiln flows
resume``, each partition a task (a tracked run that declares the model version and the
source it read, so both show in the lineage graph), on local processes or Ray.

A partition is a run of whole Parquet row groups (pyarrow writes a row group per million
rows by default), read with only the columns the model needs. Each partition is written
to ``OUTPUT/part-NNNNN.parquet`` (the row ids, the predictions and the model version)
atomically, with what produced it in the file's metadata: a rerun or a resume finds the
partitions already written for the same model version and source and skips them, so a
job killed at partition 90 of 100 costs 10 partitions to finish. ``_SUCCESS.json`` is
written last, listing every part.

The model version is resolved once, by the job's first step (``fraud@champion`` becomes
``fraud/3``), so an alias moved mid-job never mixes two models in one output. From the
command line: ``kiln flows run kiln.serving.batch:batch_scoring --param model=fraud@champion
--param source=data.parquet --param output=scores/``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import kiln.flows as flows
from kiln.core import InvalidInput, NotFound, get_settings

__all__ = ["BatchResult", "batch_predict", "batch_scoring"]

_META_KEY = b"kiln.batch"
DEFAULT_PARTITION_ROWS = 1_000_000


class BatchResult:
    """What a batch job wrote: its flow run, the model version, and the parts."""

    def __init__(self, run: flows.FlowRun, summary: dict[str, Any]) -> None:
        self.run = run
        self.run_id: str = run.id
        self.model: str = summary["model"]
        self.output: str = summary["output"]
        self.rows: int = summary["rows"]
        self.parts: list[str] = summary["parts"]
        self.skipped: int = summary["skipped"]

    def __repr__(self) -> str:
        return (
            f"<BatchResult {self.rows} rows by {self.model} in {len(self.parts)} parts "
            f"at {self.output} (run {self.run_id})>"
        )

    def to_arrow(self) -> pa.Table:
        return pq.read_table(self.parts)


# -- planning -------------------------------------------------------------------------------


def _source_files(source: str) -> list[str]:
    """The Parquet files of a Delta table (its current version), a directory or a file."""
    path = Path(source)
    if (path / "_delta_log").is_dir():
        from deltalake import DeltaTable

        return [uri.removeprefix("file://") for uri in DeltaTable(source).file_uris()]
    if path.is_dir():
        files = sorted(str(p) for p in path.rglob("*.parquet") if not p.name.startswith((".", "_")))
        if not files:
            raise InvalidInput(f"source {source!r} is a directory with no Parquet files")
        return files
    if path.is_file():
        return [source]
    raise NotFound(
        f"source {source!r} does not exist (expected a Parquet file, a directory "
        "of Parquet files or a Delta table)"
    )


def _part(file: str, content: str, groups: list[int], rows: int, offset: int) -> dict[str, Any]:
    return {"file": file, "content": content, "row_groups": groups, "rows": rows, "offset": offset}


@flows.step(cache=False)
def plan_partitions(source: str, partition_rows: int, output: str) -> list[dict[str, Any]]:
    """Split the source into partitions of whole row groups, about ``partition_rows`` each.

    Never cached: the files under a path change while the path stays the same. An
    earlier job's ``_SUCCESS.json`` in ``output`` is withdrawn first: until this job
    commits, readers must not take the directory for finished.
    """
    (Path(output) / "_SUCCESS.json").unlink(missing_ok=True)
    parts: list[dict[str, Any]] = []
    offset = 0
    for file in _source_files(source):
        meta = pq.ParquetFile(file).metadata
        stat = os.stat(file)
        content = f"{stat.st_size}:{stat.st_mtime_ns}"  # a file rewritten in place differs
        groups: list[int] = []
        rows = 0
        for group in range(meta.num_row_groups):
            groups.append(group)
            rows += meta.row_group(group).num_rows
            if rows >= partition_rows:
                parts.append(_part(file, content, groups, rows, offset))
                offset += rows
                groups, rows = [], 0
        if groups:
            parts.append(_part(file, content, groups, rows, offset))
            offset += rows
    for index, part in enumerate(parts):
        part["index"] = index
    run = _active_run()
    if run is not None:
        run.log_input("dataset", os.path.abspath(source), format="parquet")
        run.log_metrics({"partitions": len(parts), "rows": offset})
    return parts


# -- scoring --------------------------------------------------------------------------------

# one load per worker process and store: (home, metadata URL, model ref) -> LoadedModel
_loaded: dict[tuple[str, str | None, str], Any] = {}


def _model(ref: str) -> Any:
    settings = get_settings()
    key = (str(settings.home), settings.db_url, ref)
    model = _loaded.get(key)
    if model is None:
        from kiln.registry import models

        model = _loaded[key] = models.load(ref)
    return model


def _active_run() -> Any:
    from kiln.tracking import active_run

    return active_run()


def _written(path: Path, stamp: dict[str, Any]) -> int | None:
    """The rows of a part already written by the same job (model, source part), if any."""
    if not path.exists():
        return None
    try:
        meta = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowInvalid):
        return None  # damaged: written again
    found = json.loads(meta.get(_META_KEY, b"{}"))
    if {k: found.get(k) for k in stamp} != stamp:
        return None
    return int(found.get("rows", -1))


def _predictions(values: np.ndarray) -> dict[str, pa.Array]:
    values = np.asarray(values)
    if values.ndim == 1:
        return {"prediction": pa.array(values)}
    if values.ndim == 2 and values.shape[1] == 1:
        return {"prediction": pa.array(values[:, 0])}
    return {f"prediction_{i}": pa.array(values[:, i]) for i in range(values.shape[1])}


@flows.step(cache=False, retries=2, retry_delay=1.0)
def score_partition(
    model: str,
    part: dict[str, Any],
    output: str,
    features: list[str],
    id_column: str,
    threads: int,
) -> dict[str, Any]:
    """Score one partition and write it, unless the same job already wrote it."""
    path = Path(output) / f"part-{part['index']:05d}.parquet"
    stamp = {
        "model": model,
        "file": part["file"],
        "content": part["content"],
        "row_groups": part["row_groups"],
        "features": features,
    }
    rows = _written(path, stamp)
    if rows == part["rows"]:
        return {"path": str(path), "rows": rows, "skipped": True}
    loaded = _model(model)
    run = _active_run()
    if run is not None:
        run.log_input("model_version", loaded.version.id, ref=model)
    wanted = [c.name for c in loaded.signature.inputs]
    source = pq.ParquetFile(part["file"])
    present = set(source.schema_arrow.names)
    if features:
        table = _with_features(source.read_row_groups(part["row_groups"]), features)
    else:
        missing = [c for c in wanted if c not in present]
        if missing:
            raise InvalidInput(
                f"source {part['file']!r} lacks the model's input column {missing[0]!r}; "
                f"the model {model} needs {wanted}"
            )
        read = wanted + ([id_column] if id_column and id_column not in wanted else [])
        table = source.read_row_groups(part["row_groups"], columns=read)
    if id_column:
        if id_column not in table.column_names:
            raise InvalidInput(
                f"id_column {id_column!r} is not a column of the source; "
                f"its columns: {', '.join(table.column_names)}"
            )
        ids = table.column(id_column)
    else:
        ids = pa.array(np.arange(part["offset"], part["offset"] + table.num_rows, dtype=np.int64))
    inputs = table.select(wanted)
    if threads > 0:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=threads):
            values = loaded.predict(inputs)
    else:
        values = loaded.predict(inputs)
    columns: dict[str, Any] = {id_column or "row_id": ids, **_predictions(values)}
    columns["model_version"] = pa.DictionaryArray.from_arrays(
        pa.array(np.zeros(table.num_rows, dtype=np.int32)), pa.array([model])
    )
    out = pa.table(columns)
    stamp["rows"] = out.num_rows
    out = out.replace_schema_metadata({_META_KEY: json.dumps(stamp).encode()})
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(out, partial, compression="snappy")
    os.replace(partial, path)  # a part is whole or absent, whatever kills the task
    return {"path": str(path), "rows": out.num_rows, "skipped": False}


def _with_features(spine: pa.Table, features: list[str]) -> pa.Table:
    """A spine partition with its point-in-time features (the feature store's offline
    retrieval, as for training), so a batch job sees what training saw."""
    from kiln.features import FeatureStore

    return FeatureStore().get_historical_features(spine.to_pandas(), features).to_arrow()


@flows.step(cache=False)
def commit_output(model: str, output: str, parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Write ``_SUCCESS.json`` once every part is there, so readers know the job ended."""
    written = list(parts)
    summary = {
        "model": model,
        "output": output,
        "rows": sum(p["rows"] for p in written),
        "parts": [p["path"] for p in written],
        "skipped": sum(1 for p in written if p["skipped"]),
    }
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    keep = {Path(p["path"]).name for p in written}
    for stale in out.glob("part-*.parquet"):  # an earlier job's parts, past this one's count
        if stale.name not in keep:
            stale.unlink(missing_ok=True)
    marker = out / "_SUCCESS.json"
    partial = marker.with_name("._SUCCESS.json.tmp")
    partial.write_text(json.dumps(summary, indent=2))
    os.replace(partial, marker)
    run = _active_run()
    if run is not None:
        run.log_metrics({"rows": summary["rows"], "skipped_partitions": summary["skipped"]})
    return summary


@flows.step(cache=False)
def resolve_model(model: str) -> str:
    """``fraud@champion`` as the version it names now (``fraud/3``): every partition is
    scored by that version, wherever the alias moves while the job runs."""
    from kiln.registry import models

    return models.resolve(model).ref


@flows.flow(name="batch_predict")
def batch_scoring(
    model: str,
    source: str,
    output: str,
    partition_rows: int = DEFAULT_PARTITION_ROWS,
    features: list[str] | None = None,
    id_column: str = "",
    threads: int = 0,
) -> dict[str, Any]:
    version = resolve_model(model)
    parts: Any = plan_partitions(source, partition_rows, output)  # an output placeholder: .each()
    scored = score_partition.map(
        model=version,
        part=parts.each(),
        output=output,
        features=flows.unmapped(features or []),
        id_column=id_column,
        threads=threads,
    )
    summary: dict[str, Any] = commit_output(version, output, scored)
    return summary


# -- the entry point ------------------------------------------------------------------------


def batch_predict(
    model: str,
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    executor: str | flows.Executor = "processes",
    max_parallel: int | None = None,
    partition_rows: int = DEFAULT_PARTITION_ROWS,
    features: Sequence[str] | None = None,
    id_column: str | None = None,
    on_event: Any = None,
) -> BatchResult:
    """Score ``source`` (a Parquet file or directory, or a Delta table) with ``model``
    (``fraud@champion``, ``fraud/3``) into Parquet parts under ``output``.

    With ``features``, ``source`` is a spine (entity keys and an event timestamp) and each
    partition gets its point-in-time features from the feature store first. Rows keep
    their ``id_column`` (or get ``row_id``, their position in the source).
    """
    from kiln.registry import models

    if (
        isinstance(partition_rows, bool)
        or not isinstance(partition_rows, int)
        or (partition_rows < 1)
    ):
        raise InvalidInput(f"partition_rows must be an integer >= 1; got {partition_rows!r}")
    ref = models.resolve(model).ref  # once: an alias moved mid-job changes nothing
    engine = flows.open_executor(executor, max_parallel)
    workers = int(getattr(engine, "max_workers", 1))
    threads = max(1, (os.cpu_count() or 1) // max(1, min(workers, max_parallel or workers)))
    run = batch_scoring.run(
        model=ref,
        source=os.fspath(source),
        output=os.path.abspath(os.fspath(output)),
        partition_rows=partition_rows,
        features=list(features or []),
        id_column=id_column or "",
        threads=threads if engine.name != "inline" else 0,
        executor=engine,
        max_parallel=max_parallel,
        on_event=on_event,
    )
    return BatchResult(run, run.result)
