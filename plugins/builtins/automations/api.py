"""REST: /api/v1/admin/automations (CRUD) and /api/v1/admin/jobs (the job log, retry), admins only."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, delete, get, post, put
from litestar.params import FromPath

from xrm.api.common import platform_of, principal_of, read_json
from xrm.api.problems import BadRequest, json_response
from xrm.errors import NotFound, Problem

from .spec import AUTOMATION_INPUT_SCHEMA, NAME_PATTERN
from .store import JOB_STATES, AutomationStore

__all__ = ["api_handlers", "openapi_part"]


async def _store(request: Request[Any, Any, Any]) -> AutomationStore:
    return AutomationStore(platform_of(request), await principal_of(request))


def _name(name: str) -> str:
    import re

    if not re.match(NAME_PATTERN, name):
        raise BadRequest("Invalid automation name", [Problem("/name", f"must match {NAME_PATTERN}")])
    return name


@get("/api/v1/admin/automations")
async def list_automations(request: Request[Any, Any, Any]) -> Response[bytes]:
    store = await _store(request)
    return json_response({"automations": await store.list(), "from_definitions": store.from_definitions()})


@post("/api/v1/admin/automations", status_code=201)
async def create_automation(request: Request[Any, Any, Any]) -> Response[bytes]:
    store = await _store(request)
    return json_response(await store.create(await read_json(request)), 201)


@get("/api/v1/admin/automations/{name:str}")
async def get_automation(request: Request[Any, Any, Any], name: FromPath[str]) -> Response[bytes]:
    store = await _store(request)
    automation = await store.get(_name(name))
    return json_response({**automation, "secret": await store.secret(automation["key"])})


@put("/api/v1/admin/automations/{name:str}", status_code=200)
async def replace_automation(request: Request[Any, Any, Any], name: FromPath[str]) -> Response[bytes]:
    store = await _store(request)
    return json_response(await store.replace(_name(name), await read_json(request)))


@delete("/api/v1/admin/automations/{name:str}", status_code=200)
async def delete_automation(request: Request[Any, Any, Any], name: FromPath[str]) -> Response[bytes]:
    store = await _store(request)
    await store.delete(_name(name))
    return json_response({"deleted": name})


def _int(request: Request[Any, Any, Any], name: str, default: int | None, low: int, high: int) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise BadRequest("Invalid query parameter", [Problem(f"/{name}", f"must be a whole number from {low} to {high}")])
    return value


@get("/api/v1/admin/jobs")
async def list_jobs(request: Request[Any, Any, Any]) -> Response[bytes]:
    store = await _store(request)
    state = request.query_params.get("state")
    if state is not None and state not in JOB_STATES:
        raise BadRequest("Invalid query parameter", [Problem("/state", f"must be one of {', '.join(JOB_STATES)}")])
    automation = request.query_params.get("automation")
    if automation is not None and "\x00" in automation:
        raise BadRequest("Invalid query parameter", [Problem("/automation", "must not contain the NUL character")])
    limit = _int(request, "limit", 100, 1, 1000) or 100
    before = _int(request, "before", None, 1, 2**63 - 1)
    jobs = await store.jobs(state=state, automation=automation, limit=limit, before=before)
    return json_response({"jobs": jobs, "next_before": jobs[-1]["id"] if len(jobs) == limit else None})


@post("/api/v1/admin/jobs/{job_id:int}/retry", status_code=200)
async def retry(request: Request[Any, Any, Any], job_id: FromPath[int]) -> Response[bytes]:
    store = await _store(request)
    if not 1 <= job_id < 2**63:
        raise NotFound(f"No job with id {job_id}")
    return json_response(await store.retry(job_id))


api_handlers = [list_automations, create_automation, get_automation, replace_automation, delete_automation, list_jobs, retry]


def openapi_part() -> dict[str, Any]:
    def ref(name: str) -> dict[str, str]:
        return {"$ref": f"#/components/schemas/{name}"}

    def errors(*codes: str) -> dict[str, Any]:
        return {code: {"$ref": f"#/components/responses/Problem{code}"} for code in codes}

    def body(schema: dict[str, Any]) -> dict[str, Any]:
        return {"application/json": {"schema": schema}}

    name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "pattern": NAME_PATTERN}}
    tags = ["Automations"]
    moment = {"type": ["string", "null"], "format": "date-time"}
    automation = {"type": "object", "required": ["id", "key", "name", "entity", "trigger", "condition", "actions", "run_as", "enabled"],
                  "properties": {**AUTOMATION_INPUT_SCHEMA["properties"], "id": {"type": "string", "format": "uuid"},
                                 "key": {"type": "string"}, "source": {"type": "string"}, "created_by": {"type": "string"},
                                 "created_at": {"type": "string", "format": "date-time"},
                                 "updated_at": {"type": "string", "format": "date-time"},
                                 "secret": {"type": "string", "description": "Webhook signing key (HMAC-SHA256 of the body)"}}}
    loose = {"type": "object"}
    job = {"type": "object", "required": ["id", "kind", "idempotency_key", "state", "attempts", "max_attempts"], "properties": {
        "id": {"type": "integer"}, "kind": {"type": "string"}, "idempotency_key": {"type": "string"},
        "automation": {"type": ["string", "null"]}, "state": {"type": "string", "enum": list(JOB_STATES)},
        "attempts": {"type": "integer"}, "max_attempts": {"type": "integer"}, "run_after": {"type": "string", "format": "date-time"},
        "locked_by": {"type": ["string", "null"]}, "locked_until": moment, "last_error": {"type": ["string", "null"]},
        "result": {}, "payload": loose, "created_at": {"type": "string", "format": "date-time"}, "started_at": moment, "finished_at": moment}}
    listing = {"type": "object", "required": ["automations", "from_definitions"], "properties": {
        "automations": {"type": "array", "items": ref("Automation")}, "from_definitions": {"type": "array", "items": loose}}}
    jobs = {"type": "object", "required": ["jobs", "next_before"], "properties": {
        "jobs": {"type": "array", "items": ref("Job")}, "next_before": {"type": ["integer", "null"]}}}
    return {
        "schemas": {"AutomationInput": AUTOMATION_INPUT_SCHEMA, "Automation": automation, "Job": job},
        "paths": {
            "/api/v1/admin/automations": {
                "get": {"operationId": "list_automations", "tags": tags, "summary": "Automations admins created, and those in definitions",
                        "responses": {"200": {"description": "The automations", "content": body(listing)}, **errors("401", "403")}},
                "post": {"operationId": "create_automation", "tags": tags, "summary": "Create an automation",
                         "requestBody": {"required": True, "content": body(ref("AutomationInput"))},
                         "responses": {"201": {"description": "Created", "content": body(ref("Automation"))},
                                       **errors("400", "401", "403", "422")}},
            },
            "/api/v1/admin/automations/{name}": {
                "parameters": [name],
                "get": {"operationId": "get_automation", "tags": tags, "summary": "One automation, with its webhook secret",
                        "responses": {"200": {"description": "The automation", "content": body(ref("Automation"))},
                                      **errors("400", "401", "403", "404")}},
                "put": {"operationId": "replace_automation", "tags": tags, "summary": "Replace an automation (e.g. enable or disable it)",
                        "requestBody": {"required": True, "content": body(ref("AutomationInput"))},
                        "responses": {"200": {"description": "Changed", "content": body(ref("Automation"))},
                                      **errors("400", "401", "403", "404", "422")}},
                "delete": {"operationId": "delete_automation", "tags": tags, "summary": "Delete an automation (its jobs stay in the log)",
                           "responses": {"200": {"description": "Deleted", "content": body({"type": "object", "required": ["deleted"],
                                                                                            "properties": {"deleted": {"type": "string"}}})},
                                         **errors("400", "401", "403", "404")}},
            },
            "/api/v1/admin/jobs": {"get": {
                "operationId": "list_jobs", "tags": tags, "summary": "The job log, newest first",
                "parameters": [
                    {"name": "state", "in": "query", "schema": {"type": "string", "enum": list(JOB_STATES)}},
                    {"name": "automation", "in": "query", "schema": {"type": "string", "pattern": "^[^\\u0000]*$"},
                     "description": "An automation's key (db:<name>, def:<entity>:<name>) or name"},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
                    {"name": "before", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
                     "description": "next_before of the previous page"},
                ],
                "responses": {"200": {"description": "A page of jobs", "content": body(jobs)}, **errors("400", "401", "403")}}},
            "/api/v1/admin/jobs/{job_id}/retry": {"post": {
                "operationId": "retry_job", "tags": tags, "summary": "Run a dead or failed job again (attempts start over)",
                "parameters": [{"name": "job_id", "in": "path", "required": True,
                                "schema": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}}],
                "responses": {"200": {"description": "Queued again", "content": body(ref("Job"))},
                              **errors("400", "401", "403", "404", "422")}}},
        },
    }
