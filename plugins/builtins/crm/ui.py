"""Web UI of the CRM pack: panels on leads ("Convert") and campaigns ("Refresh members", "Responses") and the routes they post to.

Templates: webui/templates/ui/crm/; German: webui/locale/de/LC_MESSAGES/crm.po.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2
import xrm.webui
from litestar import Request, Response, post
from litestar.exceptions import HTTPException
from litestar.params import FromPath
from litestar.response import Redirect
from markupsafe import Markup
from xrm.errors import NotFound, ValidationFailed
from xrm.plugins import Panel
from xrm.records.service import RecordService
from xrm.webui.context import page_of
from xrm.webui.display import display_name
from xrm.webui.i18n import translator

from .service import AlreadyConverted, campaign_responses, convert_lead, find_segment, refresh_members

__all__ = ["panel", "ui_handlers"]

TEMPLATES = Path(xrm.webui.__file__).resolve().parent / "templates"
_environment = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True)


async def _name(platform: Any, principal: Any, entity: str, record_id: Any) -> str | None:
    if not record_id:
        return None
    try:
        record = await RecordService(platform.db, platform.registry, entity, principal, platform.policy).get(record_id)
    except Exception:  # noqa: BLE001 - a record the user may not read is shown by its id
        return str(record_id)[:8]
    return display_name(platform.registry.get(entity), record)


async def panel(platform: Any, entity: str, record: Mapping[str, Any], principal: Any, language: str, csrf_token: str) -> list[Panel]:
    t = translator(language)
    may_write = not principal.read_only and all(
        platform.policy.scope(principal, name, action) != "none"
        for name, action in ([("lead", "update"), ("account", "create"), ("contact", "create"), ("deal", "create")]
                             if entity == "lead" else [("campaign_member", "create")]))
    if entity == "lead":
        converted = record.get("status") == "converted" or bool(record.get("converted_deal"))
        links = [(target, record.get(f"converted_{target}"), await _name(platform, principal, target, record.get(f"converted_{target}")))
                 for target in ("account", "contact", "deal")]
        html = _environment.get_template("ui/crm/lead_panel.html").render(
            _=t.gettext, record=record, csrf_token=csrf_token, converted=converted, may_convert=may_write and record.get("deleted_at") is None,
            links=[link for link in links if link[1]])
        return [Panel(t.gettext("Conversion"), Markup(html), order=20)]
    view = await find_segment(platform.db, principal, record.get("segment") or "") if record.get("segment") else None
    html = _environment.get_template("ui/crm/campaign_panel.html").render(
        _=t.gettext, record=record, csrf_token=csrf_token, view=view, may_refresh=may_write and record.get("deleted_at") is None)
    panels = [Panel(t.gettext("Members from the segment"), Markup(html), order=20)]
    if "campaign_response" in platform.registry and platform.policy.scope(principal, "campaign_response", "read") != "none":
        summary = await campaign_responses(platform.db, platform.registry, principal, platform.policy, record["id"])
        kind = platform.registry.get("campaign_response").fields["kind"]
        labels = {key: (kind.xrm.get("option_labels", {}).get(key) or {}).get(language) or key for key in kind.schema["enum"]}
        html = _environment.get_template("ui/crm/campaign_responses.html").render(
            _=t.gettext, record=record, summary=summary, labels=labels, rate=_percent(summary["response_rate"], language))
        panels.append(Panel(t.gettext("Responses"), Markup(html), order=21))
    return panels


def _percent(rate: float | None, language: str) -> str | None:
    if rate is None:
        return None
    text = f"{rate * 100:.1f} %" if language == "de" else f"{rate * 100:.1f}%"
    return text.replace(".", ",") if language == "de" else text


def _reasons(error: ValidationFailed) -> str:
    return "; ".join(f"{p.pointer.lstrip('/') or error.entity}: {p.message}" for p in error.problems) or error.message


@post("/e/{entity:str}/{record_id:uuid}/convert", status_code=303)
async def convert(request: Request[Any, Any, Any], entity: FromPath[str], record_id: FromPath[uuid.UUID]) -> Response[Any]:
    page = await page_of(request)  # checks the CSRF token of this POST
    if entity != "lead":
        raise NotFound(page.t.gettext("Only leads are converted."))
    form = await request.form()
    options: dict[str, Any] = {}
    title = str(form.get("title") or "").strip()
    if title:
        options["title"] = title
    try:
        result = await convert_lead(page.platform.db, page.platform.registry, page.principal, page.platform.policy, record_id, options)
    except AlreadyConverted:
        raise HTTPException(status_code=409, detail=page.t.gettext("This lead is already converted.")) from None
    except ValidationFailed as error:
        raise HTTPException(status_code=422, detail=page.t.gettext("The lead was not converted: %(reason)s", reason=_reasons(error))) from None
    return Redirect(f"/e/deal/{result['deal']['id']}", status_code=303)


@post("/e/{entity:str}/{record_id:uuid}/refresh-members", status_code=303)
async def refresh(request: Request[Any, Any, Any], entity: FromPath[str], record_id: FromPath[uuid.UUID]) -> Response[Any]:
    page = await page_of(request)  # checks the CSRF token of this POST
    if entity != "campaign":
        raise NotFound(page.t.gettext("Only campaigns have members."))
    try:
        await refresh_members(page.platform.db, page.platform.registry, page.principal, page.platform.policy, record_id)
    except ValidationFailed as error:
        raise HTTPException(status_code=422, detail=page.t.gettext("No members were added: %(reason)s", reason=_reasons(error))) from None
    return Redirect(f"/e/campaign/{record_id}", status_code=303)


ui_handlers = [convert, refresh]
