"""The registry conformance suite on SQLite and PostgreSQL (fixture in tests/conftest.py)."""

from kiln.testing.registry import *  # noqa: F403
