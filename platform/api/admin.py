"""Permission management over the API: /api/v1/admin/ (admins) and record shares (users).

/api/v1/admin/roles, .../grants, /api/v1/admin/users/{user}/roles/{role},
/api/v1/admin/teams, .../members, /api/v1/admin/shares and
/api/v1/admin/explain need the admin role (403 otherwise). Sharing one record
(/api/v1/{entity}/{id}/shares) and giving it a new owner (/assign) need the
share / assign action on that record (xrm.security; docs/security.md).

Request bodies are checked against the same JSON Schemas the OpenAPI document
publishes (`admin_paths`), so the spec and the checks cannot drift apart.
"""

from __future__ import annotations

import uuid

from typing import Any

from jsonschema import Draft202012Validator
from litestar import Request, Response, delete, get, patch, post, put
from litestar.params import FromPath

from ..errors import Problem, ValidationFailed
from ..security.model import SecurityService
from ..security.policy import ACTIONS, FIELD_ACCESS, SCOPES
from .common import platform_of, principal_of, read_json
from .problems import BadRequest, PermissionDenied, json_response
from .spec import error_responses as _errors, json_content as _json, ok_response as _ok, ref as _ref

__all__ = ["admin_handlers", "admin_paths", "admin_schemas", "record_share_paths"]

_NAME = {"type": "string", "minLength": 1, "maxLength": 63, "pattern": "^[^\\u0000]*$"}
_GRANTEE = {
    "type": "object",
    "properties": {"user": _NAME, "team": _NAME},
    "additionalProperties": False,
    "oneOf": [{"required": ["user"], "not": {"required": ["team"]}}, {"required": ["team"], "not": {"required": ["user"]}}],
}
_BODIES: dict[str, dict[str, Any]] = {
    "RoleInput": {"type": "object", "required": ["name"], "additionalProperties": False, "properties": {
        "name": {"type": "string", "pattern": "^[a-z][a-z0-9_.-]{0,62}$"},
        "description": {"type": "string", "maxLength": 1000, "pattern": "^[^\\u0000]*$"}}},
    "GrantInput": {"type": "object", "required": ["entity", "action", "scope"], "additionalProperties": False, "properties": {
        "entity": {"type": "string", "pattern": "^([a-z][a-z0-9_]{0,62}|\\*)$", "description": "An entity name, or * for every entity"},
        "action": {"type": "string", "enum": list(ACTIONS)},
        "scope": {"type": "string", "enum": list(SCOPES)}}},
    "FieldGrantInput": {"type": "object", "required": ["entity", "field", "access"], "additionalProperties": False, "properties": {
        "entity": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,62}$", "description": "An entity name"},
        "field": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,62}$", "description": "A (sensitive) field of the entity"},
        "access": {"type": "string", "enum": list(FIELD_ACCESS), "description": "read, or update (which implies read)"}}},
    "TeamInput": {"type": "object", "required": ["name"], "additionalProperties": False, "properties": {
        "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9 ._@-]{0,62}$"},
        "parent": {"anyOf": [_NAME, {"type": "null"}], "description": "The parent team (business unit)"}}},
    "TeamChange": {"type": "object", "required": ["parent"], "additionalProperties": False, "properties": {
        "parent": {"anyOf": [_NAME, {"type": "null"}], "description": "The new parent team, or null for a top-level team"}}},
    "ShareInput": {**_GRANTEE, "properties": {**_GRANTEE["properties"], "access": {"type": "string", "enum": ["read", "write"], "default": "read"}}},
    "AssignInput": _GRANTEE,
    "UserInput": {"type": "object", "required": ["name", "password"], "additionalProperties": False, "properties": {
        "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._@-]{0,62}$"},
        "password": {"type": "string", "minLength": 8, "maxLength": 1000},
        "roles": {"type": "array", "items": _NAME, "uniqueItems": True}}},
    "UserChange": {"type": "object", "required": ["disabled"], "additionalProperties": False, "properties": {
        "disabled": {"type": "boolean", "description": "true: no login, sessions end, tokens stop working; false: enabled again"}}},
}
_VALIDATORS = {name: Draft202012Validator(schema) for name, schema in _BODIES.items()}


