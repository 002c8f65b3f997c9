"""The query language of the one door: filters, sort keys and keyset cursors.

Every entry point (REST API, web UI, export, assistant) lists records through
RecordService.list, which compiles its arguments here:

- a filter is a `Condition(field, op, value)`; values are checked and coerced
  per field type, and only ever reach SQL as bind parameters (identifiers
  come from the entity definition and are quoted);
- a sort is a list of keys "field" / "-field"; `id` is always the final
  tie-breaker, so every sort is a total order;
- a cursor holds the sort-key values of the last row of a page (typed, so
  dates, decimals and uuids come back exactly), and the next page is the
  lexicographic "after" condition over those keys, written as an OR of ANDs
  that respects directions and where PostgreSQL puts NULLs (last ascending,
  first descending). No OFFSET: a page deep in a large table costs what the
  first page costs.

Query strings (`amount[gte]=1000&stage[in]=won,lost`) become conditions with
`parse_filter_params`.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import decimal
import json
import re
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import Problem, ValidationFailed, pointer
from ..identifiers import quote_ident
from ..schema.field_types import ISO_4217, in_utc_range

__all__ = ["Condition", "OPERATORS", "SortKey", "Target", "filter_targets", "is_sortable", "operators_of", "parse_filter_params"]

OPERATORS = ("eq", "ne", "lt", "lte", "gt", "gte", "in", "contains", "starts_with", "is_null")

_ORDERED = ("eq", "ne", "lt", "lte", "gt", "gte", "in", "is_null")
_OPERATORS_BY_KIND: dict[str, tuple[str, ...]] = {
    "text": ("eq", "ne", "lt", "lte", "gt", "gte", "in", "contains", "starts_with", "is_null"),
    "long_text": ("eq", "ne", "in", "contains", "starts_with", "is_null"),
    "select": ("eq", "ne", "in", "is_null"),
    "code": ("eq", "ne", "in", "is_null"),
    "integer": _ORDERED,
    "decimal": _ORDERED,
    "date": _ORDERED,
    "datetime": _ORDERED,
    "boolean": ("eq", "ne", "is_null"),
    "uuid": ("eq", "ne", "in", "is_null"),
    "multiselect": ("eq", "ne", "contains", "is_null"),
    "json": ("is_null",),
}
_SORTABLE_KINDS = frozenset({"text", "select", "integer", "decimal", "date", "datetime", "boolean", "uuid"})
_SORTABLE_SYSTEM = frozenset({"id", "created_at", "updated_at", "version"})
_KIND_OF_TYPE = {
    "text": "text",
    "email": "text",
    "phone": "text",
    "url": "text",
    "long_text": "long_text",
    "select": "select",
    "integer": "integer",
    "decimal": "decimal",
    "currency": "decimal",
    "boolean": "boolean",
    "date": "date",
    "datetime": "datetime",
    "reference": "uuid",
    "multiselect": "multiselect",
    "json": "json",
}
_SYSTEM_KINDS = {
    "id": "uuid",
    "created_at": "datetime",
    "updated_at": "datetime",
    "created_by": "uuid",
    "updated_by": "uuid",
    "owner_id": "uuid",
    "version": "integer",
}
_NOT_NULL_SYSTEM = frozenset({"id", "created_at", "updated_at", "version"})

_INT64 = (-(2**63), 2**63 - 1)
_INT32 = (-(2**31), 2**31 - 1)
_MAX_DECIMAL_DIGITS = 1000
_PARAM_KEY = re.compile(r"^([^\[\]]+)(?:\[([^\[\]]*)\])?$")


@dataclass(frozen=True)
class Condition:
    """One filter: `field op value`, e.g. Condition("amount", "gte", 1000).

    `field` is an entity field or a system field (id, created_at, updated_at,
    created_by, updated_by, owner_id, version); a currency field filters on its
    amount, "<field>.currency" on its code. `op` is one of OPERATORS; `value`
    is a list for "in" and true/false for "is_null". eq None means is_null
    true, ne None is_null false. ne keeps records without a value (a record
    with no stage "is not won").
    """

    field: str
    op: str = "eq"
    value: Any = None


@dataclass(frozen=True)
class Target:
    """Something a condition or sort key is about: one column of the table."""

    name: str
    column: str
    kind: str
    type_name: str
    nullable: bool
    options: tuple[str, ...] | None = None
    bounds: tuple[int, int] = _INT64

    @property
    def described(self) -> str:
        article = "an" if self.type_name[0] in "aeiou" else "a"
        return f"{article} {self.type_name} field"


@dataclass(frozen=True)
class SortKey:
    name: str
    column: str
    kind: str
    desc: bool
    nullable: bool
    bounds: tuple[int, int] = _INT64

    @property
    def spec(self) -> str:
        return ("-" if self.desc else "") + self.name

    @property
    def sql(self) -> str:
        return f"{quote_ident(self.column)} {'DESC' if self.desc else 'ASC'}"


class _Refused(Exception):
    """A value or operator that does not fit (the message says why)."""


# -- targets ---------------------------------------------------------------


def _target(entity: Any, name: Any) -> Target:
    if not isinstance(name, str):
        raise _Refused(f"a field name must be a string, not {name!r}")
    if name in _SYSTEM_KINDS:
        kind = _SYSTEM_KINDS[name]
        bounds = _INT32 if name == "version" else _INT64
        type_name = {"uuid": "id (uuid)"}.get(kind, kind)
        return Target(name, name, kind, type_name, name not in _NOT_NULL_SYSTEM, bounds=bounds)
    base, dot, part = name.partition(".")
    f = entity.fields.get(base)
    if f is None or (dot and (f.type.name != "currency" or part != "currency")):
        raise _Refused(f"unknown field {name!r}")
    if dot:
        codes = f.xrm.get("currencies") or sorted(ISO_4217)
        return Target(name, f.columns()[1].name, "code", "currency code", True, tuple(codes))
    kind = _kind_of(f.type)
    options = None
    if kind == "select":
        options = tuple(f.schema["enum"])
    elif kind == "multiselect":
        options = tuple(f.type.options(f))
    # Entity columns count as nullable even when required: a wrong "no NULLs"
    # would make the cursor skip rows, a wrong "NULLs possible" costs nothing.
    return Target(name, f.columns()[0].name, kind, f.type.name, True, options)


_KIND_OF_JSON_TYPE = {"string": "text", "integer": "integer", "number": "decimal", "boolean": "boolean", "object": "json", "array": "json"}


def _kind_of(field_type: Any) -> str:
    """The query kind of a field type: built-ins by name, others as they declare (query_kind) or by JSON type."""
    kind = _KIND_OF_TYPE.get(field_type.name) or field_type.query_kind or _KIND_OF_JSON_TYPE.get(field_type.json_type)
    return kind or "json"


def filter_targets(entity: Any) -> list[Target]:
    """Everything a list can be filtered on: system fields, entity fields, currency codes.

    The OpenAPI document describes its query parameters from this list, so
    the spec and the parser cannot drift apart.
    """
    names = list(_SYSTEM_KINDS) + list(entity.fields)
    names += [f"{name}.currency" for name, f in entity.fields.items() if f.type.name == "currency"]
    return [_target(entity, name) for name in names]


def operators_of(target: Target) -> tuple[str, ...]:
    """The operators a filter on this target accepts."""
    return _OPERATORS_BY_KIND[target.kind]


def is_sortable(target: Target) -> bool:
    if target.name in _SYSTEM_KINDS:
        return target.name in _SORTABLE_SYSTEM
    return target.kind in _SORTABLE_KINDS and "." not in target.name


# -- values ----------------------------------------------------------------


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _options_message(value: Any, options: Sequence[str]) -> str:
    listed = ", ".join(options[:12]) + (", ..." if len(options) > 12 else "")
    return f"{_shown(value)} is not one of the options: {listed}"


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise _Refused(f"{_shown(value)} is not text")
    if "\x00" in value:
        raise _Refused("must not contain the NUL character (\\u0000)")
    return value


def _integer(value: Any, bounds: tuple[int, int]) -> int:
    number: int | None = None
    if isinstance(value, bool):
        number = None
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, decimal.Decimal) and value.is_finite() and value == value.to_integral_value():
        number = int(value)
    elif isinstance(value, str) and re.fullmatch(r"\s*[+-]?[0-9]{1,30}\s*", value):
        number = int(value)
    if number is None:
        raise _Refused(f"{_shown(value)} is not a whole number")
    if not bounds[0] <= number <= bounds[1]:
        raise _Refused(f"{_shown(value)} is out of range ({bounds[0]} to {bounds[1]})")
    return number


def _decimal(value: Any) -> decimal.Decimal:
    number: decimal.Decimal | None = None
    if isinstance(value, bool):
        number = None
    elif isinstance(value, (int, decimal.Decimal)):
        number = decimal.Decimal(value)
    elif isinstance(value, float):
        number = decimal.Decimal(repr(value))
    elif isinstance(value, str) and len(value) <= 2 * _MAX_DECIMAL_DIGITS:
        try:
            number = decimal.Decimal(value.strip())
        except decimal.InvalidOperation:
            number = None
    if number is None or not number.is_finite():
        raise _Refused(f"{_shown(value)} is not a number")
    if number and (abs(number.adjusted()) > _MAX_DECIMAL_DIGITS or len(number.as_tuple().digits) > _MAX_DECIMAL_DIGITS):
        raise _Refused(f"{_shown(value)} is out of range")
    return number


def _date(value: Any) -> dt.date:
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise _Refused(f"{_shown(value)} is not a valid date (expected e.g. 2024-12-31)")


def _datetime(value: Any) -> dt.datetime:
    moment: dt.datetime | None = None
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = dt.datetime.fromisoformat(value.strip().replace("z", "Z").replace("Z", "+00:00"))
        except ValueError:
            moment = None
    if moment is None:
        raise _Refused(f"{_shown(value)} is not a valid date-time (expected e.g. 2024-12-31T17:30:00+01:00)")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise _Refused(f"{_shown(value)} has no time zone: add an offset, e.g. 2024-12-31T00:00:00+01:00")
    if not in_utc_range(moment):
        raise _Refused(f"{_shown(value)} is out of range (years 1 to 9999, in UTC)")
    return moment


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise _Refused(f"{_shown(value)} is not true or false")


def _uuid(value: Any) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str):
        try:
            return uuid.UUID(value.strip())
        except ValueError:
            pass
    raise _Refused(f"{_shown(value)} is not a valid record id (uuid)")


def _option(value: Any, options: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in options:
        raise _Refused(_options_message(value, options))
    return value


def _scalar(target: Target, value: Any) -> Any:
    """One value of the target's type (eq, lt, ..., an item of "in")."""
    kind = target.kind
    if kind in ("text", "long_text"):
        return _text(value)
    if kind in ("select", "code", "multiselect"):
        return _option(value, target.options or ())
    if kind == "integer":
        return _integer(value, target.bounds)
    if kind == "decimal":
        return _decimal(value)
    if kind == "date":
        return _date(value)
    if kind == "datetime":
        return _datetime(value)
    if kind == "boolean":
        return _boolean(value)
    if kind == "uuid":
        return _uuid(value)
    raise _Refused(f"{target.described} cannot be compared")  # json: is_null only


