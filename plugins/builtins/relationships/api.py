"""REST sub-resources of records (links, connections, tree), connection roles and link import, with their OpenAPI part."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

from litestar import Request, Response, delete, get, post
from litestar.params import FromPath

from xrm.api.common import platform_of, principal_of, read_json
from xrm.api.problems import BadRequest, json_response
from xrm.api.spec import error_responses as _errors, json_content as _json, ref as _ref
from xrm.errors import NotFound, Problem, ValidationFailed, XrmError

from .model import hierarchy_of, link_definitions
from .store import Relationships, as_uuid

__all__ = ["api_routes", "openapi"]

IMPORT_LIMIT = 10_000


async def _relationships(request: Request[Any, Any, Any]) -> Relationships:
    principal = await principal_of(request)
    return Relationships(platform_of(request), principal)


def _entity(rel: Relationships, entity: str) -> None:
    rel.registry.get(entity)  # 404 for an unknown entity


@get("/api/v1/{entity:str}/{record_id:str}/links/{link:str}")
async def list_links(request: Request[Any, Any, Any], entity: FromPath[str], record_id: FromPath[str], link: FromPath[str]) -> Response[bytes]:
    rel = await _relationships(request)
    _entity(rel, entity)
    return json_response({"links": await rel.list_links(entity, record_id, link)})


@post("/api/v1/{entity:str}/{record_id:str}/links/{link:str}", status_code=201)
async def create_link(request: Request[Any, Any, Any], entity: FromPath[str], record_id: FromPath[str], link: FromPath[str]) -> Response[bytes]:
    rel = await _relationships(request)
    _entity(rel, entity)
    rel.link(entity, link)
    return json_response(await rel.create_link(entity, record_id, link, await read_json(request)), 201)


@delete("/api/v1/{entity:str}/{record_id:str}/links/{link:str}/{link_id:str}", status_code=204)
async def remove_link(request: Request[Any, Any, Any], entity: FromPath[str], record_id: FromPath[str], link: FromPath[str],
                      link_id: FromPath[str]) -> None:
    rel = await _relationships(request)
    _entity(rel, entity)
    await rel.remove(entity, record_id, link_id, kind="link", name=link)


def _at(request: Request[Any, Any, Any]) -> dt.date | None:
    value = request.query_params.get("at")
    if value is None or value == "":
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise BadRequest("Invalid query parameter", [Problem("/at", "must be a date (YYYY-MM-DD)")]) from None


@get("/api/v1/{entity:str}/{record_id:str}/connections")
async def list_connections(request: Request[Any, Any, Any], entity: FromPath[str], record_id: FromPath[str]) -> Response[bytes]:
    rel = await _relationships(request)
    _entity(rel, entity)
    at = _at(request)
    return json_response({"connections": await rel.connections(entity, record_id, at=at)})


@post("/api/v1/{entity:str}/{record_id:str}/connections", status_code=201)
async def create_connection(request: Request[Any, Any, Any], entity: FromPath[str], record_id: FromPath[str]) -> Response[bytes]:
    rel = await _relationships(request)
    _entity(rel, entity)
    return json_response(await rel.connect(entity, record_id, await read_json(request)), 201)


@delete("/api/v1/{entity:str}/{record_id:str}/connections/{link_id:str}", status_code=204)
async def remove_connection(request: Request[Any, Any, Any], entity: FromPath[str], record_id: FromPath[str], link_id: FromPath[str]) -> None:
    rel = await _relationships(request)
    _entity(rel, entity)
    await rel.remove(entity, record_id, link_id, kind="connection")


@get("/api/v1/{entity:str}/{record_id:str}/tree")
async def tree(request: Request[Any, Any, Any], entity: FromPath[str], record_id: FromPath[str]) -> Response[bytes]:
    rel = await _relationships(request)
    _entity(rel, entity)
    rel.hierarchy(entity)
    return json_response(await rel.tree(entity, record_id))


@get("/api/v1/_connection_roles")
async def list_roles(request: Request[Any, Any, Any]) -> Response[bytes]:
    rel = await _relationships(request)
    return json_response({"roles": await rel.roles()})


@post("/api/v1/_connection_roles", status_code=201)
async def create_role(request: Request[Any, Any, Any]) -> Response[bytes]:
    rel = await _relationships(request)
    return json_response(await rel.create_role(await read_json(request)), 201)


@delete("/api/v1/_connection_roles/{name:str}", status_code=204)
async def delete_role(request: Request[Any, Any, Any], name: FromPath[str]) -> None:
    rel = await _relationships(request)
    await rel.delete_role(name)


# -- import -------------------------------------------------------------------------------
async def _find(rel: Relationships, entity: str, value: Any) -> Any:
    """A record by id or by its display field's exact value (must be unique among the records the user may read)."""
    key = as_uuid(value)
    if key is not None:
        return key
    compiled = rel.registry.get(entity)
    name = compiled.definition.display_field
    if not isinstance(value, str) or not value.strip() or name is None:
        raise ValueError(f"must be a {entity} id or its {name or 'display field'}")
    page = await rel.records(entity).list(where=[(name, "eq", value.strip())], limit=2)
    if not page.records:
        raise ValueError(f"no {entity} record named {value!r} that you may read")
    if len(page.records) > 1:
        raise ValueError(f"more than one {entity} record is named {value!r}; give its id")
    return page.records[0]["id"]


