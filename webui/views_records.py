"""Records in the web UI: list (search, filters, sort, load more, export), detail, forms, delete/restore.

Every read and write goes through RecordService with the user's principal (the
one door): what a list shows, what a form accepts, which buttons appear, all
follow the same permission model and validator as the API. Filters use the
API's query-string language (`?stage=won&amount[gte]=1000&sort=-amount`), so
a list URL and an API URL say the same thing.
"""

from __future__ import annotations

import re

import datetime as dt
import json
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
from xrm.transfer.exporter import iter_export

from .context import Page, page_of
from .display import display_name, entity_label, format_value, option_label, plain_text, value_text
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
    # Refused filters and a missing export right become an error page before the first byte; then it streams
    # page by page (a million rows never sit in memory), as the API's export does.
    service.policy.authorize(service.principal, entity, "export")
    await service.list(limit=1, **{k: arguments[k] for k in ("where", "search", "order_by") if k in arguments})

    async def body() -> AsyncIterator[bytes]:
        async for chunk in iter_export(page.platform.db, page.platform.registry, entity, format="csv", references="display",
                                       principal=page.principal, policy=page.platform.policy, **arguments):
            yield chunk.encode("utf-8")

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
                # As the detail page shows values: option labels, Ja/Nein, 01.12.2026, 12.500,50 EUR.
                old, new = (_shown(value, f, page, entity) for value in (change.get("old"), change.get("new")))
                changes.append((label, old, new))
        timeline.append({"at": page.t.datetime(entry.at), "user": entry.principal_name,
                         "action": words.get(entry.action, entry.action), "changes": changes})
    return timeline


