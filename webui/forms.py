"""Forms from the entity definition: one widget per field type, and the way back to JSON values.

The server-side validator is the one the API uses (RecordService); this module
only turns form text into JSON values (and says which field could not be
read), and keeps what the user typed so an error never loses their input.
"""

from __future__ import annotations

import decimal
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from xrm.errors import Problem, pointer
from xrm.schema.definition import FieldDefinition

from .display import option_label
from .i18n import translator

__all__ = ["Widget", "parse_form", "widgets"]

INPUT_TYPES = {"text": "text", "email": "email", "phone": "tel", "url": "url", "date": "date", "datetime": "datetime-local"}


@dataclass
class Widget:
    """One field in a form: what to draw and what the user typed."""

    name: str
    kind: str
    """text, textarea, number, checkbox, select, checkboxes, currency, reference, json."""
    label: str
    required: bool
    help: str
    value: Any
    """The value as the input shows it (text), or a list for checkboxes."""
    error: str = ""
    disabled: bool = False
    input_type: str = "text"
    options: list[tuple[str, str]] = field(default_factory=list)
    attributes: dict[str, Any] = field(default_factory=dict)
    currency: str = ""
    reference_label: str = ""
    references: str = ""


def _as_text(f: FieldDefinition, value: Any) -> Any:
    """A stored value as the input shows it."""
    if value is None:
        return "" if f.type.name not in ("multiselect",) else []
    kind = f.type.name
    if kind == "datetime" and hasattr(value, "strftime"):
        return value.strftime("%Y-%m-%dT%H:%M")
    if kind == "date" and hasattr(value, "isoformat"):
        return value.isoformat()
    if kind == "currency":
        return str(value["amount"])
    if kind == "json":
        return json.dumps(value, ensure_ascii=False, indent=2)
    if kind in ("multiselect",):
        return list(value)
    return f.type.display_text(f, value) if not isinstance(value, bool) else value


def widgets(
    fields: Mapping[str, FieldDefinition], language: str, *, values: Mapping[str, Any], raw: Mapping[str, Any] | None = None,
    errors: Mapping[str, str] | None = None, read_only: frozenset[str] = frozenset(), reference_labels: Mapping[str, str] | None = None,
) -> list[Widget]:
    """Widgets for these fields; `raw` (what the user sent) wins over the stored `values`.

    `errors` are the messages by field as the validator (or parse_form) wrote them, in English;
    each widget shows its message in the language (Translator.problem).
    """
    raw, errors, reference_labels = raw or {}, errors or {}, reference_labels or {}
    t = translator(language)
    result = []
    for name, f in fields.items():
        kind = f.type.name
        help_text = (f.xrm.get("help") or {}).get(language) or (f.xrm.get("help") or {}).get("en") or ""
        widget = Widget(name, "text", f.label(language), f.required, help_text, raw.get(name, _as_text(f, values.get(name))),
                        t.problem(errors.get(name, "")), name in read_only, INPUT_TYPES.get(kind, "text"))
        schema = f.schema
        if kind in ("text", "email", "phone", "url"):
            widget.attributes = {"maxlength": schema.get("maxLength", 500), "minlength": schema.get("minLength")}
            if f.xrm.get("widget") == "textarea":
                widget.kind = "textarea"
        elif kind == "long_text":
            widget.kind = "textarea"
            widget.attributes = {"maxlength": schema.get("maxLength", 100_000)}
        elif kind in ("integer", "decimal"):
            widget.kind, widget.input_type = "number", "number"
            scale = f.xrm.get("scale")
            step = "1" if kind == "integer" else ("any" if scale is None else str(decimal.Decimal(1).scaleb(-int(scale))))
            widget.attributes = {"step": step, "min": schema.get("minimum"), "max": schema.get("maximum")}
        elif kind == "currency":
            widget.kind = "currency"
            stored = values.get(name)
            widget.currency = raw.get(f"{name}__currency", stored["currency"] if stored else (f.xrm.get("currencies") or ["EUR"])[0])
            widget.options = [(c, c) for c in (f.xrm.get("currencies") or ["EUR", "USD", "GBP", "CHF"])]
            widget.attributes = {"step": str(decimal.Decimal(1).scaleb(-int(f.xrm.get("scale", 2)))), "min": schema.get("minimum")}
        elif kind == "boolean":
            widget.kind = "checkbox"
            widget.value = raw.get(name, "true" if values.get(name) else "") in ("true", True)
        elif kind == "select":
            widget.kind = "select"
            widget.options = [(o, option_label(f, o, language)) for o in schema["enum"]]
        elif kind == "multiselect":
            widget.kind = "checkboxes"
            widget.options = [(o, option_label(f, o, language)) for o in schema["items"]["enum"]]
        elif kind == "reference":
            widget.kind = "reference"
            widget.references = f.references or ""
            widget.reference_label = raw.get(f"{name}__search", reference_labels.get(name, ""))
        elif kind == "json":
            widget.kind = "textarea"
            widget.attributes = {"spellcheck": "false"}
        elif kind not in INPUT_TYPES:  # a plugin's type: its own hints (FieldType.form_widget)
            hint = f.type.form_widget(f)
            widget.kind = "textarea" if hint.get("kind") == "textarea" else "text"
            widget.input_type = hint.get("input_type", "text")
            widget.attributes = dict(hint.get("attributes", {}))
        result.append(widget)
    return result


