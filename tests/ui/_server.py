"""The dashboard on a real uvicorn server on 127.0.0.1, in a thread, for a test."""

from kiln.ui.server import running

__all__ = ["running"]
