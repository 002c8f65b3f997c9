"""Parse and check entity definitions (JSON Schema 2020-12 + the x-xrm vocabulary).

Two passes, both reporting JSON pointers into the submitted document:
1. the meta-schema (metaschema.json) checks the structure;
2. `_check_semantics` checks what a meta-schema cannot say: identifiers that
   are not reserved, keywords that fit the field type, references to entities
   that exist, defaults that satisfy their own field, and so on.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import jsonschema
from jsonschema import Draft202012Validator

from ..errors import DefinitionInvalid, Problem, pointer
from ..identifiers import (
    MAX_ENTITY_NAME,
    MAX_FIELD_NAME,
    RESERVED_ENTITY_NAMES,
    SYSTEM_COLUMNS,
    identifier_problem,
)
from ..records.validation import unstorable_problems
from .field_groups import consent_properties
from .field_types import FIELD_TYPES, ISO_4217, Column, FieldType, infer_field_type

__all__ = [
    "EntityDefinition",
    "same_document",
    "FieldDefinition",
    "check_definition_set",
    "meta_schema",
    "parse_definition",
]

MISSING: Any = type("MISSING", (), {"__repr__": lambda self: "MISSING"})()

# Columns PostgreSQL adds to every table itself; CREATE TABLE refuses them.
PG_SYSTEM_COLUMNS = frozenset({"tableoid", "xmin", "cmin", "xmax", "cmax", "ctid"})


@cache
def _meta_schema_file() -> str:
    return resources.files("xrm.schema").joinpath("metaschema.json").read_text(encoding="utf-8")


def meta_schema() -> dict[str, Any]:
    """The meta-schema: the field types of the live registry (built-ins and plugins) as the enum of
    x-xrm type, and the plugins' own x-xrm keywords (xrm_definition_vocabulary) allowed where they belong."""
    return copy.deepcopy(_meta_schema_for(tuple(FIELD_TYPES), _vocabulary_key()))


def core_keywords(level: str) -> frozenset[str]:
    """The x-xrm keywords the core defines for an entity ("entity") or a field ("field")."""
    schema = json.loads(_meta_schema_file())
    return frozenset(schema["$defs"]["entity" if level == "entity" else "field_xrm"]["properties"])


def _vocabulary_key() -> str:
    from ..plugins import get_plugin_manager

    return json.dumps(get_plugin_manager().definition_vocabulary(), sort_keys=True)


@cache
def _meta_schema_for(type_names: tuple[str, ...], vocabulary: str) -> dict[str, Any]:
    schema = json.loads(_meta_schema_file())
    schema["$defs"]["field_xrm"]["properties"]["type"]["enum"] = list(type_names)
    extra = json.loads(vocabulary)
    schema["$defs"]["entity"]["properties"].update(extra.get("entity", {}))
    schema["$defs"]["field_xrm"]["properties"].update(extra.get("field", {}))
    return schema


def _meta_validator() -> Draft202012Validator:
    return _meta_validator_for(tuple(FIELD_TYPES), _vocabulary_key())


@cache
def _meta_validator_for(type_names: tuple[str, ...], vocabulary: str) -> Draft202012Validator:
    return Draft202012Validator(_meta_schema_for(type_names, vocabulary), format_checker=Draft202012Validator.FORMAT_CHECKER)


