"""A model version's reference profile: the profile of the data it was trained on, which
validation and drift compare later data with (without reading the training rows again)."""

from __future__ import annotations

from typing import Any

from kiln.core import NotFound
from kiln.registry._names import ModelRef
from kiln.registry.aliases import resolve
from kiln.registry.versions import MODEL_KIND, REFERENCE_TAG
from kiln.tracking import TrackingClient, default_client, lineage

__all__ = ["reference_profile"]


def reference_profile(ref: str | ModelRef, *, client: TrackingClient | None = None) -> Any:
    """The :class:`kiln.validation.Profile` of ``ref``'s training data: the one given to
    ``register(training_data=...)``, else the one a saved training set in its lineage
    kept."""
    from kiln.validation import load_profile

    client = client or default_client()
    version = resolve(ref, client=client)
    digest = version.tags.get(REFERENCE_TAG)
    if digest is None:
        for edge in lineage.edges(MODEL_KIND, version.id, direction="in", client=client):
            if edge.src_kind == "dataset" and edge.properties.get("profile"):
                digest = str(edge.properties["profile"])
                break
    if digest is None:
        raise NotFound(
            f"model {version.name}/{version.version} has no reference profile: register it "
            "with training_data=, or from a run whose input is a saved training set"
        )
    return load_profile(digest, client.blobs)
