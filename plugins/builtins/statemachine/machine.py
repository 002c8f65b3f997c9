"""The state machine of one entity: its configuration (x-xrm `state_machine`), its checks and its rules.

Pure logic, no I/O: the definition check (`check`), which transitions a
principal may take from a record's state (`options`), and the decision on a
write (`decide`), used by the write hooks, the API and the web UI alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from xrm.errors import Problem, pointer
from xrm.records import query

__all__ = ["ANY", "KEYWORD", "Blocked", "Decision", "Machine", "Transition", "VOCABULARY", "check", "machine_of"]

KEYWORD = "state_machine"
ANY = "*"
"""In `from`: any state, and no state yet."""

_LABELS = {
    "type": "object", "required": ["en"], "additionalProperties": False,
    "properties": {"en": {"type": "string", "minLength": 1, "maxLength": 200}, "de": {"type": "string", "minLength": 1, "maxLength": 200}},
}
_NAMES = {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 100}, "uniqueItems": True}
_STATES = {"type": ["string", "array"], "minLength": 1, "minItems": 1, "items": {"type": "string", "minLength": 1}, "uniqueItems": True}

VOCABULARY: dict[str, Any] = {
    "type": "object",
    "required": ["field", "transitions"],
    "additionalProperties": False,
    "properties": {
        "field": {"type": "string", "description": "A select field: its options are the states"},
        "initial": {**_STATES, "description": "The state(s) a record may be created in (default: every state)"},
        "transitions": {
            "type": "array", "minItems": 1, "maxItems": 500,
            "items": {
                "type": "object",
                "required": ["name", "from", "to"],
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$", "maxLength": 48},
                    "from": {**_STATES, "description": 'State(s) the transition starts from; "*" for any'},
                    "to": {"type": "string", "minLength": 1},
                    "label": _LABELS,
                    "description": {"type": "object", "additionalProperties": False,
                                    "properties": {"en": {"type": "string", "maxLength": 2000}, "de": {"type": "string", "maxLength": 2000}}},
                    "roles": {**_NAMES, "minItems": 1, "description": "Guard: the principal holds one of these roles"},
                    "when": {
                        "type": "array", "maxItems": 20,
                        "items": {
                            "type": "object", "required": ["field", "op"], "additionalProperties": False,
                            "properties": {"field": {"type": "string"}, "op": {"enum": list(query.OPERATORS)}, "value": {}},
                        },
                    },
                    "requires": {**_NAMES, "description": "Fields that must have a value to take the transition"},
                },
            },
        },
        "required_in_state": {"type": "object", "additionalProperties": _NAMES},
    },
}


@dataclass(frozen=True)
class Condition:
    field: str
    op: str
    value: Any
    target: query.Target

    def holds(self, record: Mapping[str, Any]) -> bool:
        return _holds(self.target, self.op, self.value, _value_of(self.target, record))

    def describe(self) -> str:
        if self.op == "is_null":
            return f"{self.field} is {'empty' if self.value else 'filled'}"
        shown = ", ".join(map(str, self.value)) if isinstance(self.value, list) else self.value
        return f"{self.field} {self.op} {shown}"


@dataclass(frozen=True)
class Transition:
    name: str
    sources: tuple[str, ...]
    target: str
    label: Mapping[str, str]
    roles: tuple[str, ...] = ()
    when: tuple[Condition, ...] = ()
    requires: tuple[str, ...] = ()
    description: Mapping[str, str] = field(default_factory=dict)

    def leaves(self, state: Any) -> bool:
        return ANY in self.sources or state in self.sources

    def title(self, language: str) -> str:
        return self.label.get(language) or self.label.get("en") or self.name.replace("_", " ").capitalize()

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "from": list(self.sources), "to": self.target, "label": dict(self.label),
                "roles": list(self.roles), "requires": list(self.requires),
                "when": [{"field": c.field, "op": c.op, "value": c.value} for c in self.when]}


@dataclass(frozen=True)
class Blocked:
    """Why a transition cannot be taken now: kind "role", "condition" or "missing" (with the fields)."""

    kind: str
    message: str
    fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class Decision:
    """What a write does to the state: nothing, a transition (with its name), or a refusal (problems)."""

    transition: Transition | None = None
    source: Any = None
    problems: tuple[Problem, ...] = ()


@dataclass(frozen=True)
class Machine:
    entity: str
    field: str
    states: tuple[str, ...]
    initial: tuple[str, ...]
    transitions: tuple[Transition, ...]
    required_in_state: Mapping[str, tuple[str, ...]]

    def transition(self, name: str) -> Transition | None:
        return next((t for t in self.transitions if t.name == name), None)

    def state_label(self, definition: Any, state: Any, language: str) -> str:
        if state is None:
            return "—"
        labels = definition.fields[self.field].xrm.get("option_labels", {}).get(state) or {}
        return labels.get(language) or labels.get("en") or str(state)

    # -- guards --------------------------------------------------------------
    def blocked(self, transition: Transition, record: Mapping[str, Any], roles: Iterable[str]) -> list[Blocked]:
        """Why `transition` cannot be taken with the record as it would be (empty: it can)."""
        reasons = []
        if transition.roles and not set(roles) & set(transition.roles):
            reasons.append(Blocked("role", f"needs the role {' or '.join(transition.roles)}"))
        for condition in transition.when:
            if not condition.holds(record):
                reasons.append(Blocked("condition", f"needs {condition.describe()}", (condition.field.split(".")[0],)))
        missing = self.missing(transition, record)
        if missing:
            reasons.append(Blocked("missing", f"needs a value in {', '.join(missing)}", tuple(missing)))
        return reasons

    def missing(self, transition: Transition, record: Mapping[str, Any]) -> list[str]:
        """Fields the transition requires, or its target state requires, that are empty in the record."""
        needed = list(dict.fromkeys([*transition.requires, *self.required_in_state.get(transition.target, ())]))
        return [name for name in needed if _empty(record.get(name))]

    def options(self, record: Mapping[str, Any], roles: Iterable[str]) -> list[tuple[Transition, list[Blocked]]]:
        """Every transition leaving the record's current state, with why it is blocked now (empty list: available)."""
        state = record.get(self.field)
        found = []
        for transition in self.transitions:
            if not transition.leaves(state) or transition.target == state:
                continue
            reasons = self.blocked(transition, record, roles)
            # A condition on a field the transition asks for (and that is empty now) is checked when it is taken.
            asked = {name for r in reasons if r.kind == "missing" for name in r.fields}
            reasons = [r for r in reasons if not (r.kind == "condition" and set(r.fields) <= asked)]
            found.append((transition, reasons))
        return found

    # -- writes --------------------------------------------------------------
    def decide(
        self, action: str, record: Mapping[str, Any], previous: Mapping[str, Any] | None, roles: Iterable[str],
        requested: str | None = None,
    ) -> Decision:
        """The state rules for one write: the transition it takes, or the problems that refuse it."""
        at = pointer(self.field)
        state = record.get(self.field)
        roles = frozenset(roles)
        if action == "create":
            if state is None:
                return Decision(problems=(Problem(at, f"needs a state; a new record starts in {_listed(self.initial)}"),))
            if state not in self.initial:
                return Decision(problems=(Problem(at, f"a new record cannot start in {state!r}; it starts in {_listed(self.initial)}"),))
            return Decision(problems=tuple(self._required_problems(state, record, None)))
        if action != "update" or previous is None:
            return Decision()
        source = previous.get(self.field)
        if requested is not None and state != source:
            # The named transition covers the write that changes the state, not another update of the
            # same record in the same task (e.g. a plugin's follow-up that leaves the state as it is).
            return self._requested(requested, record, source, roles)
        if state == source:
            return Decision(problems=tuple(self._required_problems(state, record, previous)))
        if state is None:
            return Decision(problems=(Problem(at, f"cannot be emptied: a record always has a state ({self._from_here(source, record, roles)})"),))
        if source is None and state in self.initial:
            return Decision(problems=tuple(self._required_problems(state, record, None)))  # a record from before the machine
        candidates = [t for t in self.transitions if t.leaves(source) and t.target == state]
        if not candidates:
            return Decision(problems=(Problem(at, f"cannot change from {_shown(source)} to {state!r}: no transition leads there "
                                                  f"({self._from_here(source, record, roles)})"),))
        failures: list[tuple[Transition, list[Blocked]]] = []
        for transition in candidates:
            reasons = self.blocked(transition, record, roles)
            if not reasons:
                return Decision(transition, source)
            failures.append((transition, reasons))
        return Decision(problems=tuple(self._refusal(failures, record, source, roles)))

    def _requested(self, name: str, record: Mapping[str, Any], source: Any, roles: frozenset[str]) -> Decision:
        at = pointer(self.field)
        transition = self.transition(name)
        if transition is None:
            return Decision(problems=(Problem(at, f"there is no transition {name!r} ({self._from_here(source, record, roles)})"),))
        if not transition.leaves(source):
            return Decision(problems=(Problem(at, f"transition {name!r} does not start from {_shown(source)} "
                                                  f"({self._from_here(source, record, roles)})"),))
        if source == transition.target:
            return Decision(problems=(Problem(at, f"is already {source!r}: transition {name!r} leads there"),))
        if record.get(self.field) != transition.target:
            return Decision(problems=(Problem(at, f"transition {name!r} leads to {transition.target!r}, not {record.get(self.field)!r}"),))
        reasons = self.blocked(transition, record, roles)
        if reasons:
            return Decision(problems=tuple(self._refusal([(transition, reasons)], record, source, roles)))
        return Decision(transition, source)

    def _refusal(self, failures: list[tuple[Transition, list[Blocked]]], record: Mapping[str, Any], source: Any,
                 roles: frozenset[str]) -> list[Problem]:
        """The problems of blocked transitions: missing fields at their own pointers, the rest at the state field."""
        problems: list[Problem] = []
        # Only missing values block the first candidate whose role and conditions pass: ask for those fields.
        for transition, reasons in failures:
            if all(r.kind == "missing" for r in reasons):
                return [Problem(pointer(name), f"is required for transition {transition.name!r} (to {transition.target!r})")
                        for r in reasons for name in r.fields]
        transition, reasons = failures[0]
        text = "; ".join(r.message for r in reasons)
        problems.append(Problem(pointer(self.field), f"transition {transition.name!r} to {transition.target!r} is not allowed: {text} "
                                                     f"({self._from_here(source, record, roles)})"))
        return problems

    def _required_problems(self, state: Any, record: Mapping[str, Any], previous: Mapping[str, Any] | None) -> list[Problem]:
        """Fields required in `state` that are empty; when staying in a state only the ones this write empties."""
        problems = []
        for name in self.required_in_state.get(state, ()):
            if _empty(record.get(name)) and (previous is None or not _empty(previous.get(name))):
                problems.append(Problem(pointer(name), f"is required in state {state!r}"))
        return problems

    def _from_here(self, source: Any, record: Mapping[str, Any], roles: frozenset[str]) -> str:
        """"possible from 'x': a (→ b), c (→ d)" — the transitions whose role guard the principal passes."""
        possible = [f"{t.name} (→ {t.target})" for t in self.transitions
                    if t.leaves(source) and t.target != source and (not t.roles or roles & set(t.roles))]
        if not possible:
            return f"no transition is possible from {_shown(source)} for you"
        return f"possible from {_shown(source)}: {', '.join(possible)}"


