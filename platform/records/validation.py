"""The one record validator, used by every entry point (service, import, API).

A record is checked in its JSON form against a JSON Schema 2020-12 document
generated from the entity definition. Python values (date, Decimal, UUID) are
first brought into that JSON form by their field type, so a date object and
"2024-12-31" are validated by exactly the same rules.
"""

from __future__ import annotations

import decimal
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from jsonschema import Draft202012Validator, ValidationError, validators

from ..errors import Problem, pointer
from ..schema.field_types import FieldType, in_utc_range, parse_aware_datetime

if TYPE_CHECKING:
    from ..schema.definition import EntityDefinition, FieldDefinition

__all__ = ["RecordValidator", "record_schema", "unstorable_problems", "value_problems"]


def _scale(validator: Any, scale: int, instance: Any, schema: Mapping[str, Any]) -> Any:
    if isinstance(instance, (int, decimal.Decimal)) and not isinstance(instance, bool):
        exponent = decimal.Decimal(instance).as_tuple().exponent
        if isinstance(exponent, int) and -exponent > scale:
            yield ValidationError(f"has more than {scale} decimal places")


def _precision(validator: Any, precision: int, instance: Any, schema: Mapping[str, Any]) -> Any:
    if isinstance(instance, (int, decimal.Decimal)) and not isinstance(instance, bool):
        scale = schema.get("x-xrm-scale", 0)
        value = decimal.Decimal(instance)
        if value.is_finite() and abs(value) >= decimal.Decimal(10) ** (precision - scale):
            yield ValidationError(f"is too large: at most {precision - scale} digits before the decimal point")


def _finite(validator: Any, enabled: bool, instance: Any, schema: Mapping[str, Any]) -> Any:
    if isinstance(instance, (float, decimal.Decimal)) and not decimal.Decimal(instance).is_finite():
        yield ValidationError("must be a finite number")


def _is_integer(checker: Any, instance: Any) -> bool:
    # JSON Schema: an integer is any number with a zero fractional part. The
    # API parses JSON numbers with a fraction as exact Decimals, so 11.0 arrives
    # as Decimal("11.0") and must count as an integer, as 11.0 (float) does.
    if isinstance(instance, decimal.Decimal):
        return instance.is_finite() and instance == instance.to_integral_value()
    return bool(Draft202012Validator.TYPE_CHECKER.is_type(instance, "integer"))


def _utc_range(validator: Any, enabled: bool, instance: Any, schema: Mapping[str, Any]) -> Any:
    if isinstance(instance, str):
        moment = parse_aware_datetime(instance)
        if moment is not None and not in_utc_range(moment):
            yield ValidationError(f"{instance!r} is out of range (years 1 to 9999, in UTC)")


_Validator = validators.extend(
    Draft202012Validator,
    {"x-xrm-scale": _scale, "x-xrm-precision": _precision, "x-xrm-finite": _finite, "x-xrm-utc-range": _utc_range},
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_integer),
)
_FORMATS = Draft202012Validator.FORMAT_CHECKER


def _field_schema(field: FieldDefinition) -> dict[str, Any]:
    schema = field.value_schema()
    if schema.get("type") == "number":
        schema["x-xrm-finite"] = True
    if schema.get("format") == "date-time":
        schema["x-xrm-utc-range"] = True
    if schema.get("type") == "object" and "properties" in schema and "amount" in schema["properties"]:
        schema["properties"]["amount"]["x-xrm-finite"] = True
    return schema


