"""The plugin manager: finds plugins through the `xrm.plugins` entry-point group and calls their hooks.

Built-in plugins are declared in xrm's own pyproject.toml under the same group
as third-party ones, so the built-ins prove the public path. Discovery is lazy
(the first caller of `get_plugin_manager()` pays for it, once per process):
`xrm --help` of a built-in command loads no plugin.

Environment (read at discovery):
- ``XRM_PLUGINS``: comma-separated names; only these third-party plugins load
  ("" loads none). A name is an entry-point name or a distribution name.
- ``XRM_DISABLE_PLUGINS``: comma-separated names that never load.
- ``XRM_TRACE_PLUGINS=1``: print every hook call to stderr.
Built-in plugins (distribution ``xrm``) always load: the core needs them.
"""

from __future__ import annotations

import functools

import inspect
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import pluggy

from . import hookspecs
from .errors import XrmError
from .hookspecs import hookimpl

if TYPE_CHECKING:
    import click

    from .schema.field_types import FieldType

__all__ = [
    "ENTRY_POINT_GROUP",
    "MenuEntry",
    "Panel",
    "PluginError",
    "PluginInfo",
    "PluginManager",
    "RelationshipType",
    "WorkflowAction",
    "WorkflowTrigger",
    "await_me_maybe",
    "Expansion",
    "ImportTarget",
    "call_write_hook",
    "get_plugin_manager",
    "hookimpl",
    "reset_plugin_manager",
]

ENTRY_POINT_GROUP = "xrm.plugins"
PROJECT = "xrm"
BUILTIN_DISTRIBUTION = "xrm"
BUILTIN_PLUGINS = {
    "core": "xrm.core_plugin",
    "automations": "xrm.builtins.automations",
    "relationships": "xrm.builtins.relationships",
    "statemachine": "xrm.builtins.statemachine",
    "crm": "xrm.builtins.crm",
    "assistant": "xrm.assistant.plugin",
}
"""The built-ins as declared in pyproject.toml; used only when xrm runs without its metadata (not installed)."""

_FIELD_TYPE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_JSON_TYPES = frozenset({"string", "integer", "number", "boolean", "object", "array"})


class PluginError(XrmError):
    """A plugin cannot be loaded or contradicts another one."""

    title = "Plugin error"


# -- what hooks return (for features that land later, the contract is fixed now) --
@dataclass(frozen=True)
class WorkflowAction:
    """A step a workflow can run (xrm_workflow_actions)."""

    name: str
    """Unique identifier, e.g. "send_reminder"."""
    label: Mapping[str, str]
    """{"en": ..., "de": ...}"""
    run: Callable[..., Any]
    """run(record=..., parameters=..., principal=...) -> changes (dict) or None; may be a coroutine function."""
    parameters: Mapping[str, Any] = field(default_factory=dict)
    """JSON Schema of the step's parameters."""
    description: str = ""


@dataclass(frozen=True)
class WorkflowTrigger:
    """An event a workflow can start on (xrm_workflow_triggers).

    The automations engine acts on it the same way for built-in and plugin triggers: an
    outbox event (xrm.events.emit) whose topic is one of `topics`, on an automation's entity,
    starts that automation when `match(parameters, payload)` holds.
    """

    name: str
    """Unique identifier, the automation's ``trigger.on``, e.g. "inbound_email"."""
    label: Mapping[str, str]
    """{"en": ..., "de": ...}"""
    description: str = ""
    topics: Sequence[str] = ()
    """Outbox topics that fire it (e.g. ["inbound_email.received"]). Empty: not fired by events
    (the built-in date and schedule triggers, which the engine scans for)."""
    parameters: Mapping[str, Any] = field(default_factory=dict)
    """JSON Schema of its parameters: the keys of an automation's ``trigger`` object besides ``on``
    (checked when the automation is saved, problems at ``/trigger/...``). Keys its ``properties``
    do not name are refused unless it says ``"additionalProperties": true``."""
    match: Callable[[Mapping[str, Any], Mapping[str, Any]], bool] | None = None
    """match(parameters, payload) -> whether an event of its topics starts this automation
    (None: every event does). Called by the dispatcher; an exception becomes a dead job naming it."""


