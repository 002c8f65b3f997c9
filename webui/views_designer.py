"""The no-code entity designer (admins only): entities, a draft editor, form preview, migration plan, apply, history.

The designer writes the same definitions as files and the API: the draft is an
entity definition document, checked with `parse_definition` and planned and
applied with `SchemaService` (what `xrm schema plan/apply` and
/api/v1/meta/plan|apply call). Apply reloads the registry, so a new entity
is in the navigation, lists and REST API at once.

The draft lives in the page (a hidden input every post sends back; see
webui/designer_draft.py): no table to clean up, every browser tab its own
draft, and nothing is stored until Apply. It is checked again on each post,
so a tampered draft can do no more than an admin may do through the API.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from litestar import Request, Response, get, post
from litestar.params import FromPath
from litestar.response import Redirect, Template
from xrm.records.principal import SYSTEM_PRINCIPAL
from xrm.errors import (
    DefinitionInvalid,
    NotFound,
    PermissionDenied,
    Problem,
    SchemaChangeRefused,
    XrmError,
)
from xrm.schema.definition import parse_definition
from xrm.schema.service import Plan

from .context import Page, page_of
from .designer_draft import (
    TYPES,
    DraftUnreadable,
    Located,
    add_field,
    changes_between,
    draft_from_text,
    draft_text,
    field_rows,
    fingerprint,
    locate,
    merge_form,
    move_field,
    new_draft,
    remove_field,
)
from .forms import widgets

__all__ = ["designer_views"]

CHECKING_ACTIONS = ("check", "preview", "plan", "apply")


async def _admin_page(request: Request[Any, Any, Any]) -> Page:
    page = await page_of(request)
    if not page.is_admin:
        raise PermissionDenied(page.t.gettext("Only administrators may use the entity designer."))
    return page


def type_labels(page: Page) -> dict[str, str]:
    _ = page.t.gettext
    labels = {
        "text": _("Text"), "long_text": _("Long text"), "integer": _("Whole number"), "decimal": _("Decimal number"),
        "currency": _("Amount with currency"), "boolean": _("Yes/no"), "date": _("Date"), "datetime": _("Date and time"),
        "select": _("Select (one option)"), "multiselect": _("Multi-select (several options)"), "email": _("E-mail"),
        "phone": _("Phone"), "url": _("Web address (URL)"), "reference": _("Reference to another entity"), "json": _("JSON"),
    }
    return {t: labels.get(t, t) for t in TYPES}


def kind_labels(page: Page) -> dict[str, str]:
    _ = page.t.gettext
    return {"safe": _("safe"), "backfill": _("backfill"), "destructive": _("destructive")}


# -- entity list --------------------------------------------------------------
@get("/admin/designer")
async def designer_home(request: Request[Any, Any, Any]) -> Template:
    page = await _admin_page(request)
    entities = sorted(page.platform.registry, key=lambda e: page.label(e, plural=True).casefold())
    return page.render("ui/designer/index.html", entities=entities)


# -- editor -------------------------------------------------------------------
@get("/admin/designer/new")
async def new_entity(request: Request[Any, Any, Any]) -> Template:
    page = await _admin_page(request)
    return _editor(page, new_draft(), existing="")


@get("/admin/designer/{entity:str}/edit")
async def edit_entity(request: Request[Any, Any, Any], entity: FromPath[str]) -> Template:
    page = await _admin_page(request)
    compiled = page.platform.registry.get(entity)
    flash = []
    applied = request.query_params.get("applied")
    if applied:
        flash.append(page.t.gettext("Applied. %(entity)s is now at version %(version)s.", entity=page.label(compiled), version=compiled.version))
    return _editor(page, dict(compiled.definition.document), existing=compiled.name, flash=flash)


def _known_entities(page: Page) -> list[str]:
    return [e.name for e in page.platform.registry]


def _problems(page: Page, draft: Mapping[str, Any], existing: str) -> list[Problem]:
    """The same checks as a file or the API gets (parse_definition), plus: a new entity needs a new name."""
    try:
        parse_definition(draft, known_entities=_known_entities(page))
    except DefinitionInvalid as error:
        return list(error.problems)
    name = draft["x-xrm"]["name"]
    if not existing and name in page.platform.registry:
        return [Problem("/x-xrm/name", page.t.gettext("An entity named %(name)s exists already; edit it from the entity list.", name=name))]
    return []


@post("/admin/designer/draft", status_code=200)
async def draft_action(request: Request[Any, Any, Any]) -> Response[Any] | Template:
    """Every button of the editor: lay the inputs over the draft, then do the button's action."""
    page = await _admin_page(request)
    _ = page.t.gettext
    form = await request.form()
    existing = str(form.get("existing") or "")
    applied = page.platform.registry.get(existing) if existing else None
    try:
        draft = draft_from_text(str(form.get("draft") or ""))
    except DraftUnreadable:
        raise XrmError(_("The draft on this page could not be read. Open the designer again.")) from None
    draft, merge_problems = merge_form(draft, form, applied_fields=frozenset(applied.fields) if applied else frozenset(),
                                       new_entity=applied is None)
    if applied is not None:
        draft.setdefault("x-xrm", {})["name"] = applied.name  # the designer does not rename entities
    action = str(form.get("action") or "check")
    focus, opened, new_field_error = "", set(), ""
    command, _sep, argument = action.partition(":")
    index = int(argument) if argument.isdigit() else -1
    if command == "add":
        added, why = add_field(draft, str(form.get("new_field_name") or "").strip(), str(form.get("new_field_type") or "text"))
        if added is None:
            new_field_error = why
        else:
            opened.add(added)
            focus = f"f{added}-name"
    elif command in ("up", "down"):
        moved = move_field(draft, index, -1 if command == "up" else 1)
        focus = f"f{moved}-{command}"
    elif command == "remove":
        remove_field(draft, index)
        focus = "new-field-name"

    problems = _problems(page, draft, existing)
    located = locate(problems, draft)
    for problem in merge_problems:
        located.fields.setdefault(problem.index, {}).setdefault(problem.input, problem.message)
    checking = command in CHECKING_ACTIONS
    status = 422 if located and checking else 200
    context: dict[str, Any] = {}
    if checking and not located:
        if command == "check":
            context["message_ok"] = _("No problems found. Preview the form or show the migration plan.")
        elif command == "preview":
            context["preview"] = _preview(page, draft)
        else:
            try:
                plan = await page.platform.schema.plan([draft])
            except DefinitionInvalid as error:
                located = locate(list(error.problems), draft)
                return _editor(page, draft, existing=existing, located=located, status=422, opened=opened)
            context.update(plan=_plan_view(page, plan), planned=fingerprint(draft))
            if command == "apply":
                return await _apply(page, form, draft, plan, existing=existing, context=context)
    elif checking:
        context["message"] = _("The draft has problems; they are marked below. Nothing was changed.")
    return _editor(page, draft, existing=existing, located=located, status=status, opened=opened, focus=focus,
                   new_field_error=new_field_error, new_field_name="" if command == "add" and not new_field_error
                   else str(form.get("new_field_name") or ""), **context)