def _listed(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple, set, frozenset)):
        return list(value)
    raise _Refused(f"needs a list of values, not {_shown(value)}")


def _coerce(target: Target, op: str, value: Any) -> Any:
    """The checked value of one condition (raises _Refused)."""
    if op == "is_null":
        return _boolean(value)
    if op == "in":
        items = _listed(value)
        if any(item is None for item in items):
            raise _Refused("a list for in cannot hold null; combine with is_null instead")
        return [_scalar(target, item) for item in items]
    if value is None:
        if op in ("eq", "ne"):
            return None
        raise _Refused("needs a value")
    if target.kind == "multiselect":
        items = [value] if isinstance(value, str) else _listed(value)
        return [_option(item, target.options or ()) for item in items]
    if op in ("contains", "starts_with"):
        return _text(value)
    return _scalar(target, value)


def check_operator(target: Target, op: Any) -> None:
    if op not in OPERATORS:
        raise _Refused(f"{target.name}: unknown operator {_shown(op)}; operators are {', '.join(OPERATORS)}")
    allowed = _OPERATORS_BY_KIND[target.kind]
    if op not in allowed:
        raise _Refused(
            f"{target.name}: {op} does not apply to {target.described}; possible operators: {', '.join(allowed)}"
        )


def _like_pattern(text: str, *, prefix: bool) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%" if prefix else "%" + escaped + "%"


