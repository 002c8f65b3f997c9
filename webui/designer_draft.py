"""The entity designer's draft: an entity definition being edited in the browser.

The draft is the definition document itself (the same JSON a file in
entity_schemas/ or /api/v1/meta/apply holds). It travels in a hidden input of
the designer page; every post sends it back together with the visible inputs,
which are laid over it (`merge_form`), then the post's action changes it (add,
move, remove a field) and the page is drawn again from it. Keywords the
designer has no input for (maxLength, pattern, default, currencies, indexes,
retention, consent, ...) stay as they are, and a draft nobody changed is
byte-for-byte the applied definition (so its plan says "no changes").

Nothing here talks to the database: checking is `parse_definition` and
`SchemaService.plan`, as for files and the API.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from xrm.errors import Problem
from xrm.schema.field_types import FIELD_TYPES, infer_field_type

__all__ = [
    "SCHEMA_URI",
    "TYPES",
    "FieldRow",
    "Located",
    "add_field",
    "changes_between",
    "draft_from_text",
    "draft_text",
    "field_rows",
    "field_type_of",
    "fingerprint",
    "locate",
    "merge_form",
    "move_field",
    "new_draft",
    "remove_field",
]

SCHEMA_URI = "https://json-schema.org/draft/2020-12/schema"
TYPES: tuple[str, ...] = tuple(FIELD_TYPES)
OPTION_TYPES = ("select", "multiselect")
FLAGS = ("unique", "sensitive", "personal")
# x-xrm keys of a field that mean the same whatever its type (kept when the type changes).
KEPT_ON_TYPE_CHANGE = ("label", "help", "unique", "audit", "sensitive", "personal", "renamed_from")
MAX_DRAFT = 2_000_000
"""Characters of draft JSON the designer reads (400 fields fit many times over)."""


class DraftUnreadable(ValueError):
    """The hidden draft input is not a JSON object (a tampered or truncated page)."""


def new_draft() -> dict[str, Any]:
    return {"$schema": SCHEMA_URI, "type": "object", "x-xrm": {"name": ""}, "properties": {}}


def draft_text(draft: Mapping[str, Any]) -> str:
    return json.dumps(draft, ensure_ascii=False)


def draft_from_text(text: str) -> dict[str, Any]:
    if len(text) > MAX_DRAFT:
        raise DraftUnreadable("the draft is too large")
    try:
        draft = json.loads(text)
    except json.JSONDecodeError:
        raise DraftUnreadable("the draft is not JSON") from None
    if not isinstance(draft, dict) or not isinstance(draft.get("properties", {}), dict) or not isinstance(draft.get("x-xrm", {}), dict):
        raise DraftUnreadable("the draft is not an entity definition")
    return draft


def fingerprint(draft: Mapping[str, Any]) -> str:
    """Identifies the exact draft a plan was shown for (Apply applies only that one)."""
    return hashlib.sha256(draft_text(draft).encode("utf-8")).hexdigest()[:32]


def field_type_of(schema: Any) -> str:
    if not isinstance(schema, Mapping):
        return "text"
    xrm = schema.get("x-xrm")
    declared = xrm.get("type") if isinstance(xrm, Mapping) else None
    if declared in FIELD_TYPES:
        return declared
    return infer_field_type(schema) or "text"


def _labels(value: Any) -> dict[str, str]:
    return {k: v for k, v in value.items() if isinstance(v, str)} if isinstance(value, Mapping) else {}


def _set_texts(container: dict[str, Any], key: str, en: str, de: str) -> None:
    """Set {"en", "de"} texts under key, touching the document only when they differ."""
    current = _labels(container.get(key))
    if (current.get("en") or "") == en and (current.get("de") or "") == de and (key in container or not (en or de)):
        return
    new = dict(container.get(key)) if isinstance(container.get(key), Mapping) else {}
    for language, value in (("en", en), ("de", de)):
        if value:
            new[language] = value
        else:
            new.pop(language, None)
    if new:
        container[key] = new
    else:
        container.pop(key, None)


def _options_of(schema: Mapping[str, Any]) -> list[Any]:
    items = schema.get("items")
    if isinstance(items, Mapping) and "enum" in items:
        return list(items["enum"]) if isinstance(items["enum"], list) else []
    return list(schema["enum"]) if isinstance(schema.get("enum"), list) else []


def options_text(schema: Mapping[str, Any]) -> str:
    """The options as the textarea shows them: `value | English label | German label`, one a line."""
    xrm = schema.get("x-xrm") if isinstance(schema.get("x-xrm"), Mapping) else {}
    labels = xrm.get("option_labels") if isinstance(xrm.get("option_labels"), Mapping) else {}
    lines = []
    for option in _options_of(schema):
        own = _labels(labels.get(option)) if isinstance(option, str) else {}
        line = str(option)
        if own.get("de"):
            line += f" | {own.get('en', '')} | {own['de']}"
        elif own.get("en"):
            line += f" | {own['en']}"
        lines.append(line)
    return "\n".join(lines)


def _parse_options(text: str) -> tuple[list[str], dict[str, dict[str, str]]]:
    values: list[str] = []
    labels: dict[str, dict[str, str]] = {}
    for line in text.replace("\r", "").split("\n"):
        parts = [part.strip() for part in line.split("|", 2)]
        if not parts[0]:
            continue
        value = parts[0]
        values.append(value)
        own = {lang: text for lang, text in zip(("en", "de"), parts[1:]) if text}
        if own:
            labels[value] = own
    return values, labels


def _current_option_labels(schema: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    xrm = schema.get("x-xrm") if isinstance(schema.get("x-xrm"), Mapping) else {}
    labels = xrm.get("option_labels") if isinstance(xrm.get("option_labels"), Mapping) else {}
    return {k: {lang: t for lang, t in _labels(v).items() if t} for k, v in labels.items() if _labels(v)}


def _merge_field(schema: Any, form: Any, i: int, new_type: str) -> dict[str, Any]:
    schema = copy.deepcopy(dict(schema)) if isinstance(schema, Mapping) else {}
    xrm: dict[str, Any] = dict(schema.get("x-xrm")) if isinstance(schema.get("x-xrm"), Mapping) else {}
    if new_type != field_type_of(schema):
        # A new type: keep what means the same for every type, drop the old type's rules.
        schema = {k: v for k, v in schema.items() if k in ("title", "description", "$comment")}
        xrm = {k: v for k, v in xrm.items() if k in KEPT_ON_TYPE_CHANGE}
    _set_texts(xrm, "label", _text(form, f"f{i}-label_en"), _text(form, f"f{i}-label_de"))
    _set_texts(xrm, "help", _text(form, f"f{i}-help_en"), _text(form, f"f{i}-help_de"))
    for flag in FLAGS:
        if form.get(f"f{i}-{flag}") == "true":
            if xrm.get(flag) is not True:
                xrm[flag] = True
        elif xrm.get(flag):
            xrm.pop(flag)
    if new_type in OPTION_TYPES and f"f{i}-options" in form:
        values, labels = _parse_options(str(form.get(f"f{i}-options") or ""))
        if values != _options_of(schema) or labels != _current_option_labels(schema):
            if new_type == "select":
                if values:
                    schema["enum"] = values
                else:
                    schema.pop("enum", None)
            else:
                items = dict(schema.get("items")) if isinstance(schema.get("items"), Mapping) else {}
                if values:
                    items["enum"] = values
                    schema["items"] = items
                else:
                    schema.pop("items", None)
            if labels:
                xrm["option_labels"] = labels
            else:
                xrm.pop("option_labels", None)
    if new_type == "reference" and f"f{i}-references" in form:
        target = _text(form, f"f{i}-references")
        if target:
            if xrm.get("references") != target:
                xrm["references"] = target
        else:
            xrm.pop("references", None)
    plain = {k: v for k, v in schema.items() if k != "x-xrm"}
    if xrm.get("type") != new_type and (xrm.get("type") is not None or infer_field_type(plain) != new_type):
        xrm["type"] = new_type
    if xrm:
        schema["x-xrm"] = xrm
    else:
        schema.pop("x-xrm", None)
    return schema


def _text(form: Any, name: str) -> str:
    return str(form.get(name) or "").strip()


@dataclass
class MergeProblem:
    index: int
    input: str
    message: str


def merge_form(draft: Mapping[str, Any], form: Any, *, applied_fields: frozenset[str], new_entity: bool) -> tuple[dict[str, Any], list[MergeProblem]]:
    """The draft with the page's inputs laid over it. `applied_fields`: the fields the
    entity has now (a renamed one gets x-xrm renamed_from, so apply keeps its data)."""
    doc = copy.deepcopy(dict(draft))
    problems: list[MergeProblem] = []
    xrm = doc.setdefault("x-xrm", {})
    if new_entity and "entity_name" in form:
        xrm["name"] = _text(form, "entity_name")
    if "entity_present" in form:
        _set_texts(xrm, "label", _text(form, "label_en"), _text(form, "label_de"))
        _set_texts(xrm, "plural", _text(form, "plural_en"), _text(form, "plural_de"))

    properties = doc.get("properties") if isinstance(doc.get("properties"), dict) else {}
    required = [r for r in doc.get("required", []) if isinstance(r, str)] if isinstance(doc.get("required"), list) else []
    merged: dict[str, Any] = {}
    renames: dict[str, str] = {}
    required_now: dict[str, bool] = {}
    keys = list(properties)
    for i, key in enumerate(keys):
        schema = properties[key]
        if f"f{i}-present" not in form:
            merged[key] = schema
            required_now[key] = key in required
            continue
        new_type = _text(form, f"f{i}-type")
        new_type = new_type if new_type in FIELD_TYPES else field_type_of(schema)
        schema = _merge_field(schema, form, i, new_type)
        name = _text(form, f"f{i}-name")
        if name != key:
            if not name:
                problems.append(MergeProblem(i, "name", "a field needs a name"))
                name = key
            elif name in merged or (name in properties and keys.index(name) > i):
                problems.append(MergeProblem(i, "name", f"{name!r} is already the name of another field"))
                name = key
        if name != key:
            renames[key] = name
            xrm_of = schema.setdefault("x-xrm", {})
            origin = key if key in applied_fields else xrm_of.get("renamed_from")
            if origin in applied_fields and origin != name:
                xrm_of["renamed_from"] = origin
            elif xrm_of.get("renamed_from") == name or origin not in applied_fields:
                xrm_of.pop("renamed_from", None)
            if not xrm_of:
                schema.pop("x-xrm")
        merged[name] = schema
        required_now[name] = form.get(f"f{i}-required") == "true"
    doc["properties"] = merged

    kept = [renames.get(r, r) for r in required if required_now.get(renames.get(r, r))]
    added = [n for n, on in required_now.items() if on and n not in kept]
    if kept + added or "required" in doc:
        doc["required"] = kept + added

    if "entity_present" in form:
        display = _text(form, "display_field")
        display = renames.get(display, display)
        if display:
            if xrm.get("display_field") != display:
                xrm["display_field"] = display
        else:
            xrm.pop("display_field", None)
        chosen = [renames.get(str(v), str(v)) for v in form.getall("search_fields", []) if v]
        current = xrm.get("search_fields") if isinstance(xrm.get("search_fields"), list) else []
        if chosen:
            if sorted(current, key=str) != sorted(chosen):  # the page lists them in field order; keep the document's order
                xrm["search_fields"] = chosen
        else:
            xrm.pop("search_fields", None)
    else:
        if xrm.get("display_field") in renames:
            xrm["display_field"] = renames[xrm["display_field"]]
        if isinstance(xrm.get("search_fields"), list):
            xrm["search_fields"] = [renames.get(s, s) for s in xrm["search_fields"]]
    return doc, problems


def add_field(draft: dict[str, Any], name: str, type_name: str) -> tuple[int | None, str]:
    """Append a field; (its index, "") or (None, why not)."""
    properties = draft.setdefault("properties", {})
    if type_name not in FIELD_TYPES:
        type_name = "text"
    if not name:
        number = len(properties) + 1
        while f"field_{number}" in properties:
            number += 1
        name = f"field_{number}"
    if name in properties:
        return None, f"{name!r} is already the name of another field"
    properties[name] = {"x-xrm": {"type": type_name}}
    return len(properties) - 1, ""


def move_field(draft: dict[str, Any], index: int, offset: int) -> int:
    """Move a field up (-1) or down (+1); its new index."""
    items = list(draft.get("properties", {}).items())
    target = index + offset
    if not (0 <= index < len(items) and 0 <= target < len(items)):
        return index
    items[index], items[target] = items[target], items[index]
    draft["properties"] = dict(items)
    return target


def remove_field(draft: dict[str, Any], index: int) -> str | None:
    """Take a field out of the draft (and out of required / display / search fields)."""
    keys = list(draft.get("properties", {}))
    if not 0 <= index < len(keys):
        return None
    name = keys[index]
    del draft["properties"][name]
    if isinstance(draft.get("required"), list) and name in draft["required"]:
        draft["required"] = [r for r in draft["required"] if r != name]
    xrm = draft.get("x-xrm", {})
    if xrm.get("display_field") == name:
        xrm.pop("display_field")
    if isinstance(xrm.get("search_fields"), list) and name in xrm["search_fields"]:
        xrm["search_fields"] = [s for s in xrm["search_fields"] if s != name]
        if not xrm["search_fields"]:
            xrm.pop("search_fields")
    return name


# -- what the page shows ------------------------------------------------------
@dataclass
class FieldRow:
    index: int
    name: str
    type: str
    label_en: str
    label_de: str
    help_en: str
    help_de: str
    required: bool
    unique: bool
    sensitive: bool
    personal: bool
    options: str
    references: str
    renamed_from: str
    errors: dict[str, str] = field(default_factory=dict)
    """Problem per input (name, type, label_en, ..., options, references, field)."""


def field_rows(draft: Mapping[str, Any]) -> list[FieldRow]:
    properties = draft.get("properties") if isinstance(draft.get("properties"), Mapping) else {}
    required = draft.get("required") if isinstance(draft.get("required"), list) else []
    rows = []
    for i, (name, schema) in enumerate(properties.items()):
        schema = schema if isinstance(schema, Mapping) else {}
        xrm = schema.get("x-xrm") if isinstance(schema.get("x-xrm"), Mapping) else {}
        label, help_text = _labels(xrm.get("label")), _labels(xrm.get("help"))
        rows.append(FieldRow(
            i, name, field_type_of(schema), label.get("en", ""), label.get("de", ""), help_text.get("en", ""), help_text.get("de", ""),
            name in required, xrm.get("unique") is True, xrm.get("sensitive") is True, xrm.get("personal") is True,
            options_text(schema), str(xrm.get("references") or ""), str(xrm.get("renamed_from") or ""),
        ))
    return rows


# Which input of a field row a pointer below /properties/<field>/ belongs to.
_FIELD_INPUTS = {
    ("x-xrm", "type"): "type", ("type",): "type", ("format",): "type",
    ("x-xrm", "label"): "label_en", ("x-xrm", "help"): "help_en",
    ("x-xrm", "unique"): "unique", ("x-xrm", "sensitive"): "sensitive", ("x-xrm", "personal"): "personal",
    ("enum",): "options", ("items",): "options", ("x-xrm", "option_labels"): "options",
    ("x-xrm", "references"): "references", ("x-xrm", "renamed_from"): "name",
}
_ENTITY_INPUTS = {
    ("name",): "name", ("label",): "label_en", ("plural",): "plural_en",
    ("display_field",): "display_field", ("search_fields",): "search_fields",
}


def _unescape(part: str) -> str:
    return part.replace("~1", "/").replace("~0", "~")


@dataclass
class Located:
    entity: dict[str, str] = field(default_factory=dict)
    fields: dict[int, dict[str, str]] = field(default_factory=dict)
    general: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.entity or self.fields or self.general)


def locate(problems: list[Problem], draft: Mapping[str, Any]) -> Located:
    """Each problem at the input it is about: an entity input, a field row's input, or general."""
    located = Located()
    properties = list(draft.get("properties", {})) if isinstance(draft.get("properties"), Mapping) else []
    name = (draft.get("x-xrm") or {}).get("name") if isinstance(draft.get("x-xrm"), Mapping) else None
    required = draft.get("required") if isinstance(draft.get("required"), list) else []
    for problem in problems:
        parts = [_unescape(p) for p in problem.pointer.split("/")[1:]]
        if name and len(parts) > 1 and parts[0] == name and parts[1] in ("properties", "x-xrm", "required"):
            parts = parts[1:]  # pointers of SchemaService name the entity first
        if len(parts) >= 2 and parts[0] == "properties" and parts[1] in properties:
            index, rest = properties.index(parts[1]), tuple(parts[2:])
            if not rest:
                which = "name"
            else:
                which = _FIELD_INPUTS.get(rest[:2]) or _FIELD_INPUTS.get(rest[:1]) or "field"
                if rest[:3] in (("x-xrm", "label", "de"), ("x-xrm", "help", "de")):
                    which = which.replace("_en", "_de")
            located.fields.setdefault(index, {}).setdefault(which, problem.message)
        elif len(parts) >= 2 and parts[0] == "required" and parts[1].isdigit() and int(parts[1]) < len(required) \
                and required[int(parts[1])] in properties:
            located.fields.setdefault(properties.index(required[int(parts[1])]), {}).setdefault("required", problem.message)
        elif len(parts) >= 2 and parts[0] == "x-xrm" and (parts[1],) in _ENTITY_INPUTS:
            which = _ENTITY_INPUTS[(parts[1],)]
            if parts[1] in ("label", "plural") and parts[2:3] == ["de"]:
                which = which.replace("_en", "_de")
            located.entity.setdefault(which, problem.message)
        elif parts == ["properties"]:
            located.entity.setdefault("fields", problem.message)
        else:
            located.general.append(str(problem))
    return located


