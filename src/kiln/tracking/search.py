"""The run filter language, compiled to SQLAlchemy expressions with bound parameters.

Grammar (keywords case-insensitive)::

    filter  := clause ("and" clause)*
    clause  := field op value
    field   := ("metrics" | "params" | "tags" | "attributes") "." name
    name    := [A-Za-z0-9_\\-./:]+ | `any name` | "any name"
    op      := = | != | < | <= | > | >= | LIKE | ILIKE | IN | NOT IN
    value   := number | 'text' | "text" | "(" value ("," value)* ")"

Values never reach the SQL text: every one is a bound parameter, so a filter can only
ever compare, never run SQL. Errors name the offending token and its position.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from kiln.core import InvalidInput, to_millis
from kiln.tracking import _tables as t

__all__ = ["Clause", "OrderKey", "compile_filter", "compile_order", "parse_filter", "parse_order"]

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<field>(?:metrics?|params?|tags?|attributes?|attr|run)\.
        (?:`[^`]+`|"[^"]+"|[A-Za-z0-9_\-./:]+))
  | (?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?![A-Za-z_]))
  | (?P<string>'(?:[^']|'')*'|"(?:[^"]|"")*")
  | (?P<op><=|>=|!=|<>|==|=|<|>)
  | (?P<word>[A-Za-z_]+)
  | (?P<punct>[(),])
    """,
    re.VERBOSE | re.IGNORECASE,
)
_KIND = {
    "metric": "metrics",
    "metrics": "metrics",
    "param": "params",
    "params": "params",
    "tag": "tags",
    "tags": "tags",
    "attribute": "attributes",
    "attributes": "attributes",
    "attr": "attributes",
    "run": "attributes",
}
_ATTRIBUTES = ("status", "name", "id", "run_id", "start_time", "end_time", "experiment")
_MAX_MILLIS = float(1 << 62)
_OPS = "=, !=, <, <=, >, >=, LIKE, ILIKE, IN, NOT IN"


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    pos: int


@dataclass(frozen=True)
class Clause:
    kind: str  # metrics | params | tags | attributes
    name: str
    op: str  # = != < <= > >= LIKE ILIKE IN NOT IN
    value: Any  # float | str | tuple
    pos: int


@dataclass(frozen=True)
class OrderKey:
    kind: str
    name: str
    descending: bool


def _error(source: str, pos: int, text: str, expected: str) -> InvalidInput:
    near = f"near {text!r}" if text else "at the end"
    return InvalidInput(f"{source} syntax error at position {pos} {near}: expected {expected}")


def _tokens(text: str, source: str) -> list[Token]:
    if "\x00" in text:
        raise InvalidInput(f"{source} contains a NUL character at position {text.index(chr(0))}")
    out: list[Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise _error(source, pos, text[pos : pos + 10], "a field, operator or value")
        kind = m.lastgroup or ""
        if kind != "ws":
            out.append(Token(kind, m.group(), pos))
        pos = m.end()
    return out


def _split_field(tok: Token) -> tuple[str, str]:
    prefix, _, name = tok.text.partition(".")
    if name[:1] in '`"' and name[-1:] == name[:1]:
        name = name[1:-1]
    kind = _KIND[prefix.lower()]
    if kind == "attributes" and name.lower() not in _ATTRIBUTES:
        raise InvalidInput(
            f"unknown attribute {name!r} at position {tok.pos}; "
            f"attributes: {', '.join(_ATTRIBUTES)}"
        )
    return kind, name.lower() if kind == "attributes" else name


def _literal(tok: Token, source: str) -> float | str:
    if tok.kind == "number":
        return float(tok.text)
    if tok.kind == "string":
        quote = tok.text[0]
        return tok.text[1:-1].replace(quote * 2, quote)
    raise _error(source, tok.pos, tok.text, "a number, a quoted string or a list in parentheses")


class _Parser:
    def __init__(self, text: str, source: str) -> None:
        self.source = source
        self.toks = _tokens(text, source)
        self.i = 0
        self.end = len(text)

    def peek(self) -> Token | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, expected: str) -> Token:
        tok = self.peek()
        if tok is None:
            raise _error(self.source, self.end, "", expected)
        self.i += 1
        return tok

    def clause(self) -> Clause:
        tok = self.take("a field such as metrics.auc, params.lr, tags.team or attributes.status")
        if tok.kind != "field":
            raise _error(
                self.source,
                tok.pos,
                tok.text,
                "a field such as metrics.auc, params.lr, tags.team or attributes.status",
            )
        kind, name = _split_field(tok)
        op = self.operator()
        if op in ("IN", "NOT IN"):
            value: Any = self.values()
        else:
            value = _literal(self.take("a value"), self.source)
        clause = Clause(kind, name, op, value, tok.pos)
        _check_types(clause)
        return clause

    def operator(self) -> str:
        tok = self.take(f"an operator ({_OPS})")
        if tok.kind == "op":
            return {"==": "=", "<>": "!="}.get(tok.text, tok.text)
        word = tok.text.upper() if tok.kind == "word" else ""
        if word in ("LIKE", "ILIKE", "IN"):
            return word
        if word == "NOT":
            nxt = self.take("IN after NOT")
            if nxt.kind == "word" and nxt.text.upper() == "IN":
                return "NOT IN"
            raise _error(self.source, nxt.pos, nxt.text, "IN after NOT")
        raise _error(self.source, tok.pos, tok.text, f"an operator ({_OPS})")

    def values(self) -> tuple[float | str, ...]:
        tok = self.take("'(' opening the list of values")
        if tok.text != "(":
            raise _error(self.source, tok.pos, tok.text, "'(' opening the list of values")
        items = [_literal(self.take("a value"), self.source)]
        while True:
            tok = self.take("',' or ')'")
            if tok.text == ")":
                return tuple(items)
            if tok.text != ",":
                raise _error(self.source, tok.pos, tok.text, "',' or ')'")
            items.append(_literal(self.take("a value"), self.source))

    def parse(self) -> list[Clause]:
        clauses = [self.clause()]
        while (tok := self.peek()) is not None:
            if tok.kind != "word" or tok.text.upper() != "AND":
                raise _error(self.source, tok.pos, tok.text, "AND between clauses")
            self.i += 1
            clauses.append(self.clause())
        return clauses