def parse_form(fields: Mapping[str, FieldDefinition], form: Any, *, only_sent: bool = False) -> tuple[dict[str, Any], dict[str, Any], list[Problem]]:
    """(JSON values, the raw texts, problems) from a submitted form; an empty input is "no value" (None)."""
    values: dict[str, Any] = {}
    raw: dict[str, Any] = {}
    problems: list[Problem] = []
    for name, f in fields.items():
        kind = f.type.name
        if kind == "multiselect":
            chosen = [v for v in form.getall(name, []) if v]
            raw[name] = chosen
            if only_sent and f"{name}__present" not in form:
                continue
            values[name] = chosen or None
            continue
        if kind == "boolean":
            if only_sent and f"{name}__present" not in form:
                continue
            raw[name] = "true" if form.get(name) == "true" else ""
            values[name] = form.get(name) == "true"
            continue
        if name not in form:
            if not only_sent:
                values[name] = None
            continue
        text = str(form.get(name) or "").strip()
        raw[name] = str(form.get(name) or "")
        if kind == "reference":
            raw[f"{name}__search"] = str(form.get(f"{name}__search") or "")
        if kind == "currency":
            raw[f"{name}__currency"] = str(form.get(f"{name}__currency") or "")
        if text == "":
            values[name] = None
            continue
        try:
            values[name] = _parse(kind, text, form, name)
        except (ValueError, json.JSONDecodeError) as error:
            problems.append(Problem(pointer(name), str(error)))
    return values, raw, problems


def _parse(kind: str, text: str, form: Any, name: str) -> Any:
    if kind == "integer":
        if not text.lstrip("-").isdigit():
            raise ValueError(f"{text!r} is not a whole number")
        return int(text)
    if kind == "decimal":
        return _number(text)
    if kind == "currency":
        return {"amount": _number(text), "currency": str(form.get(f"{name}__currency") or "")}
    if kind == "datetime":
        # datetime-local has no offset; the UI shows and takes times in UTC.
        return text if text.endswith("Z") or "+" in text[10:] else (text + (":00" if len(text) == 16 else "") + "Z")
    if kind == "json":
        try:
            value = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"is not valid JSON (line {error.lineno}, column {error.colno})") from None
        if not isinstance(value, dict):
            raise ValueError("must be a JSON object")
        return value
    return text


def _number(text: str) -> decimal.Decimal:
    try:
        number = decimal.Decimal(text.replace(",", "."))
    except decimal.InvalidOperation:
        raise ValueError(f"{text!r} is not a number") from None
    if not number.is_finite():
        raise ValueError(f"{text!r} is not a number")
    return number
