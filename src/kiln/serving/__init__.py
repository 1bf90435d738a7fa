"""Layer 4: model serving and safe rollouts.

Deployments (:mod:`kiln.serving.specs`, stored by :mod:`kiln.serving.deployments`) say
which model answers, with which online features, batching, timeouts, fallback and traffic
policy; ``kiln serve`` runs them as an ASGI app speaking the Open Inference Protocol v2,
the MLflow scoring protocol and Kiln's native predict endpoint.
"""

from typing import TYPE_CHECKING

from kiln.core import lazy_exports
from kiln.serving.specs import POLICIES, Batching, Breaker, Deployment, Fallback, Guard, Traffic

# The stored deployments need SQLAlchemy and the registry, the server Starlette, uvicorn
# and Prometheus; a spec is plain data, so only the specs load with the package.
if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "deployments": "kiln.serving.deployments",
            "batch_predict": "kiln.serving.batch",
            "BatchResult": "kiln.serving.batch",
            "DeploymentEvent": "kiln.serving.deployments",
            "InputPlan": "kiln.serving.compatibility",
            "ServeConfig": "kiln.serving.server",
            "build_app": "kiln.serving.server",
            "create_app": "kiln.serving.app",
            "serve": "kiln.serving.server",
        },
    )

if TYPE_CHECKING:
    from kiln.serving import deployments
    from kiln.serving.app import create_app
    from kiln.serving.batch import BatchResult, batch_predict
    from kiln.serving.compatibility import InputPlan
    from kiln.serving.deployments import DeploymentEvent
    from kiln.serving.server import ServeConfig, build_app, serve

__all__ = [
    "POLICIES",
    "BatchResult",
    "Batching",
    "Breaker",
    "Deployment",
    "DeploymentEvent",
    "Fallback",
    "Guard",
    "InputPlan",
    "ServeConfig",
    "Traffic",
    "batch_predict",
    "build_app",
    "create_app",
    "deployments",
    "serve",
]
