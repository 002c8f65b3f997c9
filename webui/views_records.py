"""Records in the web UI: list (search, filters, sort, load more, export), detail, forms, delete/restore.

Every read and write goes through RecordService with the user's principal (the
one door): what a list shows, what a form accepts, which buttons appear, all
follow the same permission model and validator as the API. Filters use the
API's query-string language (`?stage=won&amount[gte]=1000&sort=-amount`), so
a list URL and an API URL say the same thing.
"""

from __future__ import annotations

import re

import io
import uuid
from collections.abc import AsyncIterator
from typing import Any

from litestar import Request, Response, get, post
from litestar.datastructures import MultiDict
from litestar.params import FromPath
from litestar.response import Redirect, Stream, Template

from xrm.api.records import list_arguments
from xrm.plugins import await_me_maybe, get_plugin_manager
from xrm.errors import NotFound, PermissionDenied, Problem, ValidationFailed, VersionConflict
from xrm.records.query import filter_targets, operators_of
from xrm.registry import CompiledEntity
from xrm.transfer import export_records

from .context import Page, page_of
from .display import display_name, format_value, option_label
from .forms import parse_form, widgets
from .views_lists import saved_views

__all__ = ["record_views"]

PAGE_SIZE = 50
DEFAULT_COLUMNS = 6
UI_PARAMETERS = ("columns", "after", "view")
LOOKUP_LIMIT = 10
TOTAL_LIMIT = 10_000
"""Lists count at most this many matches ("more than 10,000 records"): a full count of 1M rows costs ~0.1 s."""


# -- list ---------------------------------------------------------------------
_LOCAL_DATETIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?")


def _query(request: Request[Any, Any, Any]) -> MultiDict:
    """The list's query string without empty inputs (a filter form sends every field) and lookup search texts.

    A datetime-local input sends a time without offset (2024-05-01T10:00), which
    the list language refuses; the UI shows and takes times in UTC (as its
    forms do), so such a filter value gets a Z.
    """
    items = []
    for key, value in request.query_params.multi_items():
        if value.strip() == "" or key.endswith("__search"):
            continue
        if key not in ("q", "sort", "columns") and not key.endswith("[contains]") and _LOCAL_DATETIME.fullmatch(value.strip()):
            value = value.strip() + "Z"
        items.append((key, value))
    return MultiDict(items)


def _columns(page: Page, entity: CompiledEntity, params: MultiDict) -> list[str]:
    visible = page.records(entity.name).visible_fields
    chosen = [name for value in params.getall("columns", []) for name in value.split(",") if name in visible]
    # The first column always names the record (display field), so the defaults leave it out.
    return chosen or [name for name in visible if name != entity.definition.display_field][:DEFAULT_COLUMNS]


async def _filters(page: Page, entity: CompiledEntity, params: MultiDict) -> list[dict[str, Any]]:
    """One filter control per field type: ranges for numbers and dates, pickers for options, text contains."""
    visible = page.records(entity.name).visible_fields
    controls = []
    for target in filter_targets(entity):
        f = visible.get(target.name)
        if f is None or target.name != f.name:
            continue
        kind = f.type.name
        ops = operators_of(target)
        control: dict[str, Any] = {"name": f.name, "label": f.label(page.language), "kind": kind}
        if kind in ("integer", "decimal", "currency", "date", "datetime"):
            low, high = params.get(f"{f.name}[gte]", ""), params.get(f"{f.name}[lte]", "")
            if kind == "datetime":  # back into the picker's form (no offset; _query added the Z)
                low, high = low.removesuffix("Z"), high.removesuffix("Z")
            control.update(type="range", input={"date": "date", "datetime": "datetime-local"}.get(kind, "number"), low=low, high=high)
        elif kind in ("select", "multiselect"):
            options = f.schema["enum"] if kind == "select" else f.schema["items"]["enum"]
            key = f.name if kind == "select" else f"{f.name}[contains]"
            control.update(type="options", key=key, value=params.get(key, ""),
                           options=[(o, option_label(f, o, page.language)) for o in options])
        elif kind == "boolean":
            control.update(type="options", key=f.name, value=params.get(f.name, ""),
                           options=[("true", page.t.gettext("Yes")), ("false", page.t.gettext("No"))])
        elif kind == "reference" and f.references in page.platform.registry:
            # A picker: search the target by typing (the form lookup), the chosen record's id goes into the filter.
            chosen = params.get(f.name, "")
            control.update(type="reference", key=f.name, value=chosen, references=f.references,
                           chosen_label=await _record_label(page, f.references, chosen) if chosen else "")
        elif "contains" in ops:
            control.update(type="text", key=f"{f.name}[contains]", value=params.get(f"{f.name}[contains]", ""))
        else:
            continue
        controls.append(control)
    return controls


