"""What an automation is: its JSON shape (one for entity definitions and admin-created ones), checks, loading.

An automation: {"name", "trigger", "condition", "actions", "run_as", "enabled"}
(plus "entity" when an admin creates one; in a definition it is the entity's).

- trigger: {"on": <a declared workflow trigger>, ...its parameters}; the built-ins:
  {"on": "created"} | {"on": "updated", "changed": [fields]} |
  {"on": "transition", "transition"?, "from"?, "to"?} (declared by the statemachine plugin) |
  {"on": "date", "field": date/datetime field, "offset_minutes"?} |
  {"on": "schedule", "every_minutes": N} or {"on": "schedule", "daily_at": "07:00"} (UTC)
- condition: list-filter conditions [{"field", "op", "value"}] (xrm.records.query
  operators); a value "now", "today", "now-7d", "today+1w" is relative.
- actions: [{"type": "set_fields" | "create_related" | "assign_owner" |
  "send_email" | "webhook" | "notify" | a plugin's workflow action, ...parameters}]
- run_as: the user whose principal the actions use (never the system); "@owner": each
  record's owner (a user; for a team, each active member: one job per user).
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from jinja2 import TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment
from jsonschema import Draft202012Validator

from xrm.errors import Problem, ValidationFailed
from xrm.plugins import WorkflowTrigger, get_plugin_manager
from xrm.records.query import OPERATORS, Condition, where_sql

__all__ = [
    "AUTOMATION_SCHEMA", "AUTOMATION_INPUT_SCHEMA", "Automation", "BUILTIN_ACTIONS", "OWNER", "SCANNED_TRIGGERS", "builtin_triggers", "check_automation",
    "conditions_of", "load_automations", "render", "resolve_relative", "workflow_triggers",
]

NAME_PATTERN = "^[a-z][a-z0-9_]{0,62}$"
SCANNED_TRIGGERS = ("date", "schedule")
"""Triggers the dispatcher scans for (no outbox topic)."""
OWNER = "@owner"
"""run_as: each job runs as the record's owner (a user; for a team, each active member). No user name starts with "@"."""
BUILTIN_ACTIONS = ("set_fields", "create_related", "assign_owner", "send_email", "webhook", "notify")
_TEXT = {"type": "string", "maxLength": 10000, "pattern": "^[^\\u0000]*$"}
_FIELD = {"type": "string", "pattern": NAME_PATTERN}

CONDITION_SCHEMA: dict[str, Any] = {
    "type": "array", "maxItems": 20, "description": "List-filter conditions, all must hold (values 'now-7d', 'today' are relative)",
    "items": {"type": "object", "required": ["field"], "additionalProperties": False, "properties": {
        "field": {"type": "string", "minLength": 1, "maxLength": 100, "pattern": "^[^\\u0000]*$"},
        "op": {"type": "string", "enum": list(OPERATORS)},
        "value": {}}},
}
TRIGGER_SCHEMA: dict[str, Any] = {
    # The parameters besides "on" are the trigger's own (WorkflowTrigger.parameters), checked by check_automation.
    "type": "object", "required": ["on"], "properties": {
        "on": {"type": "string", "pattern": NAME_PATTERN, "description": "A workflow trigger's name (xrm_workflow_triggers)"},
    },
}
TRIGGER_PARAMETERS: dict[str, dict[str, Any]] = {
    "created": {"type": "object", "additionalProperties": False, "properties": {}},
    "updated": {"type": "object", "additionalProperties": False, "properties": {
        "changed": {"type": "array", "items": _FIELD, "maxItems": 50, "description": "any of these fields changed"}}},
    "date": {"type": "object", "additionalProperties": False, "properties": {
        "field": _FIELD, "offset_minutes": {"type": "integer", "minimum": -527040, "maximum": 527040}}},
    "schedule": {"type": "object", "additionalProperties": False, "properties": {
        "every_minutes": {"type": "integer", "minimum": 1, "maximum": 527040},
        "daily_at": {"type": "string", "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]$", "description": "HH:MM, UTC"}}},
}
"""The parameters of the automations plugin's own triggers (the statemachine plugin declares "transition")."""


def _updated_matches(parameters: Mapping[str, Any], payload: Mapping[str, Any]) -> bool:
    changed = parameters.get("changed")
    return not changed or bool(set(changed) & set((payload.get("changes") or {}).keys()))


