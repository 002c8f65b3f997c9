"""Browser login: /api/v1/auth/login, logout, logout-all, me (docs/api.md, docs/security.md).

A login sets the `xrm_session` cookie (HttpOnly, SameSite=Lax, Path=/, Secure
by the rule in `cookie_secure`) and answers with the session's CSRF token;
with the cookie the rest of the API acts as the user (`common.principal_of`),
and every request that may change something must send the CSRF token too.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from jsonschema import Draft202012Validator
from litestar import Request, Response, get, post
from litestar.datastructures import Cookie

from ..audit import AuditLog
from ..auth import AuthenticationRequired, UserService
from ..errors import Problem, ValidationFailed
from ..records.principal import Principal
from ..sessions import SESSION_COOKIE, SessionService, WebSession, csrf_token_for
from .common import (
    CSRF_FIELD,
    CSRF_HEADER,
    check_csrf,
    platform_of,
    principal_of,
    read_json,
    session_of,
)
from .problems import BadRequest, PermissionDenied, json_response, problem_response

__all__ = ["auth_handlers", "auth_paths", "auth_schemas", "cookie_secure", "require_same_origin", "session_cookie"]

_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
_FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})
_LOGIN_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["name", "password"], "additionalProperties": False, "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": "^[^\\u0000]*$"},
        "password": {"type": "string", "minLength": 1, "maxLength": 1000, "pattern": "^[^\\u0000]*$"},
        CSRF_FIELD: {"type": "string", "description": "Ignored (HTML forms may send it)"},
    },
}
_LOGIN_VALIDATOR = Draft202012Validator(_LOGIN_SCHEMA)
_NO_STORE = {"Cache-Control": "no-store"}


class LoginFailed(AuthenticationRequired):
    title = "Login failed"


def cookie_secure(request: Request[Any, Any, Any]) -> bool:
    """Whether the session cookie gets the Secure flag (setting XRM_COOKIE_SECURE).

    "true": always; "false": never; "auto" (default): always, unless the request
    is plainly local development — plain http to localhost / 127.x / ::1 with
    nothing (the URL scheme, X-Forwarded-Proto, Origin) saying the browser uses https.
    """
    mode = platform_of(request).settings.cookie_secure
    if mode in ("true", "false"):
        return mode == "true"
    if request.url.scheme == "https":
        return True
    if request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower() == "https":
        return True
    if request.headers.get("origin", "").lower().startswith("https://"):
        return True
    host = (request.url.hostname or "").strip("[]").lower()
    return not (host in _LOOPBACK or host.endswith(".localhost") or host.startswith("127."))


def session_cookie(request: Request[Any, Any, Any], value: str, *, delete: bool = False) -> Cookie:
    # No Max-Age: a browser-session cookie; the server ends the session itself (idle and absolute limits).
    return Cookie(
        key=SESSION_COOKIE, value=value, path="/", httponly=True, samesite="lax", secure=cookie_secure(request),
        max_age=0 if delete else None, expires=0 if delete else None,
    )


def require_same_origin(request: Request[Any, Any, Any]) -> None:
    """Refuse a login another site makes a browser send (login CSRF: logging the victim in as the attacker).

    Browsers say where a request comes from: Sec-Fetch-Site (all current
    ones), else Origin. A request with neither is not from a browser's form or
    script (curl, a script), which no other site can make anyone send.
    """
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        if site.strip().lower() in ("same-origin", "none"):
            return
        raise PermissionDenied(f"Login refused: the request comes from another site (Sec-Fetch-Site: {site[:40]})")
    origin = request.headers.get("origin")
    if origin is None:
        return
    hosts = {request.headers.get("host", "").lower(), request.headers.get("x-forwarded-host", "").split(",")[0].strip().lower()}
    try:
        netloc = urlsplit(origin.strip()).netloc.lower()
    except ValueError:
        netloc = ""
    if not netloc or netloc not in hosts - {""}:
        raise PermissionDenied(f"Login refused: the request comes from another origin ({origin[:100]})")


async def _credentials(request: Request[Any, Any, Any]) -> tuple[str, str]:
    content_type = request.content_type[0]
    if content_type in _FORM_TYPES:
        form = await request.form()
        body: Any = {key: form.get(key) for key in form}
    elif content_type in ("application/json", "") or content_type.endswith("+json"):
        body = await read_json(request)
    else:
        raise BadRequest("Send the name and password as JSON or as a form (application/x-www-form-urlencoded)")
    errors = sorted(_LOGIN_VALIDATOR.iter_errors(body), key=lambda e: list(e.absolute_path))
    if errors:
        error = ValidationFailed("login", [
            Problem("".join(f"/{part}" for part in e.absolute_path), e.message if "password" not in e.absolute_path else
                    f"is not a valid password ({e.validator})") for e in errors
        ])
        error.message = "Invalid login request"
        raise error
    return body["name"], body["password"]


def _user(principal: Principal) -> dict[str, Any]:
    return {"id": str(principal.id), "name": principal.name, "roles": sorted(principal.roles)}


def _session_body(session: WebSession) -> dict[str, Any]:
    return {"created_at": session.created_at.isoformat(), "expires_at": session.expires_at.isoformat(),
            "idle_expires_at": session.idle_expires_at.isoformat()}


@post("/api/v1/auth/login", status_code=200)
async def login(request: Request[Any, Any, Any]) -> Response[bytes]:
    require_same_origin(request)
    name, password = await _credentials(request)
    platform = platform_of(request)
    principal = await UserService(platform.db, platform.settings).authenticate(  # LoginLocked: 429
        name, password, address=request.client.host if request.client else None
    )
    if principal is None:
        raise LoginFailed("Wrong user name or password")
    sessions = SessionService(platform.db, platform.settings)
    previous = request.cookies.get(SESSION_COOKIE)
    if previous:
        await sessions.revoke(previous)  # a login never continues a session someone else may have planted
    token, session = await sessions.create(principal.id, request.headers.get("user-agent", ""))
    response = json_response(
        {"user": _user(principal), "csrf_token": csrf_token_for(token), "session": _session_body(session)}, headers=_NO_STORE
    )
    response.set_cookie(session_cookie(request, token))
    return response


@post("/api/v1/auth/logout", status_code=200)
async def logout(request: Request[Any, Any, Any]) -> Response[bytes]:
    found = await session_of(request) if SESSION_COOKIE in request.cookies else None
    if found is None:
        response = problem_response(
            401, "Authentication required",
            "No active web session to log out of (API tokens are revoked with `xrm token revoke`)",
        )
        if SESSION_COOKIE in request.cookies:
            response.set_cookie(session_cookie(request, "", delete=True))
        return response
    await check_csrf(request)
    principal, _ = found
    platform = platform_of(request)
    await SessionService(platform.db, platform.settings).revoke(request.cookies[SESSION_COOKIE])
    await AuditLog(platform.db).write_now(principal, "auth.logout")
    response = json_response({"logged_out": True}, headers=_NO_STORE)
    response.set_cookie(session_cookie(request, "", delete=True))
    return response


@post("/api/v1/auth/logout-all", status_code=200)
async def logout_all(request: Request[Any, Any, Any]) -> Response[bytes]:
    """End every web session of the caller (this one included); API tokens stay valid."""
    principal = await principal_of(request)  # a session (with its CSRF token) or an API token
    platform = platform_of(request)
    count = await SessionService(platform.db, platform.settings).revoke_all(principal.id)
    by_session = not request.headers.get("authorization")
    await AuditLog(platform.db).write_now(
        principal, "auth.logout_all", details={"sessions": count, "by": "session" if by_session else "token"}
    )
    response = json_response({"revoked_sessions": count}, headers=_NO_STORE)
    if by_session:
        response.set_cookie(session_cookie(request, "", delete=True))
    return response


@get("/api/v1/auth/me")
async def me(request: Request[Any, Any, Any]) -> Response[bytes]:
    principal = await principal_of(request)
    body: dict[str, Any] = {"user": _user(principal), "auth": "token", "read_only": principal.read_only,
                            "csrf_token": None, "session": None}
    if not request.headers.get("authorization"):
        found = await session_of(request)
        if found is not None:
            body.update(auth="session", csrf_token=csrf_token_for(request.cookies[SESSION_COOKIE]), session=_session_body(found[1]))
    return json_response(body, headers=_NO_STORE)


auth_handlers = [login, logout, logout_all, me]


# -- the OpenAPI document -------------------------------------------------------
def auth_schemas() -> dict[str, Any]:
    user = {"type": "object", "required": ["id", "name", "roles"], "properties": {
        "id": {"type": "string", "format": "uuid"}, "name": {"type": "string"}, "roles": {"type": "array", "items": {"type": "string"}}}}
    session = {"type": "object", "required": ["created_at", "expires_at", "idle_expires_at"], "properties": {
        "created_at": {"type": "string", "format": "date-time"},
        "expires_at": {"type": "string", "format": "date-time", "description": "The session ends then at the latest"},
        "idle_expires_at": {"type": "string", "format": "date-time", "description": "The session ends then unless used before"}}}
    return {
        "LoginInput": _LOGIN_SCHEMA,
        "AuthUser": user,
        "WebSession": session,
        "Login": {"type": "object", "required": ["user", "csrf_token", "session"], "properties": {
            "user": {"$ref": "#/components/schemas/AuthUser"},
            "csrf_token": {"type": "string", "description": f"Send it as {CSRF_HEADER} (or form field {CSRF_FIELD}) with every "
                           "request the cookie authenticates other than GET/HEAD/OPTIONS"},
            "session": {"$ref": "#/components/schemas/WebSession"}}},
        "Me": {"type": "object", "required": ["user", "auth", "read_only", "csrf_token", "session"], "properties": {
            "user": {"$ref": "#/components/schemas/AuthUser"},
            "auth": {"type": "string", "enum": ["session", "token"]},
            "read_only": {"type": "boolean"},
            "csrf_token": {"type": ["string", "null"]},
            "session": {"anyOf": [{"$ref": "#/components/schemas/WebSession"}, {"type": "null"}]}}},
    }


def auth_paths() -> dict[str, Any]:
    tag = ["Authentication"]

    def errors(*codes: str) -> dict[str, Any]:
        return {code: {"$ref": f"#/components/responses/Problem{code}"} for code in codes}

    def ok(description: str, schema: dict[str, Any]) -> dict[str, Any]:
        return {"200": {"description": description, "content": {"application/json": {"schema": schema}}}}

    cookie = {"Set-Cookie": {"description": f"{SESSION_COOKIE}: the session (HttpOnly, SameSite=Lax, Path=/, Secure)",
                             "schema": {"type": "string"}}}
    login_response = ok("Logged in: the session cookie is set", {"$ref": "#/components/schemas/Login"})
    login_response["200"]["headers"] = cookie
    form = {"type": "object", "required": ["name", "password"], "properties": {
        "name": {"type": "string"}, "password": {"type": "string"}, CSRF_FIELD: {"type": "string"}}}
    return {
        "/api/v1/auth/login": {"post": {
            "operationId": "login", "tags": tag, "security": [],
            "summary": "Log in with name and password: sets the session cookie, returns the CSRF token",
            "description": "Consecutive failed logins of one name lock it for a while (429, Retry-After). "
                           "Requests from another site are refused (Sec-Fetch-Site / Origin).",
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/LoginInput"}},
                "application/x-www-form-urlencoded": {"schema": form}}},
            "responses": {**login_response, **errors("400", "401", "403", "413", "422", "429")},
        }},
        "/api/v1/auth/logout": {"post": {
            "operationId": "logout", "tags": tag,
            "summary": "End this web session (needs the session cookie and its CSRF token) and clear the cookie",
            "responses": {**ok("Logged out", {"type": "object", "required": ["logged_out"], "properties": {"logged_out": {"const": True}}}),
                          **errors("401", "403")},
        }},
        "/api/v1/auth/logout-all": {"post": {
            "operationId": "logout_all", "tags": tag,
            "summary": "End every web session of the user, this one included (API tokens stay valid)",
            "responses": {**ok("Sessions ended", {"type": "object", "required": ["revoked_sessions"], "properties": {
                "revoked_sessions": {"type": "integer", "minimum": 0}}}), **errors("401", "403")},
        }},
        "/api/v1/auth/me": {"get": {
            "operationId": "me", "tags": tag,
            "summary": "Who the request acts as; with a session cookie also the session and its CSRF token",
            "responses": {**ok("The caller", {"$ref": "#/components/schemas/Me"}), **errors("401")},
        }},
    }