async def _record_label(page: Page, entity: str, record_id: str) -> str:
    """The name of a record the user may read, else its id as given."""
    try:
        record = await page.records(entity).get(record_id)
    except (NotFound, ValidationFailed, PermissionDenied):
        return record_id
    return display_name(page.platform.registry.get(entity), record)


async def _page_of_records(page: Page, entity: CompiledEntity, params: MultiDict) -> tuple[Any, list[str], list[Problem]]:
    service = page.records(entity.name)
    columns = _columns(page, entity, params)
    references = [c for c in columns if entity.fields[c].type.name == "reference"]
    try:
        arguments = list_arguments(service, params, ignore=UI_PARAMETERS)
        result = await service.list(**arguments, limit=PAGE_SIZE, after=params.get("after"), expand=references,
                                    with_total=params.get("after") is None, total_limit=TOTAL_LIMIT)
    except ValidationFailed as error:
        return None, columns, error.problems
    return result, columns, []


@get("/e/{entity:str}")
async def list_page(request: Request[Any, Any, Any], entity: FromPath[str]) -> Template:
    page = await page_of(request)
    compiled = page.platform.registry.get(entity)
    page.records(entity).policy.authorize(page.principal, entity, "read")
    params = _query(request)
    result, columns, problems = await _page_of_records(page, compiled, params)
    context = {
        "entity": compiled, "current_entity": entity, "result": result, "columns": columns, "problems": problems,
        "params": params, "query_string": _without(params, "after"), "sort": params.get("sort", ""),
        "filters": await _filters(page, compiled, params), "fields": page.records(entity).visible_fields,
        "may_create": page.may(entity, "create"), "may_export": page.may(entity, "export"),
        "boards": [f for f in compiled.fields.values() if f.type.name == "select"],
        "value": lambda record, name: format_value(page.t, compiled, compiled.fields[name], record, page.platform.registry),
        "display": display_name,
        "saved_views": await saved_views(page, entity),
    }
    if request.headers.get("hx-request") and params.get("after"):
        return page.render("ui/_rows.html", **context)
    if request.headers.get("hx-target") == "results":
        return page.render("ui/_results.html", **context)
    return page.render("ui/list.html", **context)


def _without(params: MultiDict, *names: str) -> str:
    from urllib.parse import urlencode

    return urlencode([(k, v) for k, v in params.multi_items() if k not in names])


@get("/e/{entity:str}/export.csv")
async def export_view(request: Request[Any, Any, Any], entity: FromPath[str]) -> Stream:
    """The current view (filters, search, sort, columns are all fields the user may read) as CSV."""
    page = await page_of(request)
    service = page.records(entity)
    params = _query(request)
    arguments = list_arguments(service, params, ignore=UI_PARAMETERS)
    arguments.pop("include_deleted", None)
    buffer = io.StringIO()
    await export_records(page.platform.db, page.platform.registry, entity, buffer, format="csv", references="display",
                         principal=page.principal, policy=page.platform.policy, **arguments)

    async def body() -> AsyncIterator[bytes]:
        yield buffer.getvalue().encode("utf-8")

    return Stream(body(), media_type="text/csv; charset=utf-8",
                  headers={"Content-Disposition": f'attachment; filename="{entity}.csv"'})