@dataclass(frozen=True, eq=False)
class FieldDefinition:
    name: str
    type: FieldType
    schema: Mapping[str, Any]
    """The property schema as the admin wrote it."""
    required: bool
    default: Any = MISSING

    @property
    def xrm(self) -> Mapping[str, Any]:
        return self.schema.get("x-xrm", {})

    @property
    def unique(self) -> bool:
        return bool(self.xrm.get("unique"))

    @property
    def references(self) -> str | None:
        return self.xrm.get("references")

    @property
    def renamed_from(self) -> str | None:
        return self.xrm.get("renamed_from")

    @property
    def personal(self) -> bool:
        """Personal data (x-xrm personal): found by data-subject requests, anonymised by erasure."""
        return bool(self.xrm.get("personal"))

    @property
    def has_default(self) -> bool:
        return self.default is not MISSING

    def label(self, language: str = "en") -> str:
        labels = self.xrm.get("label") or {}
        return labels.get(language) or labels.get("en") or self.schema.get("title") or self.name.replace("_", " ").capitalize()

    def columns(self) -> list[Column]:
        return self.type.columns(self)

    def storage(self) -> tuple[tuple[str, str], ...]:
        """Column roles and SQL types: equal storage means no data conversion."""
        return tuple((c.role, c.sql_type) for c in self.columns())

    def check_predicates(self, columns: Mapping[str, str] | None = None) -> list[str]:
        from ..identifiers import quote_ident

        if columns is None:
            columns = {c.role: quote_ident(c.name) for c in self.columns()}
        return self.type.check_predicates(self, columns)

    def value_schema(self) -> dict[str, Any]:
        return self.type.value_schema(self)


@dataclass(frozen=True, eq=False)
class EntityDefinition:
    name: str
    document: Mapping[str, Any]
    """The definition as submitted (what is stored and versioned)."""
    fields: dict[str, FieldDefinition] = field(default_factory=dict)

    @property
    def xrm(self) -> Mapping[str, Any]:
        return self.document["x-xrm"]

    @property
    def renamed_from(self) -> str | None:
        return self.xrm.get("renamed_from")

    @property
    def display_field(self) -> str | None:
        if "display_field" in self.xrm:
            return self.xrm["display_field"]
        for f in self.fields.values():
            if f.type.text_like:
                return f.name
        return None

    @property
    def search_fields(self) -> list[str]:
        if "search_fields" in self.xrm:
            return list(self.xrm["search_fields"])
        return [self.display_field] if self.display_field else []

    @property
    def indexes(self) -> list[Mapping[str, Any]]:
        return list(self.xrm.get("indexes", []))

    @property
    def personal_fields(self) -> list[str]:
        return [name for name, f in self.fields.items() if f.personal]

    @property
    def retention(self) -> Mapping[str, Any] | None:
        """{"days", "action", "after"}: records untouched that long are anonymised or deleted."""
        rule = self.xrm.get("retention")
        return None if rule is None else {"after": "updated_at", **rule}

    @property
    def audit_retention_days(self) -> int | None:
        rule = self.xrm.get("audit_retention")
        return None if rule is None else int(rule["days"])

    def label(self, language: str = "en", plural: bool = False) -> str:
        """The entity's name in `language` (else English); a plural the definition lacks is never made up
        outside English: German gets its singular ("Projekt"), not singular + "s" ("Projekts"), and not
        the English plural when a German label exists."""
        singulars = self.xrm.get("label") or {}
        if not plural:
            return singulars.get(language) or singulars.get("en") or self.name.replace("_", " ").capitalize()
        plurals = self.xrm.get("plural") or {}
        if plurals.get(language):
            return str(plurals[language])
        if language != "en" and singulars.get(language):
            return str(singulars[language])
        if plurals.get("en"):
            return str(plurals["en"])
        return self.label(language) + "s"  # English (or no label in the language): the English rule

    def references(self) -> set[str]:
        return {f.references for f in self.fields.values() if f.references}


