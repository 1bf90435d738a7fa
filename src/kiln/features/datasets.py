"""Training sets and their snapshots: the link from a model back to the feature versions.

``FeatureStore.get_historical_features`` returns a :class:`TrainingSet`. Saving it writes
a Delta table under the offline directory, hashes its content, and records lineage edges
from every feature view version it read to the snapshot, and from the snapshot to the
run that trains on it. A model registered from that run then points back, through the
one lineage graph, to the exact rows and feature definitions it was trained on.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa

from kiln.core import InvalidInput, NotFound
from kiln.tracking import Run, TrackingClient, lineage
from kiln.validation import profile

__all__ = ["DatasetSnapshot", "TrainingSet"]

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,127}$")


class _Job(Protocol):
    @property
    def columns(self) -> list[str]: ...

    def to_arrow(self) -> pa.Table: ...


@dataclass(frozen=True, kw_only=True)
class DatasetSnapshot:
    """One saved training set: where it is, what it holds, what it was built from."""

    name: str
    id: str
    path: Path
    delta_version: int
    digest: str
    rows: int
    columns: tuple[str, ...]
    feature_views: Mapping[str, int] = field(default_factory=dict)
    profile: str | None = None  # digest of the rows' profile (kiln.validation), the reference

    def reference_profile(self) -> Any:
        """The :class:`kiln.validation.Profile` of the snapshot's rows, kept when it was
        saved: what drift and validation compare later data with."""
        from kiln.validation import load_profile

        if self.profile is None:
            raise NotFound(f"dataset {self.id} was saved without a profile")
        return load_profile(self.profile)

    def to_arrow(self) -> pa.Table:
        """The snapshot's rows, read at its own Delta version (later saves do not leak in)."""
        import deltalake

        return deltalake.DeltaTable(str(self.path), version=self.delta_version).to_pyarrow_table()

    def to_pandas(self) -> Any:
        return self.to_arrow().to_pandas()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "id": self.id,
            "path": str(self.path),
            "delta_version": self.delta_version,
            "digest": self.digest,
            "rows": self.rows,
            "columns": list(self.columns),
            "feature_views": dict(self.feature_views),
            "profile": self.profile,
        }


def content_digest(table: pa.Table) -> str:
    """sha256 of the table's Arrow IPC stream: equal data, equal digest."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table.combine_chunks())
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()


class TrainingSet:
    """A lazy training set (``to_arrow``/``to_pandas``) that can be saved as a snapshot."""

    def __init__(
        self,
        job: _Job,
        *,
        feature_views: Mapping[str, int],
        offline_dir: Path,
        client: TrackingClient,
    ) -> None:
        self._job = job
        self._views = dict(feature_views)
        self._offline_dir = offline_dir
        self._client = client

    @property
    def columns(self) -> list[str]:
        return self._job.columns

    @property
    def feature_views(self) -> Mapping[str, int]:
        """The version of every feature view this training set reads."""
        return dict(self._views)

    def to_arrow(self) -> pa.Table:
        return self._job.to_arrow()

    def to_pandas(self) -> Any:
        to_pandas = getattr(self._job, "to_pandas", None)
        return to_pandas() if to_pandas is not None else self.to_arrow().to_pandas()

    def save(self, name: str, *, run: Run | str | None = None) -> DatasetSnapshot:
        """Write the rows as a Delta table snapshot and record where they came from.

        ``run`` (a live run or a run id) records the snapshot as that run's input, so a
        model registered from the run carries the snapshot in its lineage.
        """
        import deltalake

        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise InvalidInput(
                "dataset names are 1-128 letters, digits, '_' or '-', starting with a letter "
                f"or '_'; got {name!r}"
            )
        table = self.to_arrow()
        digest = content_digest(table)
        path = self._offline_dir / "datasets" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        deltalake.write_deltalake(str(path), table, mode="overwrite", schema_mode="overwrite")
        version = deltalake.DeltaTable(str(path)).version()
        reference = profile(table).save(self._client.blobs)
        snapshot = DatasetSnapshot(
            name=name,
            id=f"{name}@{digest[:16]}",
            path=path,
            delta_version=int(version),
            digest=digest,
            rows=table.num_rows,
            columns=tuple(table.column_names),
            feature_views=self._views,
            profile=reference,
        )
        props = {
            "name": name,
            "rows": snapshot.rows,
            "digest": digest,
            "delta_version": version,
            "profile": reference,
        }
        for view, view_version in sorted(self._views.items()):
            lineage.add_edge(
                "feature_view",
                f"{view}@v{view_version}",
                "input_to",
                "dataset",
                snapshot.id,
                client=self._client,
                view=view,
                version=view_version,
            )
        if run is not None:
            run_id = run.id if isinstance(run, Run) else str(run)
            lineage.add_edge(
                "dataset", snapshot.id, "input_to", "run", run_id, client=self._client, **props
            )
        return snapshot