def builtin_triggers() -> list[WorkflowTrigger]:
    """Declared through xrm_workflow_triggers like any plugin's; created and updated are fired by RecordService's
    outbox events, date and schedule have no topic: the dispatcher scans for the records that are due."""
    return [
        WorkflowTrigger("created", {"en": "Record created", "de": "Datensatz angelegt"}, "a record was created",
                        topics=["record.created"], parameters=TRIGGER_PARAMETERS["created"]),
        WorkflowTrigger("updated", {"en": "Record updated", "de": "Datensatz geändert"}, "optionally: only when given fields changed",
                        topics=["record.updated"], parameters=TRIGGER_PARAMETERS["updated"], match=_updated_matches),
        WorkflowTrigger("date", {"en": "Date reached", "de": "Datum erreicht"}, "a date or datetime field (plus an offset) is reached",
                        parameters=TRIGGER_PARAMETERS["date"]),
        WorkflowTrigger("schedule", {"en": "Schedule", "de": "Zeitplan"},
                        "every N minutes or daily at HH:MM (UTC), for records matching the condition", parameters=TRIGGER_PARAMETERS["schedule"]),
    ]


def workflow_triggers() -> dict[str, WorkflowTrigger]:
    """Every trigger an automation may use, by name: the built-ins' and the plugins' (xrm_workflow_triggers)."""
    return get_plugin_manager().workflow_triggers()


ACTION_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["type"], "properties": {
        "type": {"type": "string", "pattern": NAME_PATTERN},
        "max_attempts": {"type": "integer", "minimum": 1, "maximum": 50},
        "values": {"type": "object", "description": "set_fields, create_related: field values (text may use {{ record.field }})"},
        "entity": _FIELD, "link_field": _FIELD,
        "team": {"type": "string", "minLength": 1, "maxLength": 63, "pattern": "^[^\\u0000]*$"},
        "to": _TEXT, "subject": _TEXT, "body": _TEXT,
        "to_owner": {"type": "boolean", "description": "send_email, notify: to the record's owner (the user, or each member of the team)"},
        "title": _TEXT,
        "users": {"type": "array", "maxItems": 50, "items": {"type": "string", "minLength": 1, "maxLength": 63, "pattern": "^[^\\u0000]*$"},
                  "description": "notify: these users (by name)"},
        "url": {"type": "string", "maxLength": 2000, "pattern": "^https?://[^\\s\\u0000]+$"},
        "timeout_seconds": {"type": "number", "minimum": 0.1, "maximum": 60},
        "parameters": {"type": "object", "description": "A plugin action's parameters"},
        "save": {"type": "object", "additionalProperties": _FIELD, "description": "Plugin action: result key -> field of the record"},
    },
}
_AUTOMATION_PROPERTIES: dict[str, Any] = {
    "name": {"type": "string", "pattern": NAME_PATTERN},
    "trigger": TRIGGER_SCHEMA,
    "condition": CONDITION_SCHEMA,
    "actions": {"type": "array", "minItems": 1, "maxItems": 20, "items": ACTION_SCHEMA},
    "run_as": {"type": "string", "minLength": 1, "maxLength": 63, "pattern": "^[^\\u0000]*$",
               "description": "The user whose permissions the actions have; \"@owner\": each record's owner"},
    "enabled": {"type": "boolean"},
}
AUTOMATION_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["name", "trigger", "actions", "run_as"], "additionalProperties": False,
    "properties": _AUTOMATION_PROPERTIES,
}
AUTOMATION_INPUT_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["name", "entity", "trigger", "actions", "run_as"], "additionalProperties": False,
    "properties": {**_AUTOMATION_PROPERTIES, "entity": {"type": "string", "pattern": NAME_PATTERN}},
}
_INPUT = Draft202012Validator(AUTOMATION_INPUT_SCHEMA)
_ACTION_REQUIRED = {
    "set_fields": ("values",), "create_related": ("entity", "values"), "assign_owner": ("team",),
    "send_email": ("subject", "body"), "webhook": ("url",), "notify": ("title",),
}
_ACTION_KEYS = {
    "set_fields": {"values"}, "create_related": {"entity", "values", "link_field"}, "assign_owner": {"team"},
    "send_email": {"to", "to_owner", "subject", "body"}, "webhook": {"url", "timeout_seconds"},
    "notify": {"title", "body", "to_owner", "users"},
}
_RELATIVE = re.compile(r"^(now|today)(?:([+-])(\d{1,6})([mhdw]))?$")

TEMPLATES = SandboxedEnvironment(autoescape=False)


@dataclass(frozen=True)
class Automation:
    key: str
    """"db:<name>" (created by an admin) or "def:<entity>:<name>" (in a definition)."""
    name: str
    entity: str
    trigger: Mapping[str, Any]
    actions: Sequence[Mapping[str, Any]]
    run_as: str
    condition: Sequence[Mapping[str, Any]] = field(default_factory=list)
    enabled: bool = True
    source: str = "admin"

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "name": self.name, "entity": self.entity, "trigger": dict(self.trigger),
                "condition": list(self.condition), "actions": list(self.actions), "run_as": self.run_as,
                "enabled": self.enabled, "source": self.source}