@dataclass(frozen=True)
class RelationshipType:
    """A kind of link between records (xrm_relationship_types); the relationships plugin makes it a connection role."""

    name: str
    label: Mapping[str, str]
    source: str | None = None
    """Entity the link starts at (None: any)."""
    target: str | None = None
    inverse_label: Mapping[str, str] | None = None
    description: str = ""


@dataclass(frozen=True)
class Expansion:
    """Something `?expand=<name>` adds to every record of a page, besides reference fields (xrm_record_expansions)."""

    name: str
    """The expand name; the value lands in each record as "<name>_expanded"."""
    load: Callable[..., Any]
    """load(service=RecordService of the page's entity and principal, ids=[record ids of the page]) -> {id: value}
    (may be a coroutine function). One call per page, so it must read all ids at once, never per record."""
    description: str = ""


@dataclass(frozen=True)
class ImportTarget:
    """Something `xrm import NAME FILE` (and the API, and the wizard) can import that is not an entity (xrm_import_targets)."""

    name: str
    """What takes the place of the entity name, e.g. "_connections" or "project.members"."""
    label: Mapping[str, str]
    """{"en": ..., "de": ...}, shown by the import wizard."""
    columns: Mapping[str, Mapping[str, str]]
    """The columns the file may have: name -> label {"en", "de"} (the wizard's mapping choices)."""
    run: Callable[..., Any]
    """run(db=, registry=, source=, principal=, policy=, options=ImportOptions) -> ImportReport (may be a coroutine function)."""
    entity: str | None = None
    """The entity whose import page offers it (None: every entity's)."""


@dataclass(frozen=True)
class Panel:
    """A box on a record's detail page (xrm_detail_panels)."""

    title: str
    html: str
    """Escaped by the plugin (markupsafe.Markup or escape())."""
    order: int = 100


@dataclass(frozen=True)
class MenuEntry:
    """A link in the web UI's main menu (xrm_menu_entries)."""

    label: str
    href: str
    order: int = 100


@dataclass(frozen=True)
class PluginInfo:
    """One loaded plugin, as `xrm plugins list` shows it."""

    name: str
    """The entry-point name (the plugin's name in the manager)."""
    module: str
    """What the entry point points to, e.g. "xrm_example"."""
    distribution: str | None
    version: str | None
    builtin: bool


