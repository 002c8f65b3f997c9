"""Entity definitions: the corpus of invalid ones, and what valid ones compile to.

Each file in tests/definitions/invalid/ is one bad definition with the JSON
pointer and a fragment of the message the parser must report for it:

    {"description": "...", "expected_pointer": "/properties/...",
     "expected_message": "fragment", "known_entities": ["account"],
     "definition": {...}}

`known_entities` is optional (without it the reference check is skipped).
Pure Python: no database is needed.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from xrm.errors import DefinitionInvalid
from xrm.schema.definition import check_definition_set, parse_definition
from xrm.schema.field_types import FIELD_TYPES

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path(__file__).resolve().parent / "definitions" / "invalid"
CASE_KEYS = {"description", "expected_pointer", "expected_message", "known_entities", "definition"}
S = "https://json-schema.org/draft/2020-12/schema"


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


CASE_FILES = sorted(CORPUS.glob("*.json"))


def test_corpus_is_large_enough() -> None:
    assert len(CASE_FILES) >= 30


@pytest.mark.parametrize("path", CASE_FILES, ids=[p.stem for p in CASE_FILES])
def test_invalid_definition_is_rejected_at_the_expected_pointer(path: Path) -> None:
    case = _load(path)
    assert set(case) <= CASE_KEYS, f"unknown keys in {path.name}: {set(case) - CASE_KEYS}"
    assert case["description"] and case["expected_message"]
    document = case["definition"]
    before = copy.deepcopy(document)

    with pytest.raises(DefinitionInvalid) as raised:
        parse_definition(document, known_entities=case.get("known_entities"), source=path.name)

    problems = raised.value.problems
    assert problems, "DefinitionInvalid without problems"
    expected_pointer, fragment = case["expected_pointer"], case["expected_message"].lower()
    matching = [p for p in problems if p.pointer == expected_pointer and fragment in p.message.lower()]
    assert matching, (
        f"{path.name}: expected a problem at {expected_pointer!r} containing {case['expected_message']!r}; got:\n"
        + "\n".join(f"  {p.pointer!r}: {p.message}" for p in problems)
    )
    # Every pointer leads into the submitted document (a missing key: its parent does).
    for problem in problems:
        assert _resolves(document, problem.pointer), f"{problem.pointer!r} does not point into the document"
    assert path.name in str(raised.value)
    assert document == before, "parse_definition changed the submitted document"


def _resolves(document: Any, json_pointer: str) -> bool:
    """The pointer's parent exists in the document (RFC 6901)."""
    if json_pointer == "":
        return True
    assert json_pointer.startswith("/"), json_pointer
    tokens = [t.replace("~1", "/").replace("~0", "~") for t in json_pointer[1:].split("/")]
    node = document
    for token in tokens[:-1]:
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            return False
    return isinstance(node, (dict, list))


# -- valid definitions --------------------------------------------------------

