"""Built-in plugin "crm": the CRM starter pack (docs/crm-pack.md).

Entities shipped through `xrm_entity_definitions` (JSON files in definitions/):
lead, activity, ticket (with a state machine and service-level due times),
campaign, campaign_member, campaign_response, product, price_list, price_list_item. They build on
the account, contact and deal of entity_schemas/.

- Lead conversion: `POST /api/v1/lead/{id}/convert` and a "Convert" button on
  the lead's detail page create account, contact and deal and mark the lead
  converted, in one transaction through RecordService as the caller.
- Tickets: `xrm_after_write` sets the SLA due times from the priority on
  create, `first_response_at` when the ticket first leaves "new" and
  `resolved_at` when it is resolved — an update of the same record through
  RecordService, in the write's transaction, only for fields still empty.
- Campaigns: `POST /api/v1/campaign/{id}/refresh-members` adds the contacts the
  campaign's segment (a saved view of contacts) selects as members; the
  campaign's panel counts its responses (campaign_response) per kind and the
  response rate.
"""

from __future__ import annotations

import contextvars
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

from xrm.plugins import hookimpl

__all__ = ["DEFINITIONS", "ENTITIES", "SLA_HOURS", "ticket_follow_up"]

ENTITIES = ("lead", "activity", "ticket", "campaign", "campaign_member", "campaign_response", "product", "price_list", "price_list_item")
"""The pack's entities, in the order their references need."""

SLA_HOURS: dict[str, tuple[int, int]] = {"urgent": (1, 8), "high": (4, 24), "normal": (8, 72), "low": (24, 120)}
"""Priority -> (hours to the first response, hours to the resolution)."""

RESOLVED_STATES = ("resolved", "closed")


def _load_definitions() -> list[dict[str, Any]]:
    folder = resources.files(__name__).joinpath("definitions")
    return [json.loads(folder.joinpath(f"{name}.json").read_text(encoding="utf-8")) for name in ENTITIES]


DEFINITIONS = _load_definitions()

_following_up: contextvars.ContextVar[bool] = contextvars.ContextVar("xrm_crm_following_up", default=False)


@hookimpl
def xrm_capabilities() -> dict[str, Any]:
    return {"reads": ["account", "contact", "deal", *ENTITIES], "writes": ["account", "contact", "deal", *ENTITIES], "network": False,
            "description": "CRM starter pack: leads (with conversion), activities, tickets with SLA, campaigns, products and price lists"}


@hookimpl
def xrm_entity_definitions() -> list[dict[str, Any]]:
    return [json.loads(json.dumps(d)) for d in DEFINITIONS]


def _parse(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def ticket_follow_up(action: str, record: Mapping[str, Any], previous: Mapping[str, Any] | None,
                     now: datetime | None = None) -> dict[str, Any]:
    """The fields of a ticket the pack fills after this write (empty: nothing to do).

    On create: the SLA due times from the priority (counted from created_at).
    When the status first leaves "new": first_response_at. When it becomes
    resolved or closed: resolved_at; reopened: resolved_at is emptied.
    Only fields still empty are filled, so the follow-up update itself
    changes nothing more (no recursion).
    """
    now = now or datetime.now(UTC)
    changes: dict[str, Any] = {}
    if action not in ("create", "update"):
        return changes
    hours = SLA_HOURS.get(str(record.get("priority")))
    if action == "create" and hours:
        start = _parse(record.get("created_at")) or now
        if record.get("sla_response_due") is None:
            changes["sla_response_due"] = (start + timedelta(hours=hours[0])).isoformat()
        if record.get("sla_resolution_due") is None:
            changes["sla_resolution_due"] = (start + timedelta(hours=hours[1])).isoformat()
    status = record.get("status")
    before = previous.get("status") if previous else None
    if status not in (None, "new") and status != before and record.get("first_response_at") is None:
        changes["first_response_at"] = now.isoformat()
    if status in RESOLVED_STATES and before not in RESOLVED_STATES and record.get("resolved_at") is None:
        changes["resolved_at"] = now.isoformat()
    if previous is not None and status not in RESOLVED_STATES and before in RESOLVED_STATES and record.get("resolved_at") is not None:
        changes["resolved_at"] = None
    return changes


FOLLOW_UP_FIELDS = ("sla_response_due", "sla_resolution_due", "first_response_at", "resolved_at")


@hookimpl
def xrm_after_write(entity: str, action: str, record: Mapping[str, Any], previous: Mapping[str, Any] | None, principal: Any,
                    definition: Any, db: Any, registry: Any) -> Any:
    """Ticket follow-up (SLA due times, response and resolution stamps): a coroutine only when there is something to set.

    Only for a ticket entity with the pack's fields (another definition named ticket is left alone).
    """
    if entity != "ticket" or _following_up.get() or not all(name in definition.fields for name in FOLLOW_UP_FIELDS):
        return None
    changes = ticket_follow_up(action, record, previous)
    if not changes:
        return None
    return _follow_up(db, registry, principal, record["id"], changes)


async def _follow_up(db: Any, registry: Any, principal: Any, record_id: Any, changes: dict[str, Any]) -> None:
    from xrm.records.service import RecordService

    token = _following_up.set(True)
    try:
        # Same task, so this joins the write's transaction: both commit or neither. It leaves the status as it
        # is, so a transition taken by name (statemachine.taking) does not apply to it.
        await RecordService(db, registry, "ticket", principal).update(record_id, changes)
    finally:
        _following_up.reset(token)


@hookimpl
def xrm_api_routes() -> list[Any]:
    from .api import api_handlers

    return api_handlers


@hookimpl
def xrm_openapi(registry: Any) -> dict[str, Any]:
    from .api import openapi

    return openapi(registry)


@hookimpl
def xrm_ui_routes() -> list[Any]:
    from .ui import ui_handlers

    return ui_handlers


@hookimpl
def xrm_detail_panels(entity: str, record: Mapping[str, Any], principal: Any, language: str, platform: Any, csrf_token: str) -> Any:
    if entity not in ("lead", "campaign") or entity not in platform.registry:
        return []
    from .ui import panel

    return panel(platform, entity, record, principal, language, csrf_token)
