"""Web UI: /admin/automations (create, enable, disable, delete) and /admin/jobs (the job log, retry). Admins only.

Every POST carries the session's CSRF token (checked by page_of through
principal_of) and renders the page again with a message or the error.
"""

from __future__ import annotations

import json
from typing import Any

from litestar import Request, get, post
from litestar.response import Template

from xrm.audit import AuditLog
from xrm.errors import PermissionDenied, Problem, ValidationFailed, XrmError
from xrm.webui.context import Page, page_of
from xrm.webui.views_admin import describe_error

from .actions import action_names
from .spec import BUILTIN_ACTIONS, workflow_triggers
from .store import JOB_STATES, AutomationStore

__all__ = ["ui_handlers"]


async def _admin(request: Request[Any, Any, Any]) -> tuple[Page, AutomationStore]:
    page = await page_of(request)
    if not page.is_admin:
        raise PermissionDenied(page.t.gettext("Only administrators may manage automations."))
    return page, AutomationStore(page.platform, page.principal)


def _text(form: Any, name: str, limit: int = 20000) -> str:
    value = form.get(name)
    return value.strip()[:limit].replace("\x00", "") if isinstance(value, str) else ""


def _json_field(form: Any, name: str, default: Any, problems: list[Problem]) -> Any:
    raw = _text(form, name)
    if not raw:
        return default
    try:
        return json.loads(raw)
    except json.JSONDecodeError as error:
        problems.append(Problem(f"/{name}", f"is not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})"))
        return default


async def _automations_page(page: Page, store: AutomationStore, *, status: int = 200, message: str = "", error: str = "",
                            form: dict[str, Any] | None = None) -> Template:
    return page.render(
        "ui/automations/automations.html", status_code=status, automations=await store.list(), defined=store.from_definitions(),
        entities=sorted(page.platform.registry.names()), triggers=sorted(workflow_triggers()),
        actions=sorted(set(BUILTIN_ACTIONS) | action_names()), flash=[message] if message else [], error=error,
        form=form or {"run_as": page.principal.name, "trigger": '{"on": "created"}', "condition": "[]",
                      "actions": '[{"type": "set_fields", "values": {}}]'},
    )


@get("/admin/automations")
async def automations_page(request: Request[Any, Any, Any]) -> Template:
    page, store = await _admin(request)
    return await _automations_page(page, store)


@post("/admin/automations/create", status_code=200)
async def create_automation(request: Request[Any, Any, Any]) -> Template:
    page, store = await _admin(request)
    form = await request.form()
    kept = {k: _text(form, k) for k in ("name", "entity", "trigger", "condition", "actions", "run_as")}
    problems: list[Problem] = []
    body = {"name": kept["name"], "entity": kept["entity"], "run_as": kept["run_as"],
            "trigger": _json_field(form, "trigger", None, problems), "condition": _json_field(form, "condition", [], problems),
            "actions": _json_field(form, "actions", None, problems), "enabled": form.get("enabled") is not None}
    try:
        if problems:
            raise ValidationFailed("automation", problems)
        await store.create(body)
    except XrmError as error:
        return await _automations_page(page, store, status=422, error=describe_error(error), form=kept)
    return await _automations_page(page, store, message=page.t.gettext("Automation %(name)s created.", name=kept["name"]))


@post("/admin/automations/toggle", status_code=200)
async def toggle_automation(request: Request[Any, Any, Any]) -> Template:
    page, store = await _admin(request)
    form = await request.form()
    name, enable = _text(form, "name", 100), _text(form, "enabled", 10) == "true"
    try:
        await store.set_enabled(name, enable)
    except XrmError as error:
        return await _automations_page(page, store, status=404, error=describe_error(error))
    message = page.t.gettext("Automation %(name)s enabled.", name=name) if enable else page.t.gettext("Automation %(name)s disabled.", name=name)
    return await _automations_page(page, store, message=message)