def admin_schemas() -> dict[str, Any]:
    """Components for the OpenAPI document."""
    nullable_text = {"type": ["string", "null"]}
    return {
        **_BODIES,
        "Role": {"type": "object", "required": ["name", "description", "built_in", "grants", "field_grants", "users"], "properties": {
            "name": {"type": "string"}, "description": {"type": "string"}, "built_in": {"type": "boolean"},
            "grants": {"type": "array", "items": {"type": "object", "required": ["entity", "action", "scope"], "properties": {
                "entity": {"type": "string"}, "action": {"type": "string", "enum": list(ACTIONS)}, "scope": {"type": "string", "enum": list(SCOPES)}}}},
            "field_grants": {"type": "array", "description": "Sensitive fields the role may read or update", "items": {
                "type": "object", "required": ["entity", "field", "access"], "properties": {
                    "entity": {"type": "string"}, "field": {"type": "string"}, "access": {"type": "string", "enum": list(FIELD_ACCESS)}}}},
            "users": {"type": "array", "items": {"type": "string"}}}},
        "Team": {"type": "object", "required": ["id", "name", "parent", "members"], "properties": {
            "id": {"type": "string", "format": "uuid"}, "name": {"type": "string"}, "parent": nullable_text,
            "members": {"type": "array", "items": {"type": "string"}}}},
        "Share": {"type": "object", "required": ["id", "entity", "record_id", "user", "team", "access", "granted_at"], "properties": {
            "id": {"type": "string", "format": "uuid"}, "entity": {"type": "string"}, "record_id": {"type": "string", "format": "uuid"},
            "user": nullable_text, "team": nullable_text, "access": {"type": "string", "enum": ["read", "write"]},
            "granted_by": nullable_text, "granted_at": {"type": "string", "format": "date-time"},
            "revoked_at": {"type": ["string", "null"], "format": "date-time"}}},
        "User": {"type": "object", "required": ["id", "name", "roles", "created_at", "disabled", "locked"], "properties": {
            "id": {"type": "string", "format": "uuid"}, "name": {"type": "string"}, "roles": {"type": "array", "items": {"type": "string"}},
            "teams": {"type": "array", "items": {"type": "string"}},
            "created_at": {"type": "string", "format": "date-time"}, "disabled": {"type": "boolean"},
            "disabled_at": {"type": ["string", "null"], "format": "date-time"},
            "locked": {"type": "boolean", "description": "Locked after too many failed logins"},
            "locked_until": {"type": ["string", "null"], "format": "date-time"}}},
        "SessionsEnded": {"type": "object", "required": ["user", "sessions_ended"], "properties": {
            "user": {"type": "string"}, "sessions_ended": {"type": "integer"}}},
        "UserRoles": {"type": "object", "required": ["user", "roles"], "properties": {
            "user": {"type": "string"}, "roles": {"type": "array", "items": {"type": "string"}}}},
        "Explanation": {"type": "object", "required": ["user", "entity", "record_id", "action", "allowed", "reasons", "notes"], "properties": {
            "user": {"type": "string"}, "entity": {"type": "string"}, "record_id": {"type": "string", "format": "uuid"},
            "action": {"type": "string", "enum": list(ACTIONS)}, "allowed": {"type": "boolean"},
            "reasons": {"type": "array", "items": {"type": "string"}, "description": "What grants it (empty: nothing does)"},
            "notes": {"type": "array", "items": {"type": "string"}, "description": "What does not grant it, and why"}}},
        "Assignment": {"type": "object", "required": ["id", "owner_id", "version"], "properties": {
            "id": {"type": "string", "format": "uuid"}, "owner_id": {"type": "string", "format": "uuid"}, "version": {"type": "integer"}}},
    }


async def _body(request: Request[Any, Any, Any], schema: str) -> dict[str, Any]:
    body = await read_json(request)
    errors = sorted(_VALIDATORS[schema].iter_errors(body), key=lambda e: list(e.absolute_path))
    if errors:
        raise ValidationFailed(schema.removesuffix("Input").lower(), [
            Problem("".join(f"/{part}" for part in error.absolute_path), error.message) for error in errors
        ])
    return body  # type: ignore[no-any-return]


async def _admin(request: Request[Any, Any, Any]) -> SecurityService:
    principal = await principal_of(request)
    if "admin" not in principal.roles:
        raise PermissionDenied("Managing roles, teams and shares needs the admin role")
    return platform_of(request).security(principal)


async def _user(request: Request[Any, Any, Any]) -> SecurityService:
    return platform_of(request).security(await principal_of(request))


def _query(request: Request[Any, Any, Any], name: str, *, required: bool = True) -> str | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        if required:
            raise BadRequest("Missing query parameter", [Problem(f"/{name}", "is required")])
        return None
    if "\x00" in value:
        raise BadRequest("Invalid query parameter", [Problem(f"/{name}", "must not contain the NUL character")])
    return value


