"""Every hook a plugin can implement: the one place the plugin contract is declared.

A plugin is a module (or any object) with functions named like these hooks,
decorated with `xrm.hookimpl`, and registered through the `xrm.plugins`
entry-point group (see docs/plugins.md, which documents each hook below; a
test fails when a hook here has no docstring or is missing from that page).

Hooks are called with keyword arguments, so an implementation may accept
only the arguments it needs. Pluggy calls are synchronous; a hook documented
as "may return a coroutine" is awaited by the caller. No hook here is
firstresult: each collects the results of every plugin.

Hooks by lifecycle:
- declaring: xrm_capabilities
- contributing at load: xrm_field_types, xrm_entity_definitions,
  xrm_definition_vocabulary, xrm_relationship_types, xrm_workflow_actions,
  xrm_workflow_triggers, xrm_assistant_tools, xrm_cli_commands,
  xrm_api_routes, xrm_openapi, xrm_ui_routes
- reading and importing: xrm_record_expansions, xrm_import_targets
- checking definitions: xrm_check_definition
- start-up and shut-down: xrm_startup, xrm_shutdown
- writes through the one door (RecordService): xrm_before_write, xrm_after_write
- data protection: xrm_redact
- web UI: xrm_detail_panels, xrm_menu_entries
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pluggy import HookimplMarker, HookspecMarker

if TYPE_CHECKING:
    from collections.abc import Awaitable, Mapping

    import asyncpg
    import click

    from .db.database import Database
    from .errors import Problem
    from .plugins import Expansion, ImportTarget, MenuEntry, Panel, RelationshipType, WorkflowAction, WorkflowTrigger
    from .records.principal import Principal
    from .registry import Registry
    from .schema.definition import EntityDefinition
    from .runtime import Platform
    from .schema.field_types import FieldType

__all__ = ["hookimpl", "hookspec"]

hookspec = HookspecMarker("xrm")
hookimpl = HookimplMarker("xrm")
"""Mark a plugin's hook implementations: `@xrm.hookimpl` (also `xrm.plugins.hookimpl`)."""


# -- declaring -------------------------------------------------------------------
@hookspec
def xrm_capabilities() -> dict[str, Any]:
    """What the plugin declares it does, shown by `xrm plugins list` (an admin reads it before enabling one).

    Called by `xrm plugins list`, once per plugin, never during requests.

    Returns a dict with any of these keys (unknown keys are shown as given):
    ``reads`` (list of entity names the plugin reads, ``"*"`` for any),
    ``writes`` (list of entity names it creates, changes or deletes records of),
    ``network`` (bool: whether it talks to other hosts),
    ``description`` (one sentence).

    Not firstresult: each plugin answers for itself.
    """


# -- contributing at load --------------------------------------------------------
@hookspec
def xrm_field_types() -> list[FieldType]:
    """Field types the plugin adds (instances of `xrm.schema.field_types.FieldType` subclasses).

    Called once per process, the first time the field-type registry
    (`xrm.schema.field_types.FIELD_TYPES`) is consulted; the built-in types
    arrive through this same hook (plugin ``core``). A name used by two plugins
    is an error naming both. Each type then works everywhere a field type
    does: entity definitions (``"x-xrm": {"type": "<name>"}``), validation,
    storage, the API and its OpenAPI schema, import coercion and forms.

    Returns a list of FieldType instances. Not firstresult.
    """


@hookspec
def xrm_entity_definitions() -> list[Mapping[str, Any]]:
    """Entity definitions the plugin ships (JSON Schema documents with ``x-xrm``, as in entity_schemas/).

    Called at start (web server start and `xrm demo`), together with the
    entity_schemas/ folder, in one schema change: definitions that are new or
    changed are applied when every step is non-destructive; otherwise nothing
    is applied and a warning tells how to see why (``xrm schema plan``).

    Returns a list of definition documents (dicts). Not firstresult.
    """


@hookspec
def xrm_definition_vocabulary() -> Mapping[str, Mapping[str, Any]]:
    """New `x-xrm` keywords the plugin's features read from entity definitions.

    Called when the definition meta-schema is built (once per set of plugins).
    Returns ``{"entity": {keyword: JSON Schema}, "field": {keyword: JSON
    Schema}}`` (either part may be missing): each keyword becomes allowed in
    an entity's (or a field's) `x-xrm` object and its value is checked against
    the schema, with problems reported at the keyword's JSON pointer like the
    core's own. A keyword the core or another plugin declares is a PluginError.
    Not firstresult.
    """


