"""Run artifacts on the S3 API (moto server on 127.0.0.1), with both metadata backends."""

from __future__ import annotations

from pathlib import Path

import pytest

from kiln.store import open_blob_store, open_metadata_store
from kiln.testing.tracking import (  # noqa: F401
    test_artifacts_round_trip,
    test_identical_artifacts_are_stored_once,
)
from kiln.tracking import TrackingClient


@pytest.fixture
def tracking_client(db_url: str, s3_endpoint: str, s3_bucket: str) -> TrackingClient:
    return TrackingClient(
        meta=open_metadata_store(db_url),
        blobs=open_blob_store(f"s3://{s3_bucket}/artifacts", s3_endpoint_url=s3_endpoint),
        flush_interval_s=0.05,
    )


def test_default_client_uses_s3_from_settings(
    s3_endpoint: str, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import kiln
    from kiln.core import reset_settings

    monkeypatch.setenv("KILN_ARTIFACT_URI", f"s3://{s3_bucket}/from-settings")
    monkeypatch.setenv("KILN_S3_ENDPOINT_URL", s3_endpoint)
    reset_settings()
    source = tmp_path / "notes.txt"
    source.write_text("kept in S3")
    with kiln.start_run("s3") as run:
        run.log_artifact(source, "docs")
    assert [a.path for a in kiln.runs.list_artifacts(run.id)] == ["docs/notes.txt"]
    out = kiln.runs.download_artifacts(run.id, "docs/notes.txt", tmp_path / "out")
    assert out.read_text() == "kept in S3"
    import boto3

    keys = boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(Bucket=s3_bucket)
    assert any(o["Key"].startswith("from-settings/sha256/") for o in keys["Contents"])