async def _apply(page: Page, form: Any, draft: dict[str, Any], plan: Plan, *, existing: str, context: dict[str, Any]) -> Response[Any] | Template:
    _ = page.t.gettext
    confirmed = form.get("confirm_destructive") == "true"
    if form.get("planned") != context["planned"]:
        context["message"] = _("The draft changed after the migration plan was made. Check the new plan below, then apply.")
        return _editor(page, draft, existing=existing, status=409, **context)
    if plan.refusals:
        context["message"] = _("The database refuses this change; see the plan below. Nothing was changed.")
        return _editor(page, draft, existing=existing, status=422, **context)
    if not plan.steps:
        context["message"] = _("No changes: the database already matches this draft.")
        return _editor(page, draft, existing=existing, status=200, **context)
    if plan.destructive and not confirmed:
        context["message"] = _("This change removes data (destructive steps). Tick the confirmation to apply it.")
        context["confirm_error"] = _("Confirm that the destructive steps may run.")
        return _editor(page, draft, existing=existing, status=422, **context)
    try:
        await page.platform.schema.apply([draft], principal=page.principal, allow_destructive=confirmed)
    except DefinitionInvalid as error:
        context.pop("plan", None)
        return _editor(page, draft, existing=existing, status=422, located=locate(list(error.problems), draft),
                       message=_("The draft has problems; they are marked below. Nothing was changed."))
    except SchemaChangeRefused as error:
        context["message"] = _("The database refused the change; nothing was changed.") + " " + error.message
        return _editor(page, draft, existing=existing, status=422, **context)
    name = draft["x-xrm"]["name"]
    return Redirect(f"/admin/designer/{name}/edit?applied=1", status_code=303)


def _preview(page: Page, draft: Mapping[str, Any]) -> list[Any]:
    definition = parse_definition(draft, known_entities=_known_entities(page))
    shown = widgets(definition.fields, page.language, values={k: f.default for k, f in definition.fields.items() if f.has_default})
    for widget in shown:
        widget.disabled = True
    return shown


def _plan_view(page: Page, plan: Plan) -> dict[str, Any]:
    kinds = kind_labels(page)
    return {
        "steps": [{"kind": s.kind, "kind_label": kinds.get(s.kind, s.kind), "summary": s.summary, "impact": s.impact or ""} for s in plan.steps],
        "refusals": [
            {"where": f"{r.entity}.{r.field}" if r.field else r.entity, "reason": r.reason,
             "records": [str(i) for i in r.record_ids], "total": r.total}
            for r in plan.refusals
        ],
        "destructive": bool(plan.destructive),
    }