@get("/e/{entity:str}/lookup")
async def lookup(request: Request[Any, Any, Any], entity: FromPath[str]) -> Template:
    """Search-as-you-type for a reference field: the first matches by full text, as buttons."""
    page = await page_of(request)
    compiled = page.platform.registry.get(entity)
    field = request.query_params.get("field", "")
    text = (request.query_params.get(f"{field}__search") or request.query_params.get("q") or "").strip()[:200].replace("\x00", "")
    # Typing "AC" must find "ACME": full-text search matches whole words, so look in the display field.
    name = compiled.definition.display_field
    if text and name:
        found = await page.records(entity).list(where=[(name, "contains", text)], order_by=[name], limit=LOOKUP_LIMIT)
    else:
        found = await page.records(entity).list(search=text or None, limit=LOOKUP_LIMIT)
    return page.render("ui/_lookup.html", entity=compiled, field=field, records=found.records, display=display_name, text=text)


# -- detail -------------------------------------------------------------------
@get("/e/{entity:str}/{record_id:uuid}")
async def detail_page(request: Request[Any, Any, Any], entity: FromPath[str], record_id: FromPath[uuid.UUID]) -> Template:
    page = await page_of(request)
    compiled = page.platform.registry.get(entity)
    service = page.records(entity)
    references = [n for n, f in service.visible_fields.items() if f.type.name == "reference"]
    record = await _get_expanded(page, entity, record_id, references)
    allowed = await service.allowed_actions(record_id)
    history = await service.history(record_id)
    panels = []
    for _, found in get_plugin_manager().each("xrm_detail_panels", entity=entity, record=record, principal=page.principal,
                                              language=page.language, platform=page.platform, csrf_token=page.csrf_token):
        panels.extend(await await_me_maybe(found) or [])
    panels.sort(key=lambda panel: panel.order)
    return page.render(
        "ui/detail.html", entity=compiled, current_entity=entity, record=record, allowed=allowed, panels=panels,
        groups=_groups(page, service.visible_fields), history=_history(page, compiled, history),
        related=await _related(page, compiled, record_id), display=display_name,
        value=lambda name: format_value(page.t, compiled, compiled.fields[name], record, page.platform.registry),
    )


async def _get_expanded(page: Page, entity: str, record_id: uuid.UUID, references: list[str]) -> dict[str, Any]:
    """The record with its references' records (for their names), deleted ones too."""
    service = page.records(entity)
    found = await service.list(where=[("id", "eq", str(record_id))], include_deleted=True, expand=references, limit=1)
    if not found.records:
        raise NotFound(page.t.gettext("No such record, or you may not see it."))
    return found.records[0]


def _groups(page: Page, fields: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """Fields in definition order, consecutive ones with the same x-xrm group under one heading."""
    groups: list[tuple[str, list[str]]] = []
    for name, f in fields.items():
        labels = f.xrm.get("group") or {}
        title = labels.get(page.language) or labels.get("en") or ""
        if name.startswith("consent_") and not title:
            title = page.t.gettext("Consent")
        if not groups or groups[-1][0] != title:
            groups.append((title, []))
        groups[-1][1].append(name)
    return groups


def _history(page: Page, entity: CompiledEntity, entries: list[Any]) -> list[dict[str, Any]]:
    words = {"record.created": page.t.gettext("created"), "record.updated": page.t.gettext("changed"),
             "record.deleted": page.t.gettext("deleted"), "record.restored": page.t.gettext("restored"),
             "record.erased": page.t.gettext("erased (data protection)")}
    timeline = []
    for entry in reversed(entries):
        changes = []
        for name, change in (entry.changes or {}).items():
            f = entity.fields.get(name)
            label = f.label(page.language) if f else name
            if isinstance(change, dict):
                old, new = change.get("old"), change.get("new")
                if f is not None and f.type.name in ("select", "multiselect"):  # options by their labels, as everywhere else
                    old, new = (_option_labels(f, value, page.language) for value in (old, new))
                changes.append((label, _shown(old), _shown(new)))
        timeline.append({"at": page.t.datetime(entry.at), "user": entry.principal_name,
                         "action": words.get(entry.action, entry.action), "changes": changes})
    return timeline


def _option_labels(f: Any, value: Any, language: str) -> Any:
    if isinstance(value, list):
        return [option_label(f, v, language) for v in value]
    return option_label(f, value, language) if isinstance(value, str) else value


def _shown(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, dict) and "amount" in value:
        return f"{value['amount']} {value.get('currency', '')}"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)


