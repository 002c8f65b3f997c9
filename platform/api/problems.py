"""RFC 9457 problem details for every error the API can return.

No handler returns a bare 500: user errors (XrmError) map to 4xx with their
problems; anything unexpected becomes a logged 500 problem without internals.
"""

from __future__ import annotations

import logging
import math
from datetime import datetime, timezone
from typing import Any

import msgspec
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException

from ..auth import AuthenticationRequired, LoginLocked
from ..errors import (
    DefinitionInvalid,
    NotFound,
    PermissionDenied,
    SchemaChangeRefused,
    ValidationFailed,
    VersionConflict,
    XrmError,
)

__all__ = [
    "PROBLEM_JSON",
    "BadRequest",
    "CsrfFailed",
    "PermissionDenied",
    "exception_handlers",
    "json_response",
    "problem_response",
]

log = logging.getLogger("xrm.api")
PROBLEM_JSON = "application/problem+json"
_encoder = msgspec.json.Encoder(decimal_format="number")


class BadRequest(XrmError):
    title = "Bad request"


class CsrfFailed(PermissionDenied):
    """A cookie-authenticated request that changes something came without its session's CSRF token."""

    title = "CSRF token missing or invalid"


_STATUS: list[tuple[type[XrmError], int]] = [
    (ValidationFailed, 422),
    (DefinitionInvalid, 422),
    (NotFound, 404),
    (VersionConflict, 409),
    (SchemaChangeRefused, 409),
    (AuthenticationRequired, 401),
    (PermissionDenied, 403),
    (LoginLocked, 429),
    (BadRequest, 400),
]


def json_response(content: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response[bytes]:
    """JSON with exact decimals (a Decimal is written as a JSON number, digit for digit)."""
    return Response(_encoder.encode(content), status_code=status_code, media_type=MediaType.JSON, headers=headers)


def problem_response(
    status: int, title: str, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> Response[bytes]:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    headers = dict(headers or {})
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="xrm"'
    return Response(_encoder.encode(body), status_code=status, media_type=PROBLEM_JSON, headers=headers or None)


def _xrm_error(request: Request[Any, Any, Any], error: XrmError) -> Response[bytes]:
    status = next((code for kind, code in _STATUS if isinstance(error, kind)), 400)
    extra: dict[str, Any] = {}
    if error.problems:
        extra["errors"] = [{"pointer": p.pointer, "detail": p.message} for p in error.problems]
    if isinstance(error, SchemaChangeRefused):
        extra["refusals"] = [
            {"entity": r.entity, "field": r.field, "detail": r.reason, "record_ids": r.record_ids, "total": r.total}
            for r in error.refusals
        ]
    if isinstance(error, VersionConflict):
        extra["current_version"] = error.current
    headers = None
    if isinstance(error, LoginLocked):
        extra["locked_until"] = error.until.isoformat()
        wait = math.ceil((error.until - datetime.now(timezone.utc)).total_seconds())
        headers = {"Retry-After": str(max(wait, 1))}
    return problem_response(status, error.title, error.message, headers, **extra)


def _http_error(request: Request[Any, Any, Any], error: HTTPException) -> Response[bytes]:
    status = error.status_code
    titles = {400: "Bad request", 401: "Authentication required", 404: "Not found", 405: "Method not allowed", 413: "Request too large"}
    detail = error.detail if isinstance(error.detail, str) else str(error.detail)
    extra = {}
    if getattr(error, "extra", None):
        extra["errors"] = error.extra
    return problem_response(status, titles.get(status, "Error"), detail, **extra)


def _unexpected(request: Request[Any, Any, Any], error: Exception) -> Response[bytes]:
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=error)
    return problem_response(500, "Internal server error", "Something went wrong on our side; the error was logged.")


exception_handlers: dict[Any, Any] = {
    XrmError: _xrm_error,
    HTTPException: _http_error,
    Exception: _unexpected,
}
