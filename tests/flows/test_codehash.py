"""A step's code hash follows its source and the project code it calls, nothing else."""

from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

from kiln.flows._codehash import code_hash

BASE = """
import json
import helpers

def unrelated():
    return 1

def helper(x):
    return x + 1

def inner(x):
    return helper(x) * 2

def step_fn(x):
    return inner(x) + helpers.offset(x) + len(json.dumps(x))
"""

HELPERS = """
def offset(x):
    return 3

def unused():
    return 0
"""


def load(tmp_path: Path, source: str, helpers: str = HELPERS) -> ModuleType:
    (tmp_path / "pipeline_mod.py").write_text(textwrap.dedent(source))
    (tmp_path / "helpers.py").write_text(textwrap.dedent(helpers))
    for name in ("pipeline_mod", "helpers"):
        sys.modules.pop(name, None)
    importlib.invalidate_caches()
    return importlib.import_module("pipeline_mod")


@pytest.fixture
def on_path(tmp_path: Path):  # type: ignore[no-untyped-def]
    sys.path.insert(0, str(tmp_path))
    yield tmp_path
    sys.path.remove(str(tmp_path))
    for name in ("pipeline_mod", "helpers"):
        sys.modules.pop(name, None)


def test_editing_code_the_step_reaches_changes_its_hash_and_other_edits_do_not(
    on_path: Path,
) -> None:
    base = code_hash(load(on_path, BASE).step_fn)
    assert code_hash(load(on_path, BASE).step_fn) == base  # stable across imports

    unrelated = BASE.replace("return 1", "return 2")
    assert code_hash(load(on_path, unrelated).step_fn) == base

    transitive = BASE.replace("return x + 1", "return x + 10")  # helper, via inner
    assert code_hash(load(on_path, transitive).step_fn) != base

    own = BASE.replace("len(json.dumps(x))", "len(json.dumps([x]))")
    assert code_hash(load(on_path, own).step_fn) != base

    other_module = HELPERS.replace("return 3", "return 4")  # helpers.offset, another file
    assert code_hash(load(on_path, BASE, other_module).step_fn) != base
    unused = HELPERS.replace("return 0", "return 5")
    assert code_hash(load(on_path, BASE, unused).step_fn) == base
