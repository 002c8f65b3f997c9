"""Grouped aggregates over an entity's records: the language of reports, dashboards and the assistant.

RecordService.aggregate compiles a request into one SQL statement whose WHERE
starts with the permission predicate (the same as list and count), so a sum or
a count never includes a record the caller could not open. This module only
turns the request into SQL fragments and checks it:

- groups: "field" or "field:bucket" with bucket day/week/month/quarter/year
  (date and datetime fields; datetimes are bucketed in UTC). A currency field
  groups by its amount; "field.currency" by its code.
- measures: "count", or "op:field" with op sum/avg/min/max/count_distinct.
  sum and avg take number and currency fields; min and max also dates and
  text; count_distinct any field. A measure over a currency field is split by
  currency (its code becomes a group "field.currency"), because adding euros to
  dollars gives a number that means nothing.
- order: a measure or group name, "-" for descending.

Problems point at the request part ("/group_by/0", "/measures/1", "/order_by").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import Problem, pointer
from ..identifiers import quote_ident
from . import query

__all__ = ["BUCKETS", "MEASURES", "AggregateRequest", "Group", "Measure", "compile_request"]

BUCKETS = ("day", "week", "month", "quarter", "year")
MEASURES = ("count", "sum", "avg", "min", "max", "count_distinct")
MAX_GROUPS = 1000
"""Rows an aggregate returns at most (a report of more groups is a list, not a report)."""

_NUMERIC = {"integer", "decimal"}
_ORDERED = _NUMERIC | {"date", "datetime", "text", "select", "code"}
_TEMPORAL = {"date", "datetime"}
_FIELD_OPS = {
    "sum": _NUMERIC,
    "avg": _NUMERIC,
    "min": _ORDERED,
    "max": _ORDERED,
    "count_distinct": None,  # any kind
}


@dataclass(frozen=True)
class Group:
    field: str
    bucket: str | None = None

    @property
    def key(self) -> str:
        return self.field if self.bucket is None else f"{self.field}:{self.bucket}"


@dataclass(frozen=True)
class Measure:
    op: str
    field: str | None = None

    @property
    def key(self) -> str:
        return self.op if self.field is None else f"{self.op}:{self.field}"


@dataclass(frozen=True)
class AggregateRequest:
    """A checked request, compiled: the SELECT list, GROUP BY and ORDER BY over the entity table."""

    groups: tuple[Group, ...]
    measures: tuple[Measure, ...]
    columns: tuple[tuple[str, str, str], ...]
    """(result key, SQL expression, kind) per output column, groups first."""
    group_sql: tuple[str, ...]
    order_sql: str
    limit: int

    @property
    def group_keys(self) -> list[str]:
        return [key for key, _, _ in self.columns[: len(self.group_sql)]]


def parse_group(item: Any) -> Group:
    if isinstance(item, Group):
        return item
    if not isinstance(item, str) or not item:
        raise ValueError("must be a field name, optionally with a date bucket (close_date:month)")
    field, _, bucket = item.partition(":")
    return Group(field, bucket or None)


def parse_measure(item: Any) -> Measure:
    if isinstance(item, Measure):
        return item
    if not isinstance(item, str) or not item:
        raise ValueError("must be count or op:field (sum:amount)")
    op, _, field = item.partition(":")
    return Measure(op, field or None)


def compile_request(
    entity: Any,
    group_by: Sequence[Any],
    measures: Sequence[Any],
    order_by: Sequence[str] | None,
    limit: int | None,
    hidden: frozenset[str],
    problems: list[Problem],
) -> AggregateRequest | None:
    """Check and compile; appends problems and returns None if there are any."""
    groups: list[Group] = []
    columns: list[tuple[str, str, str]] = []
    group_sql: list[str] = []
    for index, raw in enumerate(_as_list(group_by, "group_by", problems)):
        at = pointer("group_by", index)
        try:
            group = parse_group(raw)
            expression, kind = _group_expression(entity, group, hidden)
        except ValueError as refused:
            problems.append(Problem(at, str(refused)))
            continue
        if group.key in (g.key for g in groups):
            problems.append(Problem(at, f"{group.key}: is already a group"))
            continue
        groups.append(group)
        columns.append((group.key, expression, kind))
        group_sql.append(expression)

    chosen: list[Measure] = []
    measure_columns: list[tuple[str, str, str]] = []
    for index, raw in enumerate(_as_list(measures or ["count"], "measures", problems)):
        at = pointer("measures", index)
        try:
            measure = parse_measure(raw)
            expression, kind, currency_group = _measure_expression(entity, measure, hidden)
        except ValueError as refused:
            problems.append(Problem(at, str(refused)))
            continue
        if measure.key in (m.key for m in chosen):
            problems.append(Problem(at, f"{measure.key}: is already a measure"))
            continue
        chosen.append(measure)
        measure_columns.append((measure.key, expression, kind))
        if currency_group is not None and currency_group.key not in (g.key for g in groups):
            expression, kind = _group_expression(entity, currency_group, hidden)
            groups.append(currency_group)
            columns.append((currency_group.key, expression, kind))
            group_sql.append(expression)

    if problems:
        return None
    columns.extend(measure_columns)
    by_key = {key: (expression, kind) for key, expression, kind in columns}
    order_parts: list[str] = []
    for index, spec in enumerate(_as_list(order_by or [], "order_by", problems)):
        at = pointer("order_by", index)
        if not isinstance(spec, str) or not spec.lstrip("-") in by_key:
            problems.append(Problem(at, f"must name a group or measure of this aggregate ({', '.join(by_key)}), with - for descending"))
            continue
        desc = spec.startswith("-")
        position = list(by_key).index(spec.lstrip("-")) + 1
        order_parts.append(f"{position} {'DESC NULLS LAST' if desc else 'ASC NULLS FIRST'}")
    # Groups in their natural order by default, so a month series reads left to right.
    order_parts.extend(f"{index} ASC NULLS FIRST" for index in range(1, len(group_sql) + 1))
    if limit is None:
        limit = MAX_GROUPS
    elif not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_GROUPS:
        problems.append(Problem("/limit", f"must be a whole number from 1 to {MAX_GROUPS}"))
    if problems:
        return None
    return AggregateRequest(tuple(groups), tuple(chosen), tuple(columns), tuple(group_sql), ", ".join(order_parts), limit)


def _as_list(value: Any, name: str, problems: list[Problem]) -> list[Any]:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, (list, tuple)):
        return list(value)
    problems.append(Problem(f"/{name}", "must be a list"))
    return []


def _field_target(entity: Any, name: str, hidden: frozenset[str]) -> query.Target:
    if name.split(".")[0] in hidden:
        raise ValueError(f"{name.split('.')[0]}: is a sensitive field you may not read, so it cannot be aggregated")
    try:
        return query._target(entity, name)
    except query._Refused as refused:
        raise ValueError(str(refused)) from None


def _group_expression(entity: Any, group: Group, hidden: frozenset[str]) -> tuple[str, str]:
    target = _field_target(entity, group.field, hidden)
    if target.kind in ("json", "long_text", "multiselect"):
        raise ValueError(f"{group.field}: {target.described} cannot be grouped by")
    column = quote_ident(target.column)
    if group.bucket is None:
        return column, target.kind
    if group.bucket not in BUCKETS:
        raise ValueError(f"{group.bucket!r} is not a date bucket; use one of {', '.join(BUCKETS)}")
    if target.kind not in _TEMPORAL:
        raise ValueError(f"{group.field}: only date and datetime fields have {group.bucket} buckets, not {target.described}")
    value = f"({column} AT TIME ZONE 'UTC')" if target.kind == "datetime" else column
    return f"date_trunc('{group.bucket}', {value})::date", "date"


def _measure_expression(entity: Any, measure: Measure, hidden: frozenset[str]) -> tuple[str, str, Group | None]:
    if measure.op not in MEASURES:
        raise ValueError(f"{measure.op!r} is not a measure; use one of {', '.join(MEASURES)}")
    if measure.op == "count":
        if measure.field is not None:
            raise ValueError("count counts records; for the number of different values use count_distinct:field")
        return "count(*)", "integer", None
    if measure.field is None:
        raise ValueError(f"{measure.op} needs a field: {measure.op}:field")
    target = _field_target(entity, measure.field, hidden)
    allowed = _FIELD_OPS[measure.op]
    if allowed is not None and target.kind not in allowed:
        raise ValueError(f"{measure.field}: {measure.op} does not apply to {target.described}")
    column = quote_ident(target.column)
    field = entity.fields.get(measure.field)
    per_currency = Group(f"{measure.field}.currency") if field is not None and field.type.name == "currency" and measure.op != "count_distinct" else None
    if measure.op == "count_distinct":
        return f"count(DISTINCT {column})", "integer", None
    kind = "decimal" if measure.op == "avg" else target.kind
    return f"{measure.op}({column})", kind, per_currency