# -- SQL for conditions ------------------------------------------------------


def _condition_sql(target: Target, op: str, value: Any, params: list[Any]) -> str:
    column = quote_ident(target.column)

    def bind(v: Any) -> str:
        params.append(v)
        return f"${len(params)}"

    if target.kind == "multiselect":
        # No options chosen (NULL or an empty list) counts as "no value".
        empty, chosen = f"({column} IS NULL OR cardinality({column}) = 0)", f"cardinality({column}) > 0"
        if op == "is_null":
            return empty if value else chosen
        if value is None:
            return empty if op == "eq" else chosen
        if op == "contains":
            return f"{column} @> {bind(value)}::text[]"
        placeholder = bind(value)
        same = f"({column} @> {placeholder}::text[] AND {column} <@ {placeholder}::text[])"
        return same if op == "eq" else f"({column} IS NULL OR NOT {same})"

    if op == "is_null":
        return f"{column} IS NULL" if value else f"{column} IS NOT NULL"
    if value is None:  # eq / ne null
        return f"{column} IS NULL" if op == "eq" else f"{column} IS NOT NULL"
    if op == "eq":
        return f"{column} = {bind(value)}"
    if op == "ne":
        return f"{column} IS DISTINCT FROM {bind(value)}"
    if op in ("lt", "lte", "gt", "gte"):
        symbol = {"lt": "<", "lte": "<=", "gt": ">", "gte": ">="}[op]
        return f"{column} {symbol} {bind(value)}"
    if op == "in":
        return f"{column} = ANY({bind(list(value))})"
    if op in ("contains", "starts_with"):
        return f"{column} ILIKE {bind(_like_pattern(value, prefix=op == 'starts_with'))}"
    raise AssertionError(op)  # pragma: no cover - check_operator ran before


