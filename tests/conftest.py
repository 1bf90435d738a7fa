"""Shared fixtures: real PostgreSQL, a moto S3-API server, isolated Kiln settings.

Every test gets its own PostgreSQL schema, S3 bucket and ``KILN_HOME``, so tests never see
each other's data. A missing service fails the run with a message; nothing is skipped.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import kiln
from kiln.core import free_local_port, reset_settings
from kiln.store import BlobStore, open_blob_store
from kiln.tracking import TrackingClient

PG_URL = os.environ.get("KILN_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(autouse=True)
def _isolated_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts from default settings under its own KILN_HOME."""
    for name in list(os.environ):
        if name.startswith("KILN_") and not name.startswith("KILN_TEST_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("KILN_HOME", str(tmp_path / "kiln-home"))
    reset_settings()
    yield
    reset_settings()


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[sa.Engine]:
    engine = sa.create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
    except Exception as exc:  # a missing service is a failure, never a skip
        pytest.fail(f"PostgreSQL is not reachable at {PG_URL} ({exc}); run `make services`")
    yield engine
    engine.dispose()


def pg_schema_url(schema: str) -> str:
    sep = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{sep}options=-csearch_path%3D{schema}"


@pytest.fixture
def pg_url(pg_admin: sa.Engine) -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped afterwards."""
    schema = f"kiln_t_{uuid.uuid4().hex[:12]}"
    with pg_admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    yield pg_schema_url(schema)
    from kiln.store.metadata_store import _stores

    mine = [(key, store) for key, store in list(_stores.items()) if key[0].endswith(schema)]
    _flush_writers_of([store for _, store in mine])
    for key, store in mine:
        store.dispose()
        _stores.pop(key, None)
    with pg_admin.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))


def _flush_writers_of(stores: list[Any]) -> None:
    """Write what the metric writers of these stores still hold before the stores are
    disposed: a writer flushing while its pool is disposed would hand its connection back
    to a pool that no longer exists. ``flush`` waits for a flush in progress (its lock)."""
    from kiln.tracking._writer import _writers

    for writer in list(_writers):
        if any(writer._store is store for store in stores):
            writer.flush()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'meta' / 'kiln.db'}"


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest) -> str:
    """Parametrizes a test over both metadata backends."""
    fixture = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(fixture))


@pytest.fixture
def tracking_client(db_url: str, tmp_path: Path) -> TrackingClient:
    return TrackingClient.open(
        db_url,
        str(tmp_path / "artifacts"),
        heartbeat_timeout_s=60.0,
        metric_flush_interval_s=0.05,
    )


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A moto S3-API server on 127.0.0.1 for the whole session."""
    from moto.server import ThreadedMotoServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    port = free_local_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    import boto3

    name = f"kiln-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return name


@pytest.fixture(params=("local", "s3"))
def blob_store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    """Parametrizes a test over both blob backends."""
    if request.param == "local":
        return open_blob_store(str(tmp_path / "blobs"))
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = request.getfixturevalue("s3_bucket")
    return open_blob_store(f"s3://{bucket}/blobs", s3_endpoint_url=endpoint)


def configure_kiln(**settings: Any) -> kiln.Settings:
    """Point the process-wide default client at explicit settings (tests only)."""
    return kiln.configure(**settings)


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    """A local Ray instance for the session (two CPUs), as a cluster would be for a run."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    yield ray
    ray.shutdown()
