"""``kiln serve``: uvicorn running the app, in one process or ``workers`` processes.

Each worker builds its own runtime (models, batchers, prediction log) from the same
configuration, handed to worker processes through one environment variable so that
uvicorn's process manager can start and restart them. Deployment changes reach every
worker through the metadata store, which each polls.

What is served is checked before any worker starts (a deployment named that does not
exist, a model reference that does not resolve: one error, no server), and once the
server answers, one line per deployment says where it is served (or why it is not).
``models`` serves registry models directly, each as a deployment named after its model
that is never stored (``kiln serve --model fraud@champion``, as ``mlflow models serve
-m``): its reference is resolved again every poll, so alias moves reach it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from kiln.core import InvalidInput, get_settings
from kiln.core.openmp import one_openmp_thread, prefer_passive_openmp
from kiln.registry import models as registry_models
from kiln.serving import deployments as deployments_api
from kiln.serving._predict_routes import PredictionRoutes
from kiln.serving._runtime import Runtime
from kiln.serving._stats import StatsBoard
from kiln.serving.app import create_app
from kiln.serving.metrics import ServingMetrics
from kiln.serving.predlog import PredictionLog
from kiln.serving.servers import register_server
from kiln.serving.specs import Deployment, check_name
from kiln.tracking import default_client

__all__ = ["ServeConfig", "build_app", "serve"]

_ENV = "KILN_SERVE_CONFIG"


@dataclass(frozen=True, kw_only=True)
class ServeConfig:
    deployments: tuple[str, ...] = ()
    models: tuple[str, ...] = ()  # registry references served without a stored deployment
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
        data["models"] = tuple(data.get("models") or ())
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
        static=[_model_deployment(ref) for ref in config.models],
        client=client,
        predlog=predlog,
        metrics=ServingMetrics(multiproc_dir=config.metrics_dir),
        board=StatsBoard(settings.home / "serving" / "stats", worker=worker),
        poll_s=config.poll_s,
    )
    return create_app(runtime, default=config.default)


def _model_deployment(ref: str) -> Deployment:
    """The deployment ``kiln serve --model REF`` serves: named after the model, all
    defaults, the request schema the model's signature implies."""
    name = re.split(r"[@/]", ref, maxsplit=1)[0] if isinstance(ref, str) else ref
    return Deployment(name=check_name(name, f"the model name in --model {ref!r}"), model=ref)


def _check_served(
    deployments: Sequence[str], models: Sequence[str], default: str | None
) -> tuple[str, ...]:
    """The names a server will serve, refusing what cannot start before any worker does.

    Raises NotFound for a deployment that does not exist or a model reference that does
    not resolve, and InvalidInput for two served under one name or a ``default`` not
    served. A deployment that exists but cannot be served now is no reason to refuse:
    the server reports it not ready and serves the others.
    """
    client = default_client()
    names = [deployments_api.get(name, client=client).name for name in deployments]
    if not deployments and not models:
        names = [d.name for d in deployments_api.list(client=client)]
    for ref in models:
        spec = _model_deployment(ref)
        registry_models.resolve(ref, client=client)
        if spec.name in names:
            raise InvalidInput(
                f"--model {ref!r} would be served as {spec.name!r}, which is already served; "
                "serve one of them"
            )
        names.append(spec.name)
    if default is not None and default not in names:
        raise InvalidInput(
            f"--default {default!r} is not served here; served: {', '.join(names) or 'none'}"
        )
    return tuple(names)


def serve(
    deployments: Sequence[str] = (),
    *,
    models: Sequence[str] = (),
    host: str = "127.0.0.1",
    port: int = 8080,
    workers: int = 1,
    default: str | None = None,
    poll_s: float = 0.5,
    log_predictions: bool = True,
    log_level: str = "warning",
) -> None:
    """Serve ``deployments`` and ``models`` (all stored deployments when both are empty)
    until interrupted.

    SIGINT/SIGTERM stop accepting connections, let in-flight requests finish (up to 30
    s), then flush the prediction log.
    """
    import uvicorn

    from kiln.serving._http_protocol import PredictionProtocol

    prefer_passive_openmp()  # inherited by the workers
    one_openmp_thread()
    if workers < 1:
        raise InvalidInput(f"The 'workers' parameter of serve must be >= 1. Got {workers}.")
    _check_served(deployments, models, default)
    metrics_dir = None
    if workers > 1:
        metrics_dir = tempfile.mkdtemp(prefix="kiln-metrics-")
    config = ServeConfig(
        deployments=tuple(deployments),
        models=tuple(models),
        default=default,
        poll_s=poll_s,
        log_predictions=log_predictions,
        metrics_dir=metrics_dir,
    )
    options = {
        "host": host,
        "port": port,
        "log_level": log_level,
        "http": PredictionProtocol,  # uvicorn's httptools, predictions without ASGI
        "loop": "uvloop",
        "timeout_graceful_shutdown": 30,
        "access_log": False,
    }
    # uvicorn re-raises the SIGTERM it handled once it has shut down gracefully; exit 0
    # then (as with several workers, whose supervisor returns normally), not by the signal.
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _exit_cleanly)
    announcer = _Announcer(_local_url(host, port))
    announcer.start()
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
        announcer.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _local_url(host: str, port: int) -> str:
    """The base URL a client on this machine reaches the server at."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class _Announcer(threading.Thread):
    """Once the server answers, prints one line per deployment: where it is served, or
    why it is not (the line a user starting ``kiln serve`` looks for)."""

    def __init__(self, url: str, interval_s: float = 0.1) -> None:
        super().__init__(name="kiln-announce", daemon=True)
        self.url = url
        self.interval_s = interval_s
        self._done = threading.Event()
        self.registered: Path | None = None
        # The server is on this machine: never ask it through a proxy from the environment.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def stop(self) -> None:
        self._done.set()
        if self.registered is not None:
            self.registered.unlink(missing_ok=True)

    def run(self) -> None:
        while not self._done.wait(self.interval_s):
            state = self._readiness()
            if state is not None:
                for line in self.lines(state):
                    print(line, flush=True)
                if not self._done.is_set():
                    try:
                        self.registered = register_server(self.url)
                    except OSError as exc:  # the dashboard will not list it; serving goes on
                        print(f"kiln serve: could not record where it listens: {exc}", flush=True)
                return

    def _readiness(self) -> dict[str, Any] | None:
        try:
            with self._opener.open(f"{self.url}/v2/health/ready", timeout=2.0) as r:
                body = r.read()
        except urllib.error.HTTPError as exc:  # 503: up, and nothing can be served
            body = exc.read()
        except OSError:
            return None  # not listening yet
        try:
            state = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        return state if isinstance(state, dict) else None

    def lines(self, state: dict[str, Any]) -> list[str]:
        out = []
        for name, info in sorted(dict(state.get("deployments") or {}).items()):
            if info.get("ready"):
                out.append(f"serving {name} ({info.get('model')}) at {self.url}/v2/models/{name}")
            else:
                out.append(f"not serving {name}: {info.get('reason')}")
        return out or [f"serving no deployment yet at {self.url}; new ones are served when created"]


def _exit_cleanly(_signum: int, _frame: object) -> None:
    raise SystemExit(0)