@hookspec
def xrm_check_definition(definition: EntityDefinition, known_entities: frozenset[str] | None) -> list[Problem]:
    """Checks a meta-schema cannot express, for the plugin's own keywords.

    Called for every definition being parsed (files, API, designer, stored
    ones at load), after the structure and the core's own checks passed.
    `known_entities`: names a reference may point to (None: not checked).
    Returns a list of `xrm.errors.Problem` (JSON pointer into the document and
    a message); any problem refuses the definition. Not firstresult.
    """


@hookspec
def xrm_relationship_types() -> list[RelationshipType]:
    """Relationship kinds the plugin declares: each becomes a connection role (e.g. "works with", "supplier of").

    Collected by `xrm plugins list` (under "relationship types") and, when the
    web server starts (after the entity definitions were applied), by the
    built-in plugin ``relationships``, which creates or updates one
    connection role per kind: `name` (a-z, 0-9, _), `label` and
    `inverse_label` ({"en", "de"}; no inverse label: the role is symmetric),
    `source` / `target` (an entity the role must start / end at, None: any).
    The role is marked as the plugin's: admins see it on the Connection roles
    page but cannot delete it while the plugin is loaded, and a role an admin
    made under the same name is left alone (a warning is logged). The four
    kinds the built-in plugin declares itself (lookup, link, hierarchy,
    connection) name what it implements and become no role. Returns a list
    of `xrm.plugins.RelationshipType`. Not firstresult.
    """


@hookspec
def xrm_record_expansions(entity: str, registry: Registry) -> list[Expansion]:
    """What `?expand=<name>` may add to records of `entity`, besides its reference fields (e.g. links, connections).

    Called by RecordService.list whenever `expand` is given (the API's list
    and get with `?expand=`), and by the OpenAPI document
    (the parameter's allowed values). `registry` is the entity registry. A
    name equal to one of the entity's fields is ignored (the field wins).
    Each `xrm.plugins.Expansion` has a `load(service, ids)`: called once per
    page with the page's record ids and the entity's RecordService (its
    principal is the caller's: read through it, so only permitted records
    come back), returning {id: value}; the value lands in each record as
    "<name>_expanded". Returns a list of Expansion. Not firstresult.
    """


@hookspec
def xrm_import_targets(registry: Registry) -> list[ImportTarget]:
    """What `xrm import NAME FILE`, POST /api/v1/NAME/_import and the import wizard can import that is not an entity.

    Called when an import names something that is not an entity, and by the
    import wizard (its "Import into" choice). Each `xrm.plugins.ImportTarget`
    has a name (e.g. "_connections"), labels, the columns it reads and
    `run(db, registry, source, principal, policy, options)`, which reads the
    rows of `source` (xrm.transfer.sources) and writes through the one door
    as `principal`, honouring `options.dry_run` and `options.mapping`, and
    returns an `xrm.transfer.ImportReport`. Returns a list of ImportTarget.
    Not firstresult.
    """


@hookspec
def xrm_workflow_actions() -> list[WorkflowAction]:
    """Actions a workflow step can run (e.g. "send e-mail", "mask an account number").

    Called by the automations' worker (built-in plugin `automations`), which
    runs an action from the job queue with the record, the step's parameters
    and the automation's run-as principal (and, if `run` accepts them,
    `records`: RecordService per entity limited to the plugin's declared
    reads/writes, `context`, `platform`), inside the job's transaction; also
    listed by `xrm plugins list`. Returns a list of
    `xrm.plugins.WorkflowAction`. Not firstresult.
    """