@post("/admin/automations/delete", status_code=200)
async def delete_automation(request: Request[Any, Any, Any]) -> Template:
    page, store = await _admin(request)
    name = _text(await request.form(), "name", 100)
    try:
        await store.delete(name)
    except XrmError as error:
        return await _automations_page(page, store, status=404, error=describe_error(error))
    return await _automations_page(page, store, message=page.t.gettext("Automation %(name)s deleted.", name=name))


async def _jobs_page(page: Page, store: AutomationStore, request: Request[Any, Any, Any], *, status: int = 200,
                     message: str = "", error: str = "") -> Template:
    state = request.query_params.get("state") or ""
    automation = (request.query_params.get("automation") or "").replace("\x00", "")[:200]
    jobs = await store.jobs(state=state if state in JOB_STATES else None, automation=automation or None, limit=200)
    return page.render("ui/automations/jobs.html", status_code=status, jobs=jobs, states=JOB_STATES, state=state,
                       automation=automation, flash=[message] if message else [], error=error)


@get("/admin/jobs")
async def jobs_page(request: Request[Any, Any, Any]) -> Template:
    page, store = await _admin(request)
    return await _jobs_page(page, store, request)


@post("/admin/jobs/retry", status_code=200)
async def retry_job(request: Request[Any, Any, Any]) -> Template:
    page, store = await _admin(request)
    raw = _text(await request.form(), "job", 20)
    try:
        job_id = int(raw) if raw.isdigit() and len(raw) < 19 else 0
        await store.retry(job_id)
    except XrmError as error:
        return await _jobs_page(page, store, request, status=422, error=describe_error(error))
    return await _jobs_page(page, store, request, message=page.t.gettext("Job %(job)s queued again.", job=raw))


# -- in-app notifications (the notify action): every user sees and dismisses their own ---------------
async def _notifications_page(page: Page, *, status: int = 200, message: str = "") -> Template:
    async with page.platform.db.connection() as connection:
        rows = await connection.fetch(
            "SELECT id, entity, record_id, title, body, created_at FROM xrm_sys.notification "
            "WHERE user_id = $1 AND dismissed_at IS NULL ORDER BY id DESC LIMIT 200", page.principal.id,
        )
    notifications = [{**dict(r), "readable": r["entity"] in page.platform.registry} for r in rows]
    return page.render("ui/automations/notifications.html", status_code=status, notifications=notifications,
                       flash=[message] if message else [])


@get("/notifications")
async def notifications_page(request: Request[Any, Any, Any]) -> Template:
    return await _notifications_page(await page_of(request))


@post("/notifications/dismiss", status_code=200)
async def dismiss_notification(request: Request[Any, Any, Any]) -> Template:
    """Dismiss one of the user's notifications (`id`) or all of them (`all`); another user's id changes nothing."""
    page = await page_of(request)
    form = await request.form()
    raw = _text(form, "id", 20)
    one = int(raw) if raw.isdigit() and len(raw) < 19 else None
    dismissed: list[int] = []
    if form.get("all") is not None or one is not None:
        async with page.platform.db.transaction() as tx:
            rows = await tx.connection.fetch(
                "UPDATE xrm_sys.notification SET dismissed_at = now() WHERE user_id = $1 AND dismissed_at IS NULL "
                "AND ($2::bigint IS NULL OR id = $2) RETURNING id", page.principal.id, None if form.get("all") is not None else one)
            dismissed = sorted(r["id"] for r in rows)
            if dismissed:  # like every write: audited, so "who cleared that reminder" has an answer
                await AuditLog.write(tx.connection, page.principal, "notification.dismissed", details={"notifications": dismissed})
    if not dismissed:
        return await _notifications_page(page, status=404, message=page.t.gettext("No such notification (dismissed already?)."))
    return await _notifications_page(page, message=page.t.ngettext("%(num)s notification dismissed.", "%(num)s notifications dismissed.",
                                                                    len(dismissed)))


ui_handlers = [automations_page, create_automation, toggle_automation, delete_automation, jobs_page, retry_job,
               notifications_page, dismiss_notification]
