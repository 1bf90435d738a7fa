"""A flow run's graph, read back: which step calls read which outputs.

A run stores the graph it was built with (``flow_graph.json``, an artifact of its tracked
run) before any task runs, so the graph shown for a run is the one that ran, whatever the
flow's code has become since. A run recorded before graphs were stored gets its graph
rebuilt from the flow's code with the run's parameters (marked ``recorded=False``).
"""

from __future__ import annotations

from typing import Any

import orjson

from kiln.core import InvalidInput, NotFound
from kiln.flows._graph import Graph
from kiln.flows._records import get_run
from kiln.flows.records import FlowGraph, FlowNode
from kiln.tracking import TrackingClient, default_client
from kiln.tracking.artifacts import list_artifacts

__all__ = ["GRAPH_ARTIFACT", "describe", "run_graph"]

GRAPH_ARTIFACT = "flow_graph.json"


def describe(graph: Graph, *, run_id: str, flow: str) -> FlowGraph:
    """The record of a built graph (node names, steps, upstream names, call sites)."""
    names = {node.id: node.name for node in graph.nodes}
    return FlowGraph(
        run_id=run_id,
        flow=flow,
        nodes=tuple(
            FlowNode(
                name=node.name,
                step=node.step.name,
                upstream=tuple(names[i] for i in sorted(node.upstream())),
                mapped=node.mapped,
                site=node.site,
            )
            for node in graph.nodes
        ),
    )


def _from_dict(run_id: str, data: dict[str, Any]) -> FlowGraph:
    return FlowGraph(
        run_id=run_id,
        flow=str(data["flow"]),
        nodes=tuple(
            FlowNode(
                name=str(n["name"]),
                step=str(n["step"]),
                upstream=tuple(n["upstream"]),
                mapped=bool(n["mapped"]),
                site=str(n["site"]),
            )
            for n in data["nodes"]
        ),
    )


def run_graph(run_id: str, *, client: TrackingClient | None = None) -> FlowGraph:
    """The graph of flow run ``run_id``: its nodes and the edges between them.

    NotFound for an unknown run, or for a run that stored no graph and whose flow can no
    longer be imported (the message says why).
    """
    client = client or default_client()
    record = get_run(run_id, client=client)
    for artifact in list_artifacts(run_id, client=client):
        if artifact.path == GRAPH_ARTIFACT and artifact.digest:
            data = orjson.loads(client.blobs.get_bytes(artifact.digest))
            return _from_dict(run_id, data)
    from kiln.flows._flow import load_flow
    from kiln.flows._graph import trace

    try:
        flow = load_flow(record.target)
        graph, _ = trace(flow.fn, flow.params(record.params))
    except Exception as exc:  # user code: the flow moved, fails to import, or changed
        reason = str(exc) if isinstance(exc, InvalidInput) else f"{type(exc).__name__}: {exc}"
        raise NotFound(
            f"flow run {run_id} stored no graph, and its flow {record.target!r} cannot be "
            f"rebuilt now: {reason}"
        ) from None
    found = describe(graph, run_id=run_id, flow=record.flow)
    return FlowGraph(run_id=run_id, flow=record.flow, nodes=found.nodes, recorded=False)