def _as_condition(item: Any) -> Condition:
    if isinstance(item, Condition):
        return item
    if isinstance(item, Mapping) and "field" in item and set(item) <= {"field", "op", "value"}:
        return Condition(item["field"], item.get("op", "eq"), item.get("value"))
    if isinstance(item, (list, tuple)) and len(item) in (2, 3):
        return Condition(item[0], item[1] if len(item) == 3 else "eq", item[-1])
    raise _Refused("a condition must be Condition(field, op, value) or {field, op, value}")


def _compiled(entity: Any, condition: Condition) -> tuple[Target, str, Any]:
    target = _target(entity, condition.field)
    check_operator(target, condition.op)
    try:
        value = _coerce(target, condition.op, condition.value)
    except _Refused as refused:
        raise _Refused(f"{target.name} {condition.op}: {refused}") from None
    return target, condition.op, value


def where_sql(entity: Any, where: Any, params: list[Any], problems: list[Problem]) -> list[str]:
    """SQL predicates (bind parameters appended to `params`) for `where`.

    `where` is a Mapping {field: value} (equality; problems at /where/<field>)
    or a list of conditions (problems at /where/<index>).
    """
    if where is None:
        return []
    items: list[tuple[str, Any]]
    if isinstance(where, Mapping):
        items = [(pointer("where", name), Condition(name, "eq", value)) for name, value in where.items()]
    elif isinstance(where, (list, tuple)):
        items = [(pointer("where", index), c) for index, c in enumerate(where)]
    else:
        problems.append(Problem("/where", "must be {field: value} or a list of conditions"))
        return []
    predicates = []
    for at, item in items:
        try:
            target, op, value = _compiled(entity, _as_condition(item))
        except _Refused as refused:
            problems.append(Problem(at, str(refused)))
            continue
        predicates.append(_condition_sql(target, op, value, params))
    return predicates


