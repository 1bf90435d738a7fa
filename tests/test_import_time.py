"""Start-up cost: every command and server worker pays it, so it is guarded here.

Which libraries load is deterministic and checked exactly, each in a fresh interpreter.
How long it takes is noisy on a shared machine, so it is guarded as a ratio: the child's
CPU time (user + system, unaffected by waiting for a core) over that of ``python -c
pass`` on the same interpreter, runs interleaved, medians compared.
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys

import pytest

# Everything the registry, tracking store, feature engines and server need.
HEAVY = (
    "alembic",
    "duckdb",
    "lightgbm",
    "numpy",
    "pandas",
    "pyarrow",
    "sklearn",
    "sqlalchemy",
    "starlette",
    "uvicorn",
)
CLI = ("click", "rich", "typer")


def _loaded(code: str, names: tuple[str, ...]) -> list[str]:
    """Which of ``names`` a fresh interpreter has imported after running ``code``."""
    probe = (
        f"{code}\nimport json, sys\nprint(json.dumps([n for n in {names!r} if n in sys.modules]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    loaded: list[str] = json.loads(out.splitlines()[-1])
    return loaded


@pytest.mark.parametrize(
    ("code", "forbidden"),
    [
        ("import kiln", HEAVY + CLI),
        ("import kiln.errors, kiln.core", HEAVY + CLI),
        # `kiln --version` answers before the CLI framework loads.
        ("from kiln.cli import main\nmain(['--version'])", HEAVY + CLI),
        # Definitions are plain data: no engine loads until a store is asked for.
        ("import kiln\nkiln.Entity('user', join_keys=['user_id'])", HEAVY + CLI),
        ("from kiln.serving import Deployment, Batching", HEAVY + CLI),
        ("from kiln.tracking import RunRecord, RunStatus", HEAVY + CLI),
        # The control plane needs SQL and numpy, not the web server or the engines.
        ("import kiln\nkiln.deployments", ("duckdb", "pandas", "starlette", "uvicorn", *CLI)),
        ("import kiln\nkiln.runs", ("duckdb", "lightgbm", "pandas", "sklearn", "starlette")),
    ],
)
def test_heavy_libraries_load_on_first_use(code: str, forbidden: tuple[str, ...]) -> None:
    assert _loaded(code, forbidden) == []


def test_lazy_names_resolve_to_the_real_objects() -> None:
    """A lazily loaded name is the object its module defines, and is then cached."""
    import kiln
    import kiln.features.store
    import kiln.registry.models
    import kiln.tracking.run

    assert kiln.models is kiln.registry.models
    assert kiln.FeatureStore is kiln.features.store.FeatureStore
    assert kiln.start_run is kiln.tracking.run.start_run
    assert "models" in vars(kiln)  # stored: the next read is a plain attribute lookup
    assert set(kiln.__all__) <= set(dir(kiln))
    with pytest.raises(AttributeError, match="no attribute 'modles'"):
        kiln.modles  # noqa: B018


def _cpu_seconds(code: str) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-c", code], check=True, stdout=subprocess.DEVNULL, timeout=120)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


# Bounds in multiples of a bare interpreter start (about 15 ms of CPU here): 12x is the
# 0.2 s target for `import kiln`, 20x the 0.3 s one for `kiln --version`. Today they sit
# near 4x and 7x; before the names were lazy they were over 40x.
@pytest.mark.parametrize(
    ("code", "bound"),
    [
        ("import kiln", 12.0),
        ("from kiln.cli import main\nmain(['--version'])", 20.0),
    ],
)
def test_start_up_cost_relative_to_a_bare_interpreter(code: str, bound: float) -> None:
    _cpu_seconds(code)  # warm the bytecode cache and the page cache
    bare, timed = [], []
    for _ in range(7):
        bare.append(_cpu_seconds("pass"))
        timed.append(_cpu_seconds(code))
    cost, floor = statistics.median(timed), statistics.median(bare)
    assert cost / floor < bound, (
        f"{code!r} costs {cost / floor:.1f}x a bare interpreter start (bound {bound:g}x): "
        f"median {cost * 1000:.0f} ms vs {floor * 1000:.0f} ms of CPU"
    )
