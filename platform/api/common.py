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
from .problems import BadRequest, PermissionDenied

__all__ = ["etag", "expected_version", "platform_of", "principal_of", "read_json", "require_admin"]

_BEARER = re.compile(r"^Bearer\s+(\S+)$", re.IGNORECASE)
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_ETAG = re.compile(r'^(?:W/)?"(\d{1,9})"$')


def platform_of(request: Request[Any, Any, Any]) -> Platform:
    return request.app.state.platform  # type: ignore[no-any-return]


async def principal_of(request: Request[Any, Any, Any]) -> Principal:
    """The caller, from `Authorization: Bearer <token>`; 401 without a valid one."""
    header = request.headers.get("authorization", "")
    match = _BEARER.match(header.strip())
    if not match:
        raise AuthenticationRequired("Send an API token as 'Authorization: Bearer <token>' (create one with `xrm token create --user NAME`)")
    principal = await UserService(platform_of(request).db).principal_for_token(match.group(1))
    if principal is None:
        raise AuthenticationRequired("The API token is unknown or revoked")
    if principal.read_only and request.method not in _SAFE_METHODS:
        # Checked here, where every API request resolves its token, so no
        # endpoint (now or later) can forget it; the policy checks it again.
        raise PermissionDenied("This API token is read-only; it may only read (GET)")
    return principal


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
