"""Field values as people read them: labels from the definitions, numbers and dates per language."""

from __future__ import annotations

import datetime as dt
import decimal
from typing import Any

from markupsafe import Markup, escape

from xrm.registry import CompiledEntity
from xrm.schema.definition import EntityDefinition, FieldDefinition

from .i18n import Translator

__all__ = ["display_name", "entity_label", "field_label", "format_value", "option_label", "plain_text", "value_text"]


def field_label(f: FieldDefinition, language: str) -> str:
    return f.label(language)


def entity_label(definition: EntityDefinition, language: str, plural: bool = False) -> str:
    """The entity's name in the language (EntityDefinition.label holds the plural rules)."""
    return definition.label(language, plural=plural)


def option_label(f: FieldDefinition, option: str, language: str) -> str:
    labels = f.xrm.get("option_labels", {}).get(option) or {}
    return labels.get(language) or labels.get("en") or option


def display_name(entity: CompiledEntity, record: dict[str, Any] | None) -> str:
    """What names a record: its display field, else the start of its id."""
    if not record:
        return ""
    name = entity.definition.display_field
    value = record.get(name) if name else None
    return str(value) if value not in (None, "") else str(record.get("id", ""))[:8]


def format_value(t: Translator, entity: CompiledEntity, f: FieldDefinition, record: dict[str, Any], registry: Any) -> Markup:
    """HTML for one field of a record (escaped: record text is never markup)."""
    value = _typed(f, record.get(f.name))
    if value is None or value == "" or value == []:
        return Markup("")
    kind = f.type.name
    if kind == "reference":
        target = registry.get(f.references) if f.references in registry else None
        expanded = record.get(f"{f.name}_expanded")
        text = display_name(target, expanded) if target and expanded else str(value)[:8]
        return Markup('<a href="/e/{}/{}">{}</a>').format(f.references, value, text)
    if kind == "select":
        return escape(option_label(f, value, t.language))
    if kind == "multiselect":
        return escape(", ".join(option_label(f, v, t.language) for v in value))
    if kind == "boolean":
        return escape(t.gettext("Yes") if value else t.gettext("No"))
    if kind == "currency":
        return escape(t.money(value["amount"], value["currency"]))
    if kind == "decimal" and isinstance(value, decimal.Decimal):
        return escape(t.number(value, places=_places(f, value)))
    if kind in ("integer", "decimal"):
        return escape(t.number(value if isinstance(value, (int, decimal.Decimal)) else decimal.Decimal(str(value))))
    if kind == "date" and isinstance(value, dt.date):
        return escape(t.date(value))
    if kind == "datetime" and isinstance(value, dt.datetime):
        return escape(t.datetime(value))
    if kind == "email":
        return Markup('<a href="mailto:{0}">{0}</a>').format(value)
    if kind == "phone":
        return Markup('<a href="tel:{}">{}</a>').format("".join(c for c in value if c.isdigit() or c == "+"), value)
    if kind == "url":
        return Markup('<a href="{0}" rel="noopener noreferrer nofollow">{0}</a>').format(value)
    if kind == "json":
        import json

        return Markup("<code>{}</code>").format(json.dumps(value, ensure_ascii=False, default=str)[:200])
    return escape(f.type.display_text(f, value))  # text types, and a plugin's own (e.g. an IBAN in groups of four)


def value_text(t: Translator, entity: CompiledEntity, f: FieldDefinition, value: Any, registry: Any) -> str:
    """A value as plain text, formatted as the detail page formats it (format_value), "—" for none.

    For the history timeline, whose values are in JSON form ("2026-12-01", "12500.50", true). A
    value that does not fit the field's type (the field's type changed since, or the value was
    redacted) is shown as it is.
    """
    if value is None or value == "" or value == []:
        return "—"
    if not _fits(f, _typed(f, value)):
        return plain_text(value)
    shown = format_value(t, entity, f, {f.name: value}, registry)
    # Links and code: their text; anything else is escaped text, taken back as it is (line breaks and all).
    return (shown.striptags() if f.type.name in ("reference", "email", "phone", "url", "json") else shown.unescape()) or "—"


def plain_text(value: Any) -> str:
    """Any JSON value as text, with no field to say how to show it."""
    if value is None:
        return "—"
    if isinstance(value, dict) and "amount" in value:
        return f"{value['amount']} {value.get('currency', '')}"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)


_PYTHON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str, dt.date), "integer": (int,), "number": (int, float, decimal.Decimal), "boolean": (bool,),
    "array": (list, tuple), "object": (dict,),
}


def _fits(f: FieldDefinition, value: Any) -> bool:
    """Whether a value (as _typed made it) is of the field's JSON type (a date counts as a string)."""
    expected = _PYTHON_TYPES.get(f.type.json_type)
    if expected is None:
        return True
    if isinstance(value, bool) and f.type.json_type != "boolean":
        return False
    if f.type.name == "currency":
        return isinstance(value, dict) and isinstance(value.get("amount"), decimal.Decimal) and isinstance(value.get("currency"), str)
    return isinstance(value, expected)


def _typed(f: FieldDefinition, value: Any) -> Any:
    """A value in JSON form (the audit trail's, a form's) as the Python value a record holds; unchanged if it is not one."""
    kind = f.type.name
    try:
        if kind == "date" and isinstance(value, str):
            return dt.date.fromisoformat(value)
        if kind == "datetime" and isinstance(value, str):
            moment = dt.datetime.fromisoformat(value.strip().replace("z", "Z").replace("Z", "+00:00"))
            return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)
        if kind == "decimal" and isinstance(value, (str, float)) and not isinstance(value, bool):
            number = decimal.Decimal(str(value))
            return number if number.is_finite() else value
        if kind == "currency" and isinstance(value, dict) and not isinstance(value.get("amount"), decimal.Decimal):
            amount = decimal.Decimal(str(value["amount"]))
            return {**value, "amount": amount} if amount.is_finite() and isinstance(value.get("currency"), str) else value
    except (ValueError, TypeError, KeyError, decimal.InvalidOperation):
        return value
    return value


def _places(f: FieldDefinition, value: decimal.Decimal) -> int:
    """Decimal places to show: the field's scale, else as many as the value has (12500.50 stays 12.500,50)."""
    scale = f.xrm.get("scale")
    if isinstance(scale, int) and not isinstance(scale, bool) and scale >= 0:
        return scale
    exponent = value.as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0