@post("/api/v1/{entity:str}/_links/{link:str}", status_code=200)
async def import_links(request: Request[Any, Any, Any], entity: FromPath[str], link: FromPath[str]) -> Response[bytes]:
    """JSON Lines (or a JSON array) of {"source", "target", "attributes"}: ids or display names; bad lines are reported, good ones written."""
    rel = await _relationships(request)
    _entity(rel, entity)
    definition, inverse = rel.link(entity, link)
    body = (await request.body()).decode("utf-8", errors="replace")
    stripped = body.strip()
    items: list[Any] = []
    errors: list[dict[str, Any]] = []
    if stripped.startswith("["):
        try:
            parsed = json.loads(stripped)
        except json.JSONDecodeError as error:
            raise BadRequest(f"The body is not valid JSON: {error}") from None
        items = list(parsed)
    else:
        for number, line in enumerate(body.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                items.append((number, json.loads(line)))
            except json.JSONDecodeError as error:
                errors.append({"row": number, "message": f"not valid JSON: {error.msg}"})
    numbered = [(i + 1, item) for i, item in enumerate(items)] if stripped.startswith("[") else items
    if len(numbered) > IMPORT_LIMIT:
        raise BadRequest(f"At most {IMPORT_LIMIT} links per call, got {len(numbered)}")
    here, there = (definition.target, definition.source) if inverse else (definition.source, definition.target)
    created = 0
    for number, item in numbered:
        if not isinstance(item, Mapping):
            errors.append({"row": number, "message": 'must be a JSON object {"source", "target", "attributes"}'})
            continue
        unknown = sorted(set(item) - {"source", "target", "attributes"})
        if unknown:
            errors.append({"row": number, "message": f"unknown key {unknown[0]!r} (source, target, attributes)"})
            continue
        try:
            source = await _find(rel, here, item.get("source"))
        except ValueError as error:
            errors.append({"row": number, "message": f"source: {error}"})
            continue
        try:
            target = await _find(rel, there, item.get("target"))
        except ValueError as error:
            errors.append({"row": number, "message": f"target: {error}"})
            continue
        payload = {"target": str(target), **({"attributes": item["attributes"]} if "attributes" in item else {})}
        try:
            await rel.create_link(entity, source, link, payload)
        except ValidationFailed as error:
            errors.append({"row": number, "message": "; ".join(f"{p.pointer or '/'}: {p.message}" for p in error.problems)})
            continue
        except XrmError as error:
            errors.append({"row": number, "message": error.message})
            continue
        created += 1
    errors.sort(key=lambda e: e["row"])
    return json_response({"rows": len(numbered) + sum(1 for e in errors if "not valid JSON" in e["message"]), "created": created,
                          "skipped": len(errors), "errors": errors})


api_routes = [list_links, create_link, remove_link, list_connections, create_connection, remove_connection, tree,
              list_roles, create_role, delete_role, import_links]


# -- OpenAPI --------------------------------------------------------------------------------



_UUID = {"type": "string", "format": "uuid"}
_LABEL = {"type": "object", "required": ["en"], "properties": {"en": {"type": "string"}, "de": {"type": "string"}}}
_OTHER = {"type": "object", "required": ["entity", "id", "display"],
          "properties": {"entity": {"type": "string"}, "id": _UUID, "display": {"type": "string"}}}


def openapi(registry: Any) -> dict[str, Any]:
    schemas: dict[str, Any] = {
        "relationships.Link": {
            "type": "object", "required": ["id", "link", "record_id", "other", "attributes", "created_at"],
            "properties": {"id": _UUID, "link": {"type": "string"}, "record_id": _UUID, "other": _OTHER,
                           "attributes": {"type": "object"}, "created_at": {"type": "string", "format": "date-time"},
                           "created_by": {"type": ["string", "null"], "format": "uuid"}}},
        "relationships.Connection": {
            "type": "object", "required": ["id", "role", "direction", "label", "other", "valid_from", "valid_until", "active"],
            "properties": {"id": _UUID, "role": {"type": "string"}, "direction": {"enum": ["forward", "reverse"]},
                           "label": _LABEL, "other": _OTHER,
                           "valid_from": {"type": ["string", "null"], "format": "date"},
                           "valid_until": {"type": ["string", "null"], "format": "date"},
                           "active": {"type": "boolean", "description": "Valid today"},
                           "created_at": {"type": "string", "format": "date-time"},
                           "created_by": {"type": ["string", "null"], "format": "uuid"}}},
        "relationships.ConnectionInput": {
            "type": "object", "required": ["role", "other_entity", "other_id"], "additionalProperties": False,
            "properties": {"role": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,62}$"},
                           "other_entity": {"type": "string", "enum": registry.names() or ["-"]},
                           "other_id": _UUID,
                           "direction": {"enum": ["forward", "reverse"], "default": "forward",
                                         "description": "forward: this record has the role towards the other; reverse: the other has it towards this one"},
                           "valid_from": {"type": ["string", "null"], "format": "date"},
                           "valid_until": {"type": ["string", "null"], "format": "date"}}},
        "relationships.Role": {
            "type": "object", "required": ["name", "label", "inverse_label", "source_entities", "target_entities"],
            "properties": {"name": {"type": "string"}, "label": _LABEL, "inverse_label": _LABEL,
                           "source_entities": {"type": ["array", "null"], "items": {"type": "string"}},
                           "target_entities": {"type": ["array", "null"], "items": {"type": "string"}},
                           "plugin": {"type": ["string", "null"], "description": "The plugin that declares this role (xrm_relationship_types); such a role cannot be deleted"}}},
        "relationships.RoleInput": {
            "type": "object", "required": ["name", "label"], "additionalProperties": False,
            "properties": {"name": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,62}$"},
                           "label": {"type": "object", "required": ["en"], "additionalProperties": False,
                                     "properties": {"en": {"type": "string", "minLength": 1, "maxLength": 100, "pattern": "^[^\\u0000]*\\S[^\\u0000]*$"},
                                                    "de": {"type": "string", "maxLength": 100, "pattern": "^[^\\u0000]*$"}}},
                           "inverse_label": {"type": "object", "required": ["en"], "additionalProperties": False,
                                             "properties": {"en": {"type": "string", "minLength": 1, "maxLength": 100, "pattern": "^[^\\u0000]*\\S[^\\u0000]*$"},
                                                            "de": {"type": "string", "maxLength": 100, "pattern": "^[^\\u0000]*$"}}},
                           "source_entities": {"type": "array", "minItems": 1, "items": {"enum": registry.names() or ["-"]}},
                           "target_entities": {"type": "array", "minItems": 1, "items": {"enum": registry.names() or ["-"]}}}},
        "relationships.TreeNode": {
            "type": "object", "required": ["id", "display", "depth", "children"],
            "properties": {"id": _UUID, "display": {"type": "string"}, "depth": {"type": "integer"},
                           "children": {"type": "array", "items": _ref("relationships.TreeNode")}}},
        "relationships.Tree": {
            "type": "object", "required": ["entity", "root", "ancestors", "truncated", "count", "rollups"],
            "properties": {"entity": {"type": "string"}, "root": _ref("relationships.TreeNode"),
                           "ancestors": {"type": "array", "items": {"type": "object", "required": ["id", "display"],
                                                                    "properties": {"id": _UUID, "display": {"type": "string"}}}},
                           "truncated": {"type": "boolean"}, "count": {"type": "integer"}, "parent_field": {"type": "string"},
                           "rollups": {"type": "array", "items": {"type": "object", "required": ["name", "aggregate", "value"],
                                                                  "properties": {"name": {"type": "string"}, "field": {"type": ["string", "null"]},
                                                                                 "aggregate": {"enum": ["sum", "count", "avg", "min", "max"]},
                                                                                 "value": {}, "label": {"type": "string"}}}}}},
        "relationships.ImportReport": {
            "type": "object", "required": ["rows", "created", "skipped", "errors"],
            "properties": {"rows": {"type": "integer"}, "created": {"type": "integer"}, "skipped": {"type": "integer"},
                           "errors": {"type": "array", "items": {"type": "object", "required": ["row", "message"],
                                                                 "properties": {"row": {"type": "integer"}, "message": {"type": "string"}}}}}},
    }
    record_id = {"name": "record_id", "in": "path", "required": True, "schema": _UUID}
    paths: dict[str, Any] = {}
    for entity in registry:
        name, label = entity.name, entity.definition.label()
        tag = [label]
        seen: set[str] = set()
        for link in link_definitions(registry):
            for inverse in (False, True):
                if (link.target if inverse else link.source) != name:
                    continue
                link_name = link.inverse_name if inverse else link.name
                if link_name in seen:
                    continue
                seen.add(link_name)
                input_name = f"relationships.{link.source}.{link.name}.Input"
                schemas[input_name] = {"type": "object", "required": ["target"], "additionalProperties": False,
                                       "properties": {"target": _UUID, "attributes": link.attribute_schema()}}
                other = link.source if inverse else link.target
                link_id = {"name": "link_id", "in": "path", "required": True, "schema": _UUID}
                paths[f"/api/v1/{name}/{{record_id}}/links/{link_name}"] = {
                    "parameters": [record_id],
                    "get": {"operationId": f"links_{name}_{link_name}", "tags": tag, "summary": f"{link.label('en', inverse=inverse)}: linked {other} records",
                            "responses": {"200": {"description": "Links whose other end you may read", "content": _json(
                                {"type": "object", "required": ["links"], "properties": {"links": {"type": "array", "items": _ref("relationships.Link")}}})},
                                **_errors("400", "401", "403", "404")}},
                    "post": {"operationId": f"link_{name}_{link_name}", "tags": tag, "summary": f"Link a {other} record ({link.label('en', inverse=inverse)})",
                             "description": "Needs update permission on this record and read permission on the target.",
                             "requestBody": {"required": True, "content": _json(_ref(input_name))},
                             "responses": {"201": {"description": "The new link", "content": _json(_ref("relationships.Link"))},
                                           **_errors("400", "401", "403", "404", "413", "422")}},
                }
                paths[f"/api/v1/{name}/{{record_id}}/links/{link_name}/{{link_id}}"] = {
                    "parameters": [record_id, link_id],
                    "delete": {"operationId": f"unlink_{name}_{link_name}", "tags": tag, "summary": "Remove a link",
                               "responses": {"204": {"description": "Removed"}, **_errors("400", "401", "403", "404")}},
                }
                paths[f"/api/v1/{name}/_links/{link_name}"] = {
                    "post": {"operationId": f"import_links_{name}_{link_name}", "tags": tag,
                             "summary": f"Import {link.label('en', inverse=inverse)} links (JSON Lines)",
                             "description": 'One JSON object per line: {"source": id or display name of the ' + name +
                                            ' record, "target": id or display name of the ' + other + ' record, "attributes": {...}}. '
                                            "Bad lines are reported; good ones are written.",
                             "requestBody": {"required": True, "content": {"application/x-ndjson": {"schema": {}}, "application/json": {"schema": {"type": "array"}}}},
                             "responses": {"200": {"description": "What was imported and every bad line", "content": _json(_ref("relationships.ImportReport"))},
                                           **_errors("400", "401", "403", "404", "413", "422")}},
                }
        connection_id = {"name": "link_id", "in": "path", "required": True, "schema": _UUID}
        paths[f"/api/v1/{name}/{{record_id}}/connections"] = {
            "parameters": [record_id],
            "get": {"operationId": f"connections_{name}", "tags": tag, "summary": f"Connections of a {label}, both directions",
                    "description": "The role is named from this record's side (label or inverse label). Only connections whose other record you may read.",
                    "parameters": [{"name": "at", "in": "query", "schema": {"type": "string", "format": "date"},
                                    "description": "Only connections valid on this date"}],
                    "responses": {"200": {"description": "Connections", "content": _json(
                        {"type": "object", "required": ["connections"], "properties": {"connections": {"type": "array", "items": _ref("relationships.Connection")}}})},
                        **_errors("400", "401", "403", "404")}},
            "post": {"operationId": f"connect_{name}", "tags": tag, "summary": f"Connect a {label} to any record in a role",
                     "requestBody": {"required": True, "content": _json(_ref("relationships.ConnectionInput"))},
                     "responses": {"201": {"description": "The new connection", "content": _json(_ref("relationships.Connection"))},
                                   **_errors("400", "401", "403", "404", "413", "422")}},
        }
        paths[f"/api/v1/{name}/{{record_id}}/connections/{{link_id}}"] = {
            "parameters": [record_id, connection_id],
            "delete": {"operationId": f"disconnect_{name}", "tags": tag, "summary": "Remove a connection",
                       "responses": {"204": {"description": "Removed"}, **_errors("400", "401", "403", "404")}},
        }
        if hierarchy_of(entity.definition) is not None:
            paths[f"/api/v1/{name}/{{record_id}}/tree"] = {
                "parameters": [record_id],
                "get": {"operationId": f"tree_{name}", "tags": tag, "summary": f"The {label} with its ancestors, descendants and roll-ups",
                        "description": "Only records you may read; a record you may not read hides its subtree. Roll-ups cover the record and its readable descendants.",
                        "responses": {"200": {"description": "The tree", "content": _json(_ref("relationships.Tree"))}, **_errors("400", "401", "403", "404")}},
            }
    tag = ["Connection roles"]
    paths["/api/v1/_connection_roles"] = {
        "get": {"operationId": "list_connection_roles", "tags": tag, "summary": "Connection roles (pairs like advisor of / advised by)",
                "responses": {"200": {"description": "Roles", "content": _json({"type": "object", "required": ["roles"],
                                                                               "properties": {"roles": {"type": "array", "items": _ref("relationships.Role")}}})},
                              **_errors("401")}},
        "post": {"operationId": "create_connection_role", "tags": tag, "summary": "Create a connection role (admins)",
                 "requestBody": {"required": True, "content": _json(_ref("relationships.RoleInput"))},
                 "responses": {"201": {"description": "The role", "content": _json(_ref("relationships.Role"))},
                               **_errors("400", "401", "403", "413", "422")}},
    }
    paths["/api/v1/_connection_roles/{name}"] = {
        "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
        "delete": {"operationId": "delete_connection_role", "tags": tag, "summary": "Delete an unused connection role (admins)",
                   "responses": {"204": {"description": "Deleted"}, **_errors("400", "401", "403", "404", "422")}},
    }
    return {"paths": paths, "schemas": schemas}
