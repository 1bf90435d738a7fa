"""Layer 4: model serving and safe rollouts.

Deployments (:mod:`kiln.serving.specs`, stored by :mod:`kiln.serving.deployments`) say
which model answers, with which online features, batching, timeouts, fallback and traffic
policy; ``kiln serve`` runs them as an ASGI app speaking the Open Inference Protocol v2,
the MLflow scoring protocol and Kiln's native predict endpoint.
"""

from typing import TYPE_CHECKING, Any

from kiln.serving import deployments
from kiln.serving.compatibility import InputPlan
from kiln.serving.deployments import DeploymentEvent
from kiln.serving.specs import POLICIES, Batching, Breaker, Deployment, Fallback, Guard, Traffic

# The server pulls in Starlette, uvicorn and Prometheus; the control-plane verbs above
# (kiln.deployments) should not pay for them, so these names load on first use.
_SERVER_NAMES = {
    "ServeConfig": "server",
    "build_app": "server",
    "create_app": "app",
    "serve": "server",
}


def __getattr__(name: str) -> Any:
    module = _SERVER_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'kiln.serving' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"kiln.serving.{module}"), name)


if TYPE_CHECKING:
    from kiln.serving.app import create_app
    from kiln.serving.server import ServeConfig, build_app, serve

__all__ = [
    "POLICIES",
    "Batching",
    "Breaker",
    "Deployment",
    "DeploymentEvent",
    "Fallback",
    "Guard",
    "InputPlan",
    "ServeConfig",
    "Traffic",
    "build_app",
    "create_app",
    "deployments",
    "serve",
]