class PluginManager(pluggy.PluginManager):
    """pluggy's manager plus what xrm derives from the plugins (cached until a plugin is (un)registered)."""

    def __init__(self) -> None:
        super().__init__(PROJECT)
        self.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self._derived: dict[str, Any] = {}

    def register(self, plugin: object, name: str | None = None) -> str | None:
        self._derived.clear()
        return super().register(plugin, name)

    def unregister(self, plugin: object | None = None, name: str | None = None) -> Any:
        self._derived.clear()
        removed = super().unregister(plugin, name)
        for key in [k for k in self.infos if self.get_plugin(k) is None]:
            del self.infos[key]
        return removed

    def cached(self, key: str, compute: Callable[[], Any]) -> Any:
        if key not in self._derived:
            self._derived[key] = compute()
        return self._derived[key]

    # -- what the plugins contribute ---------------------------------------------
    def field_types(self) -> dict[str, FieldType]:
        """Every field type by name (built-ins first); a name declared twice is a PluginError naming both."""
        return self.cached("field_types", self._collect_field_types)

    def _collect_field_types(self) -> dict[str, FieldType]:
        from .schema.field_types import FieldType

        types: dict[str, FieldType] = {}
        owners: dict[str, str] = {}
        for plugin_name, result in self.each("xrm_field_types"):
            for item in result or []:
                if not isinstance(item, FieldType):
                    raise PluginError(f"plugin {plugin_name!r}: xrm_field_types returned {item!r}, not a FieldType instance")
                name = getattr(item, "name", None)
                if not isinstance(name, str) or not _FIELD_TYPE_NAME.match(name):
                    raise PluginError(f"plugin {plugin_name!r}: field type name {name!r} must match {_FIELD_TYPE_NAME.pattern}")
                if getattr(item, "json_type", None) not in _JSON_TYPES:
                    raise PluginError(f"plugin {plugin_name!r}: field type {name!r} needs json_type, one of {', '.join(sorted(_JSON_TYPES))}")
                if name in owners:
                    raise PluginError(
                        f"field type {name!r} is declared by two plugins: {owners[name]!r} and {plugin_name!r}; "
                        f"disable one (XRM_DISABLE_PLUGINS)"
                    )
                owners[name] = plugin_name
                types[name] = item
        return types

    def definition_vocabulary(self) -> dict[str, dict[str, Any]]:
        """{"entity": {keyword: schema}, "field": {keyword: schema}} from every plugin (xrm_definition_vocabulary)."""

        def collect() -> dict[str, dict[str, Any]]:
            from .schema.definition import core_keywords

            vocabulary: dict[str, dict[str, Any]] = {"entity": {}, "field": {}}
            owners: dict[tuple[str, str], str] = {}
            for plugin_name, result in self.each("xrm_definition_vocabulary"):
                for level, keywords in (result or {}).items():
                    if level not in vocabulary:
                        raise PluginError(f"plugin {plugin_name!r}: xrm_definition_vocabulary level {level!r} is not entity or field")
                    for keyword, schema in keywords.items():
                        if keyword in core_keywords(level) or (level, keyword) in owners:
                            by = owners.get((level, keyword), "the core")
                            raise PluginError(f"plugin {plugin_name!r}: x-xrm keyword {keyword!r} ({level}) is declared by {by} already")
                        owners[(level, keyword)] = repr(plugin_name)
                        vocabulary[level][keyword] = schema
            return vocabulary

        return self.cached("definition_vocabulary", collect)

    def expansions(self, entity: str, registry: Any) -> dict[str, Expansion]:
        """What plugins offer to `?expand=` on `entity`, by name (the first plugin wins a name)."""
        found: dict[str, Expansion] = {}
        for _, result in self.each("xrm_record_expansions", entity=entity, registry=registry):
            for item in result or []:
                found.setdefault(item.name, item)
        return found

    def import_targets(self, registry: Any) -> dict[str, ImportTarget]:
        """What plugins offer to import besides entities, by name (the first plugin wins a name)."""
        found: dict[str, ImportTarget] = {}
        for _, result in self.each("xrm_import_targets", registry=registry):
            for item in result or []:
                found.setdefault(item.name, item)
        return found

    def workflow_triggers(self) -> dict[str, WorkflowTrigger]:
        """Every workflow trigger by name (xrm_workflow_triggers); a name declared twice is a PluginError naming both."""

        def collect() -> dict[str, WorkflowTrigger]:
            from jsonschema import Draft202012Validator
            from jsonschema.exceptions import SchemaError

            triggers: dict[str, WorkflowTrigger] = {}
            owners: dict[str, str] = {}
            for plugin_name, result in self.each("xrm_workflow_triggers"):
                for trigger in result or []:
                    if not isinstance(trigger, WorkflowTrigger):
                        raise PluginError(f"plugin {plugin_name!r}: xrm_workflow_triggers returned {trigger!r}, not a WorkflowTrigger")
                    try:
                        Draft202012Validator.check_schema(dict(trigger.parameters or {}))
                    except SchemaError as error:
                        raise PluginError(f"plugin {plugin_name!r}: workflow trigger {trigger.name!r} has parameters that are not "
                                          f"a JSON Schema: {error.message}") from None
                    if trigger.name in owners:
                        raise PluginError(f"workflow trigger {trigger.name!r} is declared by two plugins: {owners[trigger.name]!r} "
                                          f"and {plugin_name!r}; disable one (XRM_DISABLE_PLUGINS)")
                    owners[trigger.name] = plugin_name
                    triggers[trigger.name] = trigger
            return triggers

        return self.cached("workflow_triggers", collect)

    def routes(self, hook_name: str) -> list[Any]:
        """Route handlers of xrm_api_routes or xrm_ui_routes, every plugin's."""
        return [handler for _, result in self.each(hook_name) for handler in result or []]

    def entity_definitions(self) -> list[tuple[str, Mapping[str, Any]]]:
        """(source, document) of every definition the plugins ship; source is "plugin <name>"."""
        return [(f"plugin {name}", document) for name, result in self.each("xrm_entity_definitions") for document in result or []]

    def cli_commands(self) -> dict[str, click.Command]:
        """Plugin commands by name (first plugin wins on a clash between plugins)."""

        def collect() -> dict[str, click.Command]:
            commands: dict[str, click.Command] = {}
            for _, result in self.each("xrm_cli_commands"):
                for command in result or []:
                    if command.name and command.name not in commands:
                        commands[command.name] = command
            return commands

        return self.cached("cli_commands", collect)

    def capabilities(self, name: str) -> dict[str, Any]:
        """What the plugin `name` declares (xrm_capabilities), {} if nothing."""
        plugin = self.get_plugin(name)
        for impl in self.hook.xrm_capabilities.get_hookimpls():
            if impl.plugin is plugin:
                return dict(impl.function() or {})
        return {}

    def provides(self, name: str) -> dict[str, list[str]]:
        """What the plugin `name` contributes, by kind, as names (for `xrm plugins list`)."""
        plugin = self.get_plugin(name)
        kinds = {
            "field_types": ("xrm_field_types", lambda item: item.name),
            "entity_definitions": ("xrm_entity_definitions", lambda item: item.get("x-xrm", {}).get("name", "?")),
            "relationship_types": ("xrm_relationship_types", lambda item: item.name),
            "workflow_actions": ("xrm_workflow_actions", lambda item: item.name),
            "workflow_triggers": ("xrm_workflow_triggers", lambda item: item.name),
            "cli_commands": ("xrm_cli_commands", lambda item: item.name),
            "assistant_tools": ("xrm_assistant_tools", lambda item: getattr(item, "name", getattr(item, "__name__", "?"))),
        }
        provided: dict[str, list[str]] = {}
        for kind, (hook_name, name_of) in kinds.items():
            for impl in getattr(self.hook, hook_name).get_hookimpls():
                if impl.plugin is plugin:
                    provided[kind] = [str(name_of(item)) for item in impl.function() or []]
        return provided

    def hooks_of(self, name: str) -> list[str]:
        """The hooks the plugin `name` implements, sorted."""
        plugin = self.get_plugin(name)
        return sorted(caller.name for caller in self.get_hookcallers(plugin) or [])

    def each(self, hook_name: str, **kwargs: Any) -> Iterable[tuple[str, Any]]:
        """(plugin name, result) for every implementation of a hook, in registration order."""
        for name, call in self.each_call(hook_name, **kwargs):
            yield name, call()

    def each_call(self, hook_name: str, **kwargs: Any) -> Iterable[tuple[str, Callable[[], Any]]]:
        """(plugin name, a call of its implementation) per implementation, not yet made: for a caller that must
        keep one plugin's error (raised by the call itself, or by the coroutine it returns) from stopping the rest."""
        for impl in getattr(self.hook, hook_name).get_hookimpls():
            arguments = {k: v for k, v in kwargs.items() if k in impl.argnames}
            yield impl.plugin_name, functools.partial(impl.function, **arguments)


