"""REST endpoints of the CRM pack.

POST /api/v1/lead/{id}/convert              lead -> account, contact, deal (one transaction); optional body {title, amount}
POST /api/v1/campaign/{id}/refresh-members  add the contacts the campaign's segment selects as invited members
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from litestar import Request, Response, post
from litestar.params import FromPath
from xrm.api.common import platform_of, principal_of, read_json
from xrm.api.problems import BadRequest, json_response
from xrm.api.spec import error_responses as _errors
from xrm.errors import NotFound

from .service import convert_lead, refresh_members

__all__ = ["api_handlers", "openapi"]


def _only(entity: str, expected: str, action: str) -> None:
    if entity != expected:
        raise NotFound(f"{action} is an action of {expected} records only")


# Paths start with {entity} like the generic record routes: a literal /api/v1/lead/... would shadow /api/v1/{entity}
# for "lead" in Litestar's router.
@post("/api/v1/{entity:str}/{record_id:str}/convert", status_code=201)
async def convert(request: Request[Any, Any, Any], entity: FromPath[str], record_id: FromPath[str]) -> Response[bytes]:
    _only(entity, "lead", "convert")
    principal = await principal_of(request)
    platform = platform_of(request)
    options: Any = {}
    if (await request.body()).strip():
        options = await read_json(request)
    if not isinstance(options, Mapping):
        raise BadRequest("The body must be a JSON object: {\"title\": ..., \"amount\": {\"amount\": ..., \"currency\": ...}} (both optional)")
    result = await convert_lead(platform.db, platform.registry, principal, platform.policy, record_id, options)
    return json_response(result, status_code=201)


@post("/api/v1/{entity:str}/{record_id:str}/refresh-members", status_code=200)
async def refresh(request: Request[Any, Any, Any], entity: FromPath[str], record_id: FromPath[str]) -> Response[bytes]:
    _only(entity, "campaign", "refresh-members")
    principal = await principal_of(request)
    platform = platform_of(request)
    return json_response(await refresh_members(platform.db, platform.registry, principal, platform.policy, record_id))


api_handlers = [convert, refresh]


# -- OpenAPI -------------------------------------------------------------------------
def _record_or_null(entity: str) -> dict[str, Any]:
    return {"oneOf": [{"$ref": f"#/components/schemas/{entity}.Record"}, {"type": "null"}]}


def openapi(registry: Any) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    record_id = {"name": "record_id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}
    if all(name in registry for name in ("lead", "account", "contact", "deal")):
        schemas["Crm.ConvertLead"] = {
            "type": "object", "additionalProperties": False,
            "properties": {
                "title": {"type": "string", "maxLength": 200, "description": "The deal's title (default: the lead's company, else its name)"},
                "amount": {"type": "object", "required": ["amount", "currency"], "additionalProperties": False,
                           "properties": {"amount": {"type": "number"}, "currency": {"type": "string", "pattern": "^[A-Z]{3}$"}},
                           "description": "The deal's amount"},
            },
        }
        schemas["Crm.Conversion"] = {
            "type": "object", "required": ["lead", "account", "contact", "deal"],
            "properties": {"lead": {"$ref": "#/components/schemas/lead.Record"}, "account": _record_or_null("account"),
                           "contact": {"$ref": "#/components/schemas/contact.Record"},
                           "deal": {"$ref": "#/components/schemas/deal.Record"}},
        }
        paths["/api/v1/lead/{record_id}/convert"] = {
            "parameters": [record_id],
            "post": {
                "operationId": "convert_lead", "tags": [registry.get("lead").definition.label()],
                "summary": "Convert a lead into an account, a contact and a deal",
                "description": "In one transaction, as the caller: an account from the lead's company (an existing account of "
                               "that name is used), a contact from its name, e-mail and phone (an existing contact with the "
                               "e-mail is used), a deal in stage prospecting; the lead becomes converted and links to them. "
                               "A lead converted before: 409.",
                "requestBody": {"required": False, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Crm.ConvertLead"}}}},
                "responses": {"201": {"description": "The converted lead and the records created or used",
                                      "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Crm.Conversion"}}}},
                              **_errors("400", "401", "403", "404", "409", "413", "422")},
            },
        }
    if all(name in registry for name in ("campaign", "campaign_member", "contact")):
        schemas["Crm.MembersRefreshed"] = {
            "type": "object", "required": ["segment", "selected", "already_members", "added"],
            "properties": {
                "segment": {"type": "object", "required": ["id", "name"],
                            "properties": {"id": {"type": "string", "format": "uuid"}, "name": {"type": "string"}}},
                "selected": {"type": "integer", "description": "Contacts the segment selects that the caller may read"},
                "already_members": {"type": "integer"},
                "added": {"type": "integer", "description": "New members (status invited)"},
            },
        }
        paths["/api/v1/campaign/{record_id}/refresh-members"] = {
            "parameters": [record_id],
            "post": {
                "operationId": "refresh_campaign_members", "tags": [registry.get("campaign").definition.label()],
                "summary": "Add the contacts of the campaign's segment as members",
                "description": "The segment is the name or id of a saved view of contacts (own or shared). Every contact its "
                               "filter selects that the caller may read and that is not yet a member becomes a member with "
                               "status invited; running it again adds only new matches.",
                "responses": {"200": {"description": "Counts",
                                      "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Crm.MembersRefreshed"}}}},
                              **_errors("400", "401", "403", "404", "413", "422")},
            },
        }
    return {"paths": paths, "schemas": schemas} if paths else {}
