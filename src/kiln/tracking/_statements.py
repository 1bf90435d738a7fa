"""Hand-written SQL for the hot write paths, with placeholders per driver.

Run creation, params, tags, run end and metric batches are executed as plain driver SQL:
they run thousands of times a second, and building SQLAlchemy expressions for each would
cost more than the database work. Everything else uses SQLAlchemy Core. Values are always
bound parameters.
"""

from __future__ import annotations

from functools import cache

_STATEMENTS = {
    "experiment_id": "SELECT id FROM kiln_experiments WHERE name = {p}",
    "experiment_insert": (
        "INSERT INTO kiln_experiments (id, name, created_at) VALUES ({p}, {p}, {p}) "
        "ON CONFLICT (name) DO NOTHING"
    ),
    "run_exists": "SELECT id FROM kiln_runs WHERE id = {p}",
    "environment_insert": (
        "INSERT INTO kiln_environments (id, data, created_at) VALUES ({p}, {p}, {p}) "
        "ON CONFLICT (id) DO NOTHING"
    ),
    "run_insert": (
        "INSERT INTO kiln_runs (id, experiment_id, name, status, start_time, heartbeat_at, "
        "parent_id, environment_id) VALUES ({p}, {p}, {p}, 'RUNNING', {p}, {p}, {p}, {p})"
    ),
    "run_end": "UPDATE kiln_runs SET status = {p}, end_time = {p}, error = {p} WHERE id = {p}",
    "run_reopen": (
        "UPDATE kiln_runs SET status = 'RUNNING', end_time = NULL, error = NULL, "
        "heartbeat_at = {p} WHERE id = {p}"
    ),
    "tag_upsert": (
        "INSERT INTO kiln_tags (run_id, key, value) VALUES ({p}, {p}, {p}) "
        "ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value"
    ),
    "params_of_run": "SELECT key, value, value_type FROM kiln_params WHERE run_id = {p}",
    "param_insert": (
        "INSERT INTO kiln_params (run_id, key, value, value_type, num_value) "
        "VALUES ({p}, {p}, {p}, {p}, {p})"
    ),
    # Metric rows arrive as (run_id, key, value, step, timestamp). SQLite binds NaN as NULL,
    # so there the NaN flag is computed in SQL from the one bound value: no per-row Python.
    "metric_insert_sqlite": (
        "INSERT INTO kiln_metrics (run_id, key, step, value, is_nan, timestamp) "
        "VALUES (?1, ?2, ?4, coalesce(?3, 0.0), ?3 IS NULL, ?5)"
    ),
    "latest_upsert_sqlite": (
        "INSERT INTO kiln_latest_metrics (run_id, key, value, is_nan, step, timestamp) "
        "VALUES (?1, ?2, coalesce(?3, 0.0), ?3 IS NULL, ?4, ?5) "
        "ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value, "
        "is_nan = excluded.is_nan, step = excluded.step, timestamp = excluded.timestamp "
        "WHERE excluded.step > kiln_latest_metrics.step OR (excluded.step = "
        "kiln_latest_metrics.step AND excluded.timestamp >= kiln_latest_metrics.timestamp)"
    ),
    "metric_insert": (
        "INSERT INTO kiln_metrics (run_id, key, step, value, is_nan, timestamp) "
        "VALUES ({p}, {p}, {p}, {p}, {p}, {p})"
    ),
    "latest_upsert": (
        "INSERT INTO kiln_latest_metrics (run_id, key, value, is_nan, step, timestamp) "
        "VALUES ({p}, {p}, {p}, {p}, {p}, {p}) "
        "ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value, "
        "is_nan = excluded.is_nan, step = excluded.step, timestamp = excluded.timestamp "
        "WHERE excluded.step > kiln_latest_metrics.step OR (excluded.step = "
        "kiln_latest_metrics.step AND excluded.timestamp >= kiln_latest_metrics.timestamp)"
    ),
    "heartbeat": "UPDATE kiln_runs SET heartbeat_at = {p} WHERE id = {p} AND status = 'RUNNING'",
}


@cache
def metric_insert_rows_sqlite(rows: int) -> str:
    """``metric_insert_sqlite`` for ``rows`` rows at once, bound as one flat sequence.

    One statement per chunk of rows costs SQLite one program run where ``executemany``
    runs the single-row program once per row, and the driver one call instead of one
    per row; the numbered placeholders keep NaN handling in SQL, from one bound value.
    """
    values = ", ".join(
        f"(?{5 * j + 1}, ?{5 * j + 2}, ?{5 * j + 4}, coalesce(?{5 * j + 3}, 0.0), "
        f"?{5 * j + 3} IS NULL, ?{5 * j + 5})"
        for j in range(rows)
    )
    return f"INSERT INTO kiln_metrics (run_id, key, step, value, is_nan, timestamp) VALUES {values}"


@cache
def sql(name: str, dialect: str) -> str:
    """The statement ``name`` with the placeholder style of ``dialect``'s driver."""
    return _STATEMENTS[name].format(p="?" if dialect == "sqlite" else "%s")