# -- discovery -------------------------------------------------------------------
def _names(value: str | None) -> set[str] | None:
    if value is None:
        return None
    return {_normal(part) for part in value.split(",") if part.strip()}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name.strip()).lower()


def load_plugins(manager: PluginManager, environ: Mapping[str, str] | None = None, entry_points: Iterable[Any] | None = None) -> None:
    """Register the plugins of the `xrm.plugins` entry-point group that the environment allows."""
    from importlib import metadata

    environ = os.environ if environ is None else environ
    allowed = _names(environ.get("XRM_PLUGINS"))
    denied = _names(environ.get("XRM_DISABLE_PLUGINS")) or set()
    if entry_points is None:
        entry_points = metadata.entry_points(group=ENTRY_POINT_GROUP)
    seen_builtin = False
    for entry_point in sorted(entry_points, key=lambda ep: (_distribution(ep)[0] != BUILTIN_DISTRIBUTION, ep.name)):
        distribution, version = _distribution(entry_point)
        builtin = distribution == BUILTIN_DISTRIBUTION
        seen_builtin |= builtin
        keys = {_normal(entry_point.name)} | ({_normal(distribution)} if distribution else set())
        if not builtin and (keys & denied or (allowed is not None and not keys & allowed)):
            continue
        if manager.get_plugin(entry_point.name) is not None:
            continue  # the same distribution seen twice on sys.path
        try:
            plugin = entry_point.load()
        except Exception as error:  # noqa: BLE001 - any import error of a plugin is reported the same way
            raise PluginError(
                f"plugin {entry_point.name!r} ({distribution or 'unknown distribution'}) failed to load: {error!r}; "
                f"start without it with XRM_DISABLE_PLUGINS={entry_point.name}"
            ) from error
        _register(manager, plugin, PluginInfo(entry_point.name, entry_point.value, distribution, version, builtin))
    if not seen_builtin:  # running from a source tree without installed metadata
        import importlib

        for name, module in BUILTIN_PLUGINS.items():
            _register(manager, importlib.import_module(module), PluginInfo(name, module, BUILTIN_DISTRIBUTION, None, True))
    try:
        manager.check_pending()
    except pluggy.PluginValidationError as error:
        raise PluginError(f"plugin {manager.get_name(error.plugin)!r}: {error}") from None


