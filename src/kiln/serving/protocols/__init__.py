"""Wire formats of the serving protocols: pure codecs, no web framework.

- :mod:`~kiln.serving.protocols.v2`: the Open Inference Protocol v2 (KServe, Triton).
- :mod:`~kiln.serving.protocols.mlflow`: the MLflow scoring protocol (``/invocations``).
- :mod:`~kiln.serving.protocols.native`: Kiln's ``/deployments/{name}/predict``.
- :mod:`~kiln.serving.protocols.openapi`: the OpenAPI document of all routes.

Each decoder turns request bytes into the model's input (numpy, in signature order) or
raises :class:`ProtocolError`, which carries the HTTP status (400; 413 for a body over
the limit, see :func:`check_size`; 415 for an unreadable content type) and a message
naming the field; :meth:`ProtocolError.body` is the ``{"error": ...}`` answer.
"""

from kiln.serving.protocols._json import ProtocolError, check_size, error_body

__all__ = ["ProtocolError", "check_size", "error_body"]