def _check_types(c: Clause) -> None:
    values = c.value if isinstance(c.value, tuple) else (c.value,)
    numeric = all(isinstance(x, float) for x in values)
    if c.kind == "metrics":
        if not numeric or c.op in ("LIKE", "ILIKE"):
            raise InvalidInput(
                f"metrics.{c.name} at position {c.pos} compares with numbers "
                f"(=, !=, <, <=, >, >=, IN); got {c.op} {c.value!r}"
            )
    elif c.kind == "tags" or (
        c.kind == "attributes" and c.name in ("status", "name", "id", "run_id", "experiment")
    ):
        if numeric and c.kind == "tags":
            return  # tags are text; a number compares with its text form
        if any(isinstance(x, float) for x in values):
            raise InvalidInput(
                f"{c.kind}.{c.name} at position {c.pos} compares with quoted text; got {c.value!r}"
            )
    elif c.op in ("LIKE", "ILIKE") and numeric:
        raise InvalidInput(f"{c.op} at position {c.pos} needs a quoted pattern; got {c.value!r}")


def parse_filter(text: str | None) -> list[Clause]:
    if text is None or not text.strip():
        return []
    if not isinstance(text, str):
        raise InvalidInput(f"filter must be a string, got {type(text).__name__}")
    return _Parser(text, "filter").parse()


def _compare(col: Any, op: str, value: Any) -> ColumnElement[bool]:
    if op == "=":
        return col == value  # type: ignore[no-any-return]
    if op == "!=":
        return col != value  # type: ignore[no-any-return]
    if op == "<":
        return col < value  # type: ignore[no-any-return]
    if op == "<=":
        return col <= value  # type: ignore[no-any-return]
    if op == ">":
        return col > value  # type: ignore[no-any-return]
    if op == ">=":
        return col >= value  # type: ignore[no-any-return]
    if op == "LIKE":
        return col.like(value)  # type: ignore[no-any-return]
    if op == "ILIKE":
        return sa.func.lower(col).like(sa.func.lower(value))
    if op == "IN":
        return col.in_(list(value))  # type: ignore[no-any-return]
    return col.not_in(list(value))  # type: ignore[no-any-return]


def _time_value(value: Any, pos: int) -> Any:
    def one(x: Any) -> int:
        if isinstance(x, float):
            if not -_MAX_MILLIS <= x <= _MAX_MILLIS:  # also rejects inf and NaN
                raise InvalidInput(f"time at position {pos} must be epoch milliseconds; got {x!r}")
            return int(x)
        try:
            return to_millis(datetime.fromisoformat(x))
        except ValueError:
            raise InvalidInput(
                f"time at position {pos} must be epoch milliseconds or an ISO date; got {x!r}"
            ) from None

    return tuple(one(x) for x in value) if isinstance(value, tuple) else one(value)


