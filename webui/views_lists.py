"""More for lists: bulk actions on the selected rows (assign owner, delete) and saved views.

Bulk actions run in one transaction (db.transaction() joins the services'
own): every selected record goes through RecordService.delete or
SecurityService.assign as the user, and the first refusal rolls all of them
back, so either every record changed or none did. A saved view is the list's
query string under a name (xrm_sys.saved_view): personal, or shared with
everyone who may read the entity.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import parse_qsl, urlencode

from litestar import Request, Response, post
from litestar.params import FromPath
from litestar.response import Redirect, Template

from xrm.audit import AuditLog
from xrm.errors import NotFound, PermissionDenied, ValidationFailed, VersionConflict, XrmError

from .context import Page, page_of
from .display import display_name

__all__ = ["list_views", "saved_views"]

BULK_LIMIT = 1000
"""Records per bulk action (the list shows 50 a page; "Load more" adds more)."""
VIEW_NAME_LENGTH = 100
QUERY_LENGTH = 4000
NOT_SAVED = ("after",)
"""Query parameters a view does not keep (a page position is not a view)."""


# -- bulk actions -----------------------------------------------------------------
def _list_url(entity: str, query: str) -> str:
    return f"/e/{entity}" + (f"?{query}" if query else "")


def _clean_query(query: str) -> str:
    """A list query string as a view keeps it: no page position, no empty inputs, no NUL."""
    pairs = parse_qsl(query.lstrip("?")[:QUERY_LENGTH], keep_blank_values=False)
    return urlencode([(k, v) for k, v in pairs if k not in NOT_SAVED and v.strip() and "\x00" not in k + v])[:QUERY_LENGTH]


async def _owner(page: Page, kind: str, name: str) -> tuple[str | None, str | None]:
    """(user, team) for the new owner; _Refused when no user or team has that name."""
    table = "xrm_sys.app_user" if kind == "user" else "xrm_sys.team"
    async with page.platform.db.connection() as connection:
        found = await connection.fetchval(f"SELECT 1 FROM {table} WHERE name = $1", name) if name and "\x00" not in name else None
    if found is None:
        message = (page.t.gettext("There is no user named “%(name)s”.", name=name) if kind == "user"
                   else page.t.gettext("There is no team named “%(name)s”.", name=name))
        raise _Refused(message, 422)
    return (name, None) if kind == "user" else (None, name)


class _Refused(Exception):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def _reason(page: Page, action: str, error: XrmError) -> tuple[str, int]:
    if isinstance(error, PermissionDenied):
        return (page.t.gettext("you may not delete it") if action == "delete" else page.t.gettext("you may not give it another owner")), 403
    if isinstance(error, NotFound):
        return page.t.gettext("it does not exist any more, or you may not see it"), 404
    if isinstance(error, VersionConflict):
        return page.t.gettext("someone else changed it meanwhile"), 409
    if isinstance(error, ValidationFailed):
        return "; ".join(str(p) for p in error.problems) or error.message, 422
    return error.message, 422


@post("/e/{entity:str}/bulk", status_code=200)
async def bulk_action(request: Request[Any, Any, Any], entity: FromPath[str]) -> Template:
    """Delete or assign the selected records: all of them or, when one is refused, none."""
    page = await page_of(request)
    compiled = page.platform.registry.get(entity)
    service = page.records(entity)
    service.policy.authorize(page.principal, entity, "read")
    form = await request.form()
    action = str(form.get("action") or "")
    back = _clean_query(str(form.get("back") or ""))
    status, message, done = 200, "", False
    try:
        if action not in ("delete", "assign"):
            raise _Refused(page.t.gettext("Choose an action."), 422)
        if not page.may(entity, action):
            raise PermissionDenied(page.t.gettext("You may not do that with these records."))
        ids: list[uuid.UUID] = []
        for raw in form.getall("ids", []):
            try:
                key = uuid.UUID(str(raw))
            except ValueError:
                continue
            if key not in ids:
                ids.append(key)
        if not ids:
            raise _Refused(page.t.gettext("Select at least one record first."), 422)
        if len(ids) > BULK_LIMIT:
            raise _Refused(page.t.gettext("Select at most %(limit)s records at a time.", limit=BULK_LIMIT), 422)
        user = team = None
        if action == "assign":
            kind = "team" if form.get("owner_kind") == "team" else "user"
            owner = str(form.get("owner") or "").strip()
            if not owner:
                raise _Refused(page.t.gettext("Name the new owner (a user or a team)."), 422)
            user, team = await _owner(page, kind, owner)
        security = page.platform.security(page.principal)
        current: uuid.UUID | None = None
        try:
            async with page.platform.db.transaction():
                for current in ids:
                    if action == "delete":
                        await service.delete(current)
                    else:
                        await security.assign(entity, current, user=user, team=team)
        except XrmError as error:
            reason, status = _reason(page, action, error)
            name = await _name(page, entity, current)
            raise _Refused(page.t.gettext("Nothing was changed: %(record)s could not be changed (%(reason)s).",
                                          record=name, reason=reason), status) from None
        done = True
        if action == "delete":
            message = page.t.ngettext("%(num)s record deleted.", "%(num)s records deleted.", len(ids))
        else:
            message = page.t.ngettext("%(num)s record now belongs to %(owner)s.", "%(num)s records now belong to %(owner)s.",
                                      len(ids), owner=user or team)
    except _Refused as refused:
        status, message = refused.status, refused.message
    if request.headers.get("hx-request"):
        response = page.render("ui/_bulk_result.html", status_code=status, message=message, done=done)
        if done:
            response.headers["HX-Trigger"] = "xrm-list-changed"  # the list form reloads the results
        return response
    return page.render("ui/bulk_result.html", status_code=status, message=message, done=done, entity=compiled,
                       current_entity=entity, back=_list_url(entity, back))


async def _name(page: Page, entity: str, record_id: uuid.UUID | None) -> str:
    """What names the failed record for this user (its display name if readable, else the start of its id)."""
    if record_id is None:
        return ""
    try:
        record = await page.records(entity).get(record_id, include_deleted=True)
    except XrmError:
        return str(record_id)[:8]
    return f"“{display_name(page.platform.registry.get(entity), record)}”"


# -- saved views --------------------------------------------------------------------
async def saved_views(page: Page, entity: str) -> list[dict[str, Any]]:
    """The user's own views of the entity and the ones others shared, by name."""
    async with page.platform.db.connection() as connection:
        rows = await connection.fetch(
            "SELECT v.id, v.name, v.query, v.shared, v.owner_id, u.name AS owner FROM xrm_sys.saved_view v "
            "JOIN xrm_sys.app_user u ON u.id = v.owner_id WHERE v.entity = $1 AND (v.owner_id = $2 OR v.shared) "
            "ORDER BY lower(v.name), v.created_at", entity, page.principal.id)
    return [{**dict(r), "mine": r["owner_id"] == page.principal.id, "url": _list_url(entity, r["query"]),
             "may_delete": r["owner_id"] == page.principal.id or (r["shared"] and page.is_admin)} for r in rows]


