"""Tamper tests: a modified model file is refused before anything is deserialized."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

import kiln
from kiln.errors import IntegrityError
from kiln.registry import ModelVersion
from kiln.store import BlobStore, FsspecBlobStore, open_metadata_store
from kiln.tracking import TrackingClient


class _Payload:
    """Unpickling this creates the marker file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.write_text, (self.marker, "pwned"))


@pytest.fixture
def client(blob_store: BlobStore, sqlite_url: str) -> TrackingClient:
    return TrackingClient(meta=open_metadata_store(sqlite_url), blobs=blob_store)


@pytest.fixture
def replace_blob(
    blob_store: BlobStore, request: pytest.FixtureRequest
) -> Callable[[str, bytes], None]:
    """Overwrite the stored bytes of one digest, bypassing the store (local or S3)."""
    assert isinstance(blob_store, FsspecBlobStore)
    if blob_store.uri.startswith("s3://"):
        import boto3

        s3 = boto3.client(
            "s3", endpoint_url=request.getfixturevalue("s3_endpoint"), region_name="us-east-1"
        )

        def on_s3(digest: str, data: bytes) -> None:
            bucket, key = blob_store._key(digest).split("/", 1)
            s3.put_object(Bucket=bucket, Key=key, Body=data)

        return on_s3

    def on_disk(digest: str, data: bytes) -> None:
        Path(blob_store._key(digest)).write_bytes(data)

    return on_disk


def _register(client: TrackingClient) -> tuple[ModelVersion, LogisticRegression, pd.DataFrame]:
    rng = np.random.default_rng(3)
    x = pd.DataFrame(rng.normal(size=(100, 2)), columns=["a", "b"])
    model = LogisticRegression().fit(x, (x["a"] > 0).astype(int))
    return kiln.models.register("m", model, input_example=x[:3], client=client), model, x


def _digest(mv: ModelVersion, path: str) -> str:
    return next(f.digest for f in mv.files if f.path == path)


def test_a_replaced_pickle_is_never_unpickled(
    client: TrackingClient, replace_blob: Callable[[str, bytes], None], tmp_path: Path
) -> None:
    mv, _, _ = _register(client)
    marker = tmp_path / "marker"
    replace_blob(_digest(mv, "model/model.joblib"), pickle.dumps(_Payload(marker)))
    with pytest.raises(IntegrityError, match="corrupted"):
        kiln.models.load("m/1", client=client)
    assert not marker.exists()


def test_a_modified_descriptor_is_refused(
    client: TrackingClient, replace_blob: Callable[[str, bytes], None]
) -> None:
    mv, _, _ = _register(client)
    replace_blob(_digest(mv, "kiln-model.json"), b'{"flavor": "pyfunc"}')
    with pytest.raises(IntegrityError):
        kiln.models.load("m/1", client=client)


def test_a_tampered_local_cache_is_not_trusted(
    client: TrackingClient, tmp_path: Path, blob_store: BlobStore
) -> None:
    """Remote stores are cached on disk; a cached copy that no longer matches is fetched again."""
    mv, model, x = _register(client)
    kiln.models.load("m/1", client=client)
    cached = kiln.get_settings().home / "cache" / "models" / "blobs"
    marker = tmp_path / "marker"
    if blob_store.uri.startswith("s3://"):
        target = cached / _digest(mv, "model/model.joblib")
        assert target.exists()
        target.write_bytes(pickle.dumps(_Payload(marker)))
    loaded = kiln.models.load("m/1", client=client)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert not marker.exists()
