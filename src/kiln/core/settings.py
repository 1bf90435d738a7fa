"""Where Kiln keeps things, resolved once: environment, then ``kiln.toml``, then defaults.

Every setting has an environment variable ``KILN_<NAME>`` and a key of the same name
(lower case, without the prefix) at the top level or under ``[kiln]`` in ``kiln.toml``
(looked up in the working directory, or at ``KILN_CONFIG``). With nothing set, everything
lives under ``./.kiln``. Invalid values fail at load with a one-line :class:`ConfigError`
naming the setting, its source and the accepted forms.
"""

from __future__ import annotations

import dataclasses
import os
import re
import threading
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from kiln.core.errors import ConfigError

__all__ = [
    "ARTIFACT_SCHEMES",
    "DB_SCHEMES",
    "Settings",
    "configure",
    "get_settings",
    "load_settings",
    "mask_url",
    "reset_settings",
]

DB_SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg", "postgres")
ONLINE_SCHEMES = ("sqlite", "redis", "rediss")
ARTIFACT_SCHEMES = ("file", "s3")
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Resolved settings; ``sources`` says where each value came from (env, kiln.toml, default)."""

    home: Path
    db_url: str
    artifact_uri: str
    online_url: str = ""
    offline_dir: Path | None = None
    s3_endpoint_url: str | None = None
    heartbeat_timeout_s: float = 60.0
    metric_flush_interval_s: float = 0.5
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def heartbeat_interval_s(self) -> float:
        """Beat four times per timeout so one late beat never marks a live run as killed."""
        return max(self.heartbeat_timeout_s / 4.0, 0.05)

    def describe(self) -> dict[str, str]:
        """Settings as display strings with any password masked, for ``kiln info``."""
        return {
            "home": str(self.home),
            "db_url": mask_url(self.db_url),
            "artifact_uri": mask_url(self.artifact_uri),
            "online_url": mask_url(self.online_url),
            "offline_dir": str(self.offline_dir or ""),
            "s3_endpoint_url": self.s3_endpoint_url or "",
            "heartbeat_timeout_s": f"{self.heartbeat_timeout_s:g}",
            "metric_flush_interval_s": f"{self.metric_flush_interval_s:g}",
        }


_NAMES = (
    "home",
    "db_url",
    "artifact_uri",
    "online_url",
    "offline_dir",
    "s3_endpoint_url",
    "heartbeat_timeout_s",
    "metric_flush_interval_s",
)
_ENV = {name: f"KILN_{name.upper()}" for name in _NAMES}


def mask_url(url: str) -> str:
    """Replace the password of ``scheme://user:password@host`` with ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        scheme, sep, rest = url.partition("://")
        userinfo, at, host = rest.rpartition("@")
        if not (sep and at and ":" in userinfo):
            return url
        return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    userinfo = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{userinfo}:***@{netloc[1]}"))


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    table = data.get("kiln", data)
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [kiln] must be a table of settings")
    if "kiln" in data and len(data) > 1:
        stray = sorted(k for k in data if k != "kiln")[0]
        raise ConfigError(
            f"{path}: setting {stray!r} is outside the [kiln] table; put every setting under "
            "[kiln] or none"
        )
    unknown = sorted(set(table) - set(_NAMES))
    if unknown:
        raise ConfigError(
            f"{path}: unknown setting {unknown[0]!r}; known settings: {', '.join(_NAMES)}"
        )
    return table


def _check_db_url(url: str, where: str) -> str:
    match = _SCHEME_RE.match(url)
    supported = "sqlite:///PATH or postgresql://USER@HOST:PORT/DB"
    if not match:
        raise ConfigError(f"{where}: malformed database URL {url!r}; expected {supported}")
    scheme = match.group(1).lower()
    if scheme not in DB_SCHEMES:
        raise ConfigError(
            f"{where}: unknown database scheme {scheme!r} in {mask_url(url)!r}; "
            f"supported schemes: sqlite, postgresql"
        )
    if scheme == "sqlite":
        path = url[len("sqlite:///") :] if url.startswith("sqlite:///") else ""
        if not path or path.startswith(":memory:"):
            raise ConfigError(
                f"{where}: {url!r} names no database file; expected sqlite:///PATH "
                "(an in-memory database cannot be shared between processes)"
            )
    else:
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError:
            raise ConfigError(
                f"{where}: malformed database URL {mask_url(url)!r}; expected {supported}"
            ) from None
        if not parts.hostname or not parts.path.strip("/"):
            raise ConfigError(
                f"{where}: malformed database URL {mask_url(url)!r}; expected {supported}"
            )
    return url


