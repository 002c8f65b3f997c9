"""Admin pages: users, teams, roles with their grants matrix and field grants (admins only; 403 otherwise).

Every change goes through SecurityService (as the logged-in admin: its audit
entries name them) or UserService. UserService takes no actor, so the pages
add an audit entry naming the admin for what it does (user created, login
unlocked); its own entries stay as they are. A POST renders the page again
with a message (or the error, with the input kept), so nothing is passed
through redirects or query strings.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from litestar import Request, get, post
from litestar.datastructures import FormMultiDict
from litestar.response import Template
from xrm.auth import UserService
from xrm.errors import PermissionDenied, ValidationFailed, XrmError
from xrm.security.model import SecurityService
from xrm.security.policy import ACTIONS, FIELD_ACCESS, SCOPES

from .context import Page, page_of

__all__ = ["admin_views", "describe_error"]


async def _admin(request: Request[Any, Any, Any]) -> Page:
    page = await page_of(request)
    if not page.is_admin:
        raise PermissionDenied(page.t.gettext("Only administrators may manage users, teams and roles."))
    return page


def _security(page: Page) -> SecurityService:
    """As the admin: every change is audited under their name."""
    return page.platform.security(page.principal)


def _users(page: Page) -> UserService:
    """UserService acting as the admin: user creation, unlocks and token changes are audited as theirs."""
    return UserService(page.platform.db, page.platform.settings, actor=page.principal)


def describe_error(error: XrmError) -> str:
    """An error for a page: the message, and for validation problems what is wrong where."""
    if isinstance(error, ValidationFailed) and error.problems:
        return "; ".join(f"{p.pointer.lstrip('/') or '…'}: {p.message}" if p.pointer else p.message for p in error.problems)
    return error.message


def _text(form: FormMultiDict, name: str, limit: int = 200) -> str:
    value = form.get(name)
    return value.strip()[:limit].replace("\x00", "") if isinstance(value, str) else ""


def _scope_labels(page: Page) -> dict[str, str]:
    _ = page.t.gettext
    return {"none": _("none"), "own": _("own"), "team": _("team"), "team_tree": _("team and sub-teams"), "all": _("all")}


def _action_labels(page: Page) -> dict[str, str]:
    _ = page.t.gettext
    return {"create": _("create"), "read": _("read"), "update": _("update"), "delete": _("delete"), "export": _("export"),
            "assign": _("assign"), "share": _("share")}


# -- users ------------------------------------------------------------------------
async def _user_rows(page: Page) -> list[dict[str, Any]]:
    return await _users(page).list_users()  # type: ignore[no-any-return]


async def _users_page(page: Page, *, status: int = 200, message: str = "", error: str = "",
                      form: dict[str, Any] | None = None) -> Template:
    roles = await _security(page).list_roles()
    return page.render("ui/admin/users.html", status_code=status, section="users", users=await _user_rows(page),
                       roles=[r["name"] for r in roles], flash=[message] if message else [], error=error,
                       form=form or {})


async def _attempt(change: Awaitable[Any], render: Callable[..., Awaitable[Template]], success: str, *, status: int = 422) -> Template:
    """Run one admin change; answer with the page again: its success message, or the problem."""
    try:
        await change
    except XrmError as error:
        return await render(status=status, error=describe_error(error))
    return await render(message=success)


@get("/admin/users")
async def users_page(request: Request[Any, Any, Any]) -> Template:
    return await _users_page(await _admin(request))


@post("/admin/users/create", status_code=200)
async def create_user(request: Request[Any, Any, Any]) -> Template:
    page = await _admin(request)
    form = await request.form()
    name, password = _text(form, "name", 100), form.get("password")
    roles = [r for r in form.getall("roles", []) if isinstance(r, str)]
    kept = {"name": name, "roles": roles}
    if not isinstance(password, str) or "\x00" in password:
        password = ""
    try:
        await _users(page).create_user(name, password, roles)
    except XrmError as error:
        return await _users_page(page, status=422, error=describe_error(error), form=kept)
    return await _users_page(page, message=page.t.gettext("User %(user)s created.", user=name))


@post("/admin/users/grant-role", status_code=200)
async def grant_role(request: Request[Any, Any, Any]) -> Template:
    page = await _admin(request)
    form = await request.form()
    user, role = _text(form, "user", 100), _text(form, "role", 100)
    return await _attempt(_security(page).grant_role(user, role), partial(_users_page, page),
                          page.t.gettext("%(user)s now holds the role %(role)s.", user=user, role=role))


@post("/admin/users/revoke-role", status_code=200)
async def revoke_role(request: Request[Any, Any, Any]) -> Template:
    page = await _admin(request)
    form = await request.form()
    user, role = _text(form, "user", 100), _text(form, "role", 100)
    return await _attempt(_security(page).revoke_role(user, role), partial(_users_page, page),
                          page.t.gettext("%(user)s no longer holds the role %(role)s.", user=user, role=role))


@post("/admin/users/unlock", status_code=200)
async def unlock_user(request: Request[Any, Any, Any]) -> Template:
    page = await _admin(request)
    user = _text(await request.form(), "user", 200)
    try:
        was_locked = await _users(page).unlock(user)
    except XrmError as error:
        return await _users_page(page, status=404, error=describe_error(error))
    message = (page.t.gettext("The login of %(user)s is unlocked.", user=user) if was_locked
               else page.t.gettext("The login of %(user)s was not locked; its failure count is reset.", user=user))
    return await _users_page(page, message=message)


# -- teams ------------------------------------------------------------------------
async def _teams_page(page: Page, *, status: int = 200, message: str = "", error: str = "",
                      form: dict[str, Any] | None = None) -> Template:
    teams = await _security(page).list_teams()
    users = [u["name"] for u in await _user_rows(page) if not u["disabled"]]
    return page.render("ui/admin/teams.html", status_code=status, section="teams", teams=teams, users=users,
                       flash=[message] if message else [], error=error, form=form or {})


@get("/admin/teams")
async def teams_page(request: Request[Any, Any, Any]) -> Template:
    return await _teams_page(await _admin(request))


@post("/admin/teams/create", status_code=200)
async def create_team(request: Request[Any, Any, Any]) -> Template:
    page = await _admin(request)
    form = await request.form()
    name, parent = _text(form, "name", 100), _text(form, "parent", 100) or None
    try:
        await _security(page).create_team(name, parent)
    except XrmError as error:
        return await _teams_page(page, status=422, error=describe_error(error), form={"name": name, "parent": parent})
    return await _teams_page(page, message=page.t.gettext("Team %(team)s created.", team=name))


@post("/admin/teams/move", status_code=200)
async def move_team(request: Request[Any, Any, Any]) -> Template:
    page = await _admin(request)
    form = await request.form()
    team, parent = _text(form, "team", 100), _text(form, "parent", 100) or None
    try:
        await _security(page).set_parent(team, parent)
    except XrmError as error:
        return await _teams_page(page, status=422, error=describe_error(error))
    message = (page.t.gettext("Team %(team)s is now below %(parent)s.", team=team, parent=parent) if parent
               else page.t.gettext("Team %(team)s is now a top-level team.", team=team))
    return await _teams_page(page, message=message)


@post("/admin/teams/delete", status_code=200)
async def delete_team(request: Request[Any, Any, Any]) -> Template:
    page = await _admin(request)
    team = _text(await request.form(), "team", 100)
    # Refused e.g. while it still owns records: the service says how many of which entity.
    return await _attempt(_security(page).delete_team(team), partial(_teams_page, page),
                          page.t.gettext("Team %(team)s deleted.", team=team), status=409)


@post("/admin/teams/add-member", status_code=200)
async def add_member(request: Request[Any, Any, Any]) -> Template:
    page = await _admin(request)
    form = await request.form()
    team, user = _text(form, "team", 100), _text(form, "user", 100)
    return await _attempt(_security(page).add_member(team, user), partial(_teams_page, page),
                          page.t.gettext("%(user)s is now a member of %(team)s.", user=user, team=team))


@post("/admin/teams/remove-member", status_code=200)
async def remove_member(request: Request[Any, Any, Any]) -> Template:
    page = await _admin(request)
    form = await request.form()
    team, user = _text(form, "team", 100), _text(form, "user", 100)
    return await _attempt(_security(page).remove_member(team, user), partial(_teams_page, page),
                          page.t.gettext("%(user)s is no longer a member of %(team)s.", user=user, team=team))


# -- roles, grants, field grants ---------------------------------------------------------
def _matrix_entities(page: Page) -> list[tuple[str, str]]:
    entities = sorted(page.platform.registry, key=lambda e: e.definition.label(page.language, plural=True).casefold())
    return [("*", page.t.gettext("Every entity (*)"))] + [(e.name, e.definition.label(page.language, plural=True)) for e in entities]


def _sensitive_fields(page: Page) -> list[dict[str, str]]:
    fields = []
    for entity in sorted(page.platform.registry, key=lambda e: e.name):
        for f in entity.fields.values():
            if f.xrm.get("sensitive"):
                fields.append({"entity": entity.name, "field": f.name,
                               "label": f"{entity.definition.label(page.language)}: {f.label(page.language)}"})
    return fields


async def _roles_page(page: Page, selected: str | None, *, status: int = 200, message: str = "", error: str = "",
                      form: dict[str, Any] | None = None) -> Template:
    roles = await _security(page).list_roles()
    names = [r["name"] for r in roles]
    if selected not in names:
        selected = next((n for n in names if n != "admin"), names[0] if names else None)
    role = next((r for r in roles if r["name"] == selected), None)
    grants = {(g["entity"], g["action"]): g["scope"] for g in role["grants"]} if role else {}
    field_grants = {(g["entity"], g["field"]): g["access"] for g in role["field_grants"]} if role else {}
    return page.render(
        "ui/admin/roles.html", status_code=status, section="roles", roles=roles, role=role,
        entities=_matrix_entities(page), actions=ACTIONS, scopes=SCOPES, field_access=FIELD_ACCESS,
        grants=grants, field_grants=field_grants, sensitive=_sensitive_fields(page),
        scope_labels=_scope_labels(page), action_labels=_action_labels(page),
        editable=role is not None and not (role["built_in"] and role["name"] == "admin"),
        flash=[message] if message else [], error=error, form=form or {},
    )


@get("/admin/roles")
async def roles_page(request: Request[Any, Any, Any]) -> Template:
    page = await _admin(request)
    return await _roles_page(page, request.query_params.get("role"))


@post("/admin/roles/create", status_code=200)
async def create_role(request: Request[Any, Any, Any]) -> Template:
    page = await _admin(request)
    form = await request.form()
    name, description = _text(form, "name", 100), _text(form, "description", 1000)
    try:
        await _security(page).create_role(name, description)
    except XrmError as error:
        return await _roles_page(page, None, status=422, error=describe_error(error), form={"name": name, "description": description})
    return await _roles_page(page, name, message=page.t.gettext("Role %(role)s created.", role=name))


@post("/admin/roles/delete", status_code=200)
async def delete_role(request: Request[Any, Any, Any]) -> Template:
    page = await _admin(request)
    role = _text(await request.form(), "role", 100)
    try:
        await _security(page).delete_role(role)
    except XrmError as error:
        return await _roles_page(page, role, status=409, error=describe_error(error))
    return await _roles_page(page, None, message=page.t.gettext("Role %(role)s deleted.", role=role))


@post("/admin/roles/grants", status_code=200)
async def save_grants(request: Request[Any, Any, Any]) -> Template:
    """The matrix: each cell whose scope changed is one grant (or revoke, for "not set"); each is audited."""
    page = await _admin(request)
    form = await request.form()
    role_name = _text(form, "role", 100)
    security = _security(page)
    try:
        role = await security.get_role(role_name)
        current = {(g["entity"], g["action"]): g["scope"] for g in role["grants"]}
        changed = 0
        for entity, _label in _matrix_entities(page):
            for action in ACTIONS:
                wanted = form.get(f"grant.{entity}.{action}")
                if not isinstance(wanted, str) or (wanted and wanted not in SCOPES):
                    continue  # not in the form (or not a scope): unchanged
                have = current.get((entity, action), "")
                if wanted == have:
                    continue
                if wanted:
                    await security.grant(role_name, entity, action, wanted)
                else:
                    await security.revoke(role_name, entity, action)
                changed += 1
    except XrmError as error:
        return await _roles_page(page, role_name, status=422, error=describe_error(error))
    message = (page.t.ngettext("%(num)d grant changed.", "%(num)d grants changed.", changed) if changed
               else page.t.gettext("Nothing changed."))
    return await _roles_page(page, role_name, message=message)


@post("/admin/roles/field-grants", status_code=200)
async def save_field_grants(request: Request[Any, Any, Any]) -> Template:
    page = await _admin(request)
    form = await request.form()
    role_name = _text(form, "role", 100)
    security = _security(page)
    try:
        role = await security.get_role(role_name)
        current = {(g["entity"], g["field"]): g["access"] for g in role["field_grants"]}
        changed = 0
        for item in _sensitive_fields(page):
            key = (item["entity"], item["field"])
            wanted = form.get(f"field.{item['entity']}.{item['field']}")
            if not isinstance(wanted, str) or (wanted and wanted not in FIELD_ACCESS):
                continue
            if wanted == current.get(key, ""):
                continue
            if wanted:
                await security.grant_field(role_name, item["entity"], item["field"], wanted)
            else:
                await security.revoke_field(role_name, item["entity"], item["field"])
            changed += 1
    except XrmError as error:
        return await _roles_page(page, role_name, status=422, error=describe_error(error))
    message = (page.t.ngettext("%(num)d field grant changed.", "%(num)d field grants changed.", changed) if changed
               else page.t.gettext("Nothing changed."))
    return await _roles_page(page, role_name, message=message)


admin_views = [
    users_page, create_user, grant_role, revoke_role, unlock_user,
    teams_page, create_team, move_team, delete_team, add_member, remove_member,
    roles_page, create_role, delete_role, save_grants, save_field_grants,
]