# -- roles ----------------------------------------------------------------------
@get("/api/v1/admin/roles")
async def list_roles(request: Request[Any, Any, Any]) -> Response[bytes]:
    return json_response({"roles": await (await _admin(request)).list_roles()})


@post("/api/v1/admin/roles", status_code=201)
async def create_role(request: Request[Any, Any, Any]) -> Response[bytes]:
    security = await _admin(request)
    body = await _body(request, "RoleInput")
    return json_response(await security.create_role(body["name"], body.get("description", "")), 201)


@get("/api/v1/admin/roles/{role:str}")
async def get_role(request: Request[Any, Any, Any], role: FromPath[str]) -> Response[bytes]:
    return json_response(await (await _admin(request)).get_role(role))


@delete("/api/v1/admin/roles/{role:str}", status_code=200)
async def delete_role(request: Request[Any, Any, Any], role: FromPath[str]) -> Response[bytes]:
    await (await _admin(request)).delete_role(role)
    return json_response({"deleted": role})


@post("/api/v1/admin/roles/{role:str}/grants", status_code=200)
async def grant(request: Request[Any, Any, Any], role: FromPath[str]) -> Response[bytes]:
    security = await _admin(request)
    body = await _body(request, "GrantInput")
    return json_response(await security.grant(role, body["entity"], body["action"], body["scope"]))


@delete("/api/v1/admin/roles/{role:str}/grants", status_code=200)
async def revoke(request: Request[Any, Any, Any], role: FromPath[str]) -> Response[bytes]:
    security = await _admin(request)
    return json_response(await security.revoke(role, _query(request, "entity"), _query(request, "action")))


@post("/api/v1/admin/roles/{role:str}/field-grants", status_code=200)
async def grant_field(request: Request[Any, Any, Any], role: FromPath[str]) -> Response[bytes]:
    security = await _admin(request)
    body = await _body(request, "FieldGrantInput")
    return json_response(await security.grant_field(role, body["entity"], body["field"], body["access"]))


@delete("/api/v1/admin/roles/{role:str}/field-grants", status_code=200)
async def revoke_field(request: Request[Any, Any, Any], role: FromPath[str]) -> Response[bytes]:
    security = await _admin(request)
    return json_response(await security.revoke_field(role, _query(request, "entity"), _query(request, "field")))


# -- users ----------------------------------------------------------------------
def _users(principal: Any, request: Request[Any, Any, Any]) -> Any:
    from ..auth import UserService

    platform = platform_of(request)
    return UserService(platform.db, platform.settings, actor=principal)


async def _admin_principal(request: Request[Any, Any, Any]) -> Any:
    principal = await principal_of(request)
    if "admin" not in principal.roles:
        raise PermissionDenied("Managing users needs the admin role")
    return principal


async def _user_row(users: Any, name: str) -> dict[str, Any]:
    from ..errors import NotFound

    for row in await users.list_users():
        if row["name"] == name:
            return row  # type: ignore[no-any-return]
    raise NotFound(f"No user named {name!r}")


@get("/api/v1/admin/users")
async def list_users(request: Request[Any, Any, Any]) -> Response[bytes]:
    users = _users(await _admin_principal(request), request)
    return json_response({"users": await users.list_users()})


@post("/api/v1/admin/users", status_code=201)
async def create_user(request: Request[Any, Any, Any]) -> Response[bytes]:
    users = _users(await _admin_principal(request), request)
    body = await _body(request, "UserInput")
    created = await users.create_user(body["name"], body["password"], body.get("roles") or [])
    return json_response(await _user_row(users, created.name), 201)


@patch("/api/v1/admin/users/{user:str}")
async def change_user(request: Request[Any, Any, Any], user: FromPath[str]) -> Response[bytes]:
    users = _users(await _admin_principal(request), request)
    body = await _body(request, "UserChange")
    await users.set_disabled(user, body["disabled"])
    return json_response(await _user_row(users, user))


@post("/api/v1/admin/users/{user:str}/logout-all", status_code=200)
async def end_user_sessions(request: Request[Any, Any, Any], user: FromPath[str]) -> Response[bytes]:
    users = _users(await _admin_principal(request), request)
    return json_response({"user": user, "sessions_ended": await users.end_sessions(user)})