@hookspec
def xrm_workflow_triggers() -> list[WorkflowTrigger]:
    """Events an automation can start on (e.g. "inbound e-mail"), the built-in ones included.

    Called when an automation is checked (entity definitions, the admin API
    and UI) and by the automations' dispatcher (built-in plugin
    `automations`); also listed by `xrm plugins list` (under "workflow
    triggers"). The built-ins declare theirs this way (``automations``:
    created, updated, date, schedule; ``statemachine``: transition).

    A `xrm.plugins.WorkflowTrigger` names the outbox `topics` that fire it,
    the JSON Schema of its `parameters` (the automation's ``trigger`` keys
    besides ``on``) and optionally `match(parameters, payload) -> bool`. The
    plugin fires it by writing an outbox event of such a topic with
    `xrm.events.emit(connection, topic, payload, entity=..., record_id=...)`
    (or `platform.emit(...)`); the dispatcher reads it after the writing
    transaction committed and queues the actions of every enabled automation
    of that entity whose trigger matches, exactly like the built-in events
    (same job queue, idempotency key, job log). Returns a list of
    `xrm.plugins.WorkflowTrigger`; a name declared twice is a PluginError.
    Not firstresult.
    """


@hookspec
def xrm_assistant_tools() -> list[Any]:
    """Tools the assistant may call, besides search_records, query_records, get_record and aggregate.

    The assistant does not exist yet (`xrm.assistant` is a placeholder): the
    tools are collected and listed by `xrm plugins list` (under "assistant
    tools", by their ``name`` or function name) but nothing calls them. A
    tool is a langchain-core ``BaseTool`` (or a function langchain's ``@tool``
    can wrap); it must read and write only through RecordService with the
    asking user's principal. Returns a list of tools. Not firstresult.
    """


@hookspec
def xrm_cli_commands() -> list[click.Command]:
    """Commands the plugin adds to the `xrm` command line (`xrm <name> ...`).

    Called when the command line needs commands beyond the built-in ones
    (``xrm --help`` or an unknown command name), at most once per process. A
    name that clashes with a built-in command is ignored (the built-in
    wins). Returns a list of ``click.Command`` (or ``click.Group``). Not firstresult.
    """


# -- start-up --------------------------------------------------------------------
@hookspec
def xrm_startup(platform: Platform) -> Awaitable[None] | None:
    """The platform has started: the database is open and entity definitions are applied.

    Called once by the web server's start-up, after entity_schemas/ and the
    plugins' entity definitions were applied (the last registered plugin first). `platform` is the
    `xrm.runtime.Platform` (settings, db, registry, policy). May return a
    coroutine, which is awaited before the server takes requests; an error
    stops the start. Returns None. Not firstresult.
    """


@hookspec
def xrm_shutdown(platform: Platform) -> Awaitable[None] | None:
    """The web server is stopping: stop what xrm_startup started (background tasks, connections).

    Called once by the web server's shut-down, before the database closes, for
    every plugin, in registration order (the reverse of xrm_startup's). May
    return a coroutine, which is awaited; an error, raised by the call or
    while awaiting its coroutine, is logged and the other plugins still stop.
    `platform` is the
    same `xrm.runtime.Platform` xrm_startup got. Returns None. Not firstresult.
    """


# -- data protection ---------------------------------------------------------------
@hookspec
def xrm_redact(
    connection: asyncpg.Connection, record_ids: list[Any], needles: list[str], purged: bool
) -> Awaitable[int] | int | None:
    """Personal data is being erased: remove it from the plugin's own tables too.

    Called by erasure and retention (xrm.privacy) inside their transaction,
    after the core redacted its tables (records, audit trail, outbox, field
    archive). `record_ids`: the erased records' ids; `purged`: True when the
    rows were deleted for good (retention "delete": drop what belongs to them),
    False when they were anonymised (keep business facts, remove values);
    `needles`: the erased identifying values, case-folded, at least 4
    characters — any text containing one must go (e.g. a rendered e-mail).
    The audit-trail redaction setting is on in this transaction. Returns the
    number of rows changed (for the erasure report), or a coroutine giving it.
    Not firstresult.
    """


# -- writes through the one door --------------------------------------------------
@hookspec
def xrm_before_write(
    entity: str,
    action: str,
    record: Mapping[str, Any],
    previous: Mapping[str, Any] | None,
    principal: Principal,
    definition: EntityDefinition,
    db: Database,
    registry: Registry,
) -> Awaitable[None] | None:
    """A record is about to be written; raise to refuse the write.

    Called by RecordService for create, update, delete and restore, after the
    values were validated and the principal authorised, inside the write's
    transaction and before the row changes (once per record, also in a batch
    create or an import).

    `entity`: the entity name; `action`: "create", "update", "delete" or
    "restore"; `record`: the record as it will be (field values in JSON form,
    as the validator checked them, plus "id"; for delete and restore the
    stored record as RecordService reads it, its "id" a UUID); `previous`: the
    stored record before the write (None for create; for delete and restore
    the same record as `record`); `principal`: who writes; `definition`: the entity's current
    `EntityDefinition` (its `xrm` holds the plugin's own keywords, see
    xrm_definition_vocabulary); `db` and `registry`: the database and the
    entity registry the write runs on (for a RecordService of another
    entity: it joins this transaction). Do not change `record`.

    To refuse, raise `xrm.errors.Veto(message, pointer)` (or
    `xrm.errors.ValidationFailed`): the caller gets HTTP 422 with the message
    at the pointer, and nothing is written (no row, no audit entry, no outbox
    event). May return a coroutine, which is awaited. Returns None. Not firstresult.
    """