async def _related(page: Page, entity: CompiledEntity, record_id: uuid.UUID) -> list[dict[str, Any]]:
    """Records of other entities that reference this one (the inverse of their reference fields)."""
    panels = []
    for other in page.nav:
        service = page.records(other.name)
        for name, f in service.visible_fields.items():
            if f.references != entity.name:
                continue
            found = await service.list(where=[(name, "eq", str(record_id))], limit=10, with_total=True)
            if found.total:
                panels.append({"entity": other, "field": name, "label": f"{other.definition.label(page.language, plural=True)} "
                               f"({f.label(page.language)})", "records": found.records, "total": found.total})
    return panels


# -- forms --------------------------------------------------------------------
async def _reference_labels(page: Page, entity: CompiledEntity, values: dict[str, Any]) -> dict[str, str]:
    labels = {}
    for name, f in entity.fields.items():
        if f.type.name == "reference" and values.get(name) and f.references in page.platform.registry:
            try:
                target = await page.records(f.references).get(values[name])
            except (NotFound, ValidationFailed):
                continue
            except Exception:  # noqa: BLE001 - a label is a nicety; the permission error shows on save
                continue
            labels[name] = display_name(page.platform.registry.get(f.references), target)
    return labels


def _form(page: Page, entity: CompiledEntity, *, record: dict[str, Any] | None, raw: dict[str, Any] | None = None,
          errors: dict[str, str] | None = None, message: str = "", status: int = 200, labels: dict[str, str] | None = None,
          conflict: dict[str, Any] | None = None) -> Template:
    service = page.records(entity.name)
    return page.render(
        "ui/form.html", status_code=status, entity=entity, current_entity=entity.name, record=record,
        widgets=widgets(service.visible_fields, page.language, values=record or {}, raw=raw, errors=errors,
                        read_only=service.read_only_fields, reference_labels=labels),
        message=message, conflict=conflict,
    )


def _field_errors(problems: list[Problem]) -> tuple[dict[str, str], list[str]]:
    """Problems by field (the first part of each pointer); the rest as general messages."""
    by_field: dict[str, str] = {}
    general = []
    for problem in problems:
        parts = problem.pointer.split("/")
        if len(parts) > 1 and parts[1]:
            by_field.setdefault(parts[1], problem.message)
        else:
            general.append(problem.message)
    return by_field, general


@get("/e/{entity:str}/new")
async def new_form(request: Request[Any, Any, Any], entity: FromPath[str]) -> Template:
    page = await page_of(request)
    compiled = page.platform.registry.get(entity)
    page.records(entity).policy.authorize(page.principal, entity, "create")
    prefill = {k: v for k, v in request.query_params.items() if k in compiled.fields}  # e.g. from a related panel
    labels = await _reference_labels(page, compiled, prefill)
    return _form(page, compiled, record=None, raw=prefill, labels=labels)


