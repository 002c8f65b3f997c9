"""What the CRM pack does beyond plain records: lead conversion, campaign members from a segment, response figures.

Both run through RecordService with the caller's principal (permissions,
validation, write hooks, audit trail and outbox as for any write) inside one
`db.transaction()`, which the services' own writes join: all or nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from litestar.datastructures import MultiDict
from litestar.exceptions import HTTPException
from xrm.api.records import list_arguments
from xrm.errors import NotFound, PermissionDenied, Problem, ValidationFailed
from xrm.records.service import RecordService

__all__ = ["CONVERT_OPTIONS", "NOT_A_RESPONSE", "AlreadyConverted", "campaign_responses", "convert_lead", "find_segment", "refresh_members"]

CONVERT_OPTIONS = ("title", "amount")
VIEW_PARAMETERS = ("columns", "after", "view")
"""Query parameters of a saved list view that are not filters (the list page's own)."""
PAGE = 1000


class AlreadyConverted(HTTPException):
    """The lead was converted before (HTTP 409)."""

    status_code = 409


def _services(db: Any, registry: Any, principal: Any, policy: Any, *names: str) -> list[RecordService]:
    return [RecordService(db, registry, name, principal, policy) for name in names]


async def _first(service: RecordService, field: str, value: Any) -> dict[str, Any] | None:
    """A readable live record whose field has this value, if any."""
    if value in (None, ""):
        return None
    page = await service.list(where={field: value}, limit=1)
    return page.records[0] if page.records else None


async def convert_lead(db: Any, registry: Any, principal: Any, policy: Any, lead_id: Any,
                       options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Turn a lead into an account (from its company), a contact and a deal (stage prospecting); mark it converted.

    One transaction: if any write is refused, nothing of the conversion stays.
    An account with the lead's company name, or a contact with its e-mail, that
    the caller can read is used instead of creating a duplicate (both are unique).
    Returns {"lead", "account", "contact", "deal"} (account None without a company).
    """
    options = dict(options or {})
    unknown = [key for key in options if key not in CONVERT_OPTIONS]
    if unknown:
        raise ValidationFailed("lead", [Problem(f"/{key}", "is not an option of the conversion (title, amount)") for key in unknown])
    if options.get("title") is not None and not isinstance(options["title"], str):
        raise ValidationFailed("lead", [Problem("/title", "must be text")])
    leads, accounts, contacts, deals = _services(db, registry, principal, policy, "lead", "account", "contact", "deal")
    try:
        key = uuid.UUID(str(lead_id))
    except ValueError:
        raise NotFound(f"No lead record with id {lead_id}") from None
    async with db.transaction():
        lead = await leads.get(key)
        if lead.get("status") == "converted" or lead.get("converted_deal") or lead.get("converted_contact"):
            raise AlreadyConverted(detail=f"The lead {lead.get('name')!r} is already converted; it is not converted twice")
        company = (lead.get("company") or "").strip()
        account = None
        if company:
            account = await _first(accounts, "name", company) or await accounts.create({"name": company})
        contact = await _first(contacts, "email", lead.get("email"))
        if contact is None:
            contact = await contacts.create({
                "full_name": lead.get("name"), "email": lead.get("email"), "phone": lead.get("phone"),
                "account": account["id"] if account else None,
            })
        title = (options.get("title") or "").strip() or f"{company or lead.get('name')}"
        deal_values: dict[str, Any] = {"title": title, "stage": "prospecting", "contact": contact["id"],
                                       "account": account["id"] if account else None}
        if options.get("amount") is not None:
            deal_values["amount"] = options["amount"]
        deal = await deals.create(deal_values)
        lead = await leads.update(key, {
            "status": "converted", "converted_account": account["id"] if account else None,
            "converted_contact": contact["id"], "converted_deal": deal["id"],
            "converted_at": datetime.now(UTC).isoformat(),
        }, expected_version=lead["version"])
    return {"lead": lead, "account": account, "contact": contact, "deal": deal}


async def find_segment(db: Any, principal: Any, segment: str) -> dict[str, Any] | None:
    """The saved view of contacts a campaign's segment names (id or name), among those the caller sees (own or shared)."""
    segment = (segment or "").strip()
    if not segment or "\x00" in segment:
        return None
    try:
        view_id: uuid.UUID | None = uuid.UUID(segment)
    except ValueError:
        view_id = None
    async with db.connection() as connection:
        row = await connection.fetchrow(
            "SELECT id, name, query, shared, owner_id FROM xrm_sys.saved_view "
            "WHERE entity = 'contact' AND (owner_id = $1 OR shared) AND (id = $2 OR name = $3) "
            "ORDER BY (id = $2) DESC NULLS LAST, (owner_id = $1) DESC, created_at LIMIT 1",
            principal.id, view_id, segment)
    return dict(row) if row else None


async def refresh_members(db: Any, registry: Any, principal: Any, policy: Any, campaign_id: Any) -> dict[str, Any]:
    """Add every contact the campaign's segment selects (and the caller may read) that is not yet a member, as invited.

    Idempotent: a contact already a member (any status) is left alone.
    Returns {"segment", "selected", "already_members", "added"}.
    """
    campaigns, contacts, members = _services(db, registry, principal, policy, "campaign", "contact", "campaign_member")
    try:
        key = uuid.UUID(str(campaign_id))
    except ValueError:
        raise NotFound(f"No campaign record with id {campaign_id}") from None
    campaign = await campaigns.get(key)
    segment = campaign.get("segment")
    if not segment:
        raise ValidationFailed("campaign", [Problem("/segment", "the campaign has no segment: name a saved view of contacts")])
    view = await find_segment(db, principal, segment)
    if view is None:
        raise ValidationFailed("campaign", [Problem("/segment", f"no saved view of contacts named {segment!r} that you can see")])
    params = MultiDict(parse_qsl(view["query"], keep_blank_values=False))
    arguments = list_arguments(contacts, params, ignore=VIEW_PARAMETERS)
    arguments.pop("include_deleted", None)
    async with db.transaction():
        selected: list[Any] = []
        after = None
        while True:
            page = await contacts.list(**arguments, limit=PAGE, after=after, fields=["id"])
            selected.extend(r["id"] for r in page.records)
            after = page.next_cursor
            if not after:
                break
        existing: set[str] = set()
        async with db.connection() as connection:
            # All live members, also those the caller may not read: none is added twice.
            rows = await connection.fetch(
                f"SELECT contact FROM {members.entity.table} WHERE campaign = $1 AND deleted_at IS NULL", key)
        existing.update(str(r["contact"]) for r in rows)
        new = [contact for contact in selected if str(contact) not in existing]
        if new:
            await members.create_many([{"campaign": key, "contact": c, "status": "invited"} for c in new])
    return {"segment": {"id": str(view["id"]), "name": view["name"]}, "selected": len(selected),
            "already_members": len(selected) - len(new), "added": len(new)}


NOT_A_RESPONSE = ("unsubscribed",)
"""Response kinds that do not make a member count as responding (an unsubscription is a reaction, not interest)."""


async def campaign_responses(db: Any, registry: Any, principal: Any, policy: Any, campaign_id: Any) -> dict[str, Any]:
    """A campaign's responses as the caller may read them: counts per kind, members, responding members, response rate.

    `response_rate` = contacts with at least one response other than an
    unsubscription / members (None without members). Counted by contact, not
    by member: an imported or typed-in response names the contact (by name or
    e-mail) and may leave the member out. Both counts go through
    RecordService (the read predicate is in the SQL), so they only include
    records the caller may open.
    """
    members, responses = _services(db, registry, principal, policy, "campaign_member", "campaign_response")
    key = uuid.UUID(str(campaign_id))
    by_kind = await responses.aggregate(group_by=["kind"], measures=["count"], where={"campaign": key})
    counts = {row["kind"]: int(row["count"]) for row in by_kind.rows if row["kind"] is not None}
    try:
        member_count: int | None = await members.count(where={"campaign": key})
    except PermissionDenied:  # a role that reads responses but not members: counts without a rate
        member_count = None
    responding = await responses.aggregate(
        measures=["count_distinct:contact"],
        where=[("campaign", "eq", str(key)), ("kind", "in", [k for k in responses.entity.fields["kind"].schema["enum"]
                                                               if k not in NOT_A_RESPONSE])])
    responded = int(responding.rows[0]["count_distinct:contact"] or 0) if responding.rows else 0
    return {"counts": counts, "total": sum(counts.values()), "members": member_count, "responding_contacts": responded,
            "response_rate": (responded / member_count) if member_count else None}
