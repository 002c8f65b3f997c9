"""Record endpoints: /api/v1/{entity} and /api/v1/{entity}/{id}.

Generic handlers look the entity up in the registry on every request, so an
entity an admin adds while the server runs has its API at once. Every call
goes through RecordService with the caller's principal.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from litestar import Request, Response, delete, get, patch, post, put
from litestar.params import FromPath

from ..errors import NotFound, Problem, ValidationFailed, VersionConflict, pointer
from ..records.query import parse_filter_params
from ..records.service import RecordService
from .common import etag, expected_version, platform_of, principal_of, read_json
from .problems import BadRequest, json_response

__all__ = ["BULK_LIMIT", "LIST_PARAMETERS", "list_arguments", "record_handlers", "record_service"]

BULK_LIMIT = 1000
LIST_PARAMETERS = ("q", "sort", "limit", "after", "fields", "total", "expand", "include_deleted")


async def record_service(request: Request[Any, Any, Any], entity: str) -> RecordService:
    """The entity's RecordService for the caller (401 without a valid token, 404 for an unknown entity)."""
    principal = await principal_of(request)
    platform = platform_of(request)
    return RecordService(platform.db, platform.registry, entity, principal, platform.policy)


def _split(value: str | None) -> list[str] | None:
    """A comma-separated list; absent or empty (`?fields=`) gives None: not given."""
    parts = [part.strip() for part in (value or "").split(",") if part.strip()]
    return parts or None


def _flag(name: str, value: str | None) -> bool:
    if value is None:
        return False
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise BadRequest("Invalid query parameter", [Problem(pointer(name), "must be true or false")])


def list_arguments(service: RecordService, params: Any, ignore: tuple[str, ...] = ()) -> dict[str, Any]:
    """Filters, q, sort and include_deleted of a list query string (shared by list and export)."""
    filters = {key: params.getall(key) for key in params.keys() if key not in LIST_PARAMETERS and key not in ignore}
    return {
        "where": parse_filter_params(service.entity, filters, service.hidden_fields),
        "search": params.get("q") or None,
        "order_by": _split(params.get("sort")),
        "include_deleted": _flag("include_deleted", params.get("include_deleted")),
    }


def _record_body(body: Any) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise BadRequest("The body must be a JSON object (one record)")
    return body


@get("/api/v1/{entity:str}")
async def list_records(request: Request[Any, Any, Any], entity: FromPath[str]) -> Response[bytes]:
    service = await record_service(request, entity)
    params = request.query_params
    try:
        limit = int(params.get("limit", "50"))
    except ValueError:
        raise BadRequest("Invalid query parameter", [Problem("/limit", "must be a whole number")]) from None
    if not 1 <= limit <= 1000:
        raise BadRequest("Invalid query parameter", [Problem("/limit", "must be between 1 and 1000")])
    page = await service.list(
        **list_arguments(service, params),
        limit=limit,
        after=params.get("after") or None,
        fields=_split(params.get("fields")),
        with_total=_flag("total", params.get("total")),
        expand=_split(params.get("expand")),
    )
    body: dict[str, Any] = {"records": page.records, "next_cursor": page.next_cursor}
    if page.total is not None:
        body["total"] = page.total
    return json_response(body)


@post("/api/v1/{entity:str}", status_code=201)
async def create_record(request: Request[Any, Any, Any], entity: FromPath[str]) -> Response[bytes]:
    service = await record_service(request, entity)
    record = await service.create(_record_body(await read_json(request)))
    headers = {**etag(record), "Location": f"/api/v1/{entity}/{record['id']}"}
    return json_response(record, 201, headers)


