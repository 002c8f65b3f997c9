"""REST endpoints of the state machines: the transitions of a record, and taking one.

GET  /api/v1/{entity}/{id}/transitions         what the caller may do now, why not the rest, and the history
POST /api/v1/{entity}/{id}/transitions/{name}  take a transition (optional body: field values; If-Match: version)

Both go through RecordService with the caller's principal; taking a transition
is an update of the state field, so the write hooks enforce the same rules as
for a PATCH, and the audit trail and outbox record it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from litestar import Request, Response, get, post
from litestar.params import FromPath

from xrm.api.common import etag, expected_version, read_json
from xrm.api.problems import BadRequest, json_response
from xrm.api.records import record_service
from xrm.api.spec import error_responses as _errors
from xrm.errors import NotFound, Problem, ValidationFailed, pointer
from xrm.records.service import RecordService

from . import AUDIT_ACTION, taking
from .machine import Machine, machine_of

__all__ = ["api_handlers", "openapi", "transitions_of"]


async def _service(request: Request[Any, Any, Any], entity: str) -> tuple[RecordService, Machine]:
    service = await record_service(request, entity)
    machine = machine_of(service.entity.definition)
    if machine is None:
        raise NotFound(f"{entity} has no state machine")
    return service, machine


async def transitions_of(service: RecordService, machine: Machine, record: Mapping[str, Any], language: str = "en") -> list[dict[str, Any]]:
    """The transitions leaving the record's state, each with `available` and, if not, `blocked` (kind, message, fields).

    A transition that only needs field values ("missing") is available: the
    caller sends them with it. Without update permission nothing is available.
    """
    may_update = not service.principal.read_only and "update" in await service.allowed_actions(record["id"], ("update",))
    read_only = service.read_only_fields | service.hidden_fields
    found = []
    for transition, reasons in machine.options(record, service.principal.roles):
        blocked = [{"kind": r.kind, "message": r.message, "fields": list(r.fields)} for r in reasons if r.kind != "missing"]
        needs = [name for r in reasons if r.kind == "missing" for name in r.fields]
        if not may_update:
            blocked.insert(0, {"kind": "permission", "message": "you may not change this record", "fields": []})
        unwritable = [name for name in needs if name in read_only]
        if unwritable:
            blocked.append({"kind": "missing", "message": f"needs a value in {', '.join(unwritable)}, which you may not change",
                            "fields": unwritable})
        found.append({
            "name": transition.name, "label": transition.title(language), "from": list(transition.sources), "to": transition.target,
            "available": not blocked, "needs": needs, "blocked": blocked,
        })
    return found


@get("/api/v1/{entity:str}/{record_id:str}/transitions")
async def list_transitions(request: Request[Any, Any, Any], entity: FromPath[str], record_id: FromPath[str]) -> Response[bytes]:
    service, machine = await _service(request, entity)
    record = await service.get(record_id)
    history = [entry.as_dict() for entry in await service.history(record_id) if entry.action == AUDIT_ACTION]
    body = {
        "field": machine.field, "state": record.get(machine.field), "version": record["version"],
        "transitions": await transitions_of(service, machine, record),
        "history": history,
    }
    return json_response(body, headers=etag(record))


@post("/api/v1/{entity:str}/{record_id:str}/transitions/{name:str}", status_code=200)
async def take_transition(
    request: Request[Any, Any, Any], entity: FromPath[str], record_id: FromPath[str], name: FromPath[str]
) -> Response[bytes]:
    service, machine = await _service(request, entity)
    transition = machine.transition(name)
    if transition is None:
        raise NotFound(f"{entity} has no transition {name!r}; its transitions: {', '.join(t.name for t in machine.transitions)}")
    values: Any = {}
    if (await request.body()).strip():
        values = await read_json(request)
    if not isinstance(values, Mapping):
        raise BadRequest("The body must be a JSON object: values of fields the transition needs")
    if machine.field in values:
        raise ValidationFailed(entity, [Problem(pointer(machine.field), f"is set by the transition (to {transition.target!r}); leave it out")])
    version = expected_version(request)
    try:
        key = str(uuid.UUID(record_id))
    except ValueError:
        raise NotFound(f"No {entity} record with id {record_id}") from None
    with taking(entity, key, name):
        record = await service.update(key, {**values, machine.field: transition.target}, expected_version=version)
    return json_response(record, headers=etag(record))


api_handlers = [list_transitions, take_transition]


# -- OpenAPI -------------------------------------------------------------------------

_TRANSITIONS = {
    "type": "object",
    "required": ["field", "state", "version", "transitions", "history"],
    "properties": {
        "field": {"type": "string", "description": "The state field"},
        "state": {"type": ["string", "null"], "description": "The record's state now"},
        "version": {"type": "integer", "description": "The record's version (send it as If-Match when taking a transition)"},
        "transitions": {"type": "array", "items": {
            "type": "object",
            "required": ["name", "label", "from", "to", "available", "needs", "blocked"],
            "properties": {
                "name": {"type": "string"}, "label": {"type": "string"},
                "from": {"type": "array", "items": {"type": "string"}}, "to": {"type": "string"},
                "available": {"type": "boolean", "description": "The caller may take it now (sending the fields in needs)"},
                "needs": {"type": "array", "items": {"type": "string"}, "description": "Empty fields the transition requires: send them in the body"},
                "blocked": {"type": "array", "description": "Why it is not available: kind role, condition, missing or permission",
                            "items": {"type": "object", "required": ["kind", "message", "fields"], "properties": {
                                "kind": {"type": "string"}, "message": {"type": "string"},
                                "fields": {"type": "array", "items": {"type": "string"}}}}},
            },
        }},
        "history": {"type": "array", "items": {"$ref": "#/components/schemas/AuditEntry"},
                    "description": "Transitions taken (audit entries workflow.transition), oldest first"},
    },
}


def openapi(registry: Any) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for entity in registry:
        machine = machine_of(entity.definition)
        if machine is None:
            continue
        name, label = entity.name, entity.definition.label()
        tag = [label]
        record_id = {"name": "record_id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}
        transition = {"name": "name", "in": "path", "required": True,
                      "schema": {"type": "string", "enum": [t.name for t in machine.transitions]},
                      "description": "; ".join(f"{t.name}: {', '.join(t.sources)} → {t.target}" for t in machine.transitions)}
        if_match = {"name": "If-Match", "in": "header", "required": False,
                    "schema": {"type": "string", "pattern": '^(\\*|(W/)?"[0-9]{1,9}")$'},
                    "description": 'ETag of the version you saw, e.g. "3"; a mismatch gives 409'}
        paths[f"/api/v1/{name}/{{record_id}}/transitions"] = {
            "parameters": [record_id],
            "get": {
                "operationId": f"transitions_{name}", "tags": tag,
                "summary": f"Transitions of a {label}: which the caller may take now, why not the others, and those taken",
                "responses": {"200": {"description": "The state, the transitions leaving it, the history",
                                      "headers": {"ETag": {"required": True, "schema": {"type": "string"}}},
                                      "content": {"application/json": {"schema": {"$ref": "#/components/schemas/StateMachine.Transitions"}}}},
                              **_errors("400", "401", "403", "404")},
            },
        }
        paths[f"/api/v1/{name}/{{record_id}}/transitions/{{name}}"] = {
            "parameters": [record_id, transition],
            "post": {
                "operationId": f"take_transition_{name}", "tags": tag,
                "summary": f"Take a transition of a {label} (field {machine.field})",
                "description": "Changes the state field as the transition says. The body may carry values of other fields "
                               "(those the transition or its target state needs). Refused with 422 when the transition does "
                               "not start from the current state or a guard fails; the problem names the transitions possible.",
                "parameters": [if_match],
                "requestBody": {"required": False, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}.Patch"}}}},
                "responses": {"200": {"description": f"The {label} record after the transition",
                                      "headers": {"ETag": {"required": True, "schema": {"type": "string"}}},
                                      "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}.Record"}}}},
                              **_errors("400", "401", "403", "404", "409", "413", "422")},
            },
        }
    return {"paths": paths, "schemas": {"StateMachine.Transitions": _TRANSITIONS}} if paths else {}
