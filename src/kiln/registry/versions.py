"""Registered models and their numbered versions.

Registration saves the model by its flavor, loads the saved files back to infer the
output signature (so a package that cannot load is refused at registration, not in
production), uploads the files, and then in one transaction numbers the version, stores
it with its manifest of sha256 hashes, attaches the files to the source run and records
the lineage edges. Version numbers come from a per-model counter updated in that
transaction, so concurrent registrations get 1, 2, 3... with no gaps or duplicates, and a
deleted version's number is never reused.
"""

from __future__ import annotations

import getpass
import json
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import MappingProxyType
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from kiln.core import (
    Conflict,
    InvalidInput,
    KilnError,
    NotFound,
    close_matches,
    from_millis,
    get_settings,
    new_id,
    now_millis,
)
from kiln.registry import _tables as t
from kiln.registry._environment import capture
from kiln.registry._names import check_model_name, check_version
from kiln.registry._package import DESCRIPTOR, FLAVOR_DIR, store_package
from kiln.registry._targets import (
    alias_target,
    latest_target,
    model_target,
    refuse_if_used,
    version_target,
)
from kiln.registry.flavors import ModelFiles, detect, get_flavor
from kiln.registry.records import FileEntry, ModelVersion, RegisteredModel
from kiln.registry.signature import Signature, enforce, input_signature, with_outputs
from kiln.tracking import (
    ArtifactRecord,
    Run,
    RunRecord,
    TrackingClient,
    active_run,
    default_client,
    lineage,
    process_environment,
    record_artifacts,
    runs,
)

__all__ = [
    "delete_model",
    "delete_version",
    "get_model",
    "get_version",
    "list_models",
    "list_versions",
    "register",
    "update_model",
]

MODEL_KIND = "model_version"


def _json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, default=str)


def _tags(tags: Mapping[str, Any] | None, what: str) -> dict[str, str]:
    if tags is None:
        return {}
    if not isinstance(tags, Mapping):
        raise InvalidInput(f"{what} tags must be a mapping of key to value; got {tags!r}")
    return {str(k): str(v) for k, v in tags.items()}


