"""Dashboard: the runs page, a filtered and sorted page and a 10-run metric chart on an
experiment of 100,000 runs, beside MLflow's search-runs REST call on the same runs.

    python benchmarks/ui.py [--runs 100000] [--repeat 7] [--mlflow-python PATH]
        [--mlflow-budget-s 1200] [--write]

Kiln: the tracking benchmark's data (10 params and 5 metrics per run, the same seeded
generator), plus 10 runs with 10,000 steps of ``loss``; ``kiln ui``'s app on uvicorn on
127.0.0.1. Each page is fetched over HTTP: server time is the app's own ``Server-Timing``
(the page rendered, queries included), round trip is what the client waited. The first
request after start is reported apart (cold); then medians of ``--repeat``. In Debian's
chromium (Playwright), the runs page's time to interactive (``domInteractive``) and the
compare page of the 10 runs until its chart has drawn every run.

MLflow: ``benchmarks/_mlflow_runs.py`` in MLflow's own environment stores the same runs
in MLflow's schema and times ``POST /api/2.0/mlflow/runs/search`` (a page of runs as the
page shows, the same filter and sort) against ``mlflow server --workers 1`` on 127.0.0.1,
after Kiln's server has stopped; it checks each answer against the runs expected.
MLflow's call returns JSON for a client to render; Kiln's answers a whole rendered page,
so the comparison favours MLflow. ``--mlflow-budget-s`` bounds its timed part.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from _common import add_write_flag, replace_section, verdict

SERVER_LIMIT_MS = 300.0
INTERACTIVE_LIMIT_MS = 1000.0
CHART_LIMIT_MS = 1000.0
CHART_RUNS = 10
CHART_STEPS = 10_000
MLFLOW_BUDGET_S = 1200.0
# _mlflow_runs.py's names for the pages measured here; the same filter and sort on both
# sides: metrics.val_auc > 0.9 ordered by val_auc descending, params.p3 descending.
MLFLOW_QUERIES = {
    "first_page": "runs page (first page, newest first)",
    "filtered_sorted": "filtered and sorted (metrics.val_auc > 0.9, by val_auc)",
    "param_sorted": "sorted by a param (params.p3)",
    "filtered_page_3": "filtered page 3",
}


def populate(n: int, seed: int) -> list[str]:
    """The tracking benchmark's runs (same generator and seed), then the chart's runs."""
    import kiln

    rng = random.Random(seed)
    for i in range(n):
        with kiln.start_run("bench-search", name=f"r{i}") as run:
            run.log_params({f"p{j}": rng.randint(1, 100) for j in range(10)})
            run.log_metrics(
                {"val_auc": rng.uniform(0.5, 1.0), **{f"m{j}": rng.random() for j in range(4)}}
            )
    chart_ids = []
    for r in range(CHART_RUNS):
        with kiln.start_run("bench-charts", name=f"curve-{r}") as run:
            for step in range(CHART_STEPS):
                run.log_metric("loss", 1.0 / (1 + step * (r + 1) / 1000), step=step)
            chart_ids.append(run.id)
    return chart_ids


def server_ms(response: httpx.Response) -> float:
    timing = response.headers["server-timing"]
    return float(timing.split("dur=")[1])


def fetch(http: httpx.Client, url: str, repeat: int) -> dict[str, Any]:
    cold_start = time.perf_counter()
    cold = http.get(url)
    cold_trip = (time.perf_counter() - cold_start) * 1000
    if cold.status_code != 200:
        raise SystemExit(f"{url}: HTTP {cold.status_code}: {cold.text[:300]}")
    trips, servers = [], []
    for _ in range(repeat):
        start = time.perf_counter()
        response = http.get(url)
        trips.append((time.perf_counter() - start) * 1000)
        servers.append(server_ms(response))
    return {
        "cold_trip": cold_trip,
        "cold_server": server_ms(cold),
        "trip": statistics.median(trips),
        "server": statistics.median(servers),
        "bytes": len(cold.content),
    }


def chart_requests(http: httpx.Client, ids: list[str], repeat: int) -> dict[str, float]:
    """The 10 series requests a chart of 10 runs makes, one after another."""
    totals, servers = [], []
    for _ in range(repeat + 1):
        start = time.perf_counter()
        server = 0.0
        for run_id in ids:
            response = http.get(f"/api/runs/{run_id}/metrics/loss?points=1000")
            server += server_ms(response)
        totals.append((time.perf_counter() - start) * 1000)
        servers.append(server)
    return {"trip": statistics.median(totals[1:]), "server": statistics.median(servers[1:])}


def browser_times(url: str, ids: list[str], repeat: int) -> dict[str, float]:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    interactive, charts = [], []
    compare = f"{url}/compare?" + "&".join(f"run={i}" for i in ids)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1366, "height": 900})
        for _ in range(repeat + 1):
            page.goto(f"{url}/experiments/bench-search")
            interactive.append(
                page.evaluate("() => performance.getEntriesByType('navigation')[0].domInteractive")
            )
            page.goto(compare)
            page.wait_for_selector("html[data-charts-ready='1']", timeout=30_000)
            charts.append(page.evaluate("() => window.kilnChartsReadyAt"))
        browser.close()
    return {
        "interactive": statistics.median(interactive[1:]),
        "chart": statistics.median(charts[1:]),
    }


def mlflow_baseline(
    python: str, runs: int, repeat: int, page_size: int, workdir: Path, budget_s: float
) -> dict[str, Any]:
    """``_mlflow_runs.py`` in MLflow's environment. Past its budget (and a margin for
    storing the runs) it is asked to stop, which stops its ``mlflow server`` too."""
    script = Path(__file__).with_name("_mlflow_runs.py")
    command = [
        python, str(script), "--runs", str(runs), "--seed", "1", "--repeat", str(repeat),
        "--page-size", str(page_size), "--workdir", str(workdir), "--budget-s", str(budget_s),
    ]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=budget_s + 600)
    except subprocess.TimeoutExpired:
        proc.terminate()
        out, err = proc.communicate(timeout=120)
    if proc.returncode != 0:
        raise SystemExit(f"the MLflow baseline failed ({proc.returncode}):\n{err[-3000:]}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def times(ratio: float) -> str:
    return f"{ratio:.1f}x" if ratio < 10 else f"{ratio:,.0f}x"


def mlflow_rows(
    mlflow: dict[str, Any], measured: dict[str, dict[str, Any]]
) -> list[tuple[str, str, str, str, str]]:
    """MLflow's median beside Kiln's for each query, and their ratio."""
    rows = []
    for key, label in MLFLOW_QUERIES.items():
        k = measured[label]
        kiln_ms = k["trip"]
        kiln = f"Kiln's page {kiln_ms:.1f} ms round trip ({k['server']:.1f} ms server)"
        what = f"MLflow {mlflow['version']} `POST /api/2.0/mlflow/runs/search`: {label}"
        if key == "param_sorted":
            what += " (MLflow orders params as text, Kiln numbers in numeric order)"
        median = mlflow["timings"].get(key)
        waited = mlflow["timeouts"].get(key)
        if median is None and waited is not None:
            rows.append(
                (
                    what,
                    f"> {waited:.0f} s (no answer; given up)",
                    f"{kiln}: Kiln / MLflow < {kiln_ms / (waited * 1000):.2g} (MLflow over "
                    f"{waited * 1000 / kiln_ms:,.0f}x Kiln's time)",
                    "reported",
                    "-",
                )
            )
            continue
        if median is None:
            why = "; ".join(e for e in mlflow["errors"] if e.startswith(key)) or "not measured"
            rows.append((what, "not measured", why, "reported", "-"))
            continue
        ms = median * 1000
        samples = mlflow["samples"][key]
        if len(samples) == 1 and samples[0] == mlflow["cold"][key]:
            how = "one request (too slow to repeat)"
        else:
            how = f"median of {len(samples)}, cold {mlflow['cold'][key] * 1000:.0f} ms"
        shown = f"{ms / 1000:.1f} s" if ms >= 10_000 else f"{ms:.1f} ms"
        rows.append(
            (
                what,
                f"{shown} round trip",
                f"{kiln}: Kiln / MLflow = {kiln_ms / ms:.2g} (MLflow {times(ms / kiln_ms)} "
                f"Kiln's time); MLflow {how}",
                "reported",
                "-",
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--mlflow-python", help="interpreter of an environment with MLflow")
    parser.add_argument(
        "--mlflow-budget-s",
        type=float,
        default=MLFLOW_BUDGET_S,
        help="bound on MLflow's timed requests (each query keeps the samples it has by then)",
    )
    add_write_flag(parser, "ui")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        import kiln
        from kiln.ui import UISettings, create_app
        from kiln.ui.server import running

        kiln.configure(home=str(root / "kiln"))
        started = time.perf_counter()
        ids = populate(args.runs, seed=1)
        populate_s = time.perf_counter() - started
        kiln_matches = kiln.runs.count("bench-search", "metrics.val_auc > 0.9")
        print(f"populated {args.runs:,} runs in {populate_s:.1f} s", file=sys.stderr)
        pages = {
            "runs page (first page, newest first)": "/experiments/bench-search",
            "filtered and sorted (metrics.val_auc > 0.9, by val_auc)": (
                "/experiments/bench-search?q=metrics.val_auc+%3E+0.9&sort=-metrics.val_auc"
            ),
            "sorted by a param (params.p3)": "/experiments/bench-search?sort=-params.p3",
            "filtered page 3": (
                "/experiments/bench-search?q=metrics.val_auc+%3E+0.9&sort=-metrics.val_auc&page=3"
            ),
        }
        with running(create_app(UISettings())) as url, httpx.Client(base_url=url) as http:
            measured = {label: fetch(http, path, args.repeat) for label, path in pages.items()}
            series = chart_requests(http, ids, args.repeat)
            browser = browser_times(url, ids, max(3, args.repeat // 2))
        mlflow = None
        if args.mlflow_python:
            mlflow = mlflow_baseline(
                args.mlflow_python,
                args.runs,
                args.repeat,
                UISettings().page_size,
                root / "mlflow",
                args.mlflow_budget_s,
            )
    rows = []
    for label, m in measured.items():
        rows.append(
            (
                f"{label}, {args.runs:,} runs",
                f"{m['server']:.1f} ms server, {m['trip']:.1f} ms round trip",
                f"cold: {m['cold_server']:.1f} ms server, {m['cold_trip']:.1f} ms round trip; "
                f"{m['bytes'] / 1024:.0f} KB",
                f"< {SERVER_LIMIT_MS:g} ms server",
                verdict(m["server"] / SERVER_LIMIT_MS, 1.0),
            )
        )
    rows.append(
        (
            "runs page in chromium: time to interactive (domInteractive)",
            f"{browser['interactive']:.0f} ms",
            "from navigation start, page served by the same server",
            f"< {INTERACTIVE_LIMIT_MS:g} ms",
            verdict(browser["interactive"] / INTERACTIVE_LIMIT_MS, 1.0),
        )
    )
    rows.append(
        (
            f"chart of {CHART_RUNS} runs x {CHART_STEPS:,} steps in chromium (compare page, "
            "until every run is drawn)",
            f"{browser['chart']:.0f} ms",
            f"its {CHART_RUNS} series requests one after another: {series['server']:.0f} ms "
            f"server, {series['trip']:.0f} ms round trip (1,000 points each, downsampled on "
            "the server; exact on zoom)",
            f"< {CHART_LIMIT_MS:g} ms",
            verdict(browser["chart"] / CHART_LIMIT_MS, 1.0),
        )
    )
    mlflow_note = "MLflow not measured (no `--mlflow-python`)."
    if mlflow is not None:
        rows += mlflow_rows(mlflow, measured)
        mlflow_note = (
            f"MLflow {mlflow['version']}: the same {mlflow['runs']:,} runs (same generator "
            f"and seed; the filter matches {mlflow['matches']:,} in MLflow, "
            f"{kiln_matches:,} in Kiln) written "
            f"into MLflow's SQLite schema in {mlflow['populate_s']:.0f} s by "
            "`benchmarks/_mlflow_runs.py`, then `mlflow server --workers 1` on 127.0.0.1; "
            f"pages of {mlflow['page_size']} runs, page 3 by following `next_page_token`; "
            f"medians of {args.repeat} calls after a cold first one (a query slower than "
            f"{mlflow['slow_s']:g} s once is not repeated; one with no answer in "
            f"{mlflow['request_timeout_s']:g} s is given up); every answer "
            f"checked against the runs expected; SQLite {mlflow['sqlite']}. MLflow's REST "
            "call returns JSON for its own front end to render, so it does less work than "
            "Kiln's page. "
            + ("Errors: " + "; ".join(mlflow["errors"]) + "." if mlflow["errors"] else "No errors.")
        )
    else:
        rows.append(("MLflow search-runs", "not measured (no --mlflow-python)", "", "", "-"))
    text = (
        "## Dashboard (`benchmarks/ui.py`)\n\n"
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; load average {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after. Command: `python benchmarks/ui.py --mlflow-python "
        ".venv-mlflow/bin/python --write` (in `make bench`). "
        f"{args.runs:,} runs stored in {populate_s:.0f} s (SQLite, embedded defaults); "
        f"medians of {args.repeat} requests after a cold first one. Server time is the "
        f"app's `Server-Timing` (queries and rendering). {mlflow_note}\n\n"
        "| measurement | median | derived | target | met |\n|---|---|---|---|---|\n"
        + "".join(f"| {' | '.join(r)} |\n" for r in rows)
    )
    print(text)
    if args.write:
        replace_section(args.write, "ui", text)


if __name__ == "__main__":
    main()