@put("/api/v1/admin/users/{user:str}/roles/{role:str}", status_code=200)
async def grant_role(request: Request[Any, Any, Any], user: FromPath[str], role: FromPath[str]) -> Response[bytes]:
    roles = await (await _admin(request)).grant_role(user, role)
    return json_response({"user": user, "roles": roles})


@delete("/api/v1/admin/users/{user:str}/roles/{role:str}", status_code=200)
async def revoke_role(request: Request[Any, Any, Any], user: FromPath[str], role: FromPath[str]) -> Response[bytes]:
    roles = await (await _admin(request)).revoke_role(user, role)
    return json_response({"user": user, "roles": roles})


# -- teams ----------------------------------------------------------------------
@get("/api/v1/admin/teams")
async def list_teams(request: Request[Any, Any, Any]) -> Response[bytes]:
    return json_response({"teams": await (await _admin(request)).list_teams()})


@post("/api/v1/admin/teams", status_code=201)
async def create_team(request: Request[Any, Any, Any]) -> Response[bytes]:
    security = await _admin(request)
    body = await _body(request, "TeamInput")
    return json_response(await security.create_team(body["name"], body.get("parent")), 201)


@get("/api/v1/admin/teams/{team:str}")
async def get_team(request: Request[Any, Any, Any], team: FromPath[str]) -> Response[bytes]:
    return json_response(await (await _admin(request)).get_team(team))


@patch("/api/v1/admin/teams/{team:str}")
async def move_team(request: Request[Any, Any, Any], team: FromPath[str]) -> Response[bytes]:
    security = await _admin(request)
    body = await _body(request, "TeamChange")
    return json_response(await security.set_parent(team, body["parent"]))


@delete("/api/v1/admin/teams/{team:str}", status_code=200)
async def delete_team(request: Request[Any, Any, Any], team: FromPath[str]) -> Response[bytes]:
    await (await _admin(request)).delete_team(team)
    return json_response({"deleted": team})


@put("/api/v1/admin/teams/{team:str}/members/{user:str}", status_code=200)
async def add_member(request: Request[Any, Any, Any], team: FromPath[str], user: FromPath[str]) -> Response[bytes]:
    return json_response(await (await _admin(request)).add_member(team, user))


@delete("/api/v1/admin/teams/{team:str}/members/{user:str}", status_code=200)
async def remove_member(request: Request[Any, Any, Any], team: FromPath[str], user: FromPath[str]) -> Response[bytes]:
    return json_response(await (await _admin(request)).remove_member(team, user))


# -- shares and the explainer ----------------------------------------------------
@get("/api/v1/admin/shares")
async def list_shares(request: Request[Any, Any, Any]) -> Response[bytes]:
    security = await _admin(request)
    include = _query(request, "include_revoked", required=False)
    if include not in (None, "true", "false"):
        raise BadRequest("Invalid query parameter", [Problem("/include_revoked", "must be true or false")])
    record_id = request.query_params.get("record_id")
    if record_id is not None:
        try:
            uuid.UUID(record_id)
        except ValueError:
            raise BadRequest("Invalid query parameter", [Problem("/record_id", "must be a record id (uuid)")]) from None
    shares = await security.list_shares(_query(request, "entity", required=False), record_id,
                                        include_revoked=include == "true")
    return json_response({"shares": shares})


