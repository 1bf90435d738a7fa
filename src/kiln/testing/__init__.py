"""Conformance suites: the tests every backend of a Kiln extension point must pass.

Each module here is a set of plain pytest test functions written against one extension
point's ``typing.Protocol`` and nothing else, so the same suite proves every backend:

- :mod:`kiln.testing.blob_store` for :class:`kiln.store.BlobStore` (local disk, S3 API...)
- :mod:`kiln.testing.tracking` for tracking on every metadata backend

To run a suite against a backend, star-import it into a test module and provide the
fixtures it names (each suite's docstring lists them)::

    # tests/store/test_blob_store.py
    from kiln.testing.blob_store import *  # noqa: F403

    @pytest.fixture
    def blob_store(tmp_path): ...       # the backend under test

    @pytest.fixture
    def corrupt_blob(): ...             # a hook the suite calls to damage stored bytes

The suites import pytest, so import them only from tests; they ship with kiln so that a
third-party backend can prove it conforms, as ``sklearn.utils.estimator_checks`` lets
outside estimators do.
"""