def _editor(page: Page, draft: Mapping[str, Any], *, existing: str, located: Located | None = None, status: int = 200,
            opened: set[int] | None = None, focus: str = "", new_field_error: str = "", new_field_name: str = "",
            flash: list[str] | None = None, **context: Any) -> Template:
    located = located or Located()
    rows = field_rows(draft)
    for row in rows:
        row.errors = located.fields.get(row.index, {})
    xrm = draft.get("x-xrm") if isinstance(draft.get("x-xrm"), Mapping) else {}
    labels = {key: xrm.get(key) if isinstance(xrm.get(key), Mapping) else {} for key in ("label", "plural")}
    name = str(xrm.get("name") or "")
    targets = [(e.name, f"{page.label(e)} ({e.name})") for e in sorted(page.platform.registry, key=lambda e: page.label(e).casefold())]
    if name and name not in page.platform.registry:
        targets.append((name, page.t.gettext("%(name)s (this entity)", name=name)))
    compiled = page.platform.registry.get(existing) if existing else None
    return page.render(
        "ui/designer/editor.html", status_code=status, draft=draft_text(draft), existing=existing, compiled=compiled,
        entity_name=name, entity_label={k: dict(v) for k, v in labels.items()},
        display_field=str(xrm.get("display_field") or ""),
        search_fields=[s for s in xrm.get("search_fields", []) if isinstance(s, str)] if isinstance(xrm.get("search_fields"), list) else [],
        rows=rows, located=located, opened=opened or set(), focus=focus, types=type_labels(page), targets=targets,
        text_like={r.name for r in rows if r.type in ("text", "long_text", "email", "phone", "url", "select")},
        new_field_error=new_field_error, new_field_name=new_field_name, flash=flash or [], **context,
    )


# -- history ------------------------------------------------------------------
@get("/admin/designer/{entity:str}/history")
async def history(request: Request[Any, Any, Any], entity: FromPath[str]) -> Template:
    page = await _admin_page(request)
    rows = await page.platform.schema.history(entity)
    if not rows:
        raise NotFound(page.t.gettext("No entity %(name)s (now or formerly).", name=entity))
    user_ids = list({r["applied_by"] for r in rows if r["applied_by"] is not None})
    async with page.platform.db.connection() as connection:
        users = {r["id"]: r["name"] for r in await connection.fetch("SELECT id, name FROM xrm_sys.app_user WHERE id = ANY($1::uuid[])", user_ids)}
    versions = []
    for i, row in enumerate(rows):
        older = next((r for r in rows[i + 1:] if r["entity_id"] == row["entity_id"]), None)
        changes = changes_between(older["definition"] if older else None, row["definition"])
        versions.append({
            "version": row["version"], "name": row["name"], "at": page.t.datetime(row["created_at"]),
            # The system principal (definition files at start, the CLI) has the nil uuid and no user row.
            "by": users.get(row["applied_by"]) or (page.t.gettext("system (definition files)")
                                                   if row["applied_by"] in (None, SYSTEM_PRINCIPAL.id) else str(row["applied_by"])),
            "kind": _kind_word(page, row["kind"]), "reverted": row["reverted_by"] is not None,
            "changes": [_describe(page, kind, details) for kind, details in changes],
        })
    compiled = page.platform.registry.get(entity) if entity in page.platform.registry else None
    return page.render("ui/designer/history.html", entity=entity, compiled=compiled, versions=versions)


def _kind_word(page: Page, kind: str) -> str:
    _ = page.t.gettext
    return {"apply": _("applied"), "revert": _("reverted"), "restore": _("restored from the archive")}.get(kind, kind)


def _aspects(page: Page, aspects: list[str]) -> str:
    _ = page.t.gettext
    words = {
        "type": _("type"), "label": _("label"), "help": _("help text"), "unique": _("unique"), "sensitive": _("sensitive"),
        "personal": _("personal data"), "references": _("referenced entity"), "options": _("options"), "required": _("required"),
        "rules": _("other rules"), "plural": _("plural label"), "display_field": _("display field"), "search_fields": _("search fields"),
        "indexes": _("indexes"), "retention": _("retention"), "consent": _("consent"), "description": _("description"),
    }
    return ", ".join(words.get(a, a) for a in aspects)


def _describe(page: Page, kind: str, details: dict[str, Any]) -> str:
    _ = page.t.gettext
    if kind == "entity_created":
        return page.t.ngettext("Entity created with %(num)d field", "Entity created with %(num)d fields", details["count"])
    if kind == "entity_removed":
        return _("Entity removed (its table moved to the archive)")
    if kind == "field_added":
        return _("Field %(field)s added (%(type)s)", field=details["field"], type=type_labels(page).get(details["type"], details["type"]))
    if kind == "field_removed":
        return _("Field %(field)s removed (values archived)", field=details["field"])
    if kind == "field_renamed":
        return _("Field %(old)s renamed to %(new)s", old=details["old"], new=details["new"])
    if kind == "field_changed":
        return _("Field %(field)s changed: %(what)s", field=details["field"], what=_aspects(page, details["aspects"]))
    if kind == "fields_reordered":
        return _("Fields reordered")
    if kind == "entity_changed":
        return _("Entity settings changed: %(what)s", what=_aspects(page, details["aspects"]))
    return kind


designer_views = [designer_home, new_entity, edit_entity, draft_action, history]