def render(template: Any, context: Mapping[str, Any]) -> Any:
    """Text values with {{ }} rendered in the Jinja2 sandbox (other values as they are)."""
    if isinstance(template, str) and ("{{" in template or "{%" in template):
        return TEMPLATES.from_string(template).render(**context)
    if isinstance(template, Mapping):
        return {k: render(v, context) for k, v in template.items()}
    return template


def resolve_relative(value: Any, now: dt.datetime) -> Any:
    """"now", "today", "now-7d", "today+1w" -> an ISO datetime or date; anything else unchanged."""
    if isinstance(value, list):
        return [resolve_relative(v, now) for v in value]
    if not isinstance(value, str):
        return value
    match = _RELATIVE.match(value.strip())
    if not match:
        return value
    base, sign, amount, unit = match.groups()
    delta = dt.timedelta()
    if amount:
        delta = {"m": dt.timedelta(minutes=1), "h": dt.timedelta(hours=1), "d": dt.timedelta(days=1), "w": dt.timedelta(weeks=1)}[unit] * int(amount)
        delta = -delta if sign == "-" else delta
    moment = now + delta
    return moment.date().isoformat() if base == "today" else moment.isoformat()


def conditions_of(condition: Sequence[Mapping[str, Any]], now: dt.datetime) -> list[Condition]:
    return [Condition(c["field"], c.get("op", "eq"), resolve_relative(c.get("value"), now)) for c in condition]


def check_automation(spec: Mapping[str, Any], entity: Any, *, at: str = "", registry: Any = None,
                     action_names: frozenset[str] = frozenset()) -> list[Problem]:
    """Problems of one automation beyond its JSON Schema, for the entity (a CompiledEntity or EntityDefinition)."""
    problems: list[Problem] = []
    fields = getattr(entity, "fields", {})
    trigger = spec.get("trigger", {})
    on = trigger.get("on")
    problems += _check_trigger(trigger, at)
    for index, name in enumerate(trigger.get("changed", [])):
        if name not in fields:
            problems.append(Problem(f"{at}/trigger/changed/{index}", f"{name!r} is not a field of {entity.name}"))
    if on == "date":
        name = trigger.get("field")
        if name is None:
            problems.append(Problem(f"{at}/trigger", "a date trigger needs 'field' (a date or datetime field)"))
        elif name not in fields:
            problems.append(Problem(f"{at}/trigger/field", f"{name!r} is not a field of {entity.name}"))
        elif fields[name].type.name not in ("date", "datetime"):
            problems.append(Problem(f"{at}/trigger/field", f"{name!r} is not a date or datetime field"))
    if on == "schedule" and ("every_minutes" in trigger) == ("daily_at" in trigger):
        problems.append(Problem(f"{at}/trigger", "a schedule needs exactly one of 'every_minutes' or 'daily_at'"))
    condition = spec.get("condition") or []
    if condition and hasattr(entity, "fields") and hasattr(entity, "name"):
        checked: list[Problem] = []
        where_sql(entity, conditions_of(condition, dt.datetime.now(dt.timezone.utc)), [], checked)
        problems += [Problem(f"{at}/condition" + p.pointer.removeprefix("/where"), p.message) for p in checked]
    for index, action in enumerate(spec.get("actions", [])):
        problems += _check_action(action, entity, f"{at}/actions/{index}", registry, action_names)
    return problems


def _check_trigger(trigger: Mapping[str, Any], at: str) -> list[Problem]:
    """The trigger is declared (by this or another plugin) and its parameters fit the declaration's JSON Schema."""
    triggers = workflow_triggers()
    on = trigger.get("on")
    declared = triggers.get(on) if isinstance(on, str) else None
    if declared is None:
        return [Problem(f"{at}/trigger/on", f"unknown trigger {on!r}; known: {', '.join(sorted(triggers))}")]
    schema = dict(declared.parameters or {"type": "object"})
    known = schema.get("properties") or {}
    parameters = {key: value for key, value in trigger.items() if key != "on"}
    problems = []
    if schema.pop("additionalProperties", False) is False:
        # Named here rather than by jsonschema, so each unknown key gets its own pointer and message.
        problems += [Problem(f"{at}/trigger/{key}", f"does not apply to the trigger {on!r}") for key in parameters if key not in known]
        parameters = {key: value for key, value in parameters.items() if key in known}
    for error in sorted(Draft202012Validator(schema).iter_errors(parameters), key=lambda e: list(e.absolute_path)):
        problems.append(Problem(f"{at}/trigger" + "".join(f"/{p}" for p in error.absolute_path), error.message))
    return problems


