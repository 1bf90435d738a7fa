"""Layer 3: pipelines of Python steps with remembered outputs, retries and resume.

``@step`` makes a function a step, ``@flow`` a function that calls steps a flow; data
flows through arguments and return values. A flow's graph is built and checked before
anything runs; its tasks run inline, in local worker processes or on Ray; every output is stored
content-addressed, reused by the step cache and by ``resume``; every run and every task
is a tracked run. ``schedule`` puts a flow on a cron schedule, and a ``Scheduler``
(``kiln scheduler``, safe to run as replicas) starts each due run once. See
``docs/flows.md``.

Names load their module on first use (:func:`kiln.core.lazy_exports`), so a worker
process, which needs only the task runner, starts without the rest.
"""

from typing import TYPE_CHECKING

from kiln.core import lazy_exports

if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "Event": "kiln.flows._runner",
            "Executor": "kiln.flows.executors",
            "Flow": "kiln.flows._flow",
            "FlowDefinitionError": "kiln.flows._graph",
            "FlowFailed": "kiln.flows._flow",
            "FlowGraph": "kiln.flows.records",
            "FlowNode": "kiln.flows.records",
            "FlowRun": "kiln.flows._flow",
            "FlowRunRecord": "kiln.flows.records",
            "InlineExecutor": "kiln.flows.executors",
            "LazySequence": "kiln.flows._worker",
            "ProcessExecutor": "kiln.flows.executors",
            "RayExecutor": "kiln.flows._ray",
            "Resources": "kiln.flows.steps",
            "Schedule": "kiln.flows.records",
            "ScheduledRun": "kiln.flows.records",
            "Scheduler": "kiln.flows.scheduling",
            "StartedFlow": "kiln.flows._launch",
            "Step": "kiln.flows.steps",
            "TaskLog": "kiln.flows.logs",
            "TaskRecord": "kiln.flows.records",
            "each": "kiln.flows._graph",
            "flow": "kiln.flows._flow",
            "get_run": "kiln.flows._records",
            "get_schedule": "kiln.flows.scheduling",
            "list_runs": "kiln.flows._records",
            "load_flow": "kiln.flows._flow",
            "open_executor": "kiln.flows.executors",
            "prestart": "kiln.flows.executors",
            "request_cancel": "kiln.flows._records",
            "run_graph": "kiln.flows.graphs",
            "schedule": "kiln.flows.scheduling",
            "scheduled_runs": "kiln.flows.scheduling",
            "schedules": "kiln.flows.scheduling",
            "start_flow": "kiln.flows._launch",
            "start_resume": "kiln.flows._launch",
            "settings_snapshot": "kiln.flows.executors",
            "task_output": "kiln.flows.executors",
            "TaskResult": "kiln.flows._worker",
            "TaskSpec": "kiln.flows._worker",
            "step": "kiln.flows.steps",
            "task_logs": "kiln.flows.logs",
            "tasks": "kiln.flows._records",
            "unmapped": "kiln.flows._graph",
            "unschedule": "kiln.flows.scheduling",
        },
    )

if TYPE_CHECKING:
    from kiln.flows._flow import Flow, FlowFailed, FlowRun, flow, load_flow
    from kiln.flows._graph import FlowDefinitionError, each, unmapped
    from kiln.flows._launch import StartedFlow, start_flow, start_resume
    from kiln.flows._ray import RayExecutor
    from kiln.flows._records import get_run, list_runs, request_cancel, tasks
    from kiln.flows._runner import Event
    from kiln.flows._worker import LazySequence, TaskResult, TaskSpec
    from kiln.flows.executors import (
        Executor,
        InlineExecutor,
        ProcessExecutor,
        open_executor,
        prestart,
        settings_snapshot,
        task_output,
    )
    from kiln.flows.graphs import run_graph
    from kiln.flows.logs import TaskLog, task_logs
    from kiln.flows.records import (
        FlowGraph,
        FlowNode,
        FlowRunRecord,
        Schedule,
        ScheduledRun,
        TaskRecord,
    )
    from kiln.flows.scheduling import (
        Scheduler,
        get_schedule,
        schedule,
        scheduled_runs,
        schedules,
        unschedule,
    )
    from kiln.flows.steps import Resources, Step, step

__all__ = [
    "Event",
    "Executor",
    "Flow",
    "FlowDefinitionError",
    "FlowFailed",
    "FlowGraph",
    "FlowNode",
    "FlowRun",
    "FlowRunRecord",
    "InlineExecutor",
    "LazySequence",
    "ProcessExecutor",
    "RayExecutor",
    "Resources",
    "Schedule",
    "ScheduledRun",
    "Scheduler",
    "StartedFlow",
    "Step",
    "TaskLog",
    "TaskRecord",
    "TaskResult",
    "TaskSpec",
    "each",
    "flow",
    "get_run",
    "get_schedule",
    "list_runs",
    "load_flow",
    "open_executor",
    "prestart",
    "request_cancel",
    "run_graph",
    "schedule",
    "scheduled_runs",
    "schedules",
    "settings_snapshot",
    "start_flow",
    "start_resume",
    "step",
    "task_logs",
    "task_output",
    "tasks",
    "unmapped",
    "unschedule",
]