@hookspec
def xrm_after_write(
    entity: str,
    action: str,
    record: Mapping[str, Any],
    previous: Mapping[str, Any] | None,
    principal: Principal,
    connection: asyncpg.Connection,
    definition: EntityDefinition,
    db: Database,
    registry: Registry,
) -> Awaitable[None] | None:
    """A record was written (row, audit entry and outbox event), and the transaction is still open.

    Called by RecordService after create, update, delete and restore, once
    per record. `record` is the record as stored (as RecordService returns it,
    including fields the principal may not read); `previous` the record
    before (None for create); `connection` the transaction's asyncpg
    connection; `definition` the entity's `EntityDefinition`; `db` and
    `registry` as in xrm_before_write. A plugin may write more through the one
    door: a RecordService(db, registry, ...) used in the same task joins this
    transaction, so everything commits (or
    rolls back) together; raising rolls the whole write back (a Veto gives
    HTTP 422). Slow or remote work belongs after commit (the outbox), not here.
    May return a coroutine, which is awaited. Returns None. Not firstresult.
    """


# -- HTTP ------------------------------------------------------------------------
@hookspec
def xrm_api_routes() -> list[Any]:
    """REST endpoints the plugin adds (Litestar route handlers), under /api/v1/.

    Called once when the app is created. Handlers should resolve the caller
    with `xrm.api.common.principal_of(request)` and read and write through
    RecordService (the one door); errors raised as xrm.errors.XrmError become
    problem+json responses like the core's. Describe them in xrm_openapi.
    Returns a list of route handlers. Not firstresult.
    """


@hookspec
def xrm_openapi(registry: Registry) -> Mapping[str, Any]:
    """The plugin's part of the OpenAPI document (/api/openapi.json).

    Called whenever the document is built (it follows the registry).
    Returns ``{"paths": {...}, "schemas": {...}}`` (either may be missing),
    merged into the document's paths and components.schemas. Not firstresult.
    """


@hookspec
def xrm_ui_routes() -> list[Any]:
    """Web UI pages and fragments the plugin adds (Litestar route handlers).

    Called once when the app is created; the handlers join the UI router, so
    a missing session sends the browser to the login page and errors render
    as pages. Use `xrm.webui.context.page_of(request)` for the user, their
    language and CSRF token, and `page.render(template, ...)`. Returns a list
    of route handlers. Not firstresult.
    """


# -- web UI ----------------------------------------------------------------------
@hookspec
def xrm_detail_panels(
    entity: str, record: Mapping[str, Any], principal: Principal, language: str, platform: Platform, csrf_token: str
) -> list[Panel]:
    """Extra panels on a record's detail page (e.g. a map, a bank-account check, related documents).

    Called by the web UI's record page (/e/{entity}/{id}) for every record
    shown. `record` is what the principal may read; `language` "en" or "de";
    `platform` gives the database and registry (read through RecordService
    with `principal`); `csrf_token` the session's CSRF token, for a form
    in the panel that posts to the plugin's UI route (hidden field
    ``csrf_token``). May return a coroutine, which is awaited. Returns a
    list of `xrm.plugins.Panel` (title and HTML; the HTML must be escaped by
    the plugin, e.g. with markupsafe). Not firstresult.
    """


@hookspec
def xrm_menu_entries(principal: Principal, language: str) -> list[MenuEntry]:
    """Entries the plugin adds to the web UI's main menu.

    Called by the web UI for every page (the user menu in the header).
    Returns a list of `xrm.plugins.MenuEntry` (label and link) the principal
    may use. Not firstresult.
    """
