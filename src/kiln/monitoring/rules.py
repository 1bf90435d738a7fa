"""Alert rules and what they do, as code or TOML.

A :class:`Rule` names a measured value (``psi`` of a feature, ``auc`` of a model version,
``skew_rate``...), a bound it must stay within, and for how many evaluations in a row it
may be out before it fires. A :class:`Monitor` groups the rules watching one deployment
with the window they look at. Rules are checked when made, so a typo fails at load time,
not on the first firing at night.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeAlias

from kiln.core import InvalidInput
from kiln.features.definitions import parse_duration

__all__ = [
    "DRIFT_METRICS",
    "FEATURE_METRICS",
    "METRICS",
    "MODEL_METRICS",
    "QUALITY_METRICS",
    "Action",
    "Log",
    "Monitor",
    "Retrain",
    "Rollback",
    "Rule",
    "Webhook",
    "load_monitors",
]

DRIFT_METRICS = ("psi", "ks", "wasserstein", "chi2", "jensenshannon")
"""A drift method's statistic per feature (``ks`` and ``chi2``: the test's statistic)."""
QUALITY_METRICS = ("auc", "log_loss", "accuracy", "precision", "recall")
"""Live quality from delayed labels, per model version and arm."""
FEATURE_METRICS = (*DRIFT_METRICS, "drift", "missing_rate", "skew_rate")
"""Measured per feature: a rule names one feature or ``"*"`` (each)."""
MODEL_METRICS = ("share_drifted", "skew_rate", *QUALITY_METRICS)
"""Measured per model version and arm (``skew_rate``: the largest feature's, deployment-wide)."""
METRICS = (*FEATURE_METRICS, "share_drifted", *QUALITY_METRICS)
SEVERITIES = ("info", "warning", "critical")
ARM_SIDES: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        # a side matches the arm under every policy's name for it
        "champion": frozenset({"champion", "A", "primary", "blue"}),
        "challenger": frozenset({"challenger", "canary", "B", "shadow", "green"}),
        **{
            label: frozenset({label})
            for label in ("canary", "A", "B", "primary", "shadow", "blue", "green")
        },
    }
)
"""What ``Rule(arm=...)`` takes, and the logged arm labels each matches."""
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:*<>=\[\]-]{0,127}$")


@dataclass(frozen=True)
class Log:
    """Write the alert to the ``kiln.monitoring`` log (and the command's output)."""

    kind = "log"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind}


@dataclass(frozen=True)
class Webhook:
    """POST the event as JSON to ``url``; retried with exponential backoff (``backoff_s``,
    doubling up to ``max_backoff_s``) until a 2xx answer or ``attempts`` tries. A 4xx
    answer other than 408 and 429 is final: the receiver refused the payload itself."""

    url: str
    attempts: int = 10
    backoff_s: float = 0.5
    max_backoff_s: float = 300.0
    timeout_s: float = 5.0
    kind = "webhook"

    def __post_init__(self) -> None:
        if not isinstance(self.url, str) or not re.match(r"^https?://[^\s/]+", self.url):
            raise InvalidInput(f"webhook url must be an http:// or https:// URL; got {self.url!r}")
        if (
            isinstance(self.attempts, bool)
            or not isinstance(self.attempts, int)
            or (self.attempts < 1)
        ):
            raise InvalidInput(f"webhook attempts must be an integer >= 1; got {self.attempts!r}")
        for name in ("backoff_s", "max_backoff_s", "timeout_s"):
            _positive(getattr(self, name), f"webhook {name}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "url": self.url,
            "attempts": self.attempts,
            "backoff_s": self.backoff_s,
            "max_backoff_s": self.max_backoff_s,
            "timeout_s": self.timeout_s,
        }


@dataclass(frozen=True)
class Rollback:
    """Roll back the deployment's rollout (traffic back on its champion) through
    ``kiln.deployments.rollback``; nothing to do when it serves its champion alone.
    ``deployment`` defaults to the one monitored."""

    deployment: str | None = None
    kind = "rollback"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "deployment": self.deployment}