@post("/api/v1/{entity:str}/_bulk", status_code=200)
async def bulk_write(request: Request[Any, Any, Any], entity: FromPath[str]) -> Response[bytes]:
    """Create (no "id") or update (with "id", optional "version") up to 1,000 records, all or nothing."""
    service = await record_service(request, entity)
    body = await read_json(request)
    items = body.get("records") if isinstance(body, Mapping) else None
    if not isinstance(items, list):
        raise BadRequest('The body must be {"records": [...]}')
    if len(items) > BULK_LIMIT:
        raise BadRequest(f"At most {BULK_LIMIT} records per call, got {len(items)}", [Problem("/records", f"has {len(items)} items")])
    problems: list[Problem] = []
    results: list[dict[str, Any]] = []
    platform = platform_of(request)
    async with platform.db.transaction() as tx:
        for index, item in enumerate(items):
            at = pointer("records", index)
            if not isinstance(item, Mapping):
                problems.append(Problem(at, "must be a JSON object"))
                continue
            # A savepoint per record: one record's database error must not
            # abort the others' checks, so the reply can list every problem.
            try:
                async with tx.connection.transaction():
                    if "id" in item and item["id"] is not None:
                        changes = {k: v for k, v in item.items() if k not in ("id", "version")}
                        version = item.get("version")
                        if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
                            raise ValidationFailed(entity, [Problem("/version", "must be a whole number")])
                        results.append(await service.update(item["id"], changes, expected_version=version))
                    else:
                        results.append(await service.create(item))
            except ValidationFailed as error:
                problems.extend(Problem(at + p.pointer, p.message) for p in error.problems)
            except NotFound as error:
                problems.append(Problem(at + "/id", error.message))
            except VersionConflict as error:
                problems.append(Problem(at + "/version", error.message))
        if problems:
            raise ValidationFailed(entity, problems)
    return json_response({"records": results})


@get("/api/v1/{entity:str}/{record_id:str}")
async def get_record(request: Request[Any, Any, Any], entity: FromPath[str], record_id: FromPath[str]) -> Response[bytes]:
    service = await record_service(request, entity)
    expand = _split(request.query_params.get("expand"))
    if expand:
        page = await service.list(where={"id": record_id}, expand=expand, limit=1)
        if not page.records:
            raise NotFound(f"No {entity} record with id {record_id}")
        record = page.records[0]
    else:
        record = await service.get(record_id)
    return json_response(record, headers=etag(record))


@put("/api/v1/{entity:str}/{record_id:str}")
async def replace_record(request: Request[Any, Any, Any], entity: FromPath[str], record_id: FromPath[str]) -> Response[bytes]:
    """Replace every field: a field missing from the body is cleared."""
    service = await record_service(request, entity)
    body = _record_body(await read_json(request))
    # Sensitive fields the caller may not change are not cleared (they keep their value).
    read_only = service.hidden_fields | service.read_only_fields
    changes = {name: None for name in service.entity.fields if name not in read_only}
    changes.update(body)
    record = await service.update(record_id, changes, expected_version=expected_version(request))
    return json_response(record, headers=etag(record))


@patch("/api/v1/{entity:str}/{record_id:str}")
async def update_record(request: Request[Any, Any, Any], entity: FromPath[str], record_id: FromPath[str]) -> Response[bytes]:
    service = await record_service(request, entity)
    body = _record_body(await read_json(request))
    record = await service.update(record_id, body, expected_version=expected_version(request))
    return json_response(record, headers=etag(record))


@delete("/api/v1/{entity:str}/{record_id:str}", status_code=200)
async def delete_record(request: Request[Any, Any, Any], entity: FromPath[str], record_id: FromPath[str]) -> Response[bytes]:
    service = await record_service(request, entity)
    record = await service.delete(record_id, expected_version=expected_version(request))
    return json_response(record, headers=etag(record))


@post("/api/v1/{entity:str}/{record_id:str}/restore", status_code=200)
async def restore_record(request: Request[Any, Any, Any], entity: FromPath[str], record_id: FromPath[str]) -> Response[bytes]:
    service = await record_service(request, entity)
    record = await service.restore(record_id)
    return json_response(record, headers=etag(record))


record_handlers = [
    list_records, create_record, bulk_write, get_record, replace_record, update_record, delete_record, restore_record,
]
