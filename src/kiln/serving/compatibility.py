"""Signature compatibility: can a model version answer a deployment's requests?

A deployment's model input is assembled from two places: the online features it names
(``features`` or a feature ``service``) and the fields each request carries. A version
is compatible when every input of its signature is supplied by one of them, with a dtype
that converts to the input's without loss:

- an input named like a feature (``f0``, the part after ``:``) or like its full name
  (``user_stats__f0``, what ``get_online_features(..., full_feature_names=True)``
  returns) is read from the online store;
- every other input is a request field, and so are the request fields of on-demand
  feature views; when the deployment has fixed its request schema (``request``), each
  of them must be in it.

:func:`check_compatible` is called before a version takes traffic (create, canary, A/B,
shadow, blue-green, promote, update); the server calls it again when an alias moves.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from kiln.core import InvalidInput, NotFound, close_matches
from kiln.registry import ColumnSpec, ModelVersion
from kiln.serving.specs import Deployment
from kiln.tracking import TrackingClient, default_client

if TYPE_CHECKING:
    from kiln.features import FeatureRequirements

__all__ = ["InputPlan", "check_compatible", "input_plan", "request_fields"]

_TEXT = frozenset({"string", "object", "category"})
# Feature store dtypes as signature dtypes.
_FEATURE_DTYPES = {"timestamp": "datetime64[ns]"}


@dataclass(frozen=True, kw_only=True)
class InputPlan:
    """Where each input of one model version comes from, for one deployment.

    ``features`` maps a model input column to the ``view:feature`` it is read from (to
    the online output name when checked against a feature service's ``requirements``);
    ``request`` lists the fields a request must carry (model inputs not read from
    features, then the request fields of on-demand views), in signature order;
    ``entity_keys`` are the join keys the online lookup needs.
    """

    features: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    request: tuple[ColumnSpec, ...] = ()
    entity_keys: tuple[str, ...] = ()
    input_kind: str = "columns"

    def to_dict(self) -> dict[str, Any]:
        return {
            "features": dict(self.features),
            "request": [c.to_dict() for c in self.request],
            "entity_keys": list(self.entity_keys),
            "input_kind": self.input_kind,
        }


@dataclass(frozen=True)
class _Feature:
    ref: str  # view:feature
    dtype: str | None  # a signature dtype; None when the store cannot say


@dataclass(frozen=True)
class _Features:
    by_name: Mapping[str, tuple[_Feature, ...]]  # short name -> the features of that name
    by_full: Mapping[str, _Feature]  # view__feature -> feature
    entity_keys: tuple[str, ...]
    request: tuple[ColumnSpec, ...]  # on-demand views' request fields


_NO_FEATURES = _Features(by_name={}, by_full={}, entity_keys=(), request=())


def castable(src: str, dst: str) -> bool:
    """Whether values of dtype ``src`` convert to ``dst`` without loss (as ``enforce`` does)."""
    if src == dst:
        return True
    if src in _TEXT or dst in _TEXT:
        return src in _TEXT and dst in _TEXT
    if src.startswith("datetime64") or dst.startswith("datetime64"):
        return src.startswith("datetime64") and dst.startswith("datetime64")
    try:
        a, b = np.dtype(src), np.dtype(dst)
    except TypeError:
        return False
    if a.kind == "b":
        return b.kind in "biuf"
    if a.kind in "iu" and b.kind in "iu":
        return True  # a narrower integer is checked value by value
    return bool(np.can_cast(a, b, casting="safe")) or (a.kind == "f" and b.kind == "f")


def _signature_dtype(dtype: str) -> str:
    return _FEATURE_DTYPES.get(dtype, dtype)


def _no_source_check(view: Any) -> None:
    """The catalog is only read here; sources are checked when definitions are applied."""


def _features(deployment: Deployment, client: TrackingClient) -> _Features:
    if not deployment.features and deployment.service is None:
        return _NO_FEATURES
    try:
        from kiln.features import (
            FeatureService,
            FeatureView,
            OnDemandFeatureView,
            WindowedFeatureView,
        )
        from kiln.features.catalog import Catalog
    except ImportError as exc:  # pragma: no cover - the feature store ships with kiln
        raise InvalidInput(
            f"deployment {deployment.name!r} names features, but the feature store cannot be "
            f"imported here ({exc})"
        ) from None
    definitions, _ = Catalog(client.meta, _no_source_check).load()
    views = {
        n: d
        for n, d in definitions.items()
        if isinstance(d, FeatureView | WindowedFeatureView | OnDemandFeatureView)
    }
    refs: tuple[str, ...] = deployment.features
    if deployment.service is not None:
        service = definitions.get(deployment.service)
        if not isinstance(service, FeatureService):
            services = [n for n, d in definitions.items() if isinstance(d, FeatureService)]
            raise NotFound(
                f"deployment {deployment.name!r} uses feature service {deployment.service!r}, "
                f"which is not applied{close_matches(deployment.service, services)}"
            )
        refs = tuple(service.features)

    def dtype_of(view: Any, feature: str) -> str | None:
        if isinstance(view, WindowedFeatureView):
            agg = next(a for a in view.aggregations if a.name == feature)
            return {"count": "int64", "mean": "float64"}.get(agg.function)
        spec = next(f for f in view.schema if f.name == feature)
        return _signature_dtype(spec.dtype)

    by_name: dict[str, list[_Feature]] = {}
    by_full: dict[str, _Feature] = {}
    keys: list[str] = []
    request: dict[str, ColumnSpec] = {}
    problems: list[str] = []

    def add_keys(view: Any) -> None:
        if isinstance(view, OnDemandFeatureView):
            for input_ref in view.inputs:
                upstream = views.get(input_ref.partition(":")[0])
                if upstream is not None:
                    add_keys(upstream)
            for f in view.request_fields:
                request.setdefault(f.name, ColumnSpec(name=f.name, dtype=_signature_dtype(f.dtype)))
            return
        keys.extend(k for k in view.join_keys if k not in keys)

    for ref in refs:
        view_name, _, feature = ref.partition(":")
        view = views.get(view_name)
        if view is None:
            problems.append(
                f"feature view {view_name!r} (in {ref!r}) is not applied"
                f"{close_matches(view_name, views)}"
            )
            continue
        if feature not in view.feature_names:
            problems.append(
                f"view {view_name!r} has no feature {feature!r} (in {ref!r}); it has: "
                f"{', '.join(view.feature_names)}"
            )
            continue
        found = _Feature(ref=ref, dtype=dtype_of(view, feature))
        if found not in by_name.setdefault(feature, []):
            by_name[feature].append(found)
        by_full[f"{view_name}__{feature}"] = found
        add_keys(view)
    if problems:
        raise InvalidInput(f"deployment {deployment.name!r}: " + "; ".join(problems))
    return _Features(
        by_name={k: tuple(v) for k, v in by_name.items()},
        by_full=by_full,
        entity_keys=tuple(keys),
        request=tuple(request.values()),
    )


def _from_requirements(deployment: Deployment, req: FeatureRequirements) -> _Features:
    """What a server already asked the feature store (no dtypes: those checks are skipped)."""
    refs = {ref.partition(":")[2]: ref for ref in deployment.features}
    by_name: dict[str, tuple[_Feature, ...]] = {}
    by_full: dict[str, _Feature] = {}
    for output in req.outputs:
        found = _Feature(ref=refs.get(output, output.replace("__", ":", 1)), dtype=None)
        if "__" in output:
            by_full[output] = found
        else:
            by_name[output] = (found,)
    request = tuple(
        ColumnSpec(name=f.name, dtype=_signature_dtype(f.dtype)) for f in req.request_fields
    )
    return _Features(
        by_name=by_name, by_full=by_full, entity_keys=tuple(req.entity_keys), request=request
    )


def _fail(deployment: Deployment, mv: ModelVersion, problems: Iterable[str]) -> InvalidInput:
    return InvalidInput(
        f"model version {mv.ref} cannot serve deployment {deployment.name!r}: "
        + "; ".join(problems)
    )


def input_plan(
    deployment: Deployment,
    model_version: ModelVersion,
    *,
    requirements: FeatureRequirements | None = None,
    client: TrackingClient | None = None,
) -> InputPlan:
    """Where each input of ``model_version`` comes from for ``deployment``.

    Raises InvalidInput naming every field that cannot be supplied or whose dtype does
    not convert, and NotFound for a feature service that is not applied. The features
    are read from the catalog, unless the caller already holds what
    ``FeatureStore.requirements`` answered for them (``requirements``; then feature
    dtypes are not compared).
    """
    mv = model_version
    if requirements is not None and (deployment.features or deployment.service is not None):
        feats = _from_requirements(deployment, requirements)
    else:
        feats = _features(deployment, client or default_client())
    signature = mv.signature
    if signature.input_kind != "columns":
        if feats.by_full:
            raise _fail(
                deployment,
                mv,
                [
                    "it takes one unnamed tensor, but the deployment looks up features by "
                    "name; register the model with named input columns (a DataFrame example)"
                ],
            )
        return InputPlan(request=tuple(signature.inputs), input_kind=signature.input_kind)

    from_features: dict[str, str] = {}
    from_request: list[ColumnSpec] = []
    problems: list[str] = []
    for spec in signature.inputs:
        name = spec.name or ""
        found: _Feature | None = feats.by_full.get(name)
        if found is None and name in feats.by_name:
            same = feats.by_name[name]
            if len(same) > 1:
                full = [r.ref.replace(":", "__") for r in same]
                problems.append(
                    f"input {name!r} is ambiguous: {', '.join(r.ref for r in same)} all supply it "
                    f"(name the model input {' or '.join(repr(f) for f in full)})"
                )
                continue
            found = same[0]
        if found is None:
            from_request.append(spec)
            continue
        if found.dtype is not None and not castable(found.dtype, spec.dtype):
            problems.append(
                f"input {name!r} wants {spec.dtype} but feature {found.ref} is {found.dtype}"
            )
        from_features[name] = found.ref
    names = {c.name for c in from_request}
    request = (*from_request, *(c for c in feats.request if c.name not in names))
    if deployment.request is not None:
        schema = deployment.request
        missing = [c for c in request if c.name not in schema]
        if missing:
            listed = ", ".join(f"{c.name!r} ({c.dtype})" for c in missing)
            known = ", ".join(schema) or "no fields"
            problems.append(
                f"missing request field{'s' if len(missing) > 1 else ''} {listed}: neither a "
                f"feature of the deployment nor in its request schema ({known}); to change what "
                "clients send, update the deployment's request schema (request=, or kiln "
                "deploy --update --request-field NAME:DTYPE)"
            )
        for c in request:
            sent = schema.get(c.name or "")
            if sent is not None and not castable(sent, c.dtype):
                problems.append(
                    f"request field {c.name!r} is {sent} in the deployment's request schema but "
                    f"the model wants {c.dtype}"
                )
    if problems:
        raise _fail(deployment, mv, problems)
    return InputPlan(
        features=MappingProxyType(from_features),
        request=request,
        entity_keys=feats.entity_keys,
        input_kind=signature.input_kind,
    )


def check_compatible(
    deployment: Deployment,
    model_version: ModelVersion,
    *,
    requirements: FeatureRequirements | None = None,
    client: TrackingClient | None = None,
) -> InputPlan:
    """Refuse (InvalidInput naming the fields) a version that cannot serve ``deployment``.

    Returns the :class:`InputPlan` it checked, for callers that assemble the input.
    """
    return input_plan(deployment, model_version, requirements=requirements, client=client)


def request_fields(
    deployment: Deployment,
    model_version: ModelVersion,
    *,
    requirements: FeatureRequirements | None = None,
    client: TrackingClient | None = None,
) -> tuple[ColumnSpec, ...]:
    """The fields a request must carry for ``model_version`` to answer on ``deployment``."""
    plan = input_plan(deployment, model_version, requirements=requirements, client=client)
    return plan.request
