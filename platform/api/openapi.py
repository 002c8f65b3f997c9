"""The OpenAPI 3.1 document, generated from the registry on every request.

OpenAPI 3.1 uses JSON Schema 2020-12, so each entity's record schema (the one
the validator uses) drops straight into `components.schemas`. Because the
document is built from the live registry, an entity added or changed while the
server runs appears at once.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from litestar import Request, Response, get

from ..records.query import OPERATORS, Target, filter_targets, is_sortable, operators_of
from ..records.validation import record_schema
from ..registry import CompiledEntity, Registry
from .admin import admin_paths, admin_schemas, record_share_paths
from .auth import auth_paths, auth_schemas
from .privacy import privacy_paths, privacy_schemas
from .spec import error_responses as _errors, json_content as _json, ref as _ref
from .common import platform_of
from .problems import json_response
from .records import BULK_LIMIT

__all__ = ["build_openapi", "openapi_handlers"]

_ERRORS = {
    "400": "Malformed request (body, query or header)",
    "401": "Missing, unknown or revoked API token",
    "403": "The token's user may not do this",
    "404": "Unknown entity or record",
    "409": "Version conflict (If-Match) or refused schema change",
    "413": "Request body too large",
    "422": "Invalid input: one entry per problem, with a JSON pointer",
    "429": "Too many failed logins: logging in with this name is locked for a while (Retry-After)",
}

_SYSTEM_PROPERTIES: dict[str, Any] = {
    "id": {"type": "string", "format": "uuid"},
    "created_at": {"type": "string", "format": "date-time"},
    "created_by": {"type": ["string", "null"], "format": "uuid"},
    "updated_at": {"type": "string", "format": "date-time"},
    "updated_by": {"type": ["string", "null"], "format": "uuid"},
    "owner_id": {"type": ["string", "null"], "format": "uuid"},
    "version": {"type": "integer", "minimum": 1},
    "deleted_at": {"type": ["string", "null"], "format": "date-time"},
}





def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _entity_components(entity: CompiledEntity) -> dict[str, Any]:
    name = entity.name
    writable = record_schema(entity.definition)
    writable.pop("$schema", None)
    patch = copy.deepcopy(writable)
    patch["required"] = []
    patch["properties"] = {k: _nullable(v) for k, v in patch["properties"].items()}
    input_schema = copy.deepcopy(writable)
    for field_name, schema in list(input_schema["properties"].items()):
        if field_name not in writable["required"]:
            input_schema["properties"][field_name] = _nullable(schema)
    input_schema["properties"]["id"] = {"type": "string", "format": "uuid", "description": "Optional: choose the new record's id"}
    record = {
        "type": "object",
        "title": entity.definition.label(),
        "properties": {
            **_SYSTEM_PROPERTIES,
            **{k: _nullable(v) for k, v in writable["properties"].items()},
        },
        "required": list(_SYSTEM_PROPERTIES),
        "additionalProperties": True,  # `<reference>_expanded` with ?expand=
    }
    listed = dict(record, required=["id", "version"],
                  description="A record in a list: every field, or id, version and the fields named in `fields`")
    replace = copy.deepcopy(input_schema)
    del replace["properties"]["id"]
    # A create fills in defaults, so a field with one is not required there
    # (a PUT replaces the record as sent and still needs it).
    input_schema["required"] = [n for n in writable["required"] if not entity.definition.fields[n].has_default]
    bulk_item = copy.deepcopy(patch)
    bulk_item["properties"]["id"] = {"type": "string", "format": "uuid", "description": "Given: update this record; absent: create"}
    bulk_item["properties"]["version"] = {"type": "integer", "minimum": 1, "maximum": 2**31 - 1,
                                          "description": "With id: the version you edited; a mismatch fails the call"}
    bulk_item["dependentRequired"] = {"version": ["id"]}
    return {
        f"{name}.Record": record,
        f"{name}.ListedRecord": listed,
        f"{name}.Input": input_schema,
        f"{name}.Replace": replace,
        f"{name}.Patch": patch,
        f"{name}.Page": {
            "type": "object",
            "required": ["records", "next_cursor"],
            "properties": {
                "records": {"type": "array", "items": _ref(f"{name}.ListedRecord")},
                "next_cursor": {"type": ["string", "null"]},
                "total": {"type": "integer"},
            },
        },
        f"{name}.Bulk": {
            "type": "object",
            "required": ["records"],
            "properties": {"records": {"type": "array", "maxItems": BULK_LIMIT, "items": bulk_item}},
        },
    }


_NO_NUL = "^[^\\u0000]*$"
_IF_MATCH = '^(\\*|(W/)?"[0-9]{1,9}")$'


def _name_list(parameter: str, names: list[str], description: str) -> dict[str, Any]:
    """A comma-separated list of names (?fields=name,city); empty means not given."""
    return {"name": parameter, "in": "query", "description": f"{description}; comma-separated: {', '.join(names)}",
            "schema": {"type": "string", "pattern": _list_pattern(names, "")}}


def _list_pattern(names: list[str], prefix: str) -> str:
    item = prefix + "(" + "|".join(re.escape(n) for n in names) + ")"
    return f"^({item}(,{item})*)?$"


def _filter_parameter(target: Target) -> dict[str, Any]:
    """`field=value` (equals), typed as the parser reads it."""
    kind = target.kind
    schema: dict[str, Any]
    if kind in ("text", "long_text"):
        schema = {"type": "string", "pattern": _NO_NUL}
    elif kind in ("select", "code"):
        schema = {"type": "string", "enum": list(target.options or ())}
    elif kind == "integer":
        schema = {"type": "integer", "minimum": target.bounds[0], "maximum": target.bounds[1]}
    elif kind == "decimal":
        schema = {"type": "number"}
    elif kind == "date":
        schema = {"type": "string", "format": "date"}
    elif kind == "datetime":
        schema = {"type": "string", "format": "date-time"}
    elif kind == "boolean":
        schema = {"type": "boolean"}
    elif kind == "uuid":
        schema = {"type": "string", "format": "uuid"}
    else:  # multiselect: records holding all of these options
        return {"name": target.name, "in": "query", "style": "form", "explode": False,
                "schema": {"type": "array", "items": {"type": "string", "enum": list(target.options or ())}},
                "description": f"Records that have all these options; also {target.name}[op]=..."}
    return {"name": target.name, "in": "query", "schema": schema,
            "description": f"Equals; also {target.name}[op]=value with op in {', '.join(operators_of(target))}"}


_IMPORT_PARAMETERS: list[dict[str, Any]] = [
    {"name": "format", "in": "query", "schema": {"type": "string", "enum": ["csv", "jsonl"]},
     "description": "Default: from Content-Type (application/x-ndjson: JSON Lines), else CSV"},
    {"name": "dry_run", "in": "query", "schema": {"type": "boolean"}, "description": "Check everything, write nothing"},
    {"name": "upsert_key", "in": "query", "schema": {"type": "string"}, "description": "A unique field (or id): rows whose key exists update that record"},
    {"name": "mapping", "in": "query", "schema": {"type": "string"}, "description": 'JSON object {"Column": "field", "Ignored column": null}'},
    {"name": "currency", "in": "query", "schema": {"type": "string"}, "description": "Currency of amounts written without one, e.g. EUR"},
    {"name": "timezone", "in": "query", "schema": {"type": "string"}, "description": "Time zone of date-times without offset, e.g. Europe/Berlin"},
    {"name": "number_format", "in": "query", "schema": {"type": "string", "enum": ["auto", "de", "en"]}, "description": "How . and , are read (1.234,56 is de)"},
    {"name": "date_format", "in": "query", "schema": {"type": "string"}, "description": "An extra strptime pattern, e.g. %m/%d/%Y"},
    {"name": "encoding", "in": "query", "schema": {"type": "string"}, "description": "Default: UTF-8 (with or without BOM), else Windows-1252"},
    {"name": "delimiter", "in": "query", "schema": {"type": "string", "maxLength": 2}, "description": "CSV delimiter (default: detected)"},
]


def _entity_paths(entity: CompiledEntity, registry: Registry) -> dict[str, Any]:
    name, label = entity.name, entity.definition.label()
    tag = [label]
    record_id = {"name": "record_id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}
    if_match = {"name": "If-Match", "in": "header", "required": False,
                "schema": {"type": "string", "pattern": _IF_MATCH},
                "description": 'ETag of the version you edited, e.g. "3"; a mismatch gives 409'}
    etag_header = {"ETag": {"required": True, "schema": {"type": "string"}, "description": "The record's version"}}
    one = {"description": f"The {label} record", "headers": etag_header, "content": _json(_ref(f"{name}.Record"))}
    created = dict(one, headers={**etag_header, "Location": {"required": True, "schema": {"type": "string"}, "description": "URL of the new record"}})
    targets = filter_targets(entity)
    filter_params = [_filter_parameter(target) for target in targets if "eq" in operators_of(target)]
    sortable = [t.name for t in targets if is_sortable(t)]
    references = [field for field, f in entity.fields.items() if f.type.name == "reference" and f"{field}_expanded" not in entity.fields]
    from ..plugins import get_plugin_manager

    offered = {n: e for n, e in get_plugin_manager().expansions(entity.name, registry).items()
               if n not in entity.fields and f"{n}_expanded" not in entity.fields}
    selectable = list(_SYSTEM_PROPERTIES) + list(entity.fields)
    expand_help = "Reference fields whose records to include as <field>_expanded (one level)"
    if offered:
        expand_help += "; also, as <name>_expanded lists: " + "; ".join(f"{n} ({e.description})" if e.description else n for n, e in offered.items())
    expand = [_name_list("expand", references + list(offered), expand_help)] if references or offered else []
    list_params = [
        {"name": "q", "in": "query", "schema": {"type": "string", "pattern": _NO_NUL}, "description": "Full-text search over the search fields"},
        {"name": "sort", "in": "query", "schema": {"type": "string", "pattern": _list_pattern(sortable, "-?")},
         "description": "Comma-separated sort keys, each a field, prefixed with - for descending (empty: created_at, oldest first): " + ", ".join(sortable)},
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}},
        {"name": "after", "in": "query", "schema": {"type": "string"}, "description": "next_cursor of the previous page (same filters and sort)"},
        _name_list("fields", selectable, "Fields to return (id and version always come)"),
        {"name": "total", "in": "query", "schema": {"type": "boolean"}, "description": "Also count all matching records"},
        *expand,
        {"name": "include_deleted", "in": "query", "schema": {"type": "boolean"}, "description": "Include soft-deleted records"},
    ]
    filters_help = "Filters: `field=value` (equals), or `field[op]=value` with op one of " + ", ".join(OPERATORS) + \
        " (`in` takes a comma-separated list, `is_null` true/false). Operators per field:\n\n" + \
        "\n".join(f"- `{t.name}` ({t.type_name}): {', '.join(operators_of(t))}" for t in targets)
    return {
        f"/api/v1/{name}": {
            "get": {
                "operationId": f"list_{name}", "tags": tag, "summary": f"List {entity.definition.label(plural=True)}",
                "description": filters_help,
                "parameters": list_params + filter_params,
                "responses": {"200": {"description": "A page of records", "content": _json(_ref(f"{name}.Page"))}, **_errors("400", "401", "403", "404", "422")},
            },
            "post": {
                "operationId": f"create_{name}", "tags": tag, "summary": f"Create a {label}",
                "requestBody": {"required": True, "content": _json(_ref(f"{name}.Input"))},
                "responses": {"201": created, **_errors("400", "401", "403", "404", "413", "422")},
            },
        },
        f"/api/v1/{name}/_bulk": {
            "post": {
                "operationId": f"bulk_{name}", "tags": tag, "summary": f"Create or update up to {BULK_LIMIT} records, all or nothing",
                "requestBody": {"required": True, "content": _json(_ref(f"{name}.Bulk"))},
                "responses": {
                    "200": {"description": "All records written", "content": _json({"type": "object", "required": ["records"], "properties": {"records": {"type": "array", "items": _ref(f"{name}.Record")}}})},
                    **_errors("400", "401", "403", "404", "413", "422"),
                },
            }
        },
        f"/api/v1/{name}/{{record_id}}": {
            "parameters": [record_id],
            "get": {
                "operationId": f"get_{name}", "tags": tag, "summary": f"Get a {label}",
                "parameters": expand,
                "responses": {"200": one, **_errors("400", "401", "403", "404", "422")},
            },
            "put": {
                "operationId": f"replace_{name}", "tags": tag, "summary": f"Replace a {label} (missing fields are cleared)",
                "parameters": [if_match],
                "requestBody": {"required": True, "content": _json(_ref(f"{name}.Replace"))},
                "responses": {"200": one, **_errors("400", "401", "403", "404", "409", "413", "422")},
            },
            "patch": {
                "operationId": f"update_{name}", "tags": tag, "summary": f"Change some fields of a {label}",
                "parameters": [if_match],
                "requestBody": {"required": True, "content": _json(_ref(f"{name}.Patch"))},
                "responses": {"200": one, **_errors("400", "401", "403", "404", "409", "413", "422")},
            },
            "delete": {
                "operationId": f"delete_{name}", "tags": tag, "summary": f"Delete a {label} (soft; restorable)",
                "parameters": [if_match],
                "responses": {"200": one, **_errors("400", "401", "403", "404", "409")},
            },
        },
        f"/api/v1/{name}/_import": {
            "post": {
                "operationId": f"import_{name}", "tags": tag, "summary": f"Import {entity.definition.label(plural=True)} from CSV or JSON Lines",
                "description": "The body is the file. Columns map to fields by name or label (en/de); bad rows are reported "
                               "with row, column and reason and never stop the good ones. See docs/import-export.md.",
                "parameters": _IMPORT_PARAMETERS,
                # Any bytes are a file to read; what is wrong in it is in the report.
                "requestBody": {"required": True, "content": {"text/csv": {"schema": {}}, "application/x-ndjson": {"schema": {}}}},
                "responses": {"200": {"description": "What was (or, with dry_run, would be) imported, and every bad row",
                                      "content": _json(_ref("ImportReport"))},
                              **_errors("400", "401", "403", "404", "413", "422")},
            }
        },
        f"/api/v1/{name}/_export": {
            "get": {
                "operationId": f"export_{name}", "tags": tag, "summary": f"Export {entity.definition.label(plural=True)} (streamed)",
                "description": "Takes the list's filters, q and sort. " + filters_help,
                "parameters": [
                    {"name": "format", "in": "query", "schema": {"type": "string", "enum": ["csv", "jsonl"], "default": "csv"}},
                    {"name": "references", "in": "query", "schema": {"type": "string", "enum": ["id", "display"], "default": "id"},
                     "description": "References as record ids (round-trips) or as the target's display value"},
                    *[p for p in list_params if p["name"] in ("q", "sort")],
                    *filter_params,
                ],
                "responses": {"200": {"description": "The records, one CSV row or JSON line each", "content": {
                    "text/csv": {"schema": {"type": "string"}},
                    "application/x-ndjson": {"schema": {"type": "string"}},
                }}, **_errors("400", "401", "403", "404", "422")},
            }
        },
        f"/api/v1/{name}/{{record_id}}/history": {
            "parameters": [record_id],
            "get": {
                "operationId": f"history_{name}", "tags": tag, "summary": f"Audit trail of a {label}: who changed what, when",
                "responses": {"200": {"description": "Entries, oldest first; changes per field with old and new value",
                                      "content": _json({"type": "object", "required": ["entries"],
                                                        "properties": {"entries": {"type": "array", "items": _ref("AuditEntry")}}})},
                              **_errors("400", "401", "403", "404")},
            }
        },
        f"/api/v1/{name}/{{record_id}}/restore": {
            "parameters": [record_id],
            "post": {
                "operationId": f"restore_{name}", "tags": tag, "summary": f"Restore a deleted {label}",
                "responses": {"200": one, **_errors("400", "401", "403", "404", "422")},
            },
        },
    }


def _meta_paths() -> dict[str, Any]:
    change = {
        "type": "object",
        "properties": {
            "definitions": {"type": "array", "items": {"type": "object"}, "description": "Entity definitions (see docs/entity-definitions.md)"},
            "remove": {"type": "array", "items": {"type": "string"}},
            "allow_destructive": {"type": "boolean", "default": False},
        },
    }
    plan = {"description": "The plan (steps with kind safe/backfill/destructive, impact, refusals)", "content": _json(_ref("SchemaPlan"))}
    tag = ["Entity definitions"]
    return {
        "/api/v1/meta/entities": {"get": {"operationId": "list_entities", "tags": tag, "summary": "List entity types",
                                          "responses": {"200": {"description": "Entity types", "content": _json({"type": "object"})}, **_errors("401")}}},
        "/api/v1/meta/entities/{name}": {"get": {"operationId": "get_entity", "tags": tag, "summary": "Get a current definition",
                                                 "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
                                                 "responses": {"200": {"description": "The definition", "content": _json({"type": "object"})}, **_errors("401", "404")}}},
        "/api/v1/meta/plan": {"post": {"operationId": "plan_definitions", "tags": tag, "summary": "Plan a change (changes nothing)",
                                       "requestBody": {"required": True, "content": _json(change)},
                                       "responses": {"200": plan, **_errors("400", "401", "403", "404", "413", "422")}}},
        "/api/v1/meta/apply": {"post": {"operationId": "apply_definitions", "tags": tag, "summary": "Apply a change in one transaction",
                                        "requestBody": {"required": True, "content": _json(change)},
                                        "responses": {"200": plan, **_errors("400", "401", "403", "404", "409", "413", "422")}}},
        "/api/v1/meta/revert": {"post": {"operationId": "revert_definitions", "tags": tag, "summary": "Undo the newest change still in effect",
                                         "responses": {"200": plan, **_errors("400", "401", "403", "404", "409", "422")}}},
        "/api/v1/meta/history": {"get": {"operationId": "definition_history", "tags": tag, "summary": "Definition versions, newest first",
                                         "parameters": [{"name": "entity", "in": "query", "schema": {"type": "string"}}],
                                         "responses": {"200": {"description": "Versions", "content": _json({"type": "object"})}, **_errors("401", "404")}}},
    }


def _audit_paths() -> dict[str, Any]:
    text = {"type": "string", "pattern": _NO_NUL}
    moment = {"type": "string", "format": "date-time"}
    parameters = [
        {"name": "entity", "in": "query", "schema": text},
        {"name": "record_id", "in": "query", "schema": {"type": "string", "format": "uuid"}},
        {"name": "user", "in": "query", "schema": text, "description": "User name"},
        {"name": "action", "in": "query", "schema": text, "description": "e.g. record.updated, schema.changed, auth.login_failed, export"},
        {"name": "field", "in": "query", "schema": text, "description": "Entries that changed this field"},
        {"name": "since", "in": "query", "schema": moment},
        {"name": "until", "in": "query", "schema": moment},
        {"name": "before", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}, "description": "next_before of the previous page"},
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
    ]
    page = {"type": "object", "required": ["entries", "next_before"], "properties": {
        "entries": {"type": "array", "items": _ref("AuditEntry")}, "next_before": {"type": ["integer", "null"]}}}
    return {"/api/v1/admin/audit": {"get": {
        "operationId": "search_audit", "tags": ["Audit trail"], "summary": "Search the audit trail, newest first (admins)",
        "parameters": parameters,
        "responses": {"200": {"description": "A page of entries", "content": _json(page)}, **_errors("400", "401", "403", "422")},
    }}, "/api/v1/admin/audit/_export": {"get": {
        "operationId": "export_audit", "tags": ["Audit trail"],
        "summary": "Every matching entry as JSON Lines, newest first (admins; the export is audited)",
        "parameters": [p for p in parameters if p["name"] not in ("before", "limit")],
        "responses": {"200": {"description": "One AuditEntry per line", "content": {"application/x-ndjson": {"schema": {"type": "string"}}}},
                      **_errors("400", "401", "403", "422")},
    }}}


def build_openapi(registry: Registry) -> dict[str, Any]:
    schemas: dict[str, Any] = {
        "Problem": {
            "type": "object",
            "description": "RFC 9457 problem details",
            "required": ["type", "title", "status", "detail"],
            "properties": {
                "type": {"type": "string"},
                "title": {"type": "string"},
                "status": {"type": "integer"},
                "detail": {"type": "string"},
                "errors": {"type": "array", "items": {"type": "object", "required": ["pointer", "detail"],
                                                       "properties": {"pointer": {"type": "string"}, "detail": {"type": "string"}}}},
            },
        },
        "ImportReport": {
            "type": "object",
            "required": ["entity", "dry_run", "rows", "created", "updated", "skipped", "error_count", "errors"],
            "properties": {
                "entity": {"type": "string"}, "dry_run": {"type": "boolean"}, "rows": {"type": "integer"},
                "created": {"type": "integer"}, "updated": {"type": "integer"}, "skipped": {"type": "integer"},
                "error_count": {"type": "integer"},
                "errors": {"type": "array", "items": {"type": "object", "required": ["row", "message"], "properties": {
                    "row": {"type": "integer"}, "column": {"type": ["string", "null"]}, "field": {"type": ["string", "null"]},
                    "message": {"type": "string"}}}},
                "mapping": {"type": "object", "additionalProperties": {"type": "string"}},
                "unmapped_columns": {"type": "array", "items": {"type": "string"}},
                "notes": {"type": "array", "items": {"type": "string"}},
                "approximate_matches": {"type": "array", "items": {"type": "object"}},
                "seconds": {"type": "number"},
            },
        },
        "AuditEntry": {
            "type": "object",
            "required": ["id", "at", "user", "action"],
            "properties": {
                "id": {"type": "integer"}, "at": {"type": "string", "format": "date-time"},
                "user_id": {"type": ["string", "null"]}, "user": {"type": "string"}, "action": {"type": "string"},
                "entity": {"type": ["string", "null"]}, "record_id": {"type": ["string", "null"]},
                "changes": {"type": ["object", "null"], "additionalProperties": {
                    "type": "object", "required": ["old", "new"], "properties": {"old": {}, "new": {}}}},
                "details": {"type": ["object", "null"]},
            },
        },
        "SchemaPlan": {"type": "object", "properties": {"changeset_id": {"type": ["integer", "null"]}, "steps": {"type": "array"}, "refusals": {"type": "array"}}},
    }
    paths: dict[str, Any] = {}
    for entity in registry:
        schemas.update(_entity_components(entity))
        paths.update(_entity_paths(entity, registry))
        paths.update(record_share_paths(entity.name, entity.definition.label()))
    paths.update(_meta_paths())
    paths.update(_audit_paths())
    paths.update(admin_paths())
    schemas.update(admin_schemas())
    paths.update(auth_paths())
    schemas.update(auth_schemas())
    paths.update(privacy_paths())
    schemas.update(privacy_schemas())
    from ..plugins import get_plugin_manager

    for _, part in get_plugin_manager().each("xrm_openapi", registry=registry):
        paths.update((part or {}).get("paths", {}))
        schemas.update((part or {}).get("schemas", {}))
    return {
        "openapi": "3.1.0",
        "info": {"title": "xrm API", "version": f"1.{registry.generation}",
                 "description": "Generated from the entity definitions; it changes as soon as a definition does."},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "xrm token create --user NAME"}},
            "responses": {
                f"Problem{code}": {"description": text, "content": {"application/problem+json": {"schema": _ref("Problem")}}}
                for code, text in _ERRORS.items()
            },
        },
    }


@get("/api/openapi.json")
async def openapi_document(request: Request[Any, Any, Any]) -> Response[bytes]:
    return json_response(build_openapi(platform_of(request).registry))


openapi_handlers = [openapi_document]
