"""The tracking client: which metadata and artifact stores tracking reads and writes.

Module-level functions (``kiln.start_run``, ``kiln.runs.search``...) use the default
client built from :func:`kiln.core.get_settings`; pass ``client=`` to address another
store explicitly, as the conformance suite does for every backend.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any

from kiln.core import Settings, get_settings, load_settings
from kiln.store import BlobStore, MetadataStore, open_blob_store, open_metadata_store
from kiln.tracking._writer import MetricWriter

__all__ = ["TrackingClient", "default_client"]


@dataclass(eq=False)
class TrackingClient:
    meta: MetadataStore
    blobs: BlobStore
    heartbeat_timeout_s: float = 60.0
    flush_interval_s: float = 0.5
    _writer: MetricWriter | None = field(default=None, init=False, repr=False)
    _writer_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> TrackingClient:
        return cls(
            meta=open_metadata_store(settings.db_url),
            blobs=open_blob_store(settings.artifact_uri, s3_endpoint_url=settings.s3_endpoint_url),
            heartbeat_timeout_s=settings.heartbeat_timeout_s,
            flush_interval_s=settings.metric_flush_interval_s,
        )

    @classmethod
    def open(
        cls,
        db_url: str | None = None,
        artifact_uri: str | None = None,
        **settings: Any,
    ) -> TrackingClient:
        """A client for explicit URLs; unnamed settings resolve as usual."""
        return cls.from_settings(
            load_settings(db_url=db_url, artifact_uri=artifact_uri, **settings)
        )

    @property
    def writer(self) -> MetricWriter:
        if self._writer is None:
            with self._writer_lock:
                if self._writer is None:
                    self._writer = MetricWriter(
                        self.meta,
                        flush_interval_s=self.flush_interval_s,
                        heartbeat_interval_s=max(self.heartbeat_timeout_s / 4.0, 0.05),
                    )
        return self._writer

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()


_default: tuple[Settings, int, TrackingClient] | None = None
_default_lock = threading.Lock()


def default_client() -> TrackingClient:
    """The client for the current settings, rebuilt when settings or the process change."""
    global _default
    settings = get_settings()
    current = _default
    if current is not None and current[0] is settings and current[1] == os.getpid():
        return current[2]
    with _default_lock:
        current = _default
        if current is None or current[0] is not settings or current[1] != os.getpid():
            current = (settings, os.getpid(), TrackingClient.from_settings(settings))
            _default = current
        return current[2]
