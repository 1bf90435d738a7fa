"""What made a model version: one walk over the lineage graph from the version upward."""

from __future__ import annotations

from typing import Any

from kiln.core import NotFound
from kiln.registry._names import ModelRef
from kiln.registry.aliases import resolve
from kiln.registry.records import LineageNode, ModelLineage, ModelVersion
from kiln.registry.versions import MODEL_KIND
from kiln.tracking import RunRecord, TrackingClient, default_client, lineage, runs

__all__ = ["model_lineage"]


# tags a flow puts on its runs: the flow run carries the flow's name; a step's task run
# its step, task and flow run (kiln.flows)
_FLOW_TAGS = {"kiln.flow": "flow", "kiln.step": "step", "kiln.flow_run": "flow_run"}


def _run_node(record: RunRecord, relation: str) -> LineageNode:
    """A run; a flow run or a flow step's run is said to be one (``kind``), so lineage
    reads "step train of flow run X" rather than a bare run id."""
    flow = {name: str(record.tags[tag]) for tag, name in _FLOW_TAGS.items() if tag in record.tags}
    kind = "flow_step" if "step" in flow else "flow_run" if "flow" in flow else "run"
    return LineageNode(
        kind=kind,
        id=record.id,
        label=f"{record.experiment}/{record.name}",
        relation=relation,
        attributes={
            "status": record.status,
            "start_time": record.start_time.isoformat(),
            "end_time": record.end_time.isoformat() if record.end_time else None,
            **flow,
        },
    )


def _upstream(kind: str, object_id: str, client: TrackingClient) -> tuple[LineageNode, ...]:
    """What a data input was built from (a snapshot's feature view versions), one level."""
    return tuple(
        LineageNode(
            kind=e.src_kind,
            id=e.src_id,
            label=e.src_id,
            relation=e.relation,
            attributes=dict(e.properties),
        )
        for e in lineage.edges(kind, object_id, direction="in", client=client)
        if e.relation == "input_to"
    )


def _flow_task_runs(parents: list[LineageNode], client: TrackingClient) -> list[str]:
    """The runs of every task of the flow run above the model's run, if one is: what the
    flow's other steps read (a training set, a feature view) is what the model came from."""
    flow_runs = [p.id for p in parents if p.kind == "flow_run"]
    if not flow_runs:
        return []
    found = runs.search(
        None, filter=f"tags.kiln.flow_run = '{flow_runs[0]}'", limit=None, client=client
    )
    return [flow_runs[0], *sorted(r.id for r in found)]


def _input_nodes(
    version: ModelVersion, client: TrackingClient, flow_runs: list[str]
) -> tuple[LineageNode, ...]:
    found: dict[tuple[str, str], LineageNode] = {}
    sources = [(MODEL_KIND, version.id)]
    if version.run_id:
        sources.append(("run", version.run_id))
    sources.extend(("run", run_id) for run_id in flow_runs if run_id != version.run_id)
    for kind, object_id in sources:
        for edge in lineage.edges(kind, object_id, direction="in", client=client):
            if edge.relation != "input_to" or (edge.src_kind, edge.src_id) in found:
                continue
            props: dict[str, Any] = {
                k: v for k, v in edge.properties.items() if k not in ("ref", "via_run")
            }
            found[(edge.src_kind, edge.src_id)] = LineageNode(
                kind=edge.src_kind,
                id=edge.src_id,
                label=str(props.get("name", edge.src_id)),
                relation="input_to",
                attributes=props,
                children=_upstream(edge.src_kind, edge.src_id, client),
            )
    return tuple(found.values())


def model_lineage(
    ref: str | ModelRef | ModelVersion, *, client: TrackingClient | None = None
) -> ModelLineage:
    """The version's run with its params and metrics, data inputs, code commit and parents."""
    client = client or default_client()
    version = ref if isinstance(ref, ModelVersion) else resolve(ref, client=client)
    run_node = None
    params: dict[str, Any] = {}
    metrics: dict[str, float] = {}
    parents: list[LineageNode] = []
    if version.run_id:
        try:
            record = runs.get(version.run_id, client=client)
        except NotFound:
            record = None
        if record is not None:
            run_node = _run_node(record, "produced")
            params, metrics = dict(record.params), dict(record.metrics)
            seen = {record.id}
            parent_id = record.parent_id
            while parent_id and parent_id not in seen:
                seen.add(parent_id)
                parent = runs.get(parent_id, client=client)
                parents.append(_run_node(parent, "parent_of"))
                parent_id = parent.parent_id
    code = None
    if version.git_commit:
        built = [
            e
            for e in lineage.edges(MODEL_KIND, version.id, direction="in", client=client)
            if e.relation == "built"
        ]
        dirty = built[0].properties.get("dirty") if built else None
        code = LineageNode(
            kind="code",
            id=version.git_commit,
            label=version.git_commit[:12],
            relation="built",
            attributes={"dirty": dirty} if dirty is not None else {},
        )
    return ModelLineage(
        version=version,
        run=run_node,
        params=params,
        metrics=metrics,
        inputs=_input_nodes(version, client, _flow_task_runs(parents, client)),
        code=code,
        parents=tuple(parents),
    )
