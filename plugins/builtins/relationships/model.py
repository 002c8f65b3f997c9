"""The definition keywords of the relationships plugin and what they mean.

Entity level (`x-xrm`):

- `links`: many-to-many links declared on the source entity, each with a
  name, a target entity, labels (en/de) for both sides and optional
  attributes (a small JSON Schema per attribute: string, integer, number or
  boolean, with format, enum, length and range);
- `hierarchy`: `{"parent": <reference field to the same entity>, "rollups":
  [{"field", "aggregate": sum|count|avg|min|max, "label"}]}`.

Field level: `on_delete` on a reference field — what happens to this record
when the record it references is (soft-)deleted: `restrict` (the delete is
refused while live records reference it), `cascade` (this record is deleted
too), `set_null` (the reference is cleared), `keep` (nothing; the default,
as before the plugin: the reference keeps pointing at the deleted record and
works again when it is restored).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator

from xrm.errors import Problem, pointer

__all__ = [
    "AGGREGATES", "Hierarchy", "LinkDefinition", "ON_DELETE", "Rollup", "check_definition", "hierarchy_of",
    "link_definitions", "links_of", "resolve_link", "vocabulary",
]

NAME = "^[a-z][a-z0-9_]{0,39}$"
AGGREGATES = ("sum", "count", "avg", "min", "max")
ON_DELETE = ("restrict", "cascade", "set_null", "keep")
NUMERIC = ("integer", "decimal", "currency")
ORDERED = NUMERIC + ("date", "datetime")

_LABEL = {"type": "object", "required": ["en"], "additionalProperties": False,
          "properties": {"en": {"type": "string", "minLength": 1, "maxLength": 100},
                         "de": {"type": "string", "minLength": 1, "maxLength": 100}}}
_ATTRIBUTE = {
    "type": "object", "required": ["type"], "additionalProperties": False,
    "properties": {
        "type": {"enum": ["string", "integer", "number", "boolean"]},
        "format": {"enum": ["date", "date-time", "email", "uri"]},
        "enum": {"type": "array", "minItems": 1, "items": {"type": ["string", "integer", "number"]}},
        "minLength": {"type": "integer", "minimum": 0}, "maxLength": {"type": "integer", "minimum": 1},
        "minimum": {"type": "number"}, "maximum": {"type": "number"},
        "label": _LABEL, "description": {"type": "string"},
    },
}
_LINK = {
    "type": "object", "required": ["name", "target"], "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": NAME},
        "target": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,62}$"},
        "label": _LABEL,
        "inverse_name": {"type": "string", "pattern": NAME},
        "inverse_label": _LABEL,
        "attributes": {"type": "object", "propertyNames": {"pattern": NAME}, "additionalProperties": _ATTRIBUTE},
        "required": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
        "description": {"type": "string"},
    },
}
_HIERARCHY = {
    "type": "object", "required": ["parent"], "additionalProperties": False,
    "properties": {
        "parent": {"type": "string"},
        "rollups": {"type": "array", "items": {
            "type": "object", "required": ["aggregate"], "additionalProperties": False,
            "properties": {"name": {"type": "string", "pattern": NAME}, "field": {"type": "string"},
                           "aggregate": {"enum": list(AGGREGATES)}, "label": _LABEL}}},
    },
}


def vocabulary() -> dict[str, Any]:
    return {"entity": {"links": {"type": "array", "items": _LINK}, "hierarchy": _HIERARCHY},
            "field": {"on_delete": {"enum": list(ON_DELETE)}}}


def _label(labels: Mapping[str, str] | None, language: str, fallback: str) -> str:
    labels = labels or {}
    return labels.get(language) or labels.get("en") or fallback


@dataclass(frozen=True)
class LinkDefinition:
    """A many-to-many link: declared on `source`, pointing at `target`."""

    source: str
    name: str
    target: str
    spec: Mapping[str, Any]

    @property
    def inverse_name(self) -> str:
        return self.spec.get("inverse_name") or f"{self.source}_{self.name}"

    @property
    def attributes(self) -> Mapping[str, Mapping[str, Any]]:
        return self.spec.get("attributes") or {}

    def label(self, language: str = "en", *, inverse: bool = False) -> str:
        if inverse:
            return _label(self.spec.get("inverse_label"), language, self.inverse_name.replace("_", " "))
        return _label(self.spec.get("label"), language, self.name.replace("_", " "))

    def attribute_label(self, name: str, language: str = "en") -> str:
        return _label(self.attributes.get(name, {}).get("label"), language, name.replace("_", " "))

    def attribute_schema(self) -> dict[str, Any]:
        """The JSON Schema an attribute set must satisfy (labels left out)."""
        properties = {name: {k: v for k, v in schema.items() if k != "label"} for name, schema in self.attributes.items()}
        return {"type": "object", "properties": properties, "required": list(self.spec.get("required") or []),
                "additionalProperties": False}

    def attribute_problems(self, attributes: Any, at: str = "/attributes") -> list[Problem]:
        validator = Draft202012Validator(self.attribute_schema(), format_checker=Draft202012Validator.FORMAT_CHECKER)
        problems = []
        for error in sorted(validator.iter_errors(attributes), key=lambda e: list(e.absolute_path)):
            path = list(error.absolute_path)
            if error.validator == "required":
                path.append(error.message.split("'")[1])
                message = "is required"
            elif error.validator == "additionalProperties":
                extra = sorted(set(attributes) - set(self.attributes)) if isinstance(attributes, Mapping) else []
                path.append(extra[0] if extra else "")
                message = "is not an attribute of this link" + (f"; it has: {', '.join(self.attributes)}" if self.attributes else "")
            else:
                message = error.message
            problems.append(Problem(at + pointer(*path), message))
        return problems


def links_of(definition: Any) -> list[LinkDefinition]:
    return [LinkDefinition(definition.name, spec["name"], spec["target"], spec) for spec in definition.xrm.get("links") or []]


def link_definitions(registry: Any) -> list[LinkDefinition]:
    return [link for entity in registry for link in links_of(entity.definition)]


def resolve_link(registry: Any, entity: str, name: str) -> tuple[LinkDefinition, bool] | None:
    """The link `name` as seen from `entity`: (definition, inverse?); the entity's own links first."""
    inverse = None
    for link in link_definitions(registry):
        if link.source == entity and link.name == name:
            return link, False
        if inverse is None and link.target == entity and link.inverse_name == name:
            inverse = (link, True)
    return inverse