def same_document(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Equal including the order of keys (property order is field order)."""
    return json.dumps(a, ensure_ascii=False) == json.dumps(b, ensure_ascii=False)


def parse_definition(
    document: Any, *, known_entities: Iterable[str] | None = None, source: str | None = None
) -> EntityDefinition:
    """Check one definition and compile it; raise DefinitionInvalid with every problem.

    `known_entities` are the names a reference field may point to (the entity
    itself is always allowed); None skips the reference check.
    """
    if not isinstance(document, Mapping):
        raise DefinitionInvalid([Problem("", "an entity definition must be a JSON object")], source)
    problems = sorted(_meta_problems(document) + unstorable_problems(document), key=lambda p: p.pointer)
    if problems:
        raise DefinitionInvalid(problems, source)
    document = copy.deepcopy(dict(document))
    definition, problems = _check_semantics(document, known_entities)
    if problems:
        raise DefinitionInvalid(problems, source)
    return definition


def check_definition_set(definitions: Mapping[str, EntityDefinition]) -> list[Problem]:
    """Problems between definitions (pointers are prefixed with the entity name)."""
    problems = []
    for definition in definitions.values():
        for f in definition.fields.values():
            if f.references and f.references not in definitions:
                problems.append(
                    Problem(
                        pointer(definition.name, "properties", f.name, "x-xrm", "references"),
                        f"entity {f.references!r} does not exist",
                    )
                )
    return problems


def _meta_problems(document: Mapping[str, Any]) -> list[Problem]:
    problems = []
    for error in _meta_validator().iter_errors(document):
        problems.extend(_problems_from_meta_error(error))
    problems.sort(key=lambda p: p.pointer)
    return problems


def _problems_from_meta_error(error: jsonschema.ValidationError) -> list[Problem]:
    """One problem per unknown keyword / missing key, each at its own pointer."""
    path = list(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, Mapping):
        allowed = set(error.schema.get("properties", {}))
        extra = sorted(k for k in error.instance if k not in allowed)
        if extra:
            return [Problem(pointer(*path, key), f"unknown keyword {key!r} is not allowed here") for key in extra]
    if error.validator == "required" and isinstance(error.instance, Mapping):
        missing = [k for k in error.validator_value if k not in error.instance]
        if missing:
            return [Problem(pointer(*path, key), f"{key!r} is required") for key in missing]
    return [Problem(pointer(*path), _friendly(error))]


def _friendly(error: jsonschema.ValidationError) -> str:
    if error.validator == "pattern" and error.validator_value == "^[a-z][a-z0-9_]*$":
        return f"{error.instance!r} must start with a lower-case letter and contain only lower-case letters, digits and underscores"
    if error.validator == "const":
        return f"must be {json.dumps(error.validator_value)}"
    if error.validator == "enum":
        return f"{error.instance!r} is not one of {', '.join(map(str, error.validator_value))}"
    return error.message


def _check_semantics(document: dict[str, Any], known_entities: Iterable[str] | None) -> tuple[EntityDefinition, list[Problem]]:
    problems: list[Problem] = []
    xrm = document["x-xrm"]
    name = xrm["name"]
    reason = identifier_problem(name, max_length=MAX_ENTITY_NAME, what="entity name")
    if reason is None and name in RESERVED_ENTITY_NAMES:
        reason = f"entity name {name!r} is reserved"
    if reason:
        problems.append(Problem("/x-xrm/name", reason))

    required = document.get("required", [])
    properties: dict[str, Any] = document["properties"]
    known = None if known_entities is None else set(known_entities) | {name}
    fields: dict[str, FieldDefinition] = {}
    used_columns: dict[str, str] = {c: "system column" for c in SYSTEM_COLUMNS}

    for index, entry in enumerate(required):
        if entry not in properties:
            problems.append(Problem(pointer("required", index), f"{entry!r} is not a property of this entity"))

    for field_name, schema in properties.items():
        at = ("properties", field_name)
        reason = identifier_problem(field_name, max_length=MAX_FIELD_NAME, what="field name")
        if reason is None and field_name in SYSTEM_COLUMNS:
            reason = f"field name {field_name!r} is a system column"
        if reason is None and field_name in PG_SYSTEM_COLUMNS:
            reason = f"field name {field_name!r} is a PostgreSQL system column"
        if reason:
            problems.append(Problem(pointer(*at), reason))
            continue
        field_problems = _check_field(field_name, schema, at, known)
        if field_problems:
            problems.extend(field_problems)
            continue
        type_name = schema.get("x-xrm", {}).get("type") or infer_field_type(schema)
        definition = FieldDefinition(
            name=field_name,
            type=FIELD_TYPES[type_name],
            schema=schema,
            required=field_name in required,
            default=schema.get("default", MISSING),
        )
        for column in definition.columns():
            if column.name in used_columns:
                problems.append(
                    Problem(pointer(*at), f"its column {column.name!r} clashes with {used_columns[column.name]}")
                )
            used_columns[column.name] = f"field {field_name!r}"
        if definition.has_default:
            problems.extend(_check_default(definition, at))
        fields[field_name] = definition

    if "consent" in xrm:
        for field_name, schema in consent_properties(xrm["consent"]["channels"]).items():
            if field_name in properties:
                problems.append(Problem("/x-xrm/consent", f"the consent group adds the field {field_name!r}, which the entity declares itself"))
                continue
            fields[field_name] = FieldDefinition(
                name=field_name, type=FIELD_TYPES[infer_field_type(schema) or "text"], schema=schema, required=False
            )

    entity = EntityDefinition(name=name, document=document, fields=fields)
    if not problems:
        problems.extend(_check_entity_options(entity))
    if not problems:
        from ..plugins import get_plugin_manager

        known_names = None if known is None else frozenset(known)
        for _, found in get_plugin_manager().each("xrm_check_definition", definition=entity, known_entities=known_names):
            problems.extend(found or [])
    return entity, problems


def _check_field(name: str, schema: Mapping[str, Any], at: tuple, known: set[str] | None) -> list[Problem]:
    xrm = schema.get("x-xrm", {})
    type_name = xrm.get("type") or infer_field_type(schema)
    if type_name is None:
        return [Problem(pointer(*at), "cannot tell the field type: set x-xrm.type (or a JSON Schema type and format that imply one)")]
    field_type = FIELD_TYPES[type_name]
    problems = []
    if "type" in schema and schema["type"] != field_type.json_type:
        problems.append(
            Problem(pointer(*at, "type"), f"{_a(type_name)} field holds JSON {field_type.json_type!r} values, not {schema['type']!r}")
        )
    if "format" in schema and schema["format"] not in field_type.formats:
        problems.append(Problem(pointer(*at, "format"), f"format {schema['format']!r} does not fit {_a(type_name)} field"))
    structural = {"type", "format", "title", "description", "$comment", "default", "examples", "readOnly", "x-xrm"}
    if type_name == "multiselect":
        structural |= {"items", "uniqueItems"}
    for keyword in schema:
        if keyword not in structural and keyword not in field_type.keywords:
            problems.append(Problem(pointer(*at, keyword), f"{keyword!r} does not apply to {_a(type_name)} field"))
    if type_name == "select" and "enum" not in schema:
        problems.append(Problem(pointer(*at, "enum"), "a select field needs its options in 'enum'"))
    if type_name == "multiselect" and "enum" not in schema.get("items", {}):
        problems.append(Problem(pointer(*at, "items"), "a multiselect field needs its options in 'items.enum'"))
    for low, high in (("minimum", "maximum"), ("minLength", "maxLength"), ("minItems", "maxItems"), ("exclusiveMinimum", "exclusiveMaximum")):
        if low in schema and high in schema and schema[low] > schema[high]:
            problems.append(Problem(pointer(*at, low), f"{low} ({schema[low]}) is greater than {high} ({schema[high]})"))
    if "pattern" in schema:
        try:
            re.compile(schema["pattern"])
        except re.error as error:
            problems.append(Problem(pointer(*at, "pattern"), f"not a valid regular expression: {error}"))
    if type_name == "reference":
        target = xrm.get("references")
        if not target:
            problems.append(Problem(pointer(*at, "x-xrm", "references"), "a reference field must name the entity it references"))
        elif known is not None and target not in known:
            problems.append(Problem(pointer(*at, "x-xrm", "references"), f"entity {target!r} does not exist"))
    elif "references" in xrm:
        problems.append(Problem(pointer(*at, "x-xrm", "references"), f"only reference fields reference an entity, this is {_a(type_name)} field"))
    if xrm.get("unique") and not field_type.can_be_unique:
        problems.append(Problem(pointer(*at, "x-xrm", "unique"), f"{_a(type_name)} field cannot be unique"))
    if "precision" in xrm and type_name != "decimal":
        problems.append(Problem(pointer(*at, "x-xrm", "precision"), "precision applies to decimal fields only (currency amounts have 18 digits)"))
    if "scale" in xrm and type_name not in ("decimal", "currency"):
        problems.append(Problem(pointer(*at, "x-xrm", "scale"), "scale applies to decimal and currency fields only"))
    if type_name == "decimal" and "scale" in xrm and "precision" not in xrm:
        problems.append(Problem(pointer(*at, "x-xrm", "precision"), "a decimal field with a scale needs a precision too"))
    if type_name == "decimal" and "precision" in xrm and "scale" in xrm and xrm["scale"] > xrm["precision"]:
        problems.append(Problem(pointer(*at, "x-xrm", "scale"), "scale cannot exceed precision"))
    for option in ("currencies", "default_currency"):
        if option in xrm and type_name != "currency":
            problems.append(Problem(pointer(*at, "x-xrm", option), f"{option} applies to currency fields only"))
    for index, code in enumerate(xrm.get("currencies", [])):
        if code not in ISO_4217:
            problems.append(Problem(pointer(*at, "x-xrm", "currencies", index), f"{code!r} is not an ISO 4217 currency code"))
    if "default_currency" in xrm:
        code = xrm["default_currency"]
        if code not in ISO_4217:
            problems.append(Problem(pointer(*at, "x-xrm", "default_currency"), f"{code!r} is not an ISO 4217 currency code"))
        elif "currencies" in xrm and code not in xrm["currencies"]:
            problems.append(Problem(pointer(*at, "x-xrm", "default_currency"), f"{code!r} is not one of the field's currencies"))
    options = schema.get("enum") or schema.get("items", {}).get("enum") or []
    for option in xrm.get("option_labels", {}):
        if option not in options:
            problems.append(Problem(pointer(*at, "x-xrm", "option_labels", option), f"{option!r} is not one of the field's options"))
    return problems


def _a(type_name: str) -> str:
    """'a text' / 'an integer': the article a type name needs."""
    return ("an " if type_name[0] in "aeiou" else "a ") + type_name


def _check_default(definition: FieldDefinition, at: tuple) -> list[Problem]:
    from ..records.validation import value_problems

    return [Problem(pointer(*at, "default"), p.message) for p in value_problems(definition, definition.default)]


def _check_entity_options(entity: EntityDefinition) -> list[Problem]:
    problems = []
    xrm = entity.xrm
    if "display_field" in xrm:
        f = entity.fields.get(xrm["display_field"])
        if f is None:
            problems.append(Problem("/x-xrm/display_field", f"{xrm['display_field']!r} is not a field of this entity"))
        elif not f.type.text_like:
            problems.append(Problem("/x-xrm/display_field", f"the display field must be a text-like field, {f.name!r} is {f.type.name}"))
    for index, name in enumerate(xrm.get("search_fields", [])):
        f = entity.fields.get(name)
        if f is None:
            problems.append(Problem(pointer("x-xrm", "search_fields", index), f"{name!r} is not a field of this entity"))
        elif not f.type.text_like:
            problems.append(Problem(pointer("x-xrm", "search_fields", index), f"only text-like fields can be searched, {name!r} is {f.type.name}"))
    for name, f in entity.fields.items():
        if not f.xrm.get("sensitive"):
            continue
        # A sensitive value must never reach the full-text column (search would find records by it)
        # nor the display text other entities show for a reference.
        if name in xrm.get("search_fields", []):
            problems.append(Problem(pointer("x-xrm", "search_fields", xrm["search_fields"].index(name)),
                                    f"{name!r} is sensitive (x-xrm sensitive) and cannot be a search field"))
        elif name in entity.search_fields:
            problems.append(Problem(pointer("properties", name, "x-xrm", "sensitive"),
                                    f"{name!r} is the display field and so searched by default; a sensitive field cannot be: "
                                    "set x-xrm display_field and search_fields to other fields"))
        if name == xrm.get("display_field"):
            problems.append(Problem("/x-xrm/display_field", f"{name!r} is sensitive (x-xrm sensitive) and cannot be the display field"))
        elif name == entity.display_field and "search_fields" in xrm:
            problems.append(Problem(pointer("properties", name, "x-xrm", "sensitive"),
                                    f"{name!r} is the display field by default (the first text field); a sensitive field cannot be: "
                                    "set x-xrm display_field to another field"))
    for i, index in enumerate(xrm.get("indexes", [])):
        for j, name in enumerate(index["fields"]):
            f = entity.fields.get(name)
            if f is None:
                problems.append(Problem(pointer("x-xrm", "indexes", i, "fields", j), f"{name!r} is not a field of this entity"))
            elif len(f.columns()) != 1 or f.type.name in ("json", "multiselect", "long_text"):
                problems.append(Problem(pointer("x-xrm", "indexes", i, "fields", j), f"{_a(f.type.name)} field cannot be indexed"))
    problems.extend(_check_privacy_options(entity))
    if entity.renamed_from is not None and entity.renamed_from == entity.name:
        problems.append(Problem("/x-xrm/renamed_from", "an entity cannot be renamed from its own name"))
    for f in entity.fields.values():
        if f.renamed_from == f.name:
            problems.append(Problem(pointer("properties", f.name, "x-xrm", "renamed_from"), "a field cannot be renamed from its own name"))
    return problems


# Required personal fields get a placeholder on erasure (NULL would break NOT
# NULL); only these types have one (xrm.privacy.erasure_value).
ERASABLE_WHEN_REQUIRED = frozenset({"text", "long_text", "email"})


def _check_privacy_options(entity: EntityDefinition) -> list[Problem]:
    problems = []
    required = entity.document.get("required", [])
    for name, f in entity.fields.items():
        if f.personal and f.required and f.type.name not in ERASABLE_WHEN_REQUIRED:
            problems.append(Problem(pointer("required", required.index(name)),
                                    f"{name!r} is personal and so must be erasable: a required personal field must be "
                                    f"text, long_text or email (erasure puts a placeholder there), not {f.type.name}"))
        watched = f.xrm.get("set_on_change_of")
        if watched is not None:
            at = pointer("properties", name, "x-xrm", "set_on_change_of")
            if f.type.name != "datetime":
                problems.append(Problem(at, f"only a datetime field can record when another field changed, {name!r} is {f.type.name}"))
            elif watched == name or watched not in entity.fields:
                problems.append(Problem(at, f"{watched!r} is not another field of this entity"))
    rule = entity.xrm.get("retention")
    if rule is not None:
        after = rule.get("after", "updated_at")
        f = entity.fields.get(after)
        if after not in ("updated_at", "created_at") and (f is None or f.type.name not in ("date", "datetime")):
            problems.append(Problem("/x-xrm/retention/after",
                                    f"{after!r} must be updated_at, created_at or a date or datetime field of this entity"))
        if rule["action"] == "anonymise" and not entity.personal_fields:
            problems.append(Problem("/x-xrm/retention/action",
                                    "anonymise changes the fields marked personal (x-xrm personal), and this entity has none"))
    return problems
