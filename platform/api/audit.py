"""The audit trail over the API: a record's history, and the admins' search."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from collections.abc import AsyncIterator

from litestar import Request, Response, get
from litestar.response import Stream
from litestar.params import FromPath

from ..audit import MAX_PAGE, AuditLog
from ..db.database import json_dumps
from ..errors import Problem, pointer
from ..schema.field_types import in_utc_range, parse_aware_datetime
from .common import platform_of, principal_of
from .problems import BadRequest, PermissionDenied, json_response
from .records import record_service

__all__ = ["audit_handlers"]

_SEARCH_PARAMETERS = ("entity", "record_id", "user", "action", "field", "since", "until", "before", "limit")


@get("/api/v1/{entity:str}/{record_id:str}/history")
async def record_history(request: Request[Any, Any, Any], entity: FromPath[str], record_id: FromPath[str]) -> Response[bytes]:
    """Who changed what and when, oldest first (for anyone who may read the record)."""
    service = await record_service(request, entity)
    entries = await service.history(record_id)
    return json_response({"entries": [e.as_dict() for e in entries]})


def _bad(name: str, message: str) -> BadRequest:
    return BadRequest("Invalid query parameter", [Problem(pointer(name), message)])


def _moment(name: str, text: str | None) -> dt.datetime | None:
    if text is None:
        return None
    moment = parse_aware_datetime(text)
    if moment is None or not in_utc_range(moment):
        raise _bad(name, "must be a date-time with offset, e.g. 2024-12-31T00:00:00Z")
    return moment


def _whole(name: str, text: str | None, low: int, high: int) -> int | None:
    if text is None:
        return None
    if not text.strip().isdigit() or not low <= int(text) <= high:
        raise _bad(name, f"must be a whole number from {low} to {high}")
    return int(text)


def _filters(params: Any, allowed: tuple[str, ...], what: str) -> dict[str, Any]:
    """The search filters of the query string (AuditLog.search's arguments); unknown parameters are a 400."""
    unknown = [key for key in params.keys() if key not in allowed]
    if unknown:
        raise BadRequest("Invalid query parameter", [Problem(pointer(key), f"is not an {what} parameter" if what[0] in "aeiou"
                                                             else f"is not a {what} parameter") for key in unknown])
    record_id = params.get("record_id")
    try:
        record_key = uuid.UUID(record_id) if record_id is not None else None
    except ValueError:
        raise _bad("record_id", "must be a record id (uuid)") from None
    return {"entity": params.get("entity"), "record_id": record_key, "user": params.get("user"), "action": params.get("action"),
            "field": params.get("field"), "since": _moment("since", params.get("since")), "until": _moment("until", params.get("until"))}


@get("/api/v1/admin/audit")
async def search_audit(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Search the whole trail, newest first (admins only); page with `before`."""
    principal = await principal_of(request)
    if "admin" not in principal.roles:
        raise PermissionDenied("Searching the audit trail needs the admin role")
    params = request.query_params
    filters = _filters(params, _SEARCH_PARAMETERS, "search")
    limit = _whole("limit", params.get("limit"), 1, MAX_PAGE) or 100
    entries = await AuditLog(platform_of(request).db).search(
        **filters, before_id=_whole("before", params.get("before"), 1, 2**63 - 1), limit=limit
    )
    next_before = entries[-1].id if len(entries) == limit else None
    return json_response({"entries": [e.as_dict() for e in entries], "next_before": next_before})


_EXPORT_PARAMETERS = ("entity", "record_id", "user", "action", "field", "since", "until")


@get("/api/v1/admin/audit/_export")
async def export_audit(request: Request[Any, Any, Any]) -> Stream:
    """Every matching entry as JSON Lines, newest first, streamed page by page (admins only); audited itself."""
    principal = await principal_of(request)
    if "admin" not in principal.roles:
        raise PermissionDenied("Exporting the audit trail needs the admin role")
    filters = _filters(request.query_params, _EXPORT_PARAMETERS, "export")
    log = AuditLog(platform_of(request).db)
    # Recorded before the first byte: who took which part of the trail (filters as given).
    await log.write_now(principal, "audit.exported", details={
        "filters": {k: str(v) for k, v in filters.items() if v is not None}, "via": principal.via or "service",
        **({"token_id": str(principal.token_id)} if principal.token_id else {})})

    async def lines() -> AsyncIterator[str]:
        before = None
        while True:
            entries = await log.search(**filters, before_id=before, limit=MAX_PAGE)
            for entry in entries:
                yield json_dumps(entry.as_dict()) + "\n"
            if len(entries) < MAX_PAGE:
                return
            before = entries[-1].id

    return Stream(lines(), media_type="application/x-ndjson",
                  headers={"Content-Disposition": 'attachment; filename="audit.jsonl"'})


audit_handlers = [record_history, search_audit, export_audit]
