"""Loading a registered version: resolve, fetch, verify, then deserialize.

Nothing is deserialized until every file of the package has been read and checked
against the sha256 recorded at registration; a mismatch raises IntegrityError.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kiln.registry._environment import check
from kiln.registry._names import ModelRef
from kiln.registry._package import FLAVOR_DIR, fetch
from kiln.registry.aliases import resolve
from kiln.registry.flavors import ModelFiles, Predictor, get_flavor
from kiln.registry.records import ModelVersion
from kiln.registry.signature import Batch, Signature, enforce
from kiln.registry.versions import cache_dir
from kiln.tracking import TrackingClient, default_client

__all__ = ["LoadedModel", "load"]


class LoadedModel:
    """A model ready to predict, with the version record it was loaded from."""

    def __init__(self, version: ModelVersion, predictor: Predictor) -> None:
        self.version = version
        self.signature: Signature = version.signature
        self._predictor = predictor

    def __repr__(self) -> str:
        return f"<LoadedModel {self.version.ref} ({self.version.flavor})>"

    @property
    def ref(self) -> str:
        return self.version.ref

    def predict(self, data: Any) -> np.ndarray:
        """Predict on a DataFrame, a dict of columns, records, an Arrow table or numpy.

        The input is checked against the signature first: a missing, unexpected or
        mistyped column raises InvalidInput naming it.
        """
        return self._predictor.predict(enforce(self.signature, data))

    def predict_batch(self, batch: Batch) -> np.ndarray:
        """Predict on a batch already checked by :func:`kiln.registry.signature.enforce`."""
        return self._predictor.predict(batch)


def load(
    ref: str | ModelRef | ModelVersion, *, client: TrackingClient | None = None
) -> LoadedModel:
    """Load ``fraud@champion``, ``fraud/3`` or ``fraud`` (the latest version)."""
    client = client or default_client()
    version = ref if isinstance(ref, ModelVersion) else resolve(ref, client=client)
    flavor = get_flavor(version.flavor)
    cache = cache_dir()
    files = fetch(client.blobs, version.files, cache)
    check(version.environment, version.ref)
    predictor = flavor.load(ModelFiles(files, cache_dir=cache).scoped(FLAVOR_DIR), version.config)
    return LoadedModel(version, predictor)