# -- building and checking ------------------------------------------------------
def machine_of(definition: Any) -> Machine | None:
    """The entity's state machine, or None; assumes `check` passed (the definition was accepted)."""
    config = definition.xrm.get(KEYWORD)
    if not config:
        return None
    cached = _CACHE.get(id(definition))
    if cached is not None and cached[0] is definition:
        return cached[1]
    machine = _build(definition, config, [])
    if len(_CACHE) > 256:
        _CACHE.clear()
    _CACHE[id(definition)] = (definition, machine)
    return machine


_CACHE: dict[int, tuple[Any, Machine]] = {}


def check(definition: Any) -> list[Problem]:
    """Problems of the entity's `state_machine` (pointers into the definition)."""
    config = definition.xrm.get(KEYWORD)
    if not config:
        return []
    problems: list[Problem] = []
    _build(definition, config, problems)
    return problems


def _build(definition: Any, config: Mapping[str, Any], problems: list[Problem]) -> Machine:
    base = ("x-xrm", KEYWORD)
    fields = definition.fields
    name = config["field"]
    f = fields.get(name)
    states: tuple[str, ...] = ()
    if f is None:
        problems.append(Problem(pointer(*base, "field"), f"{name!r} is not a field of this entity"))
    elif f.type.name != "select":
        problems.append(Problem(pointer(*base, "field"), f"{name!r} is {_a(f.type.name)} field; the state field must be a select (its options are the states)"))
    else:
        states = tuple(f.schema["enum"])

    def known_state(value: str, *at: Any, allow_any: bool = False) -> None:
        if states and value not in states and not (allow_any and value == ANY):
            problems.append(Problem(pointer(*base, *at), f"{value!r} is not a state: the states are the options of {name!r}: {', '.join(states)}"))

    def state_list(value: Any, *at: Any, allow_any: bool = False) -> tuple[str, ...]:
        if isinstance(value, str):
            known_state(value, *at, allow_any=allow_any)
            return (value,)
        for index, item in enumerate(value):
            known_state(item, *at, index, allow_any=allow_any)
        return tuple(value)

    def field_list(names: Sequence[str], *at: Any) -> tuple[str, ...]:
        for index, item in enumerate(names):
            if item not in fields:
                problems.append(Problem(pointer(*base, *at, index), f"{item!r} is not a field of this entity"))
            elif item == name:
                problems.append(Problem(pointer(*base, *at, index), "the state field itself cannot be required here"))
        return tuple(names)

    initial = state_list(config["initial"], "initial") if "initial" in config else states
    if f is not None and f.has_default and f.default not in initial and states:
        problems.append(Problem(pointer("properties", name, "default"),
                                f"the default {f.default!r} must be an initial state of the state machine ({_listed(initial)})"))
    transitions: list[Transition] = []
    seen: set[str] = set()
    for index, item in enumerate(config["transitions"]):
        at = ("transitions", index)
        if item["name"] in seen:
            problems.append(Problem(pointer(*base, *at, "name"), f"transition name {item['name']!r} is used twice"))
        seen.add(item["name"])
        sources = state_list(item["from"], *at, "from", allow_any=True)
        known_state(item["to"], *at, "to")
        if item["to"] in sources:
            problems.append(Problem(pointer(*base, *at, "to"), f"a transition must lead to another state than it starts from ({item['to']!r})"))
        conditions = []
        for c_index, spec in enumerate(item.get("when", [])):
            condition = _condition(definition, spec, pointer(*base, *at, "when", c_index), problems)
            if condition is not None:
                conditions.append(condition)
        transitions.append(Transition(
            name=item["name"], sources=sources, target=item["to"], label=item.get("label", {}),
            roles=tuple(item.get("roles", ())), when=tuple(conditions),
            requires=field_list(item.get("requires", []), *at, "requires"), description=item.get("description", {}),
        ))
    required: dict[str, tuple[str, ...]] = {}
    for state, names in config.get("required_in_state", {}).items():
        known_state(state, "required_in_state", state)
        required[state] = field_list(names, "required_in_state", state)
    return Machine(definition.name, name, states, initial, tuple(transitions), required)