@post("/e/{entity:str}/new", status_code=303)
async def create(request: Request[Any, Any, Any], entity: FromPath[str]) -> Response[Any] | Template:
    page = await page_of(request)
    compiled = page.platform.registry.get(entity)
    service = page.records(entity)
    values, raw, problems = parse_form(service.visible_fields, await request.form())
    if not problems:
        try:
            created = await service.create({k: v for k, v in values.items() if k not in service.read_only_fields})
            return Redirect(f"/e/{entity}/{created['id']}", status_code=303)
        except ValidationFailed as error:
            problems = error.problems
    errors, general = _field_errors(problems)
    return _form(page, compiled, record=None, raw=raw, errors=errors, status=422,
                 message=" ".join(general) or page.t.gettext("Please correct the marked fields."))


@get("/e/{entity:str}/{record_id:uuid}/edit")
async def edit_form(request: Request[Any, Any, Any], entity: FromPath[str], record_id: FromPath[uuid.UUID]) -> Template:
    page = await page_of(request)
    compiled = page.platform.registry.get(entity)
    service = page.records(entity)
    record = await service.get(record_id)
    if "update" not in await service.allowed_actions(record_id, ("update",)):
        raise PermissionDenied(page.t.gettext("You may not change this record."))
    return _form(page, compiled, record=record, labels=await _reference_labels(page, compiled, record))


@post("/e/{entity:str}/{record_id:uuid}/edit", status_code=303)
async def update(request: Request[Any, Any, Any], entity: FromPath[str], record_id: FromPath[uuid.UUID]) -> Response[Any] | Template:
    page = await page_of(request)
    compiled = page.platform.registry.get(entity)
    service = page.records(entity)
    form = await request.form()
    values, raw, problems = parse_form(service.visible_fields, form)
    try:
        version = int(str(form.get("version") or ""))
    except ValueError:
        version = None
    current = await service.get(record_id)
    if not problems:
        try:
            await service.update(record_id, {k: v for k, v in values.items() if k not in service.read_only_fields},
                                 expected_version=version)
            return Redirect(f"/e/{entity}/{record_id}", status_code=303)
        except ValidationFailed as error:
            problems = error.problems
        except VersionConflict:
            # Show what the other person changed; the form keeps this user's input on the new version ("reapply").
            current = await service.get(record_id)
            changed = [
                (compiled.fields[n].label(page.language), _shown(current.get(n)))
                for n in service.visible_fields if n in values and _differs(compiled.fields[n], current.get(n), values[n])
            ]
            return _form(page, compiled, record=current, raw=raw, status=409, labels=await _reference_labels(page, compiled, current),
                         conflict={"changed": changed},
                         message=page.t.gettext("Someone else changed this record while you edited it. Check their values below; "
                                                "your input is kept — save again to apply it."))
    errors, general = _field_errors(problems)
    return _form(page, compiled, record=current, raw=raw, errors=errors, status=422,
                 message=" ".join(general) or page.t.gettext("Please correct the marked fields."))


def _differs(f: Any, stored: Any, submitted: Any) -> bool:
    return f.type.to_json(stored) != f.type.to_json(submitted) and _shown(stored) != _shown(submitted)


@post("/e/{entity:str}/{record_id:uuid}/delete", status_code=303)
async def delete_record(request: Request[Any, Any, Any], entity: FromPath[str], record_id: FromPath[uuid.UUID]) -> Response[Any]:
    page = await page_of(request)
    await page.records(entity).delete(record_id)
    return Redirect(f"/e/{entity}/{record_id}", status_code=303)


@post("/e/{entity:str}/{record_id:uuid}/restore", status_code=303)
async def restore_record(request: Request[Any, Any, Any], entity: FromPath[str], record_id: FromPath[uuid.UUID]) -> Response[Any]:
    page = await page_of(request)
    await page.records(entity).restore(record_id)
    return Redirect(f"/e/{entity}/{record_id}", status_code=303)


record_views = [list_page, export_view, lookup, detail_page, new_form, create, edit_form, update, delete_record, restore_record]