def _register(manager: PluginManager, plugin: object, info: PluginInfo) -> None:
    try:
        manager.register(plugin, name=info.name)
    except (ValueError, pluggy.PluginValidationError) as error:
        raise PluginError(f"plugin {info.name!r} ({info.distribution}) cannot be registered: {error}") from None
    manager.infos[info.name] = info


def _distribution(entry_point: Any) -> tuple[str | None, str | None]:
    dist = getattr(entry_point, "dist", None)
    if dist is None:
        return None, None
    return dist.metadata["Name"], dist.version


_manager: PluginManager | None = None


def get_plugin_manager() -> PluginManager:
    """The process's plugin manager, loading the plugins on first use."""
    global _manager
    if _manager is None:
        manager = PluginManager()
        if os.environ.get("XRM_TRACE_PLUGINS"):
            manager.trace.root.setwriter(sys.stderr.write)
            manager.enable_tracing()
        load_plugins(manager)
        _manager = manager
    return _manager


def reset_plugin_manager() -> None:
    """Forget the loaded plugins; the next get_plugin_manager() discovers them again (tests, after installing one)."""
    global _manager
    _manager = None
    import importlib

    importlib.invalidate_caches()


# -- calling ---------------------------------------------------------------------
async def await_me_maybe(value: Any) -> Any:
    """The value, awaited if it is awaitable (hooks may return coroutines)."""
    if inspect.isawaitable(value):
        return await value
    return value


def has_implementations(hook_name: str) -> bool:
    return bool(getattr(get_plugin_manager().hook, hook_name).get_hookimpls())


async def call_write_hook(hook_name: str, **kwargs: Any) -> None:
    """Call each implementation in turn, awaiting its coroutine before calling the next.

    Not pluggy's all-at-once call: when one implementation raises (a Veto),
    the coroutines the others already returned would be dropped unawaited.
    """
    for _, result in get_plugin_manager().each(hook_name, **kwargs):
        await await_me_maybe(result)