def parse_filter_params(entity: Any, params: Mapping[str, str | list[str]], hidden: Collection[str] = ()) -> list[Condition]:
    """Conditions from query-string filters: `field=value` (eq) or `field[op]=value`.

    `params` holds only filter keys (the caller takes its own keys, such as
    sort or limit, out first). "in" takes a comma-separated list
    (`stage[in]=won,lost`), "is_null" true or false; a multiselect value is a
    comma-separated set of options (`colours[contains]=red,blue`: both). A key
    given several times gives one condition per value (all must hold), except
    "in", whose lists are joined. Values are checked and coerced as
    RecordService.list checks them, so problems point at the parameter:
    pointer "/amount[gte]". A key that is no filter is a problem too, and so
    is a filter on a `hidden` field (sensitive, not readable by the caller).
    """
    conditions: list[Condition] = []
    problems: list[Problem] = []
    for key, raw in params.items():
        at = pointer(key)
        values = [raw] if isinstance(raw, str) else list(raw)
        match = _PARAM_KEY.match(key) if isinstance(key, str) else None
        if match is None:
            problems.append(Problem(at, "is not a filter: write field=value or field[operator]=value"))
            continue
        name, op = match.group(1), match.group(2) if match.group(2) is not None else "eq"
        if name.split(".")[0] in hidden:
            problems.append(Problem(at, f"{name.split('.')[0]}: is a sensitive field you may not read, so it cannot be filtered on"))
            continue
        try:
            target = _target(entity, name)
            check_operator(target, op)
            if not all(isinstance(v, str) for v in values):
                raise _Refused(f"{name} {op}: values must be text")
            if op == "in":
                items = [item for v in values for item in v.split(",")]
                conditions.append(Condition(name, op, _coerce_named(target, op, items)))
                continue
            for v in values:
                # A multiselect value is a set of options: colours=red,blue.
                value = v.split(",") if target.kind == "multiselect" and op != "is_null" else v
                conditions.append(Condition(name, op, _coerce_named(target, op, value)))
        except _Refused as refused:
            problems.append(Problem(at, str(refused)))
    if problems:
        raise ValidationFailed(entity.name, problems)
    return conditions


def _coerce_named(target: Target, op: str, value: Any) -> Any:
    try:
        return _coerce(target, op, value)
    except _Refused as refused:
        raise _Refused(f"{target.name} {op}: {refused}") from None


# -- sorting -----------------------------------------------------------------

DEFAULT_ORDER = ("created_at",)


def parse_order(entity: Any, order_by: Any, problems: list[Problem]) -> list[SortKey]:
    """Sort keys for `order_by` ("field" / "-field", ...), id appended as tie-breaker.

    The tie-breaker takes the direction of the last key, so "-created_at"
    reads the (created_at, id) index backwards.
    """
    if order_by is None or (isinstance(order_by, (list, tuple)) and not order_by):
        order_by = list(DEFAULT_ORDER)
    elif isinstance(order_by, str):
        order_by = [part.strip() for part in order_by.split(",") if part.strip()]
    elif not isinstance(order_by, (list, tuple)):
        problems.append(Problem("/order_by", 'must be a list of sort keys such as ["-amount", "name"]'))
        return []
    keys: list[SortKey] = []
    seen: set[str] = set()
    for index, spec in enumerate(order_by):
        at = pointer("order_by", index)
        if not isinstance(spec, str) or not spec.lstrip("-+"):
            problems.append(Problem(at, f"{_shown(spec)} is not a sort key (write field or -field)"))
            continue
        desc = spec.startswith("-")
        name = spec[1:] if spec[:1] in "-+" else spec
        try:
            target = _target(entity, name)
        except _Refused as refused:
            problems.append(Problem(at, str(refused)))
            continue
        system = name in _SYSTEM_KINDS
        if (system and name not in _SORTABLE_SYSTEM) or (not system and target.kind not in _SORTABLE_KINDS) or "." in name:
            what = f"the system field {name}" if system else target.described
            problems.append(Problem(at, f"{name}: records cannot be sorted by {what}"))
            continue
        if name in seen:
            problems.append(Problem(at, f"{name}: is sorted by twice"))
            continue
        seen.add(name)
        keys.append(SortKey(name, target.column, target.kind, desc, target.nullable, target.bounds))
        if name == "id":
            break  # id is unique: later keys could never decide anything
    if keys and keys[-1].name != "id":
        keys.append(SortKey("id", "id", "uuid", keys[-1].desc, False))
    return keys


def order_sql(keys: Sequence[SortKey]) -> str:
    return ", ".join(k.sql for k in keys)


# -- cursors -----------------------------------------------------------------

_TAGS = {"datetime": "t", "date": "d", "decimal": "n", "integer": "i", "uuid": "u", "text": "s", "select": "s", "boolean": "b"}
_DECODERS: dict[str, Callable[[Any, SortKey], Any]] = {
    "t": lambda v, key: _datetime(v) if isinstance(v, str) else _bad(),
    "d": lambda v, key: _date(v) if isinstance(v, str) else _bad(),
    "n": lambda v, key: _decimal(v) if isinstance(v, str) else _bad(),
    "i": lambda v, key: _integer(v, key.bounds) if isinstance(v, int) and not isinstance(v, bool) else _bad(),
    "u": lambda v, key: _uuid(v) if isinstance(v, str) else _bad(),
    "s": lambda v, key: _text(v),
    "b": lambda v, key: v if isinstance(v, bool) else _bad(),
}


