"""Layer 3: pipelines of Python steps with remembered outputs, retries and resume.

``@step`` makes a function a step, ``@flow`` a function that calls steps a flow; data
flows through arguments and return values. A flow's graph is built and checked before
anything runs; its tasks run inline, in local worker processes or on Ray; every output is
stored content-addressed, reused by the step cache and by ``resume``; every run and every
task is a tracked run. See ``docs/flows.md``.
"""

from kiln.flows._flow import Flow, FlowFailed, FlowRun, flow
from kiln.flows._graph import FlowDefinitionError, each
from kiln.flows._records import get_run, list_runs, request_cancel, tasks
from kiln.flows._runner import Event
from kiln.flows._worker import LazySequence
from kiln.flows.executors import Executor, InlineExecutor, ProcessExecutor
from kiln.flows.logs import TaskLog, task_logs
from kiln.flows.records import FlowRunRecord, TaskRecord
from kiln.flows.steps import Resources, Step, step

__all__ = [
    "Event",
    "Executor",
    "Flow",
    "FlowDefinitionError",
    "FlowFailed",
    "FlowRun",
    "FlowRunRecord",
    "InlineExecutor",
    "LazySequence",
    "ProcessExecutor",
    "Resources",
    "Step",
    "TaskLog",
    "TaskRecord",
    "each",
    "flow",
    "get_run",
    "list_runs",
    "request_cancel",
    "step",
    "task_logs",
    "tasks",
]