@dataclass(frozen=True)
class Retrain:
    """Start the flow ``flow`` ("pkg.module:function") with ``params`` in a process of its
    own (as ``kiln flows run`` does), imported from ``workdir`` (default: where the
    monitor runs)."""

    flow: str
    params: Mapping[str, str | int | float | bool] = field(default_factory=dict)
    executor: str = "processes"
    workdir: str | None = None
    kind = "retrain"

    def __post_init__(self) -> None:
        if not isinstance(self.flow, str) or ":" not in self.flow:
            raise InvalidInput(f"retrain flow must be 'pkg.module:function'; got {self.flow!r}")
        if not isinstance(self.params, Mapping):
            raise InvalidInput(f"retrain params must be a mapping; got {self.params!r}")
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "flow": self.flow,
            "params": dict(self.params),
            "executor": self.executor,
            "workdir": self.workdir,
        }


Action: TypeAlias = Log | Webhook | Rollback | Retrain
_ACTIONS: dict[str, type[Log] | type[Webhook] | type[Rollback] | type[Retrain]] = {
    "log": Log,
    "webhook": Webhook,
    "rollback": Rollback,
    "retrain": Retrain,
}


@dataclass(frozen=True)
class Rule:
    """Fire when ``metric`` is above ``above`` (or below ``below``) for ``for_windows``
    evaluations in a row.

    ``feature`` names the feature of a per-feature metric, or ``"*"`` for each one (the
    default); ``skew_rate`` without a feature is the largest feature's. ``drift`` fires
    on the default verdict of :func:`kiln.monitoring.drift` (sample-size aware) and
    takes no bound. ``arm`` keeps one traffic arm: ``champion`` or ``challenger`` under
    any policy, or a policy's own name for one (``canary``, ``B``, ``green``...).
    ``window`` replaces the monitor's for this rule (labels arrive late: ``auc`` is
    often judged over days). ``actions`` are strings (``"log"``, ``"rollback"``) or
    action objects; the default is ``("log",)``.
    """

    metric: str
    feature: str | None = None
    above: float | None = None
    below: float | None = None
    for_windows: int = 1
    arm: str | None = None
    window: str | None = None
    severity: str = "warning"
    actions: Sequence[Action | str] = ("log",)
    name: str | None = None

    def __post_init__(self) -> None:
        metric = self.metric
        if metric not in METRICS:
            raise InvalidInput(f"rule metric: unknown {metric!r}; known: {', '.join(METRICS)}")
        feature = self.feature
        if feature is None and metric in FEATURE_METRICS and metric != "skew_rate":
            feature = "*"
        if feature is not None:
            if metric not in FEATURE_METRICS:
                raise InvalidInput(
                    f"rule {metric!r}: a model-level metric takes no feature; got {feature!r}"
                )
            if not isinstance(feature, str) or not feature:
                raise InvalidInput(
                    f"rule {metric!r}: feature must be a column name or '*'; got {feature!r}"
                )
        object.__setattr__(self, "feature", feature)
        for bound in ("above", "below"):
            value = getattr(self, bound)
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
            ):
                raise InvalidInput(f"rule {metric!r}: {bound} must be a number; got {value!r}")
        if metric == "drift":
            if self.above is not None or self.below is not None:
                raise InvalidInput(
                    "rule 'drift' fires on drift's own verdict and takes no above/below; "
                    "use a method's metric ('psi', 'wasserstein', ...) for a bound of your own"
                )
        elif (self.above is None) == (self.below is None):
            raise InvalidInput(f"rule {metric!r} needs exactly one of above= or below=")
        if (
            isinstance(self.for_windows, bool)
            or not isinstance(self.for_windows, int)
            or self.for_windows < 1
        ):
            raise InvalidInput(
                f"rule {metric!r}: for_windows must be an integer >= 1; got {self.for_windows!r}"
            )
        if self.arm is not None and self.arm not in ARM_SIDES:
            raise InvalidInput(
                f"rule {metric!r}: arm must be one of {', '.join(ARM_SIDES)}; got {self.arm!r}"
            )
        if self.window is not None:
            parse_duration(self.window, owner=f"rule {metric!r}", param="window")
        if self.severity not in SEVERITIES:
            raise InvalidInput(
                f"rule {metric!r}: severity must be one of {', '.join(SEVERITIES)}; "
                f"got {self.severity!r}"
            )
        if isinstance(self.actions, str | Log | Webhook | Rollback | Retrain):
            raise InvalidInput(
                f"rule {metric!r}: actions must be a list (e.g. ['log', Webhook(url)]); "
                f"got {self.actions!r}"
            )
        object.__setattr__(self, "actions", tuple(_action(a, metric) for a in self.actions))
        name = self.name if self.name is not None else self.default_name()
        if not isinstance(name, str) or not _NAME.match(name):
            raise InvalidInput(
                f"rule name: 1-128 letters, digits and _ . : * < > = [ ] -, starting with a "
                f"letter or digit; got {name!r}"
            )
        object.__setattr__(self, "name", name)

    def default_name(self) -> str:
        """``psi[amount]>0.2``, ``auc<0.8``, ``drift[*]``: what the rule says, as its name."""
        text = self.metric + (f"[{self.feature}]" if self.feature is not None else "")
        if self.arm is not None:
            text += f"[{self.arm}]"
        if self.above is not None:
            text += f">{self.above:g}"
        if self.below is not None:
            text += f"<{self.below:g}"
        return text

    @property
    def threshold(self) -> float | None:
        return self.above if self.above is not None else self.below

    def breached(self, value: float | None, drifted: bool | None) -> bool:
        if self.metric == "drift":
            return bool(drifted)
        if value is None or math.isnan(value):
            return False
        if self.above is not None:
            return value > self.above
        return self.below is not None and value < self.below

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "metric": self.metric,
            "feature": self.feature,
            "above": self.above,
            "below": self.below,
            "for_windows": self.for_windows,
            "arm": self.arm,
            "window": self.window,
            "severity": self.severity,
            "actions": [a.to_dict() for a in self.actions],  # type: ignore[union-attr]
        }