def record_schema(entity: EntityDefinition) -> dict[str, Any]:
    """The JSON Schema of one record's writable fields (also used for OpenAPI)."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": entity.label(),
        "type": "object",
        "properties": {name: _field_schema(f) for name, f in entity.fields.items()},
        "required": [name for name, f in entity.fields.items() if f.required],
        "additionalProperties": False,
    }


def _message(error: ValidationError) -> str:
    v, value = error.validator, error.validator_value
    if v == "type":
        return f"must be of type {value}"
    if v == "enum":
        shown = ", ".join(map(str, value[:12])) + (", ..." if len(value) > 12 else "")
        return f"{error.instance!r} is not one of the options: {shown}"
    if v == "maxLength":
        return f"is longer than {value} characters"
    if v == "minLength":
        return f"is shorter than {value} characters"
    if v == "pattern":
        return f"{error.instance!r} does not have the expected form"
    if v == "format":
        examples = {"date": "2024-12-31", "date-time": "2024-12-31T17:30:00+01:00", "uuid": "a record id (uuid)", "email": "name@example.com"}
        return f"{error.instance!r} is not a valid {value} (expected e.g. {examples.get(value, value)})"
    if v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        words = {"minimum": "less than", "maximum": "greater than", "exclusiveMinimum": "less than or equal to", "exclusiveMaximum": "greater than or equal to"}
        return f"must not be {words[v]} {value}"
    if v == "uniqueItems":
        return "contains an option twice"
    return error.message


def _problems(validator: Any, data: Mapping[str, Any], prefix: tuple = ()) -> list[Problem]:
    problems = []
    for error in validator.iter_errors(data):
        path = [*prefix, *error.absolute_path]
        if error.validator == "required":
            for name in error.validator_value:
                if name not in error.instance:
                    problems.append(Problem(pointer(*path, name), "is required"))
        elif error.validator == "additionalProperties":
            allowed = set(error.schema.get("properties", {}))
            for name in error.instance:
                if name not in allowed:
                    problems.append(Problem(pointer(*path, name), "is not a field of this entity" if not prefix and not error.absolute_path else "is not allowed here"))
        else:
            problems.append(Problem(pointer(*path), _message(error)))
    return sorted(problems, key=lambda p: p.pointer)


def unstorable_problems(value: Any, path: tuple = ()) -> list[Problem]:
    """Values JSON Schema accepts but PostgreSQL cannot store (they would be a
    server error, not a problem): NUL in text or keys, NaN/Infinity in JSON."""
    if isinstance(value, str):
        return [Problem(pointer(*path), "must not contain the NUL character (\\u0000)")] if "\x00" in value else []
    if isinstance(value, float) and not math.isfinite(value):
        return [Problem(pointer(*path), "must be a finite number")]
    problems = []
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str) and "\x00" in key:
                problems.append(Problem(pointer(*path, key), "a key must not contain the NUL character (\\u0000)"))
            problems.extend(unstorable_problems(item, (*path, key)))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            problems.extend(unstorable_problems(item, (*path, index)))
    return problems


class RecordValidator:
    """Validates records of one entity; built once per definition version."""

    def __init__(self, entity: EntityDefinition) -> None:
        self.entity = entity
        self.schema = record_schema(entity)
        self._validator = _Validator(self.schema, format_checker=_FORMATS)
        self._checked = [name for name, f in entity.fields.items() if type(f.type).check is not FieldType.check]
        """Fields whose type checks more than its JSON Schema says (FieldType.check)."""

    def to_json_form(self, data: Mapping[str, Any]) -> dict[str, Any]:
        fields = self.entity.fields
        return {k: (fields[k].type.to_json(v) if k in fields else v) for k, v in data.items()}

    def problems(self, data: Mapping[str, Any]) -> list[Problem]:
        """Problems of a complete record in JSON form (None means "no value")."""
        # None is "no value" for a field; a name that is no field stays, so
        # {"colour": null} is refused like {"colour": "red"}.
        fields = self.entity.fields
        present = {k: v for k, v in data.items() if v is not None or k not in fields}
        problems = _problems(self._validator, present)
        if self._checked:
            problems = _with_type_checks({n: fields[n] for n in self._checked}, present, problems)
        seen = {p.pointer for p in problems}
        extra = [p for p in unstorable_problems(present, ()) if p.pointer not in seen]
        return sorted(problems + extra, key=lambda p: p.pointer) if extra else problems


def value_problems(field: FieldDefinition, value: Any) -> list[Problem]:
    """Problems of one value of one field (used for defaults)."""
    validator = _Validator(_field_schema(field), format_checker=_FORMATS)
    value = field.type.to_json(value)
    problems = _problems(validator, value)  # type: ignore[arg-type]
    messages = field.type.check(field, value) if value is not None else []
    return [Problem("", m) for m in messages] if messages else problems


def _with_type_checks(fields: Mapping[str, FieldDefinition], present: Mapping[str, Any], problems: list[Problem]) -> list[Problem]:
    """Add what each field type checks beyond JSON Schema (FieldType.check); its messages replace the schema's for that field."""
    for name, value in present.items():
        f = fields.get(name)
        if f is None or value is None:
            continue
        messages = f.type.check(f, value)
        if messages:
            at = pointer(name)
            problems = [p for p in problems if p.pointer != at and not p.pointer.startswith(at + "/")]
            problems.extend(Problem(at, m) for m in messages)
    return sorted(problems, key=lambda p: p.pointer)
