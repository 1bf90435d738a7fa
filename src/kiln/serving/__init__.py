"""Layer 4: model serving and safe rollouts.

Deployments (:mod:`kiln.serving.specs`, stored by :mod:`kiln.serving.deployments`) say
which model answers, with which online features, batching, timeouts, fallback and traffic
policy; ``kiln serve`` runs them as an ASGI app speaking the Open Inference Protocol v2,
the MLflow scoring protocol and Kiln's native predict endpoint.
"""

from kiln.serving import deployments
from kiln.serving.compatibility import InputPlan
from kiln.serving.deployments import DeploymentEvent
from kiln.serving.specs import POLICIES, Batching, Breaker, Deployment, Fallback, Guard, Traffic

__all__ = [
    "POLICIES",
    "Batching",
    "Breaker",
    "Deployment",
    "DeploymentEvent",
    "Fallback",
    "Guard",
    "InputPlan",
    "Traffic",
    "deployments",
]