def _condition(definition: Any, spec: Mapping[str, Any], at: str, problems: list[Problem]) -> Condition | None:
    """A `when` entry checked with the list filters' rules (xrm.records.query): field, operator and value."""
    field_name = spec["field"]
    if field_name.split(".")[0] not in definition.fields:
        problems.append(Problem(at + "/field", f"{field_name!r} is not a field of this entity"))
        return None
    if "value" not in spec and spec["op"] != "is_null":
        problems.append(Problem(at + "/value", f"operator {spec['op']!r} needs a value"))
        return None
    try:
        target, op, value = query._compiled(definition, query.Condition(field_name, spec["op"], spec.get("value", True)))
    except query._Refused as refused:
        problems.append(Problem(at, str(refused)))
        return None
    return Condition(field_name, op, spec.get("value", True) if op == "is_null" else spec["value"], target)


# -- evaluating conditions on a record (the list filters' semantics, in Python) ---------
def _empty(value: Any) -> bool:
    if isinstance(value, Mapping) and "amount" in value:  # a currency value without an amount
        return value.get("amount") is None
    return value is None or value == "" or value == [] or value == {}


def _value_of(target: query.Target, record: Mapping[str, Any]) -> Any:
    base, dot, _ = target.name.partition(".")
    value = record.get(base)
    if isinstance(value, Mapping) and target.type_name in ("currency", "currency code"):
        return value.get("currency" if dot else "amount")
    return value