def _text(value: Any, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or "\x00" in value:
        raise InvalidInput(f"{what} must be a string without NUL characters; got {value!r}")
    return value


def _actor() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in this environment (some containers)
        return "unknown"


def cache_dir() -> Path:
    return get_settings().home / "cache" / "models"


# -- register -----------------------------------------------------------------------------


def _source_run(run: Any, client: TrackingClient) -> RunRecord | None:
    if run is None:
        run = active_run()
        if run is None or run.client is not client:
            return None
    if isinstance(run, Run):
        run.flush()
        run_id = run.id
    elif isinstance(run, RunRecord):
        run_id = run.id
    elif isinstance(run, str):
        run_id = run
    else:
        raise InvalidInput(f"run must be a Run, a RunRecord or a run id; got {run!r}")
    return runs.get(run_id, client=client)


def register(
    name: str,
    model: Any,
    *,
    input_example: Any,
    run: Run | RunRecord | str | None = None,
    flavor: str | None = None,
    method: str | None = None,
    description: str | None = None,
    tags: Mapping[str, Any] | None = None,
    artifacts: Mapping[str, str | Path] | None = None,
    flavor_options: Mapping[str, Any] | None = None,
    training_data: Any = None,
    checks: Any = None,
    client: TrackingClient | None = None,
) -> ModelVersion:
    """Save ``model`` as the next version of ``name`` and return the stored version.

    ``input_example`` (a few rows) fixes the input signature; the output signature comes
    from the saved model's prediction on it. ``run`` (default: the active run) links the
    version to its params, metrics, data inputs and code. ``method`` picks what
    ``predict`` calls (``predict_proba`` for class probabilities); ``artifacts`` are extra
    files a Python-function model reads in ``load_context``.

    ``training_data`` (a DataFrame, Arrow table, Parquet/Delta path or saved training
    set) keeps its profile as the version's reference profile; ``checks`` (a
    ``kiln.validation`` schema) is a quality gate on that data: a failing one refuses the
    registration with the report.
    """
    client = client or default_client()
    name = check_model_name(name)
    description = _text(description, "description")
    version_tags = _tags(tags, "version")
    source = _source_run(run, client)
    reference = _reference(name, training_data, checks, run, client)
    if reference is not None:
        version_tags = {**version_tags, REFERENCE_TAG: reference}
    flav = get_flavor(flavor) if flavor is not None else detect(model)
    if flavor is not None and not flav.matches(model):
        raise InvalidInput(
            f"flavor {flavor!r} does not handle a {type(model).__qualname__}; "
            f"leave flavor unset to detect it ({detect(model).name})"
        )
    inputs = input_signature(input_example)
    options = {
        **dict(flavor_options or {}),
        "method": method,
        "artifacts": dict(artifacts or {}),
        "input_kind": inputs.input_kind,
    }
    environment = capture(flav.packages)
    with tempfile.TemporaryDirectory(prefix="kiln-register-") as tmp:
        root = Path(tmp)
        with _model_failures(name, flav.name, "saving it"):
            config = flav.save(model, root / FLAVOR_DIR, options)
        with _model_failures(name, flav.name, "predicting on input_example with the saved copy"):
            signature = _signature_from_saved(flav.name, root, config, inputs, input_example)
        manifest = store_package(
            client.blobs,
            root,
            {
                "name": name,
                "flavor": flav.name,
                "config": config,
                "signature": signature.to_dict(),
                "environment": environment,
            },
        )
    return _store_version(
        client,
        name=name,
        flavor=flav.name,
        manifest=manifest,
        config=config,
        signature=signature,
        environment=environment,
        source=source,
        description=description,
        tags=version_tags,
    )


REFERENCE_TAG = "kiln.reference_profile"


def _reference(name: str, data: Any, checks: Any, run: Any, client: TrackingClient) -> str | None:
    """The digest of the training data's profile, after its quality gate passed."""
    from kiln.validation import Schema, ValidationFailed, validate
    from kiln.validation import profile as profile_of

    if checks is not None and not isinstance(checks, Schema):
        raise InvalidInput(f"checks must be a kiln.validation.Schema; got {type(checks).__name__}")
    if data is None:
        if checks is not None:
            raise InvalidInput(
                "checks= validates training_data=: pass the data the model was trained on"
            )
        return None
    snapshot = getattr(data, "profile", None) if hasattr(data, "reference_profile") else None
    rows = data.to_arrow() if hasattr(data, "reference_profile") else data
    if checks is not None:
        report = validate(rows, checks)
        live = run if isinstance(run, Run) else active_run() if run is None else None
        if live is not None:  # the report stays on the run, passed or not
            live.log_dict(report.to_dict(), "validation/training_data.json")
        if not report.ok:
            raise ValidationFailed(f"the training data of model {name!r}", report)
        return str(snapshot) if snapshot else report.profile.save(client.blobs)
    return str(snapshot) if snapshot else profile_of(rows).save(client.blobs)


@contextmanager
def _model_failures(name: str, flavor: str, step: str) -> Iterator[None]:
    """A library's error while saving or trying the model, as InvalidInput naming both.

    An unfitted estimator or a model whose ``predict`` fails on its own example cannot be
    served, so it is refused here with the cause chained, not stored to fail later. Kiln's
    own errors and the machine's (a full disk) pass through unchanged.
    """
    try:
        yield
    except (KilnError, OSError, MemoryError):
        raise
    except Exception as err:
        if any(k.__name__ == "NotFittedError" for k in type(err).__mro__):
            what = f"the {flavor} model is not fitted; fit it before registering"
        else:
            what = f"the {flavor} model failed while {step}"
        raise InvalidInput(
            f"cannot register model {name!r}: {what} ({type(err).__name__}: {err})"
        ) from err


def _signature_from_saved(
    flavor: str, root: Path, config: Mapping[str, Any], inputs: Signature, example: Any
) -> Signature:
    """Load the saved files back and predict on the example: the output signature."""
    files = {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    package = ModelFiles(files, cache_dir=cache_dir()).scoped(FLAVOR_DIR)
    predictor = get_flavor(flavor).load(package, config)
    output = predictor.predict(enforce(inputs, example))
    return with_outputs(inputs, output)


def _store_version(
    client: TrackingClient,
    *,
    name: str,
    flavor: str,
    manifest: tuple[FileEntry, ...],
    config: Mapping[str, Any],
    signature: Signature,
    environment: Mapping[str, Any],
    source: RunRecord | None,
    description: str,
    tags: Mapping[str, str],
) -> ModelVersion:
    digest = next(f.digest for f in manifest if f.path == DESCRIPTOR)
    version_id = new_id()
    now = now_millis()
    code = dict(source.environment) if source is not None else process_environment()
    git_commit = code.get("git_commit")
    edges: list[lineage.Edge] = []
    if source is not None:
        edges.append(("run", source.id, "produced", MODEL_KIND, version_id, {}))
        for e in lineage.edges("run", source.id, direction="in", client=client):
            if e.relation == "input_to":
                props = {**e.properties, "via_run": source.id}
                edges.append((e.src_kind, e.src_id, "input_to", MODEL_KIND, version_id, props))
    if git_commit:
        dirty = {"dirty": code.get("git_dirty")}
        edges.append(("code", str(git_commit), "built", MODEL_KIND, version_id, dirty))
    if REFERENCE_TAG in tags:
        edges.append(("profile", tags[REFERENCE_TAG], "reference_of", MODEL_KIND, version_id, {}))
    meta = client.meta
    with meta.write() as conn:
        _ensure_model(conn, meta.dialect, name, now)
        version = (
            conn.execute(
                t.registered_models.update()
                .where(t.registered_models.c.name == name)
                .values(next_version=t.registered_models.c.next_version + 1, updated_at=now)
                .returning(t.registered_models.c.next_version)
            ).scalar_one()
            - 1
        )
        conn.execute(
            t.model_versions.insert().values(
                name=name,
                version=version,
                id=version_id,
                flavor=flavor,
                run_id=source.id if source is not None else None,
                digest=digest,
                files=_json([[f.path, f.digest, f.size] for f in manifest]),
                config=_json(config),
                signature=_json(signature.to_dict()),
                environment=_json(environment),
                metrics=_json(dict(source.metrics) if source is not None else {}),
                git_commit=str(git_commit) if git_commit else None,
                description=description,
                tags=_json(tags),
                size=sum(f.size for f in manifest),
                created_by=_actor(),
                created_at=now,
            )
        )
        for edge in edges:
            edge[5]["ref"] = f"{name}/{version}"
        lineage.record_edges(conn, edges)
        if source is not None:
            record_artifacts(
                conn,
                source.id,
                [
                    ArtifactRecord(
                        path=f"models/{name}/v{version}/{f.path}", size=f.size, digest=f.digest
                    )
                    for f in manifest
                ],
            )
        return _version_record(conn, _version_row(conn, name, version))


def _ensure_model(conn: Connection, dialect: str, name: str, now: int) -> None:
    """Create the registered model if it does not exist; concurrent creators agree on one."""
    values = {
        "name": name,
        "description": "",
        "tags": "{}",
        "next_version": 1,
        "created_at": now,
        "updated_at": now,
    }
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        conn.execute(pg_insert(t.registered_models).values(values).on_conflict_do_nothing())
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        conn.execute(sqlite_insert(t.registered_models).values(values).on_conflict_do_nothing())


# -- reads --------------------------------------------------------------------------------


def _version_row(conn: Connection, name: str, version: int, *, lock: bool = False) -> Any:
    """The version's row (NotFound naming the versions there are).

    With ``lock`` the row is locked until commit on PostgreSQL (FOR UPDATE), so an alias
    cannot be set on a version while it is being deleted.
    """
    mv = t.model_versions.c
    query = sa.select(t.model_versions).where(mv.name == name, mv.version == version)
    row = conn.execute(query.with_for_update() if lock else query).first()
    if row is None:
        model_exists(conn, name)
        known = conn.execute(
            sa.select(mv.version).where(mv.name == name).order_by(mv.version)
        ).scalars()
        listed = ", ".join(str(v) for v in known) or "none"
        raise NotFound(f"model {name!r} has no version {version}; versions: {listed}")
    return row


def model_exists(conn: Connection, name: str) -> None:
    """NotFound with close matches when no model is registered under ``name``."""
    rm = t.registered_models.c
    if conn.execute(sa.select(rm.name).where(rm.name == name)).first() is None:
        names = conn.execute(sa.select(rm.name)).scalars()
        raise NotFound(f"no registered model named {name!r}{close_matches(name, names)}")


def _aliases_of(conn: Connection, name: str) -> dict[int, list[str]]:
    a = t.model_aliases.c
    out: dict[int, list[str]] = {}
    for alias, version in conn.execute(
        sa.select(a.alias, a.version).where(a.name == name).order_by(a.alias)
    ):
        out.setdefault(version, []).append(alias)
    return out


def version_record(row: Any, aliases: tuple[str, ...] = ()) -> ModelVersion:
    """A :class:`ModelVersion` from one ``kiln_model_versions`` row."""
    return ModelVersion(
        name=row.name,
        version=row.version,
        id=row.id,
        flavor=row.flavor,
        run_id=row.run_id,
        digest=row.digest,
        files=tuple(FileEntry(path=p, digest=d, size=s) for p, d, s in json.loads(row.files)),
        config=MappingProxyType(json.loads(row.config)),
        signature=Signature.from_dict(json.loads(row.signature)),
        environment=MappingProxyType(json.loads(row.environment)),
        metrics=MappingProxyType(json.loads(row.metrics)),
        git_commit=row.git_commit,
        description=row.description,
        tags=MappingProxyType(json.loads(row.tags)),
        size=row.size,
        created_by=row.created_by,
        created_at=from_millis(row.created_at),
        aliases=aliases,
    )


def _version_record(conn: Connection, row: Any) -> ModelVersion:
    return version_record(row, tuple(_aliases_of(conn, row.name).get(row.version, ())))


def get_version(
    name: str, version: int | str, *, client: TrackingClient | None = None
) -> ModelVersion:
    name, number = check_model_name(name), check_version(version)
    with (client or default_client()).meta.read() as conn:
        return _version_record(conn, _version_row(conn, name, number))


def list_versions(name: str, *, client: TrackingClient | None = None) -> list[ModelVersion]:
    """Every version of ``name``, newest first."""
    name = check_model_name(name)
    mv = t.model_versions.c
    with (client or default_client()).meta.read() as conn:
        model_exists(conn, name)
        aliases = _aliases_of(conn, name)
        rows = conn.execute(
            sa.select(t.model_versions).where(mv.name == name).order_by(mv.version.desc())
        ).all()
    return [version_record(r, tuple(aliases.get(r.version, ()))) for r in rows]


def _model_record(conn: Connection, row: Any) -> RegisteredModel:
    mv = t.model_versions.c
    latest = conn.execute(sa.select(sa.func.max(mv.version)).where(mv.name == row.name)).scalar()
    aliases = {a: v for v, names in _aliases_of(conn, row.name).items() for a in names}
    return RegisteredModel(
        name=row.name,
        description=row.description,
        tags=MappingProxyType(json.loads(row.tags)),
        latest_version=latest,
        aliases=MappingProxyType(dict(sorted(aliases.items()))),
        created_at=from_millis(row.created_at),
        updated_at=from_millis(row.updated_at),
    )


def get_model(name: str, *, client: TrackingClient | None = None) -> RegisteredModel:
    name = check_model_name(name)
    with (client or default_client()).meta.read() as conn:
        model_exists(conn, name)
        row = conn.execute(
            sa.select(t.registered_models).where(t.registered_models.c.name == name)
        ).one()
        return _model_record(conn, row)


def list_models(*, client: TrackingClient | None = None) -> list[RegisteredModel]:
    """Every registered model, by name."""
    with (client or default_client()).meta.read() as conn:
        rows = conn.execute(
            sa.select(t.registered_models).order_by(t.registered_models.c.name)
        ).all()
        return [_model_record(conn, r) for r in rows]


def update_model(
    name: str,
    *,
    description: str | None = None,
    tags: Mapping[str, Any] | None = None,
    client: TrackingClient | None = None,
) -> RegisteredModel:
    """Set a model's description and/or merge tags into its tags (a None value removes one)."""
    name = check_model_name(name)
    rm = t.registered_models.c
    with (client or default_client()).meta.write() as conn:
        model_exists(conn, name)
        row = conn.execute(sa.select(t.registered_models).where(rm.name == name)).one()
        values: dict[str, Any] = {"updated_at": now_millis()}
        if description is not None:
            values["description"] = _text(description, "description")
        if tags is not None:
            if not isinstance(tags, Mapping):
                raise InvalidInput(f"model tags must be a mapping of key to value; got {tags!r}")
            merged = dict(json.loads(row.tags))
            for key, value in tags.items():
                if value is None:
                    merged.pop(str(key), None)
                else:
                    merged[str(key)] = _text(str(value), f"tag {key!r}")
            values["tags"] = _json(merged)
        conn.execute(t.registered_models.update().where(rm.name == name).values(**values))
        return _model_record(
            conn, conn.execute(sa.select(t.registered_models).where(rm.name == name)).one()
        )


# -- deletes ------------------------------------------------------------------------------


def delete_version(name: str, version: int | str, *, client: TrackingClient | None = None) -> None:
    """Delete one version; refused while an alias points at it or anything (a deployment)
    uses it, by number, through an alias or as the latest. Its number is not reused."""
    name, number = check_model_name(name), check_version(version)
    mv = t.model_versions.c
    with (client or default_client()).meta.write() as conn:
        _version_row(conn, name, number)
        aliases = _aliases_of(conn, name).get(number, [])
        targets = [version_target(name, number), *(alias_target(name, a) for a in aliases)]
        latest = conn.execute(sa.select(sa.func.max(mv.version)).where(mv.name == name)).scalar()
        if latest == number:
            targets.append(latest_target(name))
        # The users' locks first, then the row's: the order a deployment's promotion takes.
        refuse_if_used(conn, f"{name}/{number}", targets)
        row = _version_row(conn, name, number, lock=True)
        holding = _aliases_of(conn, name).get(number)
        if holding:
            listed = ", ".join(repr(a) for a in holding)
            raise Conflict(
                f"cannot delete {name}/{number}: alias {listed} points at it; move or delete "
                "the alias first"
            )
        conn.execute(t.model_versions.delete().where(mv.name == name, mv.version == number))
        lineage.delete_edges(conn, MODEL_KIND, row.id)


def delete_model(name: str, *, client: TrackingClient | None = None) -> None:
    """Delete a model and all its versions; refused while any alias exists or anything
    (a deployment) uses it."""
    name = check_model_name(name)
    with (client or default_client()).meta.write() as conn:
        model_exists(conn, name)
        refuse_if_used(conn, f"model {name!r}", [model_target(name)])
        aliases = {a: v for v, names in _aliases_of(conn, name).items() for a in names}
        if aliases:
            listed = ", ".join(f"{a!r} (version {v})" for a, v in sorted(aliases.items()))
            raise Conflict(f"cannot delete model {name!r}: aliases {listed} still point at it")
        mv = t.model_versions.c
        for version_id in conn.execute(sa.select(mv.id).where(mv.name == name)).scalars():
            lineage.delete_edges(conn, MODEL_KIND, version_id)
        conn.execute(t.model_versions.delete().where(mv.name == name))
        conn.execute(t.alias_events.delete().where(t.alias_events.c.name == name))
        conn.execute(t.registered_models.delete().where(t.registered_models.c.name == name))
