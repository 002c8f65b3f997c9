"""Field values as people read them: labels from the definitions, numbers and dates per language."""

from __future__ import annotations

import datetime as dt
import decimal
from typing import Any

from markupsafe import Markup, escape

from xrm.registry import CompiledEntity
from xrm.schema.definition import FieldDefinition

from .i18n import Translator

__all__ = ["display_name", "field_label", "format_value", "option_label"]


def field_label(f: FieldDefinition, language: str) -> str:
    return f.label(language)


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
    value = record.get(f.name)
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