@get("/api/v1/admin/explain")
async def explain(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Why may (or may not) a user do an action on a record: the roles, scopes, teams and shares."""
    security = await _admin(request)
    action = _query(request, "action", required=False) or "read"
    explanation = await security.explain(_query(request, "user"), _query(request, "entity"), _query(request, "id"), action)  # type: ignore[arg-type]
    return json_response(explanation.as_dict())


@get("/api/v1/{entity:str}/{record_id:str}/shares")
async def record_shares(request: Request[Any, Any, Any], entity: FromPath[str], record_id: FromPath[str]) -> Response[bytes]:
    return json_response({"shares": await (await _user(request)).record_shares(entity, record_id)})


@post("/api/v1/{entity:str}/{record_id:str}/shares", status_code=200)
async def share_record(request: Request[Any, Any, Any], entity: FromPath[str], record_id: FromPath[str]) -> Response[bytes]:
    security = await _user(request)
    body = await _body(request, "ShareInput")
    share = await security.share(entity, record_id, user=body.get("user"), team=body.get("team"), write=body.get("access") == "write")
    return json_response(share)


@delete("/api/v1/{entity:str}/{record_id:str}/shares", status_code=200)
async def unshare_record(request: Request[Any, Any, Any], entity: FromPath[str], record_id: FromPath[str]) -> Response[bytes]:
    security = await _user(request)
    user, team = _query(request, "user", required=False), _query(request, "team", required=False)
    if (user is None) == (team is None):
        raise BadRequest("Name exactly one of ?user= or ?team=", [Problem("/user", "give user or team, not both or neither")])
    await security.unshare(entity, record_id, user=user, team=team)
    return json_response({"shares": await security.list_shares(entity, record_id)})


@post("/api/v1/{entity:str}/{record_id:str}/assign", status_code=200)
async def assign_record(request: Request[Any, Any, Any], entity: FromPath[str], record_id: FromPath[str]) -> Response[bytes]:
    security = await _user(request)
    body = await _body(request, "AssignInput")
    return json_response(await security.assign(entity, record_id, user=body.get("user"), team=body.get("team")))


admin_handlers = [
    list_roles, create_role, get_role, delete_role, grant, revoke, grant_field, revoke_field, grant_role, revoke_role,
    list_teams, create_team, get_team, move_team, delete_team, add_member, remove_member,
    list_shares, explain, record_shares, share_record, unshare_record, assign_record,
    list_users, create_user, change_user, end_user_sessions,
]


# -- the OpenAPI operations ------------------------------------------------------




def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _list_of(key: str, item: str) -> dict[str, Any]:
    return {"type": "object", "required": [key], "properties": {key: {"type": "array", "items": _ref(item)}}}


def admin_paths() -> dict[str, Any]:
    tag = ["Permissions"]
    errors = ("400", "401", "403", "404", "422")
    body = ("400", "401", "403", "404", "413", "422")
    deleted = {"type": "object", "required": ["deleted"], "properties": {"deleted": {"type": "string"}}}

    def op(operation_id: str, summary: str, responses: dict[str, Any], codes: tuple[str, ...] = errors, **extra: Any) -> dict[str, Any]:
        return {"operationId": operation_id, "tags": tag, "summary": summary, "responses": {**responses, **_errors(*codes)}, **extra}

    def request_body(name: str) -> dict[str, Any]:
        return {"required": True, "content": _json(_ref(name))}

    text = {"type": "string", "pattern": "^[^\\u0000]*$"}
    return {
        "/api/v1/admin/roles": {
            "get": op("list_roles", "Roles with their grants and users (admins)", _ok("Roles", _list_of("roles", "Role"))),
            "post": op("create_role", "Create a role (admins)", _ok("The role", _ref("Role"), "201"), body, requestBody=request_body("RoleInput")),
        },
        "/api/v1/admin/roles/{role}": {
            "parameters": [_path("role")],
            "get": op("get_role", "A role with its grants and users", _ok("The role", _ref("Role"))),
            "delete": op("delete_role", "Delete a role no user holds (not a built-in one)", _ok("Deleted", deleted)),
        },
        "/api/v1/admin/roles/{role}/grants": {
            "parameters": [_path("role")],
            "post": op("grant", "Set the role's scope for an action on an entity (* = every entity)", _ok("The role", _ref("Role")), body,
                       requestBody=request_body("GrantInput")),
            "delete": op("revoke", "Remove the role's grant for an action on an entity", _ok("The role", _ref("Role")), parameters=[
                {"name": "entity", "in": "query", "required": True, "schema": text},
                {"name": "action", "in": "query", "required": True, "schema": {"type": "string", "enum": list(ACTIONS)}}]),
        },
        "/api/v1/admin/roles/{role}/field-grants": {
            "parameters": [_path("role")],
            "post": op("grant_field", "Let the role read, or read and update, a sensitive field", _ok("The role", _ref("Role")), body,
                       requestBody=request_body("FieldGrantInput")),
            "delete": op("revoke_field", "Remove the role's grant for a sensitive field", _ok("The role", _ref("Role")), parameters=[
                {"name": "entity", "in": "query", "required": True, "schema": text},
                {"name": "field", "in": "query", "required": True, "schema": text}]),
        },
        "/api/v1/admin/users": {
            "get": op("list_users", "Users with roles and state (admins)", _ok("Users", _list_of("users", "User"))),
            "post": op("create_user", "Create a user (admins)", _ok("The user", _ref("User"), "201"), body, requestBody=request_body("UserInput")),
        },
        "/api/v1/admin/users/{user}": {
            "parameters": [_path("user")],
            "patch": op("change_user", "Disable a user (no login; sessions end, tokens stop) or enable it again",
                        _ok("The user", _ref("User")), body, requestBody=request_body("UserChange")),
        },
        "/api/v1/admin/users/{user}/logout-all": {
            "parameters": [_path("user")],
            "post": op("end_user_sessions", "End every web session of a user (API tokens stay)", _ok("Sessions ended", _ref("SessionsEnded"))),
        },
        "/api/v1/admin/users/{user}/roles/{role}": {
            "parameters": [_path("user"), _path("role")],
            "put": op("grant_role", "Give a user a role", _ok("The user's roles", _ref("UserRoles"))),
            "delete": op("revoke_role", "Take a role from a user", _ok("The user's roles", _ref("UserRoles"))),
        },
        "/api/v1/admin/teams": {
            "get": op("list_teams", "Teams with parent and members (admins)", _ok("Teams", _list_of("teams", "Team"))),
            "post": op("create_team", "Create a team (optionally below a parent team)", _ok("The team", _ref("Team"), "201"), body,
                       requestBody=request_body("TeamInput")),
        },
        "/api/v1/admin/teams/{team}": {
            "parameters": [_path("team")],
            "get": op("get_team", "A team", _ok("The team", _ref("Team"))),
            "patch": op("move_team", "Move a team below another (no cycles) or to the top", _ok("The team", _ref("Team")), body,
                        requestBody=request_body("TeamChange")),
            "delete": op("delete_team", "Delete a team without sub-teams", _ok("Deleted", deleted)),
        },
        "/api/v1/admin/teams/{team}/members/{user}": {
            "parameters": [_path("team"), _path("user")],
            "put": op("add_member", "Add a user to a team", _ok("The team", _ref("Team"))),
            "delete": op("remove_member", "Remove a user from a team", _ok("The team", _ref("Team"))),
        },
        "/api/v1/admin/shares": {
            "get": op("list_shares", "Record shares (active; all with include_revoked)", _ok("Shares", _list_of("shares", "Share")), parameters=[
                {"name": "entity", "in": "query", "schema": text},
                {"name": "record_id", "in": "query", "schema": {"type": "string", "format": "uuid"}},
                {"name": "include_revoked", "in": "query", "schema": {"type": "boolean"}}]),
        },
        "/api/v1/admin/explain": {
            "get": op("explain", "Why may (or may not) a user do an action on a record", _ok("The explanation", _ref("Explanation")), parameters=[
                {"name": "user", "in": "query", "required": True, "schema": text},
                {"name": "entity", "in": "query", "required": True, "schema": text},
                {"name": "id", "in": "query", "required": True, "schema": {"type": "string", "format": "uuid"}},
                {"name": "action", "in": "query", "schema": {"type": "string", "enum": list(ACTIONS), "default": "read"}}]),
        },
    }


def record_share_paths(name: str, label: str) -> dict[str, Any]:
    """Shares and owner of one record of an entity (users with the share / assign action)."""
    tag = [label]
    record_id = {"name": "record_id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}
    shares = _list_of("shares", "Share")
    errors = _errors("400", "401", "403", "404", "422")
    with_body = _errors("400", "401", "403", "404", "413", "422")
    text = {"type": "string", "pattern": "^[^\\u0000]*$"}
    return {
        f"/api/v1/{name}/{{record_id}}/shares": {
            "parameters": [record_id],
            "get": {"operationId": f"shares_{name}", "tags": tag, "summary": f"Active shares of a {label}",
                    "responses": {"200": {"description": "Shares", "content": _json(shares)}, **errors}},
            "post": {"operationId": f"share_{name}", "tags": tag, "summary": f"Share a {label} with a user or team (read or write)",
                     "requestBody": {"required": True, "content": _json(_ref("ShareInput"))},
                     "responses": {"200": {"description": "The share", "content": _json(_ref("Share"))}, **with_body}},
            "delete": {"operationId": f"unshare_{name}", "tags": tag, "summary": f"Revoke a share of a {label}",
                       "parameters": [{"name": "user", "in": "query", "schema": text}, {"name": "team", "in": "query", "schema": text}],
                       "responses": {"200": {"description": "The shares left", "content": _json(shares)}, **errors}},
        },
        f"/api/v1/{name}/{{record_id}}/assign": {
            "parameters": [record_id],
            "post": {"operationId": f"assign_{name}", "tags": tag, "summary": f"Make a user or team the owner of a {label}",
                     "requestBody": {"required": True, "content": _json(_ref("AssignInput"))},
                     "responses": {"200": {"description": "The new owner", "content": _json(_ref("Assignment"))}, **with_body}},
        },
    }