def _bad() -> Any:
    raise ValueError("not a cursor value")


def _encoded_value(kind: str, value: Any) -> Any:
    if value is None:
        return None
    tag = _TAGS[kind]
    if tag in ("t", "d"):
        return [tag, value.isoformat()]
    if tag in ("n", "u"):
        return [tag, str(value)]
    return [tag, value]


def encode_cursor(keys: Sequence[SortKey], values: Sequence[Any]) -> str:
    """Opaque urlsafe base64 of {"o": sort specs, "k": typed key values}."""
    document = {"o": [k.spec for k in keys], "k": [_encoded_value(k.kind, v) for k, v in zip(keys, values)]}
    raw = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: Any, keys: Sequence[SortKey], problems: list[Problem]) -> list[Any] | None:
    """The key values a cursor holds, or None (and a problem at /after)."""
    try:
        if not isinstance(cursor, str) or len(cursor) > 20_000:
            raise ValueError("not a string")
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        document = json.loads(raw)
        specs, encoded = document["o"], document["k"]
        if not isinstance(specs, list) or not isinstance(encoded, list):
            raise ValueError("malformed")
    except (ValueError, TypeError, KeyError, binascii.Error, UnicodeDecodeError):
        problems.append(Problem("/after", "is not a cursor this service issued"))
        return None
    expected = [k.spec for k in keys]
    if specs != expected:
        shown = ", ".join(str(s) for s in specs)
        problems.append(
            Problem(
                "/after",
                f"was issued for the sort order {shown} and cannot continue the sort order "
                f"{', '.join(expected)}; start again without after",
            )
        )
        return None
    values: list[Any] = []
    try:
        if len(encoded) != len(keys):
            raise ValueError("wrong length")
        for key, item in zip(keys, encoded):
            if item is None:
                if not key.nullable:
                    raise ValueError("null for a key that has no nulls")
                values.append(None)
                continue
            if not isinstance(item, list) or len(item) != 2 or item[0] != _TAGS[key.kind]:
                raise ValueError("wrong type")
            values.append(_DECODERS[item[0]](item[1], key))
    except (ValueError, TypeError, ArithmeticError, _Refused):
        problems.append(Problem("/after", "is not a cursor this service issued"))
        return None
    return values


def keyset_conditions(keys: Sequence[SortKey], values: Sequence[Any], params: list[Any]) -> list[tuple[str, list[Any]]]:
    """The rows after `values` in the `keys` order, as conditions to query in turn.

    The lexicographic "after" is an OR of ANDs: for each key i, the keys
    before it equal and key i strictly after. "Strictly after" follows
    PostgreSQL's NULL placement (last ascending, first descending):
    ascending after v is `> v OR IS NULL`, after NULL nothing; descending
    after v is `< v`, after NULL `IS NOT NULL`.

    So that an index on the first key is used (a deep page costs what the
    first costs), the ANDs are split by the region of the first key they
    fall in: its values, or its NULLs. Each region gets a range an index scan
    can start at (`(a, id) > (v, w)`, `a >= v`, `a <= v`, `a IS NULL`); a
    single `a >= v OR a IS NULL` would be no index range. The regions come in
    sort order (NULLs last ascending, first descending), each with its own
    copy of `params` plus the cursor values it binds: query them in turn
    until the page is full. Usually the first region fills it.
    """
    regions = ("value", "null") if not keys[0].desc else ("null", "value")
    arms = []
    for region in regions:
        arm_params = list(params)
        condition = _region_condition(keys, values, region, arm_params)
        if condition is not None:
            arms.append((condition, arm_params))
    return arms or [("FALSE", list(params))]


