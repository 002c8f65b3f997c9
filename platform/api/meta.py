"""Entity definitions through the API: /api/v1/meta/ (same semantics as the CLI)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from litestar import Request, Response, get, post
from litestar.params import FromPath

from ..errors import DefinitionInvalid, NotFound, Problem
from .common import platform_of, principal_of, read_json, require_admin
from .problems import BadRequest, json_response

__all__ = ["meta_handlers"]


def _change_request(body: Any) -> tuple[list[Any], list[str], bool]:
    if not isinstance(body, Mapping):
        raise BadRequest('The body must be {"definitions": [...], "remove": [...]}')
    definitions = body.get("definitions", [])
    remove = body.get("remove", [])
    allow = body.get("allow_destructive", False)
    if not isinstance(definitions, list) or not isinstance(remove, list) or not all(isinstance(r, str) for r in remove):
        raise BadRequest('"definitions" must be a list of entity definitions and "remove" a list of entity names')
    if not isinstance(allow, bool):
        raise BadRequest('"allow_destructive" must be true or false')
    return definitions, remove, allow


def _sources(definitions: list[Any]) -> list[str]:
    """Each definition's place in the body, so a problem's pointer can say which one."""
    return [f"/definitions/{index}" for index in range(len(definitions))]


def _located(error: DefinitionInvalid) -> DefinitionInvalid:
    """Pointers relative to the request body: /definitions/1/properties/x."""
    if not error.source or not error.source.startswith("/definitions/"):
        return error
    return DefinitionInvalid([Problem(error.source + p.pointer, p.message) for p in error.problems])


@get("/api/v1/meta/entities")
async def list_entities(request: Request[Any, Any, Any]) -> Response[bytes]:
    await principal_of(request)
    registry = platform_of(request).registry
    return json_response({
        "entities": [
            {
                "name": e.name,
                "version": e.version,
                "label": {lang: e.definition.label(lang) for lang in ("en", "de")},
                "plural": {lang: e.definition.label(lang, plural=True) for lang in ("en", "de")},
                "url": f"/api/v1/{e.name}",
            }
            for e in registry
        ]
    })


@get("/api/v1/meta/entities/{name:str}")
async def get_entity(request: Request[Any, Any, Any], name: FromPath[str]) -> Response[bytes]:
    await principal_of(request)
    entity = platform_of(request).registry.get(name)
    return json_response({"name": entity.name, "version": entity.version, "definition": entity.definition.document})


@post("/api/v1/meta/plan", status_code=200)
async def plan(request: Request[Any, Any, Any]) -> Response[bytes]:
    require_admin(await principal_of(request))
    definitions, remove, _ = _change_request(await read_json(request))
    try:
        result = await platform_of(request).schema.plan(definitions, remove=remove, sources=_sources(definitions))
    except DefinitionInvalid as error:
        raise _located(error) from None
    return json_response(result.as_dict())


@post("/api/v1/meta/apply", status_code=200)
async def apply(request: Request[Any, Any, Any]) -> Response[bytes]:
    principal = await principal_of(request)
    require_admin(principal)
    definitions, remove, allow = _change_request(await read_json(request))
    try:
        result = await platform_of(request).schema.apply(
            definitions, remove=remove, allow_destructive=allow, principal=principal, sources=_sources(definitions)
        )
    except DefinitionInvalid as error:
        raise _located(error) from None
    return json_response(result.as_dict())


@post("/api/v1/meta/revert", status_code=200)
async def revert(request: Request[Any, Any, Any]) -> Response[bytes]:
    principal = await principal_of(request)
    require_admin(principal)
    result = await platform_of(request).schema.revert(principal=principal)
    return json_response(result.as_dict())


@get("/api/v1/meta/history")
async def history(request: Request[Any, Any, Any]) -> Response[bytes]:
    await principal_of(request)
    entity = request.query_params.get("entity") or None
    rows = await platform_of(request).schema.history(entity)
    if entity and not rows:
        raise NotFound(f"No entity {entity!r} (now or formerly)")
    return json_response({"versions": rows})


meta_handlers = [list_entities, get_entity, plan, apply, revert, history]