def _check_artifact_uri(uri: str, where: str, cwd: Path) -> str:
    match = _SCHEME_RE.match(uri)
    if not match:
        if "://" in uri or (":" in uri.split("/", 1)[0] and len(uri.split(":", 1)[0]) > 1):
            raise ConfigError(
                f"{where}: malformed artifact URI {uri!r}; expected a directory, "
                "file:///PATH or s3://BUCKET/PREFIX"
            )
        return str((cwd / Path(uri).expanduser()).resolve())
    scheme = match.group(1).lower()
    if scheme not in ARTIFACT_SCHEMES:
        raise ConfigError(
            f"{where}: unknown artifact scheme {scheme!r} in {mask_url(uri)!r}; "
            f"supported schemes: {', '.join(ARTIFACT_SCHEMES)} (or a plain directory)"
        )
    if scheme == "file":
        return str((cwd / Path(uri[len("file://") :]).expanduser()).resolve())
    if not urlsplit(uri).netloc:
        raise ConfigError(f"{where}: {uri!r} names no bucket; expected s3://BUCKET/PREFIX")
    return uri.rstrip("/")


def _check_online_url(url: str, where: str) -> str:
    match = _SCHEME_RE.match(url)
    scheme = match.group(1).lower() if match else ""
    if scheme not in ONLINE_SCHEMES:
        raise ConfigError(
            f"{'KILN_ONLINE_URL' if where == 'default' else where}: unknown online store "
            f"URL {mask_url(url)!r}; supported schemes: {', '.join(ONLINE_SCHEMES)} "
            "(sqlite:///PATH or redis://HOST:PORT/DB)"
        )
    if scheme == "sqlite" and not url[len("sqlite:///") :]:
        raise ConfigError(f"{where}: online store URL {url!r} names no file")
    return url


def _positive_float(value: Any, where: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{where}: expected a positive number of seconds, got {value!r}"
        ) from None
    if not number > 0:
        raise ConfigError(f"{where}: expected a positive number of seconds, got {value!r}")
    return number


def load_settings(
    environ: Mapping[str, str] | None = None, cwd: Path | None = None, **overrides: Any
) -> Settings:
    """Resolve settings from ``overrides``, then the environment, then kiln.toml, then defaults."""
    env = os.environ if environ is None else environ
    cwd = Path.cwd() if cwd is None else cwd
    unknown = sorted(set(overrides) - set(_NAMES))
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]!r}; known settings: {', '.join(_NAMES)}")
    toml_path = Path(env["KILN_CONFIG"]) if env.get("KILN_CONFIG") else cwd / "kiln.toml"
    if env.get("KILN_CONFIG") and not toml_path.is_file():
        raise ConfigError(f"KILN_CONFIG: {str(toml_path)!r} is not a file")
    toml = _read_toml(toml_path) if toml_path.is_file() else {}

    raw: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name in _NAMES:
        if overrides.get(name) is not None:
            raw[name], sources[name] = overrides[name], "argument"
        elif env.get(_ENV[name]):
            raw[name], sources[name] = env[_ENV[name]], _ENV[name]
        elif toml.get(name) is not None:
            raw[name], sources[name] = toml[name], f"{toml_path}:{name}"
        else:
            sources[name] = "default"

    home = Path(str(raw.get("home", cwd / ".kiln"))).expanduser()
    home = (cwd / home if not home.is_absolute() else home).resolve()
    db_url = str(raw.get("db_url") or f"sqlite:///{home / 'kiln.db'}")
    artifact_uri = str(raw.get("artifact_uri") or home / "artifacts")
    online_url = str(raw.get("online_url") or f"sqlite:///{home / 'online.db'}")
    offline_dir = Path(str(raw.get("offline_dir") or home / "offline")).expanduser()
    endpoint = raw.get("s3_endpoint_url") or env.get("AWS_ENDPOINT_URL") or None
    return Settings(
        home=home,
        db_url=_check_db_url(db_url, sources["db_url"] if "db_url" in raw else "KILN_DB_URL"),
        artifact_uri=_check_artifact_uri(artifact_uri, sources["artifact_uri"], cwd),
        online_url=_check_online_url(online_url, sources["online_url"]),
        offline_dir=offline_dir if offline_dir.is_absolute() else (cwd / offline_dir).resolve(),
        s3_endpoint_url=str(endpoint) if endpoint else None,
        heartbeat_timeout_s=_positive_float(
            raw.get("heartbeat_timeout_s", 60.0), sources["heartbeat_timeout_s"]
        ),
        metric_flush_interval_s=_positive_float(
            raw.get("metric_flush_interval_s", 0.5), sources["metric_flush_interval_s"]
        ),
        sources=sources,
    )


_lock = threading.Lock()
_current: Settings | None = None


def get_settings() -> Settings:
    """The process's settings, resolved on first use and kept until :func:`configure`."""
    global _current
    if _current is None:
        with _lock:
            if _current is None:
                _current = load_settings()
    return _current


def configure(**overrides: Any) -> Settings:
    """Replace the process's settings (for notebooks and tests); unnamed ones re-resolve."""
    global _current
    settings = load_settings(**overrides)
    with _lock:
        _current = settings
    return settings


def reset_settings() -> None:
    """Forget the resolved settings so the next use reads the environment again."""
    global _current
    with _lock:
        _current = None


def replace(settings: Settings, **changes: Any) -> Settings:
    """Copy-with-change, for callers that derive settings (tests, sub-processes)."""
    return dataclasses.replace(settings, **changes)