def _check_action(action: Mapping[str, Any], entity: Any, at: str, registry: Any, action_names: frozenset[str]) -> list[Problem]:
    problems: list[Problem] = []
    kind = action.get("type")
    fields = getattr(entity, "fields", {})
    if kind in BUILTIN_ACTIONS:
        for key in _ACTION_REQUIRED[kind]:
            if key not in action:
                problems.append(Problem(at, f"the action {kind} needs {key!r}"))
        for key in action:
            if key not in _ACTION_KEYS[kind] | {"type", "max_attempts"}:
                problems.append(Problem(f"{at}/{key}", f"does not apply to the action {kind}"))
    elif action_names and kind not in action_names:
        known = ", ".join(sorted(set(BUILTIN_ACTIONS) | action_names))
        problems.append(Problem(f"{at}/type", f"unknown action {kind!r}; known: {known}"))
    else:
        for key in action:
            if key not in ("type", "max_attempts", "parameters", "save"):
                problems.append(Problem(f"{at}/{key}", "does not apply to a plugin action (use 'parameters' and 'save')"))
        for result_key, name in (action.get("save") or {}).items():
            if name not in fields:
                problems.append(Problem(f"{at}/save/{result_key}", f"{name!r} is not a field of {entity.name}"))
    if kind == "send_email" and "to" not in action and not action.get("to_owner"):
        problems.append(Problem(at, "the action send_email needs 'to' or \"to_owner\": true"))
    if kind == "set_fields":
        for name in action.get("values") or {}:
            if name not in fields:
                problems.append(Problem(f"{at}/values/{name}", f"{name!r} is not a field of {entity.name}"))
    if kind == "create_related" and registry is not None:
        target = action.get("entity")
        if target not in registry:
            problems.append(Problem(f"{at}/entity", f"no entity named {target!r}"))
        else:
            target_fields = registry.get(target).fields
            for name in action.get("values") or {}:
                if name not in target_fields:
                    problems.append(Problem(f"{at}/values/{name}", f"{name!r} is not a field of {target}"))
            link = action.get("link_field")
            if link is not None and (link not in target_fields or target_fields[link].references != entity.name):
                problems.append(Problem(f"{at}/link_field", f"{link!r} is not a field of {target} referencing {entity.name}"))
    for key in ("to", "subject", "body", "values", "url", "title"):
        for text in _texts(action.get(key)):
            try:
                TEMPLATES.parse(text)
            except TemplateSyntaxError as error:
                problems.append(Problem(f"{at}/{key}", f"template error: {error.message}"))
    return problems


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [v for v in value.values() if isinstance(v, str)]
    return []


def validate_input(body: Any, registry: Any, action_names: frozenset[str]) -> dict[str, Any]:
    """An admin's automation (API, UI): the JSON Schema, then the checks against the entity; 422 with pointers."""
    errors = sorted(_INPUT.iter_errors(body), key=lambda e: list(e.absolute_path))
    if errors:
        raise ValidationFailed("automation", [Problem("".join(f"/{p}" for p in e.absolute_path), e.message) for e in errors])
    if body["entity"] not in registry:
        raise ValidationFailed("automation", [Problem("/entity", f"no entity named {body['entity']!r}")])
    problems = check_automation(body, registry.get(body["entity"]), registry=registry, action_names=action_names)
    if problems:
        raise ValidationFailed("automation", problems)
    return dict(body)


def definition_automations(registry: Any) -> list[Automation]:
    found = []
    for entity in registry:
        for spec in entity.definition.xrm.get("automations", []) or []:
            found.append(Automation(
                key=f"def:{entity.name}:{spec['name']}", name=spec["name"], entity=entity.name, trigger=spec["trigger"],
                actions=spec["actions"], run_as=spec["run_as"], condition=spec.get("condition") or [],
                enabled=spec.get("enabled", True), source="definition",
            ))
    return found


def automation_of_row(row: Mapping[str, Any]) -> Automation:
    return Automation(key=f"db:{row['name']}", name=row["name"], entity=row["entity"], trigger=row["trigger"],
                      actions=row["actions"], run_as=row["run_as"], condition=row["condition"] or [],
                      enabled=row["enabled"], source="admin")


async def load_automations(connection: Any, registry: Any) -> list[Automation]:
    """Every automation: those in definitions, then those admins created (xrm_sys.automation)."""
    rows = await connection.fetch("SELECT name, entity, trigger, condition, actions, run_as, enabled FROM xrm_sys.automation ORDER BY name")
    return definition_automations(registry) + [automation_of_row(r) for r in rows]


def new_id() -> uuid.UUID:
    return uuid.uuid4()
