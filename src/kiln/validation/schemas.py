"""Schemas and validation: what data is expected to look like, and how new data differs.

:func:`infer_schema` reads a profile into a schema a person then edits (a JSON file that
reads as it prints); :func:`validate` checks data against it and returns every anomaly,
each naming the column, the rule, what was expected and what was seen, with a severity:
``error`` for what breaks a model's input (a column gone, a type changed, too many values
missing, a category never seen), ``warning`` for what deserves a look (values outside the
range seen so far, a column the schema does not know). :func:`gate` is validation that
stops: it raises :class:`ValidationFailed` with the report when an error is found.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow as pa

from kiln.core import InvalidInput, NotFound
from kiln.validation._source import read_table
from kiln.validation.profiles import CATEGORICAL, NUMERIC, ColumnProfile, Profile, profile

__all__ = [
    "Anomaly",
    "ColumnSchema",
    "Schema",
    "ValidationFailed",
    "ValidationReport",
    "gate",
    "infer_schema",
    "load_schema",
    "validate",
]

TYPES = ("int", "float", "bool", "string", "timestamp", "date", "other")
RULES = ("type", "max_missing_rate", "min", "max", "domain")  # what a column schema says
_DOMAIN_MAX = 50  # categories listed in an inferred domain, at most
_EXAMPLES = 5
_FORMAT = 1


@dataclass(frozen=True)
class ColumnSchema:
    """What one column must hold. ``None`` leaves a rule out."""

    name: str
    type: str
    max_missing_rate: float = 0.0
    min: float | None = None
    max: float | None = None
    domain: tuple[str, ...] | None = None  # the values allowed (categorical columns)

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise InvalidInput(
                f"column {self.name!r}: unknown type {self.type!r}; known: {', '.join(TYPES)}"
            )
        rate = self.max_missing_rate
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1:
            raise InvalidInput(
                f"column {self.name!r}: max_missing_rate must be a number in [0, 1]; got {rate!r}"
            )
        for bound in ("min", "max"):
            value = getattr(self, bound)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float)
            ):
                raise InvalidInput(f"column {self.name!r}: {bound} must be a number; got {value!r}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise InvalidInput(f"column {self.name!r}: min {self.min} is above max {self.max}")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "max_missing_rate": self.max_missing_rate}
        if self.min is not None:
            out["min"] = self.min
        if self.max is not None:
            out["max"] = self.max
        if self.domain is not None:
            out["domain"] = list(self.domain)
        return out


@dataclass(frozen=True)
class Schema:
    """The columns expected, by name; ``allow_extra_columns`` says whether others may
    come too (then reported as warnings)."""

    columns: Mapping[str, ColumnSchema]
    allow_extra_columns: bool = True

    def __getitem__(self, name: str) -> ColumnSchema:
        try:
            return self.columns[name]
        except KeyError:
            raise NotFound(
                f"the schema has no column {name!r}; it has: {', '.join(self.columns)}"
            ) from None

    def with_column(self, name: str, **changes: Any) -> Schema:
        """A copy with one column's rules changed: ``schema.with_column("amount", max=1e5)``;
        a new name adds a column (``type=`` then required)."""
        current = self.columns.get(name)
        if current is None:
            if "type" not in changes:
                raise InvalidInput(f"column {name!r} is new: give its type= as well")
            column = ColumnSchema(name=name, **changes)
        else:
            unknown = sorted(set(changes) - set(RULES))
            if unknown:
                raise InvalidInput(
                    f"with_column takes no {unknown[0]!r}; a column has type, "
                    "max_missing_rate, min, max and domain"
                )
            if changes.get("domain") is not None:
                changes["domain"] = tuple(str(v) for v in changes["domain"])
            column = replace(current, **changes)
        return replace(self, columns={**self.columns, name: column})

    def without_column(self, name: str) -> Schema:
        self[name]  # NotFound names the columns there are
        return replace(self, columns={k: v for k, v in self.columns.items() if k != name})

    def to_dict(self) -> dict[str, Any]:
        return {
            "kiln_schema": _FORMAT,
            "allow_extra_columns": self.allow_extra_columns,
            "columns": {name: c.to_dict() for name, c in self.columns.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Schema:
        if not isinstance(data, Mapping) or data.get("kiln_schema") != _FORMAT:
            raise InvalidInput("not a Kiln schema (no 'kiln_schema' format marker)")
        columns: dict[str, ColumnSchema] = {}
        for name, spec in (data.get("columns") or {}).items():
            if not isinstance(spec, Mapping) or "type" not in spec:
                raise InvalidInput(f"schema column {name!r} must be an object with a type")
            unknown = sorted(set(spec) - set(RULES))
            if unknown:
                raise InvalidInput(f"schema column {name!r}: unknown rule {unknown[0]!r}")
            domain = spec.get("domain")
            columns[name] = ColumnSchema(
                name=name,
                type=spec["type"],
                max_missing_rate=spec.get("max_missing_rate", 0.0),
                min=spec.get("min"),
                max=spec.get("max"),
                domain=None if domain is None else tuple(str(v) for v in domain),
            )
        return cls(columns, bool(data.get("allow_extra_columns", True)))

    def save(self, path: str | Path) -> Path:
        """Write the schema as indented JSON, to edit by hand and keep under version
        control."""
        target = Path(path)
        target.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return target


def load_schema(path: str | Path) -> Schema:
    source = Path(path)
    if not source.is_file():
        raise NotFound(f"no schema file {str(source)!r}")
    try:
        data = json.loads(source.read_text())
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{str(source)!r} is not JSON: {exc}") from None
    return Schema.from_dict(data)


def infer_schema(source: Profile, *, domain_max: int = _DOMAIN_MAX) -> Schema:
    """A schema the profiled data meets: its types; missing values allowed where some were
    seen (half as many again plus one point, so the next sample does not fail by chance);
    the range seen for numbers; the values seen for categories with at most
    ``domain_max`` of them."""
    if not isinstance(source, Profile):
        raise InvalidInput(
            f"infer_schema takes a Profile (kiln.validation.profile(data)); "
            f"got {type(source).__name__}"
        )
    columns = {name: _infer_column(c, domain_max) for name, c in source.columns.items()}
    return Schema(columns)


def _infer_column(c: ColumnProfile, domain_max: int) -> ColumnSchema:
    rate = 0.0 if c.missing == 0 else min(1.0, round(c.missing_rate * 1.5 + 0.01, 4))
    if c.type in NUMERIC and c.present:
        return ColumnSchema(c.name, c.type, rate, float(c.min), float(c.max))  # type: ignore[arg-type]
    complete = c.distinct_exact and len(c.top) == c.distinct
    if c.type in CATEGORICAL and complete and 0 < c.distinct <= domain_max:
        return ColumnSchema(c.name, c.type, rate, domain=tuple(sorted(v for v, _ in c.top)))
    return ColumnSchema(c.name, c.type, rate)


# -- validating ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Anomaly:
    """One way the data differs from the schema."""

    column: str
    rule: str  # missing_column, unexpected_column, type, missing_rate, range, domain
    expected: str
    observed: str
    severity: str  # error or warning
    count: int = 0  # rows concerned, where the rule counts rows

    @property
    def message(self) -> str:
        return f"{self.column}: {self.rule}: expected {self.expected}, observed {self.observed}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "rule": self.rule,
            "expected": self.expected,
            "observed": self.observed,
            "severity": self.severity,
            "count": self.count,
        }


@dataclass(frozen=True)
class ValidationReport:
    """Every anomaly found, errors first; ``ok`` when there is no error."""

    anomalies: tuple[Anomaly, ...]
    rows: int
    profile: Profile = field(repr=False)

    @property
    def errors(self) -> list[Anomaly]:
        return [a for a in self.anomalies if a.severity == "error"]

    @property
    def warnings(self) -> list[Anomaly]:
        return [a for a in self.anomalies if a.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "rows": self.rows,
            "anomalies": [a.to_dict() for a in self.anomalies],
        }

    def to_pandas(self) -> Any:
        import pandas as pd

        columns = ["column", "rule", "expected", "observed", "severity", "count"]
        return pd.DataFrame([a.to_dict() for a in self.anomalies], columns=columns)

    def __str__(self) -> str:
        head = f"{len(self.errors)} error(s), {len(self.warnings)} warning(s) in {self.rows} rows"
        return "\n".join([head, *(f"  [{a.severity}] {a.message}" for a in self.anomalies)])


class ValidationFailed(InvalidInput):
    """Data failed a quality gate; ``report`` holds every anomaly found."""

    def __init__(self, what: str, report: ValidationReport) -> None:
        errors = report.errors
        listed = "; ".join(a.message for a in errors[:_EXAMPLES])
        more = f" (and {len(errors) - _EXAMPLES} more)" if len(errors) > _EXAMPLES else ""
        super().__init__(f"{what} failed validation with {len(errors)} error(s): {listed}{more}")
        self.report = report


def validate(data: Any, schema: Schema) -> ValidationReport:
    """Check ``data`` (any form :func:`~kiln.validation.profile` reads) against ``schema``."""
    if not isinstance(schema, Schema):
        raise InvalidInput(f"validate takes a Schema; got {type(schema).__name__}")
    table = read_table(data)
    seen = profile(table)
    anomalies: list[Anomaly] = []
    extra = "warning" if schema.allow_extra_columns else "error"
    for name, rule in schema.columns.items():
        column = seen.columns.get(name)
        if column is None:
            anomalies.append(Anomaly(name, "missing_column", "a column", "none", "error"))
            continue
        anomalies.extend(_check_column(table, rule, column))
    for name in seen.columns:
        if name not in schema.columns:
            anomalies.append(
                Anomaly(name, "unexpected_column", "no such column", seen[name].type, extra)
            )
    ordered = sorted(anomalies, key=lambda a: a.severity != "error")
    return ValidationReport(tuple(ordered), table.num_rows, seen)


def gate(data: Any, schema: Schema, *, what: str = "data") -> ValidationReport:
    """Validate and stop on an error: raise :class:`ValidationFailed` (with the report);
    return the report (warnings included) otherwise."""
    report = validate(data, schema)
    if not report.ok:
        raise ValidationFailed(what, report)
    return report


def _check_column(table: pa.Table, rule: ColumnSchema, seen: ColumnProfile) -> list[Anomaly]:
    name = rule.name
    if not _compatible(seen.type, rule.type):
        return [Anomaly(name, "type", rule.type, seen.type, "error")]
    out: list[Anomaly] = []
    if seen.missing_rate > rule.max_missing_rate:
        out.append(
            Anomaly(
                name,
                "missing_rate",
                f"at most {rule.max_missing_rate:.2%}",
                f"{seen.missing_rate:.2%} ({seen.missing} of {seen.count})",
                "error",
                seen.missing,
            )
        )
    if rule.type in NUMERIC and seen.present and (rule.min is not None or rule.max is not None):
        out.extend(_check_range(table, rule, seen))
    if rule.domain is not None and seen.present:
        out.extend(_check_domain(table, rule))
    return out


def _compatible(seen: str, expected: str) -> bool:
    """Integers where floats are expected are fine; nothing else changes type silently."""
    return seen == expected or (seen == "int" and expected == "float")


def _check_range(table: pa.Table, rule: ColumnSchema, seen: ColumnProfile) -> list[Anomaly]:
    import pyarrow.compute as pc

    lo = float(seen.min) if seen.min is not None else None
    hi = float(seen.max) if seen.max is not None else None
    below = rule.min is not None and lo is not None and lo < rule.min
    above = rule.max is not None and hi is not None and hi > rule.max
    if not (below or above):
        return []
    col = table.column(rule.name).cast(pa.float64())
    outside = pa.scalar(False)
    if rule.min is not None:
        outside = pc.or_(outside, pc.less(col, rule.min))
    if rule.max is not None:
        outside = pc.or_(outside, pc.greater(col, rule.max))
    count = int(pc.sum(outside).as_py() or 0)
    expected = f"[{_num(rule.min)}, {_num(rule.max)}]"
    observed = f"[{_num(lo)}, {_num(hi)}], {count} value(s) outside"
    return [Anomaly(rule.name, "range", expected, observed, "warning", count)]


def _num(value: float | None) -> str:
    return "-inf" if value is None else f"{value:g}"


def _check_domain(table: pa.Table, rule: ColumnSchema) -> list[Anomaly]:
    import pyarrow.compute as pc

    col = table.column(rule.name)
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    if pa.types.is_boolean(col.type):
        col = pc.if_else(col, "true", "false")
    allowed = pa.array(list(rule.domain or ()), pa.string())
    unknown = pc.filter(col, pc.invert(pc.is_in(col.cast(pa.string()), value_set=allowed)))
    unknown = unknown.drop_null()
    if len(unknown) == 0:
        return []
    counts = pc.value_counts(unknown)
    pairs = sorted(
        zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True),
        key=lambda vc: (-vc[1], str(vc[0])),
    )
    examples = ", ".join(f"{v!r} x{c}" for v, c in pairs[:_EXAMPLES])
    more = f" and {len(pairs) - _EXAMPLES} more" if len(pairs) > _EXAMPLES else ""
    domain = rule.domain or ()
    shown = ", ".join(repr(v) for v in domain[:_EXAMPLES])
    etc = ", ..." if len(domain) > _EXAMPLES else ""
    expected = f"one of {len(domain)} value(s) ({shown}{etc})"
    observed = f"{len(unknown)} value(s) outside it: {examples}{more}"
    return [Anomaly(rule.name, "domain", expected, observed, "error", len(unknown))]
