"""Web UI of the state machines: a panel on the detail page (a button per available transition, the history)
and the route a button posts to (with a small form when the transition needs field values).

Templates: webui/templates/ui/statemachine/; German: webui/locale/de/LC_MESSAGES/statemachine.po.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2
from litestar import Request, Response, get, post
from litestar.params import FromPath
from litestar.response import Redirect, Template
from markupsafe import Markup

import xrm.webui
from xrm.errors import NotFound, PermissionDenied, ValidationFailed, VersionConflict
from xrm.plugins import Panel
from xrm.records.service import RecordService
from xrm.webui.context import Page, page_of
from xrm.webui.display import display_name, option_label
from xrm.webui.forms import parse_form, widgets
from xrm.webui.i18n import Translator, translator

from . import AUDIT_ACTION, taking
from .api import transitions_of
from .machine import Machine, Transition, machine_of

__all__ = ["panel", "ui_handlers"]

TEMPLATES = Path(xrm.webui.__file__).resolve().parent / "templates"
_environment = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True)


def _state(machine: Machine, definition: Any, state: Any, language: str) -> str:
    if state is None:
        return "—"
    return option_label(definition.fields[machine.field], state, language)


def _asked(machine: Machine, transition: Transition) -> list[str]:
    """Fields the transition's form may carry: those it or its target state requires, and those its conditions test."""
    names = [*transition.requires, *machine.required_in_state.get(transition.target, ()), *(c.field.split(".")[0] for c in transition.when)]
    return list(dict.fromkeys(n for n in names if n != machine.field))


def _reason(t: Translator, definition: Any, blocked: Mapping[str, Any]) -> str:
    labels = ", ".join(definition.fields[n].label(t.language) if n in definition.fields else n for n in blocked["fields"])
    kind = blocked["kind"]
    if kind == "permission":
        return t.gettext("you may not change this record")
    if kind == "role":
        return t.gettext("needs another role (%(detail)s)", detail=blocked["message"].removeprefix("needs the role "))
    if kind == "missing":
        return t.gettext("needs a value in %(fields)s, which you may not change", fields=labels)
    return t.gettext("a condition on %(fields)s is not met (%(detail)s)", fields=labels, detail=blocked["message"].removeprefix("needs "))


async def _view(service: RecordService, machine: Machine, record: Mapping[str, Any], t: Translator) -> dict[str, Any]:
    """What the panel and the transition page show, in the user's language."""
    definition = service.entity.definition
    offered, blocked = [], []
    if record.get("deleted_at") is None:
        for item in await transitions_of(service, machine, record, t.language):
            transition = machine.transition(item["name"])
            assert transition is not None
            entry = {**item, "to_label": _state(machine, definition, item["to"], t.language)}
            if item["available"]:
                visible = service.visible_fields
                entry["fields"] = {n: visible[n] for n in item["needs"] if n in visible}
                offered.append(entry)
            else:
                entry["reasons"] = "; ".join(_reason(t, definition, b) for b in item["blocked"])
                blocked.append(entry)
    history = []
    for entry in await service.history(record["id"]):
        if entry.action != AUDIT_ACTION:
            continue
        details = entry.details or {}
        taken = machine.transition(str(details.get("transition")))
        history.append({
            "at": t.datetime(entry.at), "user": entry.principal_name,
            "label": taken.title(t.language) if taken else str(details.get("transition")),
            "from": _state(machine, definition, details.get("from"), t.language),
            "to": _state(machine, definition, details.get("to"), t.language),
        })
    return {"state": _state(machine, definition, record.get(machine.field), t.language), "offered": offered, "blocked": blocked,
            "history": list(reversed(history))}