def _region_condition(keys: Sequence[SortKey], values: Sequence[Any], region: str, params: list[Any]) -> str | None:
    columns = [quote_ident(k.column) for k in keys]
    bound: dict[int, str] = {}

    def placeholder(i: int) -> str:
        if i not in bound:
            params.append(values[i])
            bound[i] = f"${len(params)}"
        return bound[i]

    def equal(i: int) -> str:
        return f"{columns[i]} IS NULL" if values[i] is None else f"{columns[i]} = {placeholder(i)}"

    def after(i: int) -> list[str]:
        if values[i] is None:
            return [f"{columns[i]} IS NOT NULL"] if keys[i].desc else []
        if keys[i].desc:
            return [f"{columns[i]} < {placeholder(i)}"]
        return [f"{columns[i]} > {placeholder(i)}"] + ([f"{columns[i]} IS NULL"] if keys[i].nullable else [])

    first = columns[0]
    if region == "value":
        if values[0] is None:
            # After a NULL: descending, every value is still to come.
            return f"{first} IS NOT NULL" if keys[0].desc else None
        # A row comparison over the leading keys that run in the first key's
        # direction and hold no NULLs: an index range on (a, id, ...) or on
        # (a). Over all keys, as for (created_at, id), it is the condition.
        n = 1
        while n < len(keys) and keys[n].desc == keys[0].desc and not keys[n].nullable:
            n += 1
        exact = n == len(keys)
        operator = ("<" if keys[0].desc else ">") + ("" if exact else "=")
        left = first if n == 1 else f"({', '.join(columns[:n])})"
        right = placeholder(0) if n == 1 else f"({', '.join(placeholder(i) for i in range(n))})"
        if exact:
            return f"{left} {operator} {right}"
        alternatives = [[f"{first} > {placeholder(0)}" if not keys[0].desc else f"{first} < {placeholder(0)}"]]
    else:
        if values[0] is None:
            alternatives = []  # the first key is NULL and stays NULL: decided by the keys after it
        elif keys[0].nullable and not keys[0].desc:
            return f"{first} IS NULL"  # ascending: every NULL comes after a value
        else:
            return None
        left, operator, right = first, "IS", "NULL"
    # The first key equal to the cursor's, a later key i strictly after.
    for i in range(1, len(keys)):
        prefix = [equal(j) for j in range(i)]
        alternatives.extend(prefix + [alternative] for alternative in after(i))
    if not alternatives:
        return None
    ored = " OR ".join("(" + " AND ".join(terms) + ")" for terms in alternatives)
    return f"{left} {operator} {right} AND ({ored})"


# -- fields and expand -------------------------------------------------------


def field_selection(entity: Any, fields: Any, system_fields: Sequence[str], problems: list[Problem]) -> list[str] | None:
    """Names to return (id and version first), or None for all."""
    if fields is None:
        return None
    if isinstance(fields, str):
        fields = [part.strip() for part in fields.split(",") if part.strip()]
    if not isinstance(fields, (list, tuple)):
        problems.append(Problem("/fields", "must be a list of field names"))
        return None
    names = ["id", "version"]
    for index, name in enumerate(fields):
        if not isinstance(name, str) or (name not in entity.fields and name not in system_fields):
            problems.append(Problem(pointer("fields", index), f"unknown field {_shown(name)}"))
        elif name not in names:
            names.append(name)
    return names


def expand_selection(entity: Any, expand: Any, problems: list[Problem], others: Sequence[str] = ()) -> list[str]:
    """Reference fields (and `others`: what plugins offer, e.g. links) whose records to add as "<name>_expanded"."""
    if expand is None:
        return []
    if isinstance(expand, str):
        expand = [part.strip() for part in expand.split(",") if part.strip()]
    if not isinstance(expand, (list, tuple)):
        problems.append(Problem("/expand", "must be a list of reference field names"))
        return []
    names: list[str] = []
    for index, name in enumerate(expand):
        at = pointer("expand", index)
        f = entity.fields.get(name) if isinstance(name, str) else None
        if f is None and name in others:
            if f"{name}_expanded" in entity.fields:
                problems.append(Problem(at, f"{name}: cannot be expanded, the entity has a field {name}_expanded"))
            elif name not in names:
                names.append(name)
        elif f is None:
            offered = [n for n, g in entity.fields.items() if g.type.name == "reference"] + [n for n in others if n not in entity.fields]
            problems.append(Problem(at, f"unknown field {_shown(name)}" + (f"; expandable: {', '.join(offered)}" if offered else "")))
        elif f.type.name != "reference":
            problems.append(Problem(at, f"{name}: only reference fields can be expanded, this is {_target(entity, name).described}"))
        elif f"{name}_expanded" in entity.fields:
            problems.append(Problem(at, f"{name}: cannot be expanded, the entity has a field {name}_expanded"))
        elif name not in names:
            names.append(name)
    return names
