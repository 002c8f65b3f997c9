"""Built-in plugin "statemachine": state machines declared in an entity definition (docs/workflows.md).

`x-xrm.state_machine` names a select field whose options are the states, the
transitions between them (with role and field-condition guards and fields they
require), the initial states and the fields required in a state. The rules
hold for every write through the one door (API, bulk, import, forms, the
kanban board, other plugins): `xrm_before_write` refuses a change of the state
that no allowed transition makes, with a Veto naming the transitions possible
from the current state; `xrm_after_write` records a taken transition in the
audit trail (`workflow.transition`) and the outbox (topic `workflow.transition`)
in the write's transaction. The REST API and the web UI offer the transitions
as actions (`/api/v1/{entity}/{id}/transitions`, a panel with buttons).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Mapping
from typing import Any

from xrm.audit import AuditLog
from xrm.errors import Problem, Veto
from xrm.events import emit
from xrm.plugins import WorkflowTrigger, hookimpl

from .machine import KEYWORD, VOCABULARY, Machine, Transition, check, machine_of

__all__ = ["AUDIT_ACTION", "OUTBOX_TOPIC", "taking"]

AUDIT_ACTION = "workflow.transition"
OUTBOX_TOPIC = "workflow.transition"

_requested: contextvars.ContextVar[tuple[str, str, str] | None] = contextvars.ContextVar("xrm_statemachine_requested", default=None)
"""(entity, record id, transition name) while the API or UI applies a named transition."""
_taken: contextvars.ContextVar[dict[tuple[str, str], tuple[Transition, Any, int | None]] | None] = contextvars.ContextVar(
    "xrm_statemachine_taken", default=None)
"""What xrm_before_write decided, for xrm_after_write of the same write (same task)."""


@contextlib.contextmanager
def taking(entity: str, record_id: Any, transition: str) -> Iterator[None]:
    """Within this block, an update of the record is the named transition (not just any one leading to the new state)."""
    token = _requested.set((entity, str(record_id), transition))
    try:
        yield
    finally:
        _requested.reset(token)


@hookimpl
def xrm_capabilities() -> dict[str, Any]:
    return {"reads": ["*"], "writes": ["*"], "network": False,
            "description": "State machines in entity definitions: transitions with guards, as API actions and UI buttons, "
                           "enforced on every write and kept in the audit trail"}


@hookimpl
def xrm_definition_vocabulary() -> dict[str, Any]:
    return {"entity": {KEYWORD: VOCABULARY}}


@hookimpl
def xrm_check_definition(definition: Any) -> list[Problem]:
    return check(definition)


@hookimpl
def xrm_workflow_triggers() -> list[WorkflowTrigger]:
    text = {"type": "string", "minLength": 1, "maxLength": 100, "pattern": "^[^\\u0000]*$"}
    return [WorkflowTrigger(
        "transition", {"en": "Transition taken", "de": "Übergang ausgeführt"},
        "A record took a transition of its entity's state machine (outbox topic workflow.transition; "
        "payload: field, transition, from, to, version); optionally only the named transition, from or to a state",
        topics=[OUTBOX_TOPIC],
        parameters={"type": "object", "additionalProperties": False,
                    "properties": {"transition": text, "from": text, "to": text}},
        match=_transition_matches,
    )]


def _transition_matches(parameters: Mapping[str, Any], payload: Mapping[str, Any]) -> bool:
    return all(parameters[key] == payload.get(key) for key in ("transition", "from", "to") if key in parameters)


@hookimpl
def xrm_before_write(entity: str, action: str, record: Mapping[str, Any], previous: Mapping[str, Any] | None,
                     principal: Any, definition: Any) -> None:
    machine = machine_of(definition)
    if machine is None or action not in ("create", "update"):
        return
    requested = _requested.get()
    name = requested[2] if requested and requested[0] == entity and requested[1] == str(record.get("id")) else None
    decision = machine.decide(action, record, previous, principal.roles, name)
    if decision.problems:
        raise _veto(list(decision.problems))
    key = (entity, str(record.get("id")))
    taken = _taken.get()
    # The version this write will give the row: after_write records the transition only for that
    # write. A write nested in another's after-write hooks (the CRM pack's ticket follow-up) then
    # neither drops nor takes over the outer write's transition, and one left by a write that failed
    # (the row never got that version) is dropped by the next write of the record.
    writes_version = int(previous["version"]) + 1 if previous and previous.get("version") is not None else None
    if decision.transition is None:
        pending = taken.get(key) if taken else None
        if pending is not None and (previous is None or pending[2] != previous.get("version")):
            taken.pop(key, None)
        return
    if taken is None:
        taken = {}
        _taken.set(taken)
    taken[key] = (decision.transition, decision.source, writes_version)


@hookimpl
def xrm_after_write(entity: str, action: str, record: Mapping[str, Any], principal: Any, connection: Any,
                    definition: Any) -> Any:
    """A coroutine only when a transition was taken (most writes cost nothing here)."""
    taken = _taken.get()
    if not taken or action != "update":
        return None
    key = (entity, str(record["id"]))
    found = taken.get(key)
    if found is None or found[2] != record.get("version"):
        return None  # no transition, or one of the write this one is nested in
    taken.pop(key)
    machine: Machine | None = machine_of(definition)
    if machine is None:
        return None
    return _record_transition(machine, found[0], found[1], entity, record, principal, connection)


async def _record_transition(machine: Machine, transition: Transition, source: Any, entity: str, record: Mapping[str, Any],
                             principal: Any, connection: Any) -> None:
    """The audit entry and the outbox event of a taken transition, in the write's transaction."""
    details = {"field": machine.field, "transition": transition.name, "from": source, "to": transition.target,
               "label": dict(transition.label)}
    await AuditLog.write(connection, principal, AUDIT_ACTION, entity=entity, record_id=record["id"], details=details)
    await emit(connection, OUTBOX_TOPIC, {**details, "version": record["version"]}, entity=entity, record_id=record["id"],
               principal=principal)


def _veto(problems: list[Problem]) -> Veto:
    veto = Veto("; ".join(f"{p.pointer.lstrip('/')}: {p.message}" for p in problems), problems[0].pointer)
    veto.problems = problems
    return veto


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
    if entity not in platform.registry or machine_of(platform.registry.get(entity).definition) is None:
        return []
    from .ui import panel

    return panel(platform, entity, record, principal, language, csrf_token)