EVERY_TYPE: dict[str, Any] = {
    "$schema": S,
    "$id": "https://example.com/schemas/specimen.json",
    "title": "Specimen",
    "description": "One field of every type.",
    "type": "object",
    "additionalProperties": False,
    "x-xrm": {
        "name": "specimen",
        "label": {"en": "Specimen", "de": "Muster"},
        "plural": {"en": "Specimens", "de": "Muster"},
        "description": {"en": "Every field type once."},
        "display_field": "title",
        "search_fields": ["title", "notes", "email", "status"],
        "indexes": [{"fields": ["status", "founded"]}, {"fields": ["code"], "unique": True}],
    },
    "required": ["title", "status"],
    "properties": {
        "title": {"type": "string", "minLength": 1, "maxLength": 200, "x-xrm": {"label": {"en": "Title", "de": "Titel"}}},
        "code": {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{4}$", "x-xrm": {"unique": True}},
        "notes": {"x-xrm": {"type": "long_text", "widget": "textarea"}},
        "employees": {"type": "integer", "minimum": 0, "maximum": 1000000, "default": 0},
        "rate": {"type": "number", "exclusiveMinimum": 0, "x-xrm": {"precision": 6, "scale": 2}},
        "price": {
            "x-xrm": {"type": "currency", "currencies": ["EUR", "USD"], "scale": 2},
            "minimum": 0,
            "default": {"amount": 10, "currency": "EUR"},
        },
        "active": {"type": "boolean", "default": True, "x-xrm": {"widget": "toggle"}},
        "founded": {"type": "string", "format": "date"},
        "last_contact": {"type": "string", "format": "date-time"},
        "status": {
            "type": "string",
            "enum": ["lead", "customer", "lost"],
            "default": "lead",
            "x-xrm": {"option_labels": {"lead": {"en": "Lead"}, "customer": {"en": "Customer", "de": "Kunde"}}},
        },
        "colours": {
            "type": "array",
            "items": {"type": "string", "enum": ["red", "green", "blue"]},
            "uniqueItems": True,
            "minItems": 0,
            "maxItems": 2,
            "default": ["red"],
        },
        "email": {"type": "string", "format": "email", "maxLength": 200, "x-xrm": {"unique": True}},
        "phone": {"x-xrm": {"type": "phone"}},
        "website": {"type": "string", "format": "uri"},
        "company": {"x-xrm": {"type": "reference", "references": "account"}},
        "parent": {"type": "string", "format": "uuid", "x-xrm": {"type": "reference", "references": "specimen"}},
        "extra": {"type": "object", "x-xrm": {"widget": "json"}},
    },
}

EXPECTED_TYPES = {
    "title": "text",
    "code": "text",
    "notes": "long_text",
    "employees": "integer",
    "rate": "decimal",
    "price": "currency",
    "active": "boolean",
    "founded": "date",
    "last_contact": "datetime",
    "status": "select",
    "colours": "multiselect",
    "email": "email",
    "phone": "phone",
    "website": "url",
    "company": "reference",
    "parent": "reference",
    "extra": "json",
}


def test_definition_with_every_field_type_parses() -> None:
    definition = parse_definition(EVERY_TYPE, known_entities=["account"])
    assert definition.name == "specimen"
    assert {name: f.type.name for name, f in definition.fields.items()} == EXPECTED_TYPES
    assert set(EXPECTED_TYPES.values()) == set(FIELD_TYPES)
    assert list(definition.fields) == list(EVERY_TYPE["properties"])  # property order is field order
    assert [n for n, f in definition.fields.items() if f.required] == ["title", "status"]
    assert definition.display_field == "title"
    assert definition.search_fields == ["title", "notes", "email", "status"]
    assert definition.references() == {"account", "specimen"}
    assert [c.name for c in definition.fields["price"].columns()] == ["price_amount", "price_currency"]
    assert definition.fields["status"].default == "lead"
    assert not definition.fields["notes"].has_default
    assert definition.label("de", plural=True) == "Muster"


def test_reference_check_is_skipped_without_known_entities() -> None:
    parse_definition(EVERY_TYPE)  # "account" is not checked
    with pytest.raises(DefinitionInvalid) as raised:
        parse_definition(EVERY_TYPE, known_entities=[])
    assert [p.pointer for p in raised.value.problems] == ["/properties/company/x-xrm/references"]


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"type": "string"}, "text"),
        ({"type": "string", "maxLength": 20}, "text"),
        ({"type": "string", "format": "email"}, "email"),
        ({"type": "string", "format": "uri"}, "url"),
        ({"type": "string", "format": "date"}, "date"),
        ({"type": "string", "format": "date-time"}, "datetime"),
        ({"type": "string", "enum": ["a", "b"]}, "select"),
        ({"type": "array", "items": {"enum": ["a", "b"]}}, "multiselect"),
        ({"type": "integer"}, "integer"),
        ({"type": "number"}, "decimal"),
        ({"type": "boolean"}, "boolean"),
        ({"type": "object"}, "json"),
        ({"x-xrm": {"type": "phone"}}, "phone"),
        ({"type": "string", "x-xrm": {"type": "long_text"}}, "long_text"),
    ],
    ids=lambda value: json.dumps(value, sort_keys=True) if isinstance(value, dict) else value,
)
def test_field_type_is_inferred_from_plain_json_schema(schema: dict[str, Any], expected: str) -> None:
    document = {"type": "object", "x-xrm": {"name": "thing", "label": {"en": "Thing"}}, "properties": {"f": schema}}
    assert parse_definition(document).fields["f"].type.name == expected


def _thing(properties: dict[str, Any], **xrm: Any) -> dict[str, Any]:
    return {"type": "object", "x-xrm": {"name": "thing", "label": {"en": "Thing"}, **xrm}, "properties": properties}


def test_display_field_defaults_to_first_text_like_field() -> None:
    definition = parse_definition(
        _thing(
            {
                "count": {"type": "integer"},
                "data": {"type": "object"},
                "since": {"type": "string", "format": "date"},
                "name": {"type": "string"},
                "other": {"type": "string"},
            }
        )
    )
    assert definition.display_field == "name"
    assert definition.search_fields == ["name"]


def test_display_field_is_none_without_text_like_fields() -> None:
    definition = parse_definition(_thing({"count": {"type": "integer"}, "active": {"type": "boolean"}}))
    assert definition.display_field is None
    assert definition.search_fields == []


def test_explicit_display_field_wins() -> None:
    definition = parse_definition(_thing({"name": {"type": "string"}, "code": {"type": "string"}}, display_field="code"))
    assert definition.display_field == "code"


def test_all_problems_are_reported_at_once() -> None:
    document = _thing(
        {
            "id": {"type": "string"},
            "Bad": {"type": "string"},
            "n": {"type": "integer", "maxLength": 3, "minimum": 5, "maximum": 1},
        },
    )
    document["required"] = ["missing"]
    with pytest.raises(DefinitionInvalid) as raised:
        parse_definition(document)
    assert {p.pointer for p in raised.value.problems} == {
        "/properties/id",
        "/properties/Bad",
        "/properties/n/maxLength",
        "/properties/n/minimum",
        "/required/0",
    }


SHIPPED = sorted((ROOT / "entity_schemas").glob("*.json"))


@pytest.mark.skipif(not SHIPPED, reason="no shipped entity_schemas/*.json")
def test_shipped_entity_schemas_parse_together() -> None:
    documents = {path: _load(path) for path in SHIPPED}
    names = [document["x-xrm"]["name"] for document in documents.values()]
    assert len(names) == len(set(names)), "two shipped files define the same entity"
    definitions = {}
    for path, document in documents.items():
        definition = parse_definition(document, known_entities=names, source=path.name)
        assert definition.name == path.stem, "file name and entity name differ"
        definitions[definition.name] = definition
    assert check_definition_set(definitions) == []