def _holds(target: query.Target, op: str, expected: Any, value: Any) -> bool:
    empty = _empty(value)
    if op == "is_null":
        return empty == bool(expected)
    if target.kind == "multiselect":
        chosen = set(value or [])
        if expected is None:
            return (not chosen) if op == "eq" else bool(chosen)
        if op == "contains":
            return set(expected) <= chosen
        same = chosen == set(expected)
        return same if op == "eq" else not same
    if expected is None:  # eq / ne null
        return empty if op == "eq" else not empty
    if empty:
        return op == "ne"  # NULL is distinct from any value; comparisons with NULL fail
    try:
        actual = query._scalar(target, value) if op not in ("contains", "starts_with") else str(value)
    except query._Refused:
        return False
    if op == "eq":
        return actual == _typed(target, expected)
    if op == "ne":
        return actual != _typed(target, expected)
    if op == "in":
        return actual in [_typed(target, item) for item in expected]
    if op == "contains":
        return str(expected).casefold() in actual.casefold()
    if op == "starts_with":
        return actual.casefold().startswith(str(expected).casefold())
    other = _typed(target, expected)
    return {"lt": actual < other, "lte": actual <= other, "gt": actual > other, "gte": actual >= other}[op]


def _typed(target: query.Target, value: Any) -> Any:
    return query._scalar(target, value)


def _a(type_name: str) -> str:
    return ("an " if type_name[0] in "aeiou" else "a ") + type_name


def _shown(state: Any) -> str:
    return "no state" if state is None else repr(state)


def _listed(states: Sequence[str]) -> str:
    return " or ".join(repr(s) for s in states)
