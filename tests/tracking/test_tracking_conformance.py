"""The tracking conformance suite on SQLite and PostgreSQL (fixture in tests/conftest.py)."""

from kiln.testing.tracking import *  # noqa: F403