@dataclass(frozen=True)
class Monitor:
    """The rules watching one deployment, over the last ``window`` of its traffic.

    ``reference`` is what drift compares with: ``"training"`` (each version's reference
    profile) or a duration (the same version and arm's traffic before the window).
    ``every`` is how often ``kiln monitor serve`` evaluates; ``skew_sample`` how many
    logged requests skew recomputes offline. A version and arm that answered fewer than
    ``min_rows`` rows in the window is not judged on drift and missing rates (a 10%
    canary's few dozen rows give a PSI that is mostly noise); the evaluation says so.
    """

    deployment: str
    rules: Sequence[Rule]
    window: str = "1h"
    every: str = "5m"
    reference: str = "training"
    skew_sample: int = 1000
    min_rows: int = 100

    def __post_init__(self) -> None:
        from kiln.serving.specs import check_name

        check_name(self.deployment)
        rules = tuple(self.rules) if not isinstance(self.rules, Rule) else (self.rules,)
        for rule in rules:
            if not isinstance(rule, Rule):
                raise InvalidInput(
                    f"monitor {self.deployment!r}: rules must be Rule objects; got {rule!r}"
                )
        names = [r.name for r in rules]
        doubled = sorted({n for n in names if names.count(n) > 1 and n is not None})
        if doubled:
            raise InvalidInput(
                f"monitor {self.deployment!r}: rule names must differ; {doubled} appear twice "
                "(give one a name=)"
            )
        object.__setattr__(self, "rules", rules)
        owner = f"monitor {self.deployment!r}"
        parse_duration(self.window, owner=owner, param="window")
        parse_duration(self.every, owner=owner, param="every")
        if self.reference != "training":
            parse_duration(self.reference, owner=owner, param="reference")
        for name in ("skew_sample", "min_rows"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInput(f"{owner}: {name} must be an integer >= 1; got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "deployment": self.deployment,
            "window": self.window,
            "every": self.every,
            "reference": self.reference,
            "skew_sample": self.skew_sample,
            "min_rows": self.min_rows,
            "rules": [r.to_dict() for r in self.rules],
        }


def load_monitors(path: str | os.PathLike[str]) -> list[Monitor]:
    """The monitors of a TOML file: ``[[monitor]]`` tables with ``[[monitor.rule]]`` ones.

    ::

        [[monitor]]
        deployment = "fraud-api"
        window = "1h"

        [[monitor.rule]]
        metric = "psi"
        feature = "*"
        above = 0.2
        for_windows = 2
        actions = ["log", { webhook = "http://127.0.0.1:9000/alerts" }, "rollback"]

    An action is ``"log"``, ``"rollback"``, ``{ webhook = URL, attempts = 10, ... }``,
    ``{ rollback = "other-deployment" }`` or ``{ retrain = "pkg.module:flow", params =
    {...}, executor = "processes" }``. Errors name the file, the table and the key.
    """
    file = Path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidInput(f"monitor file {str(file)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"monitor file {str(file)!r} cannot be read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"{file}: not valid TOML: {exc}") from None
    unknown = sorted(set(data) - {"monitor"})
    if unknown or not isinstance(data.get("monitor"), list) or not data["monitor"]:
        raise InvalidInput(
            f"{file}: expected [[monitor]] tables and nothing else"
            + (f"; found {', '.join(unknown)}" if unknown else "")
        )
    monitors = []
    for i, table in enumerate(data["monitor"]):
        where = f"{file}: monitor {i + 1}"
        try:
            monitors.append(_monitor(table))
        except InvalidInput as exc:
            raise InvalidInput(f"{where}: {exc}") from None
    return monitors


def _monitor(table: Mapping[str, Any]) -> Monitor:
    known = {"deployment", "window", "every", "reference", "skew_sample", "min_rows", "rule"}
    _known_keys(table, known, "monitor")
    if "deployment" not in table:
        raise InvalidInput("deployment is missing")
    rules = []
    raw = table.get("rule", [])
    if not isinstance(raw, list):
        raise InvalidInput("rule must be [[monitor.rule]] tables")
    for j, rule in enumerate(raw):
        if not isinstance(rule, Mapping):
            raise InvalidInput(f"rule {j + 1} must be a table")
        fields = {
            "metric", "feature", "above", "below", "for_windows", "arm", "window",
            "severity", "actions", "name",
        }  # fmt: skip
        try:
            _known_keys(rule, fields, "rule")
            if "metric" not in rule:
                raise InvalidInput("metric is missing")
            rules.append(Rule(**rule))
        except (InvalidInput, TypeError) as exc:
            raise InvalidInput(f"rule {j + 1}: {exc}") from None
    options = {k: v for k, v in table.items() if k != "rule"}
    return Monitor(rules=rules, **options)


def _known_keys(table: Mapping[str, Any], known: set[str], what: str) -> None:
    extra = sorted(set(table) - known)
    if extra:
        raise InvalidInput(
            f"unknown {what} key(s) {', '.join(extra)}; known: {', '.join(sorted(known))}"
        )


def _action(value: Any, metric: str) -> Action:
    if isinstance(value, Log | Webhook | Rollback | Retrain):
        return value
    if value == "log":
        return Log()
    if value == "rollback":
        return Rollback()
    if isinstance(value, Mapping):
        kinds = [k for k in value if k in _ACTIONS]
        if len(kinds) == 1:
            kind = kinds[0]
            options = {k: v for k, v in value.items() if k != kind}
            main = value[kind]
            try:
                if kind == "webhook":
                    return Webhook(url=main, **options)
                if kind == "retrain":
                    return Retrain(flow=main, **options)
                if kind == "rollback" and not options:
                    return Rollback(deployment=main if isinstance(main, str) else None)
                if kind == "log" and not options:
                    return Log()
            except TypeError as exc:
                raise InvalidInput(f"rule {metric!r}: action {dict(value)!r}: {exc}") from None
    raise InvalidInput(
        f"rule {metric!r}: unknown action {value!r}; expected 'log', 'rollback', "
        "{webhook = URL}, {retrain = 'pkg.module:flow'} or an action object"
    )


def _positive(value: Any, name: str) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (value > 0)
        or not math.isfinite(value)
    ):
        raise InvalidInput(f"{name} must be a positive number of seconds; got {value!r}")
