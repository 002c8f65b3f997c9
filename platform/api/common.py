"""Request helpers shared by the API handlers: principal, body, ETags."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

from litestar import Request

from ..auth import AuthenticationRequired, UserService
from ..records.principal import Principal
from ..runtime import Platform
from ..sessions import SESSION_COOKIE, SessionService, WebSession, csrf_token_matches
from .problems import BadRequest, CsrfFailed, PermissionDenied

__all__ = [
    "CSRF_FIELD", "CSRF_HEADER", "check_csrf", "etag", "expected_version", "platform_of", "principal_of", "read_json",
    "require_admin", "session_of",
]

CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
_FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})

_BEARER = re.compile(r"^Bearer\s+(\S+)$", re.IGNORECASE)
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_ETAG = re.compile(r'^(?:W/)?"(\d{1,9})"$')


def platform_of(request: Request[Any, Any, Any]) -> Platform:
    return request.app.state.platform  # type: ignore[no-any-return]


async def principal_of(request: Request[Any, Any, Any]) -> Principal:
    """The caller: from `Authorization: Bearer <token>`, else from the `xrm_session` cookie; 401 without either.

    A request the cookie authenticates that may change something (any method
    but GET/HEAD/OPTIONS) must also carry the session's CSRF token (header
    X-CSRF-Token, or form field csrf_token), else 403: a browser sends the
    cookie with requests other sites make it send, never the token.
    """
    header = request.headers.get("authorization", "")
    if header or SESSION_COOKIE not in request.cookies:
        return await _principal_of_token(request, header)
    found = await session_of(request)
    if found is None:
        raise AuthenticationRequired("The session has ended (logged out or expired); log in again")
    principal, _ = found
    if request.method not in _SAFE_METHODS:
        await check_csrf(request)
    return principal


async def _principal_of_token(request: Request[Any, Any, Any], header: str) -> Principal:
    match = _BEARER.match(header.strip())
    if not match:
        raise AuthenticationRequired(
            "Send an API token as 'Authorization: Bearer <token>' (create one with `xrm token create --user NAME`), "
            "or log in (POST /api/v1/auth/login) for a session cookie"
        )
    platform = platform_of(request)
    principal = await UserService(platform.db, platform.settings).principal_for_token(match.group(1))
    if principal is None:
        raise AuthenticationRequired("The API token is unknown or revoked")
    if principal.read_only and request.method not in _SAFE_METHODS:
        # Checked here, where every API request resolves its token, so no
        # endpoint (now or later) can forget it; the policy checks it again.
        raise PermissionDenied("This API token is read-only; it may only read (GET)")
    return principal


async def session_of(request: Request[Any, Any, Any]) -> tuple[Principal, WebSession] | None:
    """The user and web session of the request's `xrm_session` cookie (resolved once per request)."""
    if "xrm.session" not in request.scope.setdefault("state", {}):
        token = request.cookies.get(SESSION_COOKIE)
        platform = platform_of(request)
        found = await SessionService(platform.db, platform.settings).resolve(token) if token else None
        request.scope["state"]["xrm.session"] = found
    return request.scope["state"]["xrm.session"]  # type: ignore[no-any-return]


async def check_csrf(request: Request[Any, Any, Any]) -> None:
    """403 unless the request carries the CSRF token of its session cookie."""
    token = request.cookies.get(SESSION_COOKIE, "")
    candidate = request.headers.get(CSRF_HEADER)
    if candidate is None and request.content_type[0] in _FORM_TYPES:
        value = (await request.form()).get(CSRF_FIELD)
        candidate = value if isinstance(value, str) else None
    if not token or not csrf_token_matches(token, candidate):
        raise CsrfFailed(
            f"CSRF token missing or invalid: a request authenticated by the session cookie that changes something "
            f"needs the session's CSRF token in the {CSRF_HEADER} header (or the form field {CSRF_FIELD}); "
            "the login and GET /api/v1/auth/me return it"
        )


def require_admin(principal: Principal) -> None:
    if "admin" not in principal.roles:
        raise PermissionDenied("Changing entity definitions needs the admin role")


async def read_json(request: Request[Any, Any, Any]) -> Any:
    """The request body as JSON; numbers with a fraction become exact Decimals."""
    body = await request.body()
    if not body.strip():
        raise BadRequest("The request needs a JSON body")
    try:
        return json.loads(body.decode("utf-8"), parse_float=Decimal, parse_constant=_no_constants)
    except UnicodeDecodeError:
        raise BadRequest("The body is not UTF-8 text") from None
    except (json.JSONDecodeError, ValueError) as error:
        raise BadRequest(f"The body is not valid JSON: {error}") from None
    except RecursionError:
        raise BadRequest("The body is nested too deeply") from None


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def etag(record: dict[str, Any]) -> dict[str, str]:
    return {"ETag": f'"{record["version"]}"'}


def expected_version(request: Request[Any, Any, Any]) -> int | None:
    """The version named by If-Match, for optimistic concurrency (None: not sent)."""
    header = request.headers.get("if-match")
    if header is None or header.strip() == "*":
        return None
    match = _ETAG.match(header.strip())
    if not match:
        raise BadRequest('If-Match must be an ETag this API issued, e.g. "3"')
    return int(match.group(1))