def _shown(value: Any, f: Any = None, page: Page | None = None, entity: CompiledEntity | None = None) -> str:
    """A value (JSON form, as the audit trail keeps it) as text: for a field, in the page's language as the
    detail page formats it (display.value_text); without one, as it is."""
    if f is None or page is None or entity is None:
        return plain_text(value)
    return value_text(page.t, entity, f, value, page.platform.registry)


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
                panels.append({"entity": other, "field": name, "label": f"{entity_label(other.definition, page.language, plural=True)} "
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
          conflict: dict[str, Any] | None = None, version: int | None = None, original: dict[str, Any] | None = None) -> Template:
    """The record form; an edit form carries the version and the values (`_original`) the user started from."""
    service = page.records(entity.name)
    if record is not None and original is None:
        original = _form_texts(page, entity, record)
    return page.render(
        "ui/form.html", status_code=status, entity=entity, current_entity=entity.name, record=record,
        widgets=widgets(service.visible_fields, page.language, values=record or {}, raw=raw, errors=errors,
                        read_only=service.read_only_fields, reference_labels=labels),
        message=message, conflict=conflict,
        version=version if version is not None else (record or {}).get("version"),
        original=json.dumps(original, ensure_ascii=False) if original is not None else None,
    )


def _form_texts(page: Page, entity: CompiledEntity, record: dict[str, Any]) -> dict[str, Any]:
    """What the edit form of this record sends when nothing is touched (name: text, a list for a multi-select)."""
    texts: dict[str, Any] = {}
    for w in widgets(page.records(entity.name).visible_fields, page.language, values=record):
        if w.kind == "checkbox":
            texts[w.name] = "true" if w.value else ""
        elif w.kind == "checkboxes":
            texts[w.name] = list(w.value)
        else:
            texts[w.name] = w.value
            if w.kind == "currency":
                texts[f"{w.name}__currency"] = w.currency
    return texts


def _parse_texts(fields: dict[str, Any], texts: dict[str, Any]) -> dict[str, Any]:
    """Form texts (from _form_texts) as JSON values, read exactly as a submitted form is."""
    pairs = [(k, str(v)) for k, value in texts.items() for v in (value if isinstance(value, list) else [value])]
    values, _, _ = parse_form(fields, MultiDict(pairs))
    return values


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
    else:
        problems = problems + _other_problems(compiled, values, problems)
    errors, general = _field_errors(problems)
    return _form(page, compiled, record=None, raw=raw, errors=errors, status=422,
                 message=" ".join(page.t.problem(m) for m in general) or page.t.gettext("Please correct the marked fields."))


def _other_problems(compiled: CompiledEntity, values: dict[str, Any], unreadable: list[Problem]) -> list[Problem]:
    """What the validator says about the rest of a form some inputs of which could not be read (a required
    field left empty, say), so the user sees every problem at once, not one round after the other."""
    skipped = {p.pointer.split("/")[1] for p in unreadable if p.pointer.count("/") >= 1 and p.pointer != ""}
    validator = compiled.validator
    found = validator.problems(validator.to_json_form({k: v for k, v in values.items() if k not in skipped}))
    return [p for p in found if (p.pointer.split("/")[1] if p.pointer.count("/") else "") not in skipped]


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
    fields = service.visible_fields
    writable = [n for n in fields if n in values and n not in service.read_only_fields]
    original_texts = _submitted_original(form)
    if original_texts is None:  # a client that does not say where it started (not the web form): all it sends is its change
        original, mine = None, {n: values[n] for n in writable}
    else:
        # Only what the user changed is written; a conflicting field they chose to leave to the other person is not.
        original = _parse_texts(fields, original_texts)
        mine = {n: values[n] for n in writable
                if _differs(fields[n], original.get(n), values[n]) and form.get(f"_resolve_{n}") != "theirs"}
    if not problems:
        if original is not None and not mine:
            return Redirect(f"/e/{entity}/{record_id}", status_code=303)  # nothing changed: nothing to write
        try:
            await service.update(record_id, mine, expected_version=version)
            return Redirect(f"/e/{entity}/{record_id}", status_code=303)
        except ValidationFailed as error:
            problems = error.problems
        except VersionConflict:
            return await _conflict(page, compiled, record_id, original, values, raw, mine)
    errors, general = _field_errors(problems)
    labels: dict[str, str] = {}
    if original is not None:  # a field left to the other person shows their value again, not the user's discarded input
        kept = [n for n in fields if form.get(f"_resolve_{n}") == "theirs"]
        for n in kept:
            raw.pop(f"{n}__search", None)
            raw.update({k: original_texts[k] for k in (n, f"{n}__currency") if k in original_texts})
        labels = await _reference_labels(page, compiled, {n: original.get(n) for n in kept})
    return _form(page, compiled, record=current, raw=raw, errors=errors, status=422, labels=labels or None,
                 version=version, original=original_texts,
                 message=" ".join(page.t.problem(m) for m in general) or page.t.gettext("Please correct the marked fields."))


def _submitted_original(form: Any) -> dict[str, Any] | None:
    """The form texts the edit form started from (its hidden `_original`), or None when it did not send them."""
    try:
        texts = json.loads(str(form.get("_original") or ""))
    except ValueError:
        return None
    return texts if isinstance(texts, dict) else None


async def _conflict(page: Page, entity: CompiledEntity, record_id: uuid.UUID, original: dict[str, Any] | None,
                    values: dict[str, Any], raw: dict[str, Any], mine: dict[str, Any]) -> Template:
    """The 409 page: what the other person changed (original vs current) and what the user changed (original vs theirs).

    The form it renders starts from the current version: it holds the current values, except where the user changed
    a field, which keeps their input; saving it ("Apply my changes") writes only those fields. Where both changed
    the same field to different values, the user's value is written only if they choose it (`_resolve_<field>`).
    """
    service = page.records(entity.name)
    fields = service.visible_fields
    current = await service.get(record_id)
    current_texts = _form_texts(page, entity, current)
    now = _parse_texts(fields, current_texts)
    current_labels = await _reference_labels(page, entity, current)
    mine_labels = await _reference_labels(page, entity, {n: values.get(n) for n in mine})
    theirs, conflicts = [], []
    if original is not None:
        changed = [n for n in fields if _differs(fields[n], original.get(n), now.get(n))]
        original_labels = await _reference_labels(page, entity, {n: original.get(n) for n in changed})
        by = _changed_by(page, await service.history(record_id), changed) if changed else {}
        for n in changed:
            clash = n in mine and _differs(fields[n], mine[n], now.get(n))
            row = {"name": n, "label": fields[n].label(page.language), "before": _display(page, entity, n, original.get(n), original_labels),
                   "now": _display(page, entity, n, current.get(n), current_labels), "by": by.get(n, ("", ""))[0],
                   "at": by.get(n, ("", ""))[1], "mine": _display(page, entity, n, mine[n], mine_labels) if clash else None}
            theirs.append(row)
            if clash:
                conflicts.append(row)
    # The user's changes that the current version does not have yet: their input stays in the form.
    pending = [n for n in mine if _differs(fields[n], now.get(n), mine[n])]
    kept_raw = {k: raw[k] for n in pending for k in (n, f"{n}__currency", f"{n}__search") if k in raw}
    clashing = {row["name"] for row in conflicts}
    yours = [(fields[n].label(page.language), _display(page, entity, n, mine[n], mine_labels)) for n in pending if n not in clashing]
    return _form(page, entity, record=current, raw=kept_raw, status=409, labels=current_labels, original=current_texts,
                 conflict={"known": original is not None, "theirs": theirs, "conflicts": conflicts, "yours": yours},
                 message=page.t.gettext("Someone else changed this record while you edited it. Their changes are listed "
                                        "below and are kept; your own changes are still in the form. “Apply my changes” "
                                        "saves them onto the current version."))


def _changed_by(page: Page, entries: list[Any], names: list[str]) -> dict[str, tuple[str, str]]:
    """Who changed each of these fields last, and when (from the audit trail)."""
    found: dict[str, tuple[str, str]] = {}
    for entry in reversed(entries):
        for n in entry.changes or {}:
            if n in names and n not in found:
                found[n] = (entry.principal_name, page.t.datetime(entry.at))
    return found


def _display(page: Page, entity: CompiledEntity, name: str, value: Any, reference_labels: dict[str, str]) -> Any:
    """A field's value as the detail page shows it (option labels, numbers, money, dates in the user's language)."""
    f = entity.fields[name]
    if value is None or value == "" or value == []:
        return "—"
    if f.type.name == "reference":
        return reference_labels.get(name) or str(value)[:8]
    if isinstance(value, str) and f.type.name in ("date", "datetime"):  # a value read from a form is text
        try:
            value = dt.date.fromisoformat(value) if f.type.name == "date" else dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    return format_value(page.t, entity, f, {name: value}, page.platform.registry) or "—"


def _differs(f: Any, a: Any, b: Any) -> bool:
    """Two values of a field differ (as JSON; the line ends browsers send in text areas do not count)."""
    a, b = (v.replace("\r\n", "\n") if isinstance(v, str) else v for v in (a, b))
    return bool(f.type.to_json(a) != f.type.to_json(b))


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