# -- history ------------------------------------------------------------------
def changes_between(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> list[tuple[str, dict[str, Any]]]:
    """What changed from one definition version to the next, as (kind, details) for the page to word."""
    if new is None:
        return [("entity_removed", {})]
    new_props = new.get("properties", {})
    if old is None:
        return [("entity_created", {"count": len(new_props)})]
    old_props = old.get("properties", {})
    changes: list[tuple[str, dict[str, Any]]] = []
    renamed_from = {
        name: (schema.get("x-xrm") or {}).get("renamed_from")
        for name, schema in new_props.items()
        if name not in old_props and (schema.get("x-xrm") or {}).get("renamed_from") in old_props
    }
    for name, schema in new_props.items():
        if name in renamed_from:
            changes.append(("field_renamed", {"old": renamed_from[name], "new": name}))
        elif name not in old_props:
            changes.append(("field_added", {"field": name, "type": field_type_of(schema)}))
    for name in old_props:
        if name not in new_props and name not in renamed_from.values():
            changes.append(("field_removed", {"field": name}))
    old_required, new_required = set(old.get("required", [])), set(new.get("required", []))
    for name, schema in new_props.items():
        before_name = renamed_from.get(name, name)
        if before_name not in old_props:
            continue
        before = old_props[before_name]
        aspects = []
        if field_type_of(before) != field_type_of(schema):
            aspects.append("type")
        old_x, new_x = before.get("x-xrm") or {}, schema.get("x-xrm") or {}
        for key in ("label", "help", "unique", "sensitive", "personal", "references"):
            if old_x.get(key) != new_x.get(key):
                aspects.append(key)
        if _options_of(before) != _options_of(schema) or old_x.get("option_labels") != new_x.get("option_labels"):
            aspects.append("options")
        if (before_name in old_required) != (name in new_required):
            aspects.append("required")
        other_old = {k: v for k, v in before.items() if k not in ("x-xrm", "enum", "items", "type", "format")}
        other_new = {k: v for k, v in schema.items() if k not in ("x-xrm", "enum", "items", "type", "format")}
        if other_old != other_new:
            aspects.append("rules")
        if aspects:
            changes.append(("field_changed", {"field": name, "aspects": aspects}))
    old_order = [renamed_from.get(n, n) for n in new_props if renamed_from.get(n, n) in old_props]
    if old_order != [n for n in old_props if n in old_order]:
        changes.append(("fields_reordered", {}))
    old_e, new_e = old.get("x-xrm", {}), new.get("x-xrm", {})
    aspects = [key for key in ("label", "plural", "display_field", "search_fields", "indexes", "retention", "consent", "description")
               if old_e.get(key) != new_e.get(key)]
    if aspects:
        changes.append(("entity_changed", {"aspects": aspects}))
    return changes
