"""``kiln serve``: uvicorn running the app, in one process or ``workers`` processes.

Each worker builds its own runtime (models, batchers, prediction log) from the same
configuration, handed to worker processes through one environment variable so that
uvicorn's process manager can start and restart them. Deployment changes reach every
worker through the metadata store, which each polls.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

from kiln.core import InvalidInput, get_settings
from kiln.core.openmp import one_openmp_thread, prefer_passive_openmp
from kiln.serving._predict_routes import PredictionRoutes
from kiln.serving._runtime import Runtime
from kiln.serving._stats import StatsBoard
from kiln.serving.app import create_app
from kiln.serving.metrics import ServingMetrics
from kiln.serving.predlog import PredictionLog
from kiln.tracking import default_client

__all__ = ["ServeConfig", "build_app", "serve"]

_ENV = "KILN_SERVE_CONFIG"


@dataclass(frozen=True, kw_only=True)
class ServeConfig:
    deployments: tuple[str, ...] = ()
    default: str | None = None
    poll_s: float = 0.5
    log_predictions: bool = True
    metrics_dir: str | None = None  # shared by workers when there are several


def build_app(config: ServeConfig | None = None) -> PredictionRoutes:
    """The app for one worker; without ``config`` it is read from the environment."""
    prefer_passive_openmp()  # before any model's library is loaded
    one_openmp_thread()
    if config is None:
        raw = os.environ.get(_ENV)
        if raw is None:
            raise InvalidInput(f"build_app() needs a ServeConfig or the {_ENV} variable")
        data = orjson.loads(raw)
        data["deployments"] = tuple(data.get("deployments") or ())
        config = ServeConfig(**data)
    settings = get_settings()
    client = default_client()
    worker = f"{os.getpid()}"
    predlog = None
    if config.log_predictions:
        offline = settings.offline_dir or settings.home / "offline"
        predlog = PredictionLog(Path(offline) / "predictions", worker=worker)
    runtime = Runtime(
        config.deployments or None,
        client=client,
        predlog=predlog,
        metrics=ServingMetrics(multiproc_dir=config.metrics_dir),
        board=StatsBoard(settings.home / "serving" / "stats", worker=worker),
        poll_s=config.poll_s,
    )
    return create_app(runtime, default=config.default)


def serve(
    deployments: Sequence[str] = (),
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    workers: int = 1,
    default: str | None = None,
    poll_s: float = 0.5,
    log_predictions: bool = True,
    log_level: str = "warning",
) -> None:
    """Serve ``deployments`` (all stored ones when empty) until interrupted.

    SIGINT/SIGTERM stop accepting connections, let in-flight requests finish (up to 30
    s), then flush the prediction log.
    """
    import uvicorn

    prefer_passive_openmp()  # inherited by the workers
    one_openmp_thread()
    if workers < 1:
        raise InvalidInput(f"The 'workers' parameter of serve must be >= 1. Got {workers}.")
    metrics_dir = None
    if workers > 1:
        metrics_dir = tempfile.mkdtemp(prefix="kiln-metrics-")
    config = ServeConfig(
        deployments=tuple(deployments),
        default=default,
        poll_s=poll_s,
        log_predictions=log_predictions,
        metrics_dir=metrics_dir,
    )
    options = {
        "host": host,
        "port": port,
        "log_level": log_level,
        "http": "httptools",
        "loop": "uvloop",
        "timeout_graceful_shutdown": 30,
        "access_log": False,
    }
    # uvicorn re-raises the SIGTERM it handled once it has shut down gracefully; exit 0
    # then (as with several workers, whose supervisor returns normally), not by the signal.
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _exit_cleanly)
    try:
        if workers == 1:
            uvicorn.run(build_app(config), **options)  # type: ignore[arg-type]
        else:
            os.environ[_ENV] = orjson.dumps(asdict(config)).decode()
            if metrics_dir is not None:
                os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
            uvicorn.run(
                "kiln.serving.server:build_app",
                factory=True,
                workers=workers,
                **options,  # type: ignore[arg-type]
            )
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _exit_cleanly(_signum: int, _frame: object) -> None:
    raise SystemExit(0)