@dataclass(frozen=True)
class Rollup:
    name: str
    field: str | None
    aggregate: str
    labels: Mapping[str, str] = field(default_factory=dict)

    def label(self, language: str, field_label: str | None) -> str:
        if self.labels:
            return _label(self.labels, language, self.name)
        return f"{self.aggregate}({field_label})" if field_label else self.aggregate


@dataclass(frozen=True)
class Hierarchy:
    entity: str
    parent: str
    rollups: tuple[Rollup, ...]


def hierarchy_of(definition: Any) -> Hierarchy | None:
    spec = definition.xrm.get("hierarchy")
    if not spec:
        return None
    rollups = tuple(
        Rollup(r.get("name") or (f"{r['aggregate']}_{r['field']}" if r.get("field") else r["aggregate"]), r.get("field"),
               r["aggregate"], r.get("label") or {})
        for r in spec.get("rollups") or []
    )
    return Hierarchy(definition.name, spec["parent"], rollups)


def check_definition(definition: Any, known_entities: Iterable[str] | None) -> list[Problem]:
    problems: list[Problem] = []
    known = None if known_entities is None else set(known_entities) | {definition.name}
    seen: set[str] = set()
    for index, spec in enumerate(definition.xrm.get("links") or []):
        at = ("x-xrm", "links", index)
        if spec["name"] in seen:
            problems.append(Problem(pointer(*at, "name"), f"the link {spec['name']!r} is declared twice"))
        for key in ("name", "inverse_name"):
            if spec.get(key) == "connections":  # ?expand=connections and the /connections sub-resource are the connections'
                problems.append(Problem(pointer(*at, key), "'connections' names a record's connections; choose another name"))
        seen.add(spec["name"])
        if known is not None and spec["target"] not in known:
            problems.append(Problem(pointer(*at, "target"), f"entity {spec['target']!r} does not exist"))
        attributes = spec.get("attributes") or {}
        for position, name in enumerate(spec.get("required") or []):
            if name not in attributes:
                problems.append(Problem(pointer(*at, "required", position), f"{name!r} is not one of the link's attributes"))
        for name, schema in attributes.items():
            if "format" in schema and schema["type"] != "string":
                problems.append(Problem(pointer(*at, "attributes", name, "format"), "only string attributes have a format"))
    hierarchy = definition.xrm.get("hierarchy")
    if hierarchy:
        parent = definition.fields.get(hierarchy["parent"])
        if parent is None:
            problems.append(Problem("/x-xrm/hierarchy/parent", f"{hierarchy['parent']!r} is not a field of this entity"))
        elif parent.type.name != "reference" or parent.references != definition.name:
            problems.append(Problem("/x-xrm/hierarchy/parent", f"the parent must be a reference field to {definition.name} itself"))
        names: set[str] = set()
        for index, rollup in enumerate(hierarchy.get("rollups") or []):
            at = ("x-xrm", "hierarchy", "rollups", index)
            field_name = rollup.get("field")
            name = rollup.get("name") or (f"{rollup['aggregate']}_{field_name}" if field_name else rollup["aggregate"])
            if name in names:
                problems.append(Problem(pointer(*at), f"two roll-ups are named {name!r}; give one a name"))
            names.add(name)
            if field_name is None:
                if rollup["aggregate"] != "count":
                    problems.append(Problem(pointer(*at, "field"), f"{rollup['aggregate']} needs a field"))
                continue
            target = definition.fields.get(field_name)
            if target is None:
                problems.append(Problem(pointer(*at, "field"), f"{field_name!r} is not a field of this entity"))
            elif rollup["aggregate"] in ("sum", "avg") and target.type.name not in NUMERIC:
                problems.append(Problem(pointer(*at, "field"), f"{rollup['aggregate']} needs a number or currency field, {field_name!r} is {target.type.name}"))
            elif rollup["aggregate"] in ("min", "max") and target.type.name not in ORDERED:
                problems.append(Problem(pointer(*at, "field"), f"{rollup['aggregate']} needs a number, currency or date field, {field_name!r} is {target.type.name}"))
    for name, f in definition.fields.items():
        rule = f.xrm.get("on_delete")
        if rule is None:
            continue
        at = pointer("properties", name, "x-xrm", "on_delete")
        if f.type.name != "reference":
            problems.append(Problem(at, "only reference fields have a delete behaviour"))
        elif rule == "set_null" and f.required:
            problems.append(Problem(at, "set_null cannot clear a required field; use restrict or cascade"))
    return problems