async def panel(platform: Any, entity: str, record: Mapping[str, Any], principal: Any, language: str, csrf_token: str) -> list[Panel]:
    service = RecordService(platform.db, platform.registry, entity, principal, platform.policy)
    machine = machine_of(service.entity.definition)
    if machine is None:
        return []
    t = translator(language)
    view = await _view(service, machine, record, t)
    for entry in view["offered"]:
        entry["widgets"] = widgets(entry["fields"], language, values=record)
    html = _environment.get_template("ui/statemachine/panel.html").render(
        _=t.gettext, entity=entity, record=record, csrf_token=csrf_token, **view)
    label = service.entity.fields[machine.field].label(language)
    return [Panel(t.gettext("%(field)s and transitions", field=label), Markup(html), order=10)]


async def _machine(page: Page, entity: str, name: str) -> tuple[RecordService, Machine, Transition]:
    service = page.records(entity)
    machine = machine_of(service.entity.definition)
    if machine is None:
        raise NotFound(page.t.gettext("This kind of record has no state machine."))
    transition = machine.transition(name)
    if transition is None:
        raise NotFound(page.t.gettext("There is no such transition."))
    return service, machine, transition


def _transition_page(page: Page, service: RecordService, machine: Machine, transition: Transition, record: Mapping[str, Any], *,
                     raw: Mapping[str, Any] | None = None, errors: Mapping[str, str] | None = None, message: str = "",
                     status: int = 200) -> Template:
    visible = service.visible_fields
    fields = {n: visible[n] for n in _asked(machine, transition) if n in visible}
    return page.render(
        "ui/statemachine/transition.html", status_code=status, entity=service.entity, current_entity=service.entity.name,
        record=record, transition=transition, title=transition.title(page.language),
        to_label=_state(machine, service.entity.definition, transition.target, page.language),
        widgets=widgets(fields, page.language, values=record, raw=raw, errors=errors, read_only=service.read_only_fields),
        message=message, display=display_name,
    )


@get("/e/{entity:str}/{record_id:uuid}/transitions/{name:str}")
async def transition_form(request: Request[Any, Any, Any], entity: FromPath[str], record_id: FromPath[uuid.UUID], name: FromPath[str]) -> Template:
    page = await page_of(request)
    service, machine, transition = await _machine(page, entity, name)
    record = await service.get(record_id)
    return _transition_page(page, service, machine, transition, record)


@post("/e/{entity:str}/{record_id:uuid}/transitions/{name:str}", status_code=303)
async def take_transition(request: Request[Any, Any, Any], entity: FromPath[str], record_id: FromPath[uuid.UUID],
                          name: FromPath[str]) -> Response[Any] | Template:
    page = await page_of(request)  # checks the CSRF token of this POST
    service, machine, transition = await _machine(page, entity, name)
    form = await request.form()
    visible = service.visible_fields
    asked = {n: visible[n] for n in _asked(machine, transition) if n in visible and n not in service.read_only_fields}
    values, raw, problems = parse_form(asked, form, only_sent=True)
    try:
        version: int | None = int(str(form.get("version") or ""))
    except ValueError:
        version = None
    record = await service.get(record_id)
    message = ""
    if not problems:
        try:
            with taking(entity, record["id"], name):
                await service.update(record["id"], {**values, machine.field: transition.target}, expected_version=version)
            return Redirect(f"/e/{entity}/{record_id}", status_code=303)
        except ValidationFailed as error:
            problems = error.problems
        except VersionConflict:
            record = await service.get(record_id)
            return _transition_page(page, service, machine, transition, record, raw=raw, status=409,
                                    message=page.t.gettext("Someone else changed this record meanwhile; check it and try again."))
        except PermissionDenied:
            raise PermissionDenied(page.t.gettext("You may not change this record.")) from None
    errors: dict[str, str] = {}
    general = []
    for problem in problems:
        part = problem.pointer.split("/")[1] if problem.pointer.count("/") >= 1 else ""
        if part in asked:
            errors.setdefault(part, problem.message)
        else:
            general.append(problem.message)
    message = page.t.gettext("The transition was not taken: %(reason)s", reason="; ".join(general) if general else
                             page.t.gettext("please fill in the marked fields."))
    return _transition_page(page, service, machine, transition, record, raw=raw, errors=errors, message=message, status=422)


ui_handlers = [transition_form, take_transition]
