"""Import and export over the API: /api/v1/{entity}/_import and /_export.

Both are thin: the work is xrm.transfer's, the same code `xrm import` and
`xrm export` run, called with the caller's principal. The upload is spooled to
a temporary file (not held in memory) and the export is streamed page by page.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import AsyncIterator
from typing import Any

from litestar import Request, Response, get, post
from litestar.params import FromPath
from litestar.response import Stream

from ..errors import Problem, pointer
from ..transfer.exporter import iter_export
from ..transfer.importer import import_file, import_target
from .common import platform_of, principal_of
from .problems import BadRequest, json_response
from .records import list_arguments, record_service

__all__ = ["IMPORT_MAX_BYTES", "transfer_handlers"]

IMPORT_MAX_BYTES = 512 * 1024 * 1024
_IMPORT_OPTIONS = ("format", "dry_run", "upsert_key", "mapping", "currency", "timezone", "number_format",
                   "date_format", "encoding", "delimiter")
_EXPORT_OPTIONS = ("format", "references")
_MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson"}


def _choice(name: str, value: str | None, choices: tuple[str, ...], default: str | None) -> str | None:
    if value is None:
        return default
    if value not in choices:
        raise BadRequest("Invalid query parameter", [Problem(pointer(name), f"must be one of {', '.join(choices)}")])
    return value


def _import_format(request: Request[Any, Any, Any]) -> str:
    given = _choice("format", request.query_params.get("format"), ("csv", "jsonl"), None)
    if given:
        return given
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return "jsonl" if content_type in ("application/x-ndjson", "application/jsonl", "application/jsonlines") else "csv"


def _mapping(text: str | None) -> dict[str, str | None] | None:
    if not text:
        return None
    try:
        mapping = json.loads(text)
    except ValueError:
        mapping = None
    if not isinstance(mapping, dict) or not all(isinstance(v, (str, type(None))) for v in mapping.values()):
        raise BadRequest("Invalid query parameter", [Problem("/mapping", 'must be a JSON object {"Column": "field" or null}')])
    return mapping


@post("/api/v1/{entity:str}/_import", status_code=200, request_max_body_size=IMPORT_MAX_BYTES)
async def import_upload(request: Request[Any, Any, Any], entity: FromPath[str]) -> Response[bytes]:
    """The body is the file (CSV or JSON Lines); options are query parameters.

    `entity` may also name what a plugin imports (xrm_import_targets), e.g. `_connections` or `project.members`.
    """
    platform = platform_of(request)
    if import_target(platform.registry, entity) is not None:
        principal, policy = await principal_of(request), platform.policy
    else:
        service = await record_service(request, entity)
        principal, policy = service.principal, service.policy
    params = request.query_params
    unknown = [key for key in params.keys() if key not in _IMPORT_OPTIONS]
    if unknown:
        raise BadRequest("Invalid query parameter", [Problem(pointer(key), "is not an import option") for key in unknown])
    file_format = _import_format(request)
    number_format = _choice("number_format", params.get("number_format"), ("auto", "de", "en"), "auto")
    dry_run = _choice("dry_run", params.get("dry_run"), ("true", "false"), "false") == "true"
    delimiter = params.get("delimiter") or None
    if delimiter == "\\t":
        delimiter = "\t"
    if delimiter is not None and len(delimiter) != 1:
        raise BadRequest("Invalid query parameter", [Problem("/delimiter", "must be one character")])
    encoding = params.get("encoding") or None
    if encoding is not None:
        try:
            "".encode(encoding)
        except (LookupError, ValueError):
            raise BadRequest("Invalid query parameter", [Problem("/encoding", f"unknown encoding {encoding!r}")]) from None
    with tempfile.TemporaryFile() as upload:
        size = 0
        async for chunk in request.stream():
            upload.write(chunk)
            size += len(chunk)
        if size == 0:
            raise BadRequest("The request needs a body: the CSV or JSON Lines file")
        upload.seek(0)
        report = await import_file(
            platform.db,
            platform.registry,
            entity,
            upload,
            format=file_format,  # type: ignore[arg-type]
            encoding=encoding,
            delimiter=delimiter,
            principal=principal,
            policy=policy,
            mapping=_mapping(params.get("mapping")),
            upsert_key=params.get("upsert_key") or None,
            dry_run=dry_run,
            default_currency=params.get("currency") or None,
            timezone=params.get("timezone") or None,
            number_format=number_format,
            date_format=params.get("date_format") or None,
        )
    return json_response(report.as_dict())


@get("/api/v1/{entity:str}/_export")
async def export_download(request: Request[Any, Any, Any], entity: FromPath[str]) -> Stream:
    """The list's filters, q and sort; the body streams page by page."""
    service = await record_service(request, entity)
    params = request.query_params
    file_format = _choice("format", params.get("format"), ("csv", "jsonl"), "csv")
    references = _choice("references", params.get("references"), ("id", "display"), "id")
    arguments = list_arguments(service, params, ignore=_EXPORT_OPTIONS)
    options = {"where": arguments["where"], "search": arguments["search"], "order_by": arguments["order_by"]}
    # Check filters, sort and the right to export before the first byte is
    # sent: once streaming has begun, an error can no longer become a 4xx.
    service.policy.authorize(service.principal, service.name, "export")
    await service.list(limit=1, **options)
    platform = platform_of(request)
    chunks: AsyncIterator[str] = iter_export(
        platform.db, platform.registry, entity, format=file_format, references=references, principal=service.principal,
        policy=service.policy, **options
    )
    return Stream(
        chunks,
        media_type=_MEDIA_TYPES[file_format or "csv"],
        headers={"Content-Disposition": f'attachment; filename="{entity}.{file_format}"'},
    )


transfer_handlers = [import_upload, export_download]