@post("/e/{entity:str}/views", status_code=303)
async def save_view(request: Request[Any, Any, Any], entity: FromPath[str]) -> Response[Any]:
    """Save (or replace, by name) the current list view; then show it."""
    page = await page_of(request)
    page.platform.registry.get(entity)
    page.records(entity).policy.authorize(page.principal, entity, "read")
    form = await request.form()
    name = " ".join(str(form.get("name") or "").split())
    if not name or len(name) > VIEW_NAME_LENGTH or "\x00" in name:
        raise XrmError(page.t.gettext("A view needs a name of at most %(length)s characters.", length=VIEW_NAME_LENGTH))
    query = _clean_query(str(form.get("query") or ""))
    shared = str(form.get("shared") or "") in ("on", "true", "1")
    async with page.platform.db.transaction() as tx:
        # A shared view is also a campaign segment (it decides who a campaign reaches): logged like any change.
        view_id = await tx.connection.fetchval(
            "INSERT INTO xrm_sys.saved_view (entity, name, query, owner_id, shared) VALUES ($1, $2, $3, $4, $5) "
            "ON CONFLICT (owner_id, entity, name) DO UPDATE SET query = EXCLUDED.query, shared = EXCLUDED.shared RETURNING id",
            entity, name, query, page.principal.id, shared)
        await AuditLog.write(tx.connection, page.principal, "view.saved", entity=entity, details={
            "view_id": view_id, "name": name, "query": query, "shared": shared})
    return Redirect(_list_url(entity, query), status_code=303)


@post("/e/{entity:str}/views/{view_id:uuid}/delete", status_code=303)
async def delete_view(request: Request[Any, Any, Any], entity: FromPath[str], view_id: FromPath[uuid.UUID]) -> Response[Any]:
    """Delete a view: one's own, or as an admin a shared one."""
    page = await page_of(request)
    page.records(entity).policy.authorize(page.principal, entity, "read")
    async with page.platform.db.transaction() as tx:
        row = await tx.connection.fetchrow(
            "SELECT owner_id, shared FROM xrm_sys.saved_view WHERE id = $1 AND entity = $2 AND (owner_id = $3 OR shared) FOR UPDATE",
            view_id, entity, page.principal.id)
        if row is None:
            raise NotFound(page.t.gettext("No such view, or you may not see it."))
        if row["owner_id"] != page.principal.id and not page.is_admin:
            raise PermissionDenied(page.t.gettext("Only its owner or an admin may delete a shared view."))
        deleted = await tx.connection.fetchrow("DELETE FROM xrm_sys.saved_view WHERE id = $1 RETURNING name, query, shared", view_id)
        await AuditLog.write(tx.connection, page.principal, "view.deleted", entity=entity, details={"view_id": view_id, **dict(deleted)})
    return Redirect(f"/e/{entity}", status_code=303)


list_views = [bulk_action, save_view, delete_view]