def compile_clause(c: Clause, joined: Mapping[str, Any] | None = None) -> ColumnElement[bool]:
    """One clause as a condition on ``kiln_runs``; ``joined`` maps metric names to aliases
    of ``kiln_latest_metrics`` that :func:`compile_order` already inner-joined."""
    runs = t.runs.c
    if c.kind == "metrics" and joined and c.name in joined:
        return _compare(joined[c.name].c.value, c.op, c.value)
    if c.kind == "metrics":
        m = t.latest_metrics.c
        sub = sa.select(m.run_id).where(
            m.key == c.name, m.is_nan.is_(False), _compare(m.value, c.op, c.value)
        )
        return runs.id.in_(sub)
    if c.kind == "params":
        p = t.params.c
        values = c.value if isinstance(c.value, tuple) else (c.value,)
        numeric = all(isinstance(x, float) for x in values)
        col = p.num_value if numeric else p.value
        sub = sa.select(p.run_id).where(p.key == c.name, _compare(col, c.op, c.value))
        return runs.id.in_(sub)
    if c.kind == "tags":
        g = t.tags.c
        value = tuple(_text(x) for x in c.value) if isinstance(c.value, tuple) else _text(c.value)
        sub = sa.select(g.run_id).where(g.key == c.name, _compare(g.value, c.op, value))
        return runs.id.in_(sub)
    if c.name in ("start_time", "end_time"):
        return _compare(getattr(runs, c.name), c.op, _time_value(c.value, c.pos))
    if c.name == "experiment":
        e = t.experiments.c
        return runs.experiment_id.in_(sa.select(e.id).where(_compare(e.name, c.op, c.value)))
    col = runs.id if c.name in ("id", "run_id") else getattr(runs, c.name)
    value = c.value
    if c.name == "status":
        value = tuple(x.upper() for x in value) if isinstance(value, tuple) else str(value).upper()
    return _compare(col, c.op, value)


def _text(x: float | str) -> str:
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return str(x)


def compile_filter(text: str | None) -> list[ColumnElement[bool]]:
    return [compile_clause(c) for c in parse_filter(text)]


def parse_order(order_by: Sequence[str] | str | None) -> list[OrderKey]:
    if order_by is None:
        return []
    items = [order_by] if isinstance(order_by, str) else list(order_by)
    keys = []
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise InvalidInput(f"order_by entries must be non-empty strings; got {item!r}")
        text = item.strip()
        descending = text.startswith("-")
        parser = _Parser(text.lstrip("-+ "), "order_by")
        tok = parser.take("a field such as metrics.auc")
        if tok.kind != "field":
            raise _error(
                "order_by",
                tok.pos,
                tok.text,
                "a field such as metrics.auc or attributes.start_time",
            )
        kind, name = _split_field(tok)
        if (nxt := parser.peek()) is not None:
            word = nxt.text.upper()
            if nxt.kind != "word" or word not in ("ASC", "DESC") or parser.i + 1 < len(parser.toks):
                raise _error("order_by", nxt.pos, nxt.text, "ASC or DESC")
            descending = word == "DESC"
        keys.append(OrderKey(kind, name, descending))
    return keys


def compile_order(
    query: sa.Select[Any], keys: Sequence[OrderKey], required_metrics: Iterable[str] = ()
) -> tuple[sa.Select[Any], dict[str, Any]]:
    """Add joins and ORDER BY terms; missing values sort last in both directions.

    A metric that the filter already requires (``required_metrics``) is inner-joined, and
    the alias is returned so the filter's clauses on it compare that alias directly: the
    database then walks the (key, is_nan, value) index in order and stops at the limit,
    instead of sorting every match.
    """
    required = set(required_metrics)
    joined: dict[str, Any] = {}
    terms: list[Any] = []
    for i, key in enumerate(keys):
        if key.kind == "attributes":
            col: Any = (
                t.runs.c.id if key.name in ("id", "run_id") else getattr(t.runs.c, key.name, None)
            )
            if col is None:
                raise InvalidInput(
                    f"cannot order by attributes.{key.name}; "
                    "use status, name, start_time or end_time"
                )
        else:
            table = {"metrics": t.latest_metrics, "params": t.params, "tags": t.tags}[key.kind]
            alias = table.alias(f"o{i}")
            cond = (alias.c.run_id == t.runs.c.id) & (alias.c.key == key.name)
            if key.kind == "metrics":
                cond = cond & alias.c.is_nan.is_(False)
            if key.kind == "metrics" and key.name in required and key.name not in joined:
                query = query.join(alias, cond)
                joined[key.name] = alias
            else:
                query = query.outerjoin(alias, cond)
            if key.kind == "params":  # numbers in numeric order, then text
                terms.append(_direction(alias.c.num_value, key.descending))
            col = alias.c.value
        terms.append(_direction(col, key.descending))
    terms += [t.runs.c.start_time.desc(), t.runs.c.id.desc()]
    return query.order_by(*terms), joined


def _direction(col: Any, descending: bool) -> Any:
    return (col.desc() if descending else col.asc()).nulls_last()
