"""Plugins extend definitions, the REST API, the OpenAPI document and the web UI without core changes.

Small plugin objects, registered with the process's plugin manager for these
tests: a `x-xrm.rating_scale` keyword with its own check, an endpoint with its
OpenAPI path, a UI page, a panel on every detail page and a menu entry; a
plugin declaring a relationship kind, a workflow trigger and assistant tools
(listed by `xrm plugins list`); plugins that stop at shut-down, redact their
own table on erasure and veto a delete.

HOOK_TESTS (at the end) maps every hook in xrm.hookspecs to the tests that
register an implementation of it; a test fails when a hook has none.
"""

from __future__ import annotations

import ast
import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from litestar import Request, get
from litestar.params import FromPath
from markupsafe import Markup, escape

from conftest import ROOT, bearer, log_in, make_user, ok, problem
from xrm import hookspecs
from xrm.errors import DefinitionInvalid, Problem, Veto
from xrm.plugins import (ENTRY_POINT_GROUP, MenuEntry, Panel, PluginManager, RelationshipType, WorkflowTrigger, get_plugin_manager,
                         hookimpl, load_plugins)
from xrm.schema.definition import parse_definition

SUPPLIER: dict[str, Any] = {
    "type": "object",
    "x-xrm": {"name": "supplier", "label": {"en": "Supplier"}, "rating_scale": {"max": 5}},
    "properties": {"name": {"type": "string"}, "rating": {"type": "integer", "x-xrm": {"rated": True}}},
}


@get("/api/v1/_ratings/{entity:str}", sync_to_thread=False)
def ratings(entity: FromPath[str]) -> dict[str, Any]:
    return {"entity": entity, "scale": 5}


@get("/ratings", sync_to_thread=False)
def ratings_page(request: Request[Any, Any, Any]) -> str:
    return "<h1>Ratings</h1>"


class RatingsPlugin:
    @hookimpl
    def xrm_definition_vocabulary(self) -> dict[str, Any]:
        return {"entity": {"rating_scale": {"type": "object", "required": ["max"], "additionalProperties": False,
                                            "properties": {"max": {"type": "integer", "minimum": 2, "maximum": 10}}}},
                "field": {"rated": {"type": "boolean"}}}

    @hookimpl
    def xrm_check_definition(self, definition: Any) -> list[Problem]:
        problems = []
        for name, f in definition.fields.items():
            if f.xrm.get("rated") and f.type.name != "integer":
                problems.append(Problem(f"/properties/{name}/x-xrm/rated", "only whole-number fields can be rated"))
        return problems

    @hookimpl
    def xrm_api_routes(self) -> list[Any]:
        return [ratings]

    @hookimpl
    def xrm_openapi(self, registry: Any) -> dict[str, Any]:
        return {"paths": {"/api/v1/_ratings/{entity}": {"get": {
            "operationId": "ratings", "summary": "The rating scale of an entity",
            "parameters": [{"name": "entity", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[a-z]+$"}}],
            "responses": {"200": {"description": "The scale", "content": {"application/json": {"schema": {"type": "object"}}}}}}}}}

    @hookimpl
    def xrm_ui_routes(self) -> list[Any]:
        return [ratings_page]

    @hookimpl
    def xrm_detail_panels(self, entity: str, record: Any, language: str) -> Any:
        async def panel() -> list[Panel]:
            title = "Bewertung" if language == "de" else "Rating"
            return [Panel(title, escape(f"<{entity}> {record.get('rating', '–')} / 5"))] if entity == "supplier" else []

        return panel()

    @hookimpl
    def xrm_menu_entries(self, principal: Any) -> list[MenuEntry]:
        return [MenuEntry("Ratings", "/ratings")] if "admin" in principal.roles else []


@pytest.fixture
def ratings_plugin() -> Iterator[RatingsPlugin]:
    plugin = RatingsPlugin()
    manager = get_plugin_manager()
    manager.register(plugin, name="ratings-test-plugin")
    try:
        yield plugin
    finally:
        manager.unregister(name="ratings-test-plugin")


@pytest.fixture
def app_with_plugin(ratings_plugin: RatingsPlugin, database_uri: str, tmp_path: Path) -> Iterator[Any]:
    """The app created while the plugin is registered (routes are gathered at creation)."""
    from litestar.testing import TestClient

    from xrm.app import create_app
    from xrm.settings import Settings

    schemas = tmp_path / "schemas"
    schemas.mkdir()
    for source in (ROOT / "entity_schemas").glob("*.json"):
        (schemas / source.name).write_text(source.read_text())
    (schemas / "supplier.json").write_text(__import__("json").dumps(SUPPLIER))
    settings = Settings(data_dir=tmp_path, database_url=database_uri, schema_dir=schemas, secret_key=None)
    with TestClient(app=create_app(settings), base_url="https://testserver.local") as client:
        yield client


def test_a_plugin_keyword_is_part_of_the_definition_language(ratings_plugin: RatingsPlugin) -> None:
    assert parse_definition(SUPPLIER).xrm["rating_scale"] == {"max": 5}
    wrong = {**SUPPLIER, "x-xrm": {**SUPPLIER["x-xrm"], "rating_scale": {"max": 50}}}
    with pytest.raises(DefinitionInvalid) as error:
        parse_definition(wrong)
    assert error.value.problems[0].pointer == "/x-xrm/rating_scale/max"
    text_rated = {**SUPPLIER, "properties": {"name": {"type": "string", "x-xrm": {"rated": True}}}}
    with pytest.raises(DefinitionInvalid) as error:
        parse_definition(text_rated)
    assert [(p.pointer, p.message) for p in error.value.problems] == [("/properties/name/x-xrm/rated", "only whole-number fields can be rated")]


def test_without_the_plugin_its_keyword_is_unknown() -> None:
    with pytest.raises(DefinitionInvalid) as error:
        parse_definition(SUPPLIER)
    assert {p.pointer for p in error.value.problems} == {"/x-xrm/rating_scale", "/properties/rating/x-xrm/rated"}


def test_a_plugin_adds_an_endpoint_its_openapi_and_ui_parts(app_with_plugin: Any) -> None:
    client = app_with_plugin
    headers = bearer(client, "root", ["admin"])
    assert ok(client.get("/api/v1/_ratings/supplier", headers=headers)) == {"entity": "supplier", "scale": 5}
    spec = ok(client.get("/api/openapi.json"))
    assert spec["paths"]["/api/v1/_ratings/{entity}"]["get"]["operationId"] == "ratings"
    created = ok(client.post("/api/v1/supplier", headers=headers, json={"name": "Teile AG", "rating": 4}), 201)
    problem(client.post("/api/v1/supplier", headers=headers, json={"name": 3}), 422)

    make_user(client, "admin", ["admin"])
    log_in(client, "admin")
    home = client.get("/").text
    assert '<a href="/ratings" dir="ltr">Ratings</a>' in home  # the menu entry
    assert "<h1>Ratings</h1>" in client.get("/ratings").text  # the plugin's page, inside the UI router
    detail = client.get(f"/e/supplier/{created['id']}").text
    assert "<h2>Rating</h2>" in detail and "&lt;supplier&gt; 4 / 5" in detail  # escaped by the plugin, shown once
    assert "<h2>Rating</h2>" not in client.get("/e/account").text


# -- listed by `xrm plugins list`: relationship types, workflow triggers, assistant tools ----------
class _FakeDistribution:
    def __init__(self, name: str) -> None:
        self.metadata = {"Name": name}
        self.version = "0.1.0"


class _FakeEntryPoint:
    """An entry point of the `xrm.plugins` group, as an installed distribution would have it."""

    def __init__(self, name: str, plugin: object) -> None:
        self.name, self.value, self.dist, self._plugin = name, f"xrm_{name}", _FakeDistribution(f"xrm-{name}"), plugin

    def load(self) -> object:
        return self._plugin


@pytest.fixture
def discovered(monkeypatch: pytest.MonkeyPatch) -> Any:
    """install(name, plugin): the process's manager replaced by one that discovered the plugin through the entry-point group.

    `xrm plugins list` shows discovered plugins only (manager.infos), not objects registered directly.
    """
    import xrm.plugins as plugins_module
    from importlib import metadata

    def install(name: str, plugin: object) -> PluginManager:
        manager = PluginManager()
        load_plugins(manager, environ={}, entry_points=[*metadata.entry_points(group=ENTRY_POINT_GROUP), _FakeEntryPoint(name, plugin)])
        monkeypatch.setattr(plugins_module, "_manager", manager)
        return manager

    return install


def _plugins_list() -> tuple[dict[str, Any], str]:
    """`xrm plugins list --json` by plugin name, and the text form."""
    from xrm.cli import main

    runner = CliRunner()
    as_json = runner.invoke(main, ["plugins", "list", "--json"])
    assert as_json.exit_code == 0, as_json.output
    text = runner.invoke(main, ["plugins", "list"])
    assert text.exit_code == 0, text.output
    return {row["name"]: row for row in json.loads(as_json.output)}, text.output


class KindsPlugin:
    """Declares a relationship kind, a workflow trigger and two assistant tools (and says so)."""

    @hookimpl
    def xrm_capabilities(self) -> dict[str, Any]:
        return {"reads": ["contact"], "writes": [], "network": True, "description": "Inbound e-mail and a VAT lookup"}

    @hookimpl
    def xrm_relationship_types(self) -> list[RelationshipType]:
        return [RelationshipType("works_with", {"en": "Works with", "de": "Arbeitet mit"}, source="contact", target="contact",
                                 inverse_label={"en": "Works with", "de": "Arbeitet mit"})]

    @hookimpl
    def xrm_workflow_triggers(self) -> list[WorkflowTrigger]:
        return [WorkflowTrigger("inbound_email", {"en": "E-mail received", "de": "E-Mail eingegangen"}, "an e-mail to the inbox")]

    @hookimpl
    def xrm_assistant_tools(self) -> list[Any]:
        def lookup_vat_id(vat_id: str) -> str:
            """Whether a VAT id is valid (VIES)."""
            return "valid"

        class CompanyRegister:  # the shape of a langchain BaseTool: a `name`
            name = "company_register"

        return [lookup_vat_id, CompanyRegister()]


def test_declared_relationship_kinds_are_listed(discovered: Any) -> None:
    manager = discovered("kinds", KindsPlugin())
    rows, text = _plugins_list()
    assert rows["kinds"]["provides"]["relationship_types"] == ["works_with"]
    assert rows["kinds"]["capabilities"]["network"] is True and not rows["kinds"]["builtin"]
    assert "kinds (xrm-kinds 0.1.0) -> xrm_kinds" in text and "relationship types: works_with" in text
    # The built-in relationships plugin declares the four kinds it implements the same way.
    assert rows["relationships"]["builtin"]
    assert rows["relationships"]["provides"]["relationship_types"] == ["lookup", "link", "hierarchy", "connection"]
    assert "relationship types: lookup, link, hierarchy, connection" in text
    (works_with,) = [kind for name, found in manager.each("xrm_relationship_types") if name == "kinds" for kind in found]
    assert (works_with.source, works_with.target, works_with.label["de"]) == ("contact", "contact", "Arbeitet mit")


def test_declared_workflow_triggers_are_listed(discovered: Any) -> None:
    manager = discovered("kinds", KindsPlugin())
    rows, text = _plugins_list()
    assert rows["kinds"]["provides"]["workflow_triggers"] == ["inbound_email"]
    assert "workflow triggers: inbound_email" in text
    # The built-ins declare theirs: the automations' record and time events, the state machine's transition.
    assert rows["automations"]["provides"]["workflow_triggers"] == ["created", "updated", "date", "schedule"]
    assert rows["statemachine"]["provides"]["workflow_triggers"] == ["transition"]
    triggers = {t.name: t for _, found in manager.each("xrm_workflow_triggers") for t in found or []}
    assert triggers["inbound_email"].label["de"] == "E-Mail eingegangen"


def test_a_definition_may_start_an_automation_on_a_declared_workflow_trigger(discovered: Any) -> None:
    """A plugin's trigger is one an automation may use (test_automations.py fires one); unknown names are refused."""
    automation = {"name": "on_mail", "run_as": "admin", "trigger": {"on": "inbound_email"},
                  "actions": [{"type": "set_fields", "values": {"name": "mail"}}]}

    def supplier(trigger: dict[str, Any]) -> dict[str, Any]:
        return {"type": "object", "properties": {"name": {"type": "string"}},
                "x-xrm": {"name": "supplier", "label": {"en": "Supplier"}, "automations": [{**automation, "trigger": trigger}]}}

    with pytest.raises(DefinitionInvalid) as error:  # without the plugin, the trigger is unknown
        parse_definition(supplier({"on": "inbound_email"}))
    assert [p.pointer for p in error.value.problems] == ["/x-xrm/automations/0/trigger/on"]
    assert "unknown trigger 'inbound_email'" in error.value.problems[0].message
    discovered("kinds", KindsPlugin())
    assert parse_definition(supplier({"on": "inbound_email"})).xrm["automations"][0]["trigger"] == {"on": "inbound_email"}
    with pytest.raises(DefinitionInvalid) as error:  # it declares no parameters: none are taken
        parse_definition(supplier({"on": "inbound_email", "folder": "INBOX"}))
    assert [(p.pointer, p.message) for p in error.value.problems] == [
        ("/x-xrm/automations/0/trigger/folder", "does not apply to the trigger 'inbound_email'")]


def test_declared_assistant_tools_are_collected_and_listed(discovered: Any) -> None:
    manager = discovered("kinds", KindsPlugin())
    rows, text = _plugins_list()
    assert rows["kinds"]["provides"]["assistant_tools"] == ["lookup_vat_id", "company_register"]
    assert "assistant tools: lookup_vat_id, company_register" in text
    tools = [tool for _, found in manager.each("xrm_assistant_tools") for tool in found or []]
    assert [getattr(tool, "name", getattr(tool, "__name__", None)) for tool in tools] == ["lookup_vat_id", "company_register"]
    assert tools[0]("DE123456789") == "valid"
    # No built-in declares a tool, and nothing calls them yet: the assistant is not there (xrm.assistant is a stub).
    assert all("assistant_tools" not in row["provides"] for name, row in rows.items() if name != "kinds")


# -- start-up and shut-down ---------------------------------------------------------------------
class _Stopper:
    """Remembers what xrm_startup got; at shut-down records that it stopped (and whether the database was still open)."""

    def __init__(self, name: str, events: list[Any], fail: str | None = None, asynchronous: bool = True) -> None:
        self.name, self.events, self.fail, self.asynchronous = name, events, fail, asynchronous
        self.platform: Any = None

    @hookimpl
    def xrm_startup(self, platform: Any) -> None:
        self.platform = platform
        self.events.append((self.name, "started"))

    @hookimpl
    def xrm_shutdown(self, platform: Any) -> Any:
        if self.fail == "raise":
            raise RuntimeError(f"{self.name} cannot stop")
        if not self.asynchronous:
            self.events.append((self.name, "stopped", platform is self.platform))
            return None

        async def stop() -> None:
            await asyncio.sleep(0)  # really a coroutine: only an awaited one gets past this
            async with platform.db.connection() as connection:  # before the database closes
                one = await connection.fetchval("SELECT 1")
            self.events.append((self.name, "stopped", platform is self.platform and one == 1))
            if self.fail == "async":
                raise RuntimeError(f"{self.name} cannot stop")

        return stop()


def _run_app_with(plugins: dict[str, object], database_uri: str, tmp_path: Path) -> None:
    """Register the plugins, start the app (lifespan included) and stop it again."""
    from litestar.testing import TestClient

    from xrm.app import create_app
    from xrm.settings import Settings

    manager = get_plugin_manager()
    for name, plugin in plugins.items():
        manager.register(plugin, name=name)
    try:
        settings = Settings(data_dir=tmp_path, database_url=database_uri, schema_dir=ROOT / "entity_schemas", secret_key=None)
        with TestClient(app=create_app(settings)) as client:
            assert client.get("/health").status_code == 200
    finally:
        for name in plugins:
            manager.unregister(name=name)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_shutdown_is_called_when_the_app_stops_and_awaited(database_uri: str, tmp_path: Path) -> None:
    events: list[Any] = []
    plugins = {
        "stop-failing-test-plugin": _Stopper("failing", events, fail="async"),  # called first: its error must not stop the others
        "stop-sync-test-plugin": _Stopper("sync", events, asynchronous=False),
        "stop-async-test-plugin": _Stopper("async", events),
    }
    logged = _Collect()  # the "xrm" logger does not propagate to pytest's caplog
    logging.getLogger("xrm").addHandler(logged)
    try:
        _run_app_with(plugins, database_uri, tmp_path)
    finally:
        logging.getLogger("xrm").removeHandler(logged)
    # Started last-registered first (pluggy's order), stopped in registration order: the reverse of the start.
    assert events[:3] == [("async", "started"), ("sync", "started"), ("failing", "started")]
    assert events[3:] == [("failing", "stopped", True), ("sync", "stopped", True), ("async", "stopped", True)]
    failed = [r for r in logged.records if "failed to shut down" in r.getMessage()]
    assert [r.getMessage() for r in failed] == ["plugin stop-failing-test-plugin failed to shut down"]
    assert failed[0].exc_info and "failing cannot stop" in str(failed[0].exc_info[1])  # logged with the traceback


def test_a_shutdown_that_raises_when_called_does_not_stop_the_others() -> None:
    from xrm.runtime import Platform

    events: list[Any] = []
    stopped = _Stopper("after", events, asynchronous=False)
    stopped.platform = platform = object()
    manager = get_plugin_manager()
    manager.register(_Stopper("raising", events, fail="raise"), name="stop-raising-test-plugin")
    manager.register(stopped, name="stop-after-test-plugin")
    try:
        asyncio.run(Platform.stop_plugins(platform))  # type: ignore[arg-type]  # stop_plugins uses self only as the hook's argument
    finally:
        manager.unregister(name="stop-raising-test-plugin")
        manager.unregister(name="stop-after-test-plugin")
    assert events == [("after", "stopped", True)]


# -- data protection -----------------------------------------------------------------------------
class _Redactor:
    """Keeps its own copy of contacts' e-mail addresses in a table of its own; erasure must clear it."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    @hookimpl
    def xrm_redact(self, connection: Any, record_ids: list[Any], needles: list[str], purged: bool) -> Any:
        async def redact() -> int:
            self.calls.append({"record_ids": [str(i) for i in record_ids], "needles": needles, "purged": purged,
                               "in_transaction": connection.is_in_transaction()})
            status = await connection.execute("DELETE FROM public.mail_copy WHERE lower(address) = ANY($1::text[])", needles)
            return int(status.split()[-1])

        return redact()


def test_erasure_calls_redact_in_its_transaction_and_reports_the_rows(database_uri: str, tmp_path: Path) -> None:
    from litestar.testing import TestClient

    from xrm.app import create_app
    from xrm.settings import Settings

    plugin = _Redactor()
    manager = get_plugin_manager()
    manager.register(plugin, name="redact-test-plugin")
    try:
        settings = Settings(data_dir=tmp_path, database_url=database_uri, schema_dir=ROOT / "entity_schemas", secret_key=None)
        with TestClient(app=create_app(settings)) as client:
            db = client.app.state.platform.db

            def sql(statement: str, *args: Any) -> Any:
                async def run() -> Any:
                    async with db.connection() as connection:
                        return await connection.fetchval(statement, *args)

                return client.blocking_portal.call(run)

            sql("CREATE TABLE public.mail_copy (address text)")
            sql("INSERT INTO public.mail_copy VALUES ('Erika@Example.org'), ('max@example.org')")
            headers = bearer(client, "admin", ["admin"])
            erika = ok(client.post("/api/v1/contact", headers=headers, json={"full_name": "Erika Mustermann", "email": "erika@example.org"}), 201)
            ok(client.post("/api/v1/contact", headers=headers, json={"full_name": "Max Muster", "email": "max@example.org"}), 201)

            dry = ok(client.post("/api/v1/admin/privacy/erase", headers=headers, json={"email": "erika@example.org", "dry_run": True}))
            assert dry["plugin_rows_redacted"] == 1 and sql("SELECT count(*) FROM public.mail_copy") == 2  # rolled back

            report = ok(client.post("/api/v1/admin/privacy/erase", headers=headers, json={"email": "erika@example.org"}))
            assert report["plugin_rows_redacted"] == 1  # the plugin's count, in the erasure report
            call = plugin.calls[-1]
            assert call["record_ids"] == [erika["id"]] and call["purged"] is False and call["in_transaction"]
            assert "erika@example.org" in call["needles"] and all(n == n.casefold() and len(n) >= 4 for n in call["needles"])
            assert sql("SELECT array_agg(address) FROM public.mail_copy") == ["max@example.org"]
    finally:
        manager.unregister(name="redact-test-plugin")


# -- a before-write veto of a delete --------------------------------------------------------------
class _KeepAccounts:
    """Refuses to delete accounts with open business (here: the ones named "Keep*")."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, Any, Any]] = []

    @hookimpl
    def xrm_before_write(self, entity: str, action: str, record: Any, previous: Any) -> None:
        self.seen.append((entity, action, dict(record), previous))
        if entity == "account" and action == "delete" and str(record.get("name", "")).startswith("Keep"):
            raise Veto("this account still has open invoices; close them first", "/name")


@pytest.fixture
def keep_accounts(request: pytest.FixtureRequest) -> Iterator[tuple[_KeepAccounts, Any]]:
    plugin = _KeepAccounts()
    manager = get_plugin_manager()
    manager.register(plugin, name="keep-accounts-test-plugin")
    try:
        yield plugin, request.getfixturevalue("api")
    finally:
        manager.unregister(name="keep-accounts-test-plugin")


def test_a_before_write_veto_refuses_a_delete_with_a_422(keep_accounts: tuple[_KeepAccounts, Any]) -> None:
    plugin, api = keep_accounts
    headers = bearer(api, "admin", ["admin"])
    kept = ok(api.post("/api/v1/account", headers=headers, json={"name": "Keep GmbH"}), 201)
    gone = ok(api.post("/api/v1/account", headers=headers, json={"name": "Gone AG"}), 201)
    db = api.app.state.platform.db

    def count(sql: str, *args: Any) -> Any:
        async def run() -> Any:
            async with db.connection() as connection:
                return await connection.fetchval(sql, *args)

        return api.blocking_portal.call(run)

    audit_before = count("SELECT count(*) FROM xrm_sys.audit_log")
    outbox_before = count("SELECT count(*) FROM xrm_sys.outbox")

    body = problem(api.delete(f"/api/v1/account/{kept['id']}", headers=headers), 422)
    assert body["title"] == "Refused by a plugin" and "open invoices" in body["detail"]
    assert body["errors"] == [{"pointer": "/name", "detail": "this account still has open invoices; close them first"}]
    entity, action, record, _ = plugin.seen[-1]
    assert (entity, action, str(record["id"]), record["name"]) == ("account", "delete", kept["id"], "Keep GmbH")  # the stored record
    after = ok(api.get(f"/api/v1/account/{kept['id']}", headers=headers))
    assert after == kept  # unchanged, still there
    assert count("SELECT count(*) FROM xrm_sys.audit_log") == audit_before
    assert count("SELECT count(*) FROM xrm_sys.outbox") == outbox_before

    # Another record is deleted as usual.
    assert api.delete(f"/api/v1/account/{gone['id']}", headers=headers).status_code < 300
    assert plugin.seen[-1][1] == "delete"
    problem(api.get(f"/api/v1/account/{gone['id']}", headers=headers), 404)


# -- every hook has a test that implements it ------------------------------------------------------
HOOK_TESTS: dict[str, tuple[str, ...]] = {
    "xrm_capabilities": ("test_plugins.py::test_plugins_list_shows_hooks_and_capabilities",
                         "test_plugin_hooks.py::test_declared_relationship_kinds_are_listed"),
    "xrm_field_types": ("test_plugins.py::test_a_field_type_name_clash_names_both_plugins",
                        "test_plugins.py::test_bank_account_is_applied_at_start_and_validates_ibans"),
    "xrm_entity_definitions": ("test_plugins.py::test_bank_account_is_applied_at_start_and_validates_ibans",),
    "xrm_definition_vocabulary": ("test_plugin_hooks.py::test_a_plugin_keyword_is_part_of_the_definition_language",
                                  "test_plugin_hooks.py::test_without_the_plugin_its_keyword_is_unknown"),
    "xrm_check_definition": ("test_plugin_hooks.py::test_a_plugin_keyword_is_part_of_the_definition_language",),
    "xrm_relationship_types": ("test_plugin_hooks.py::test_declared_relationship_kinds_are_listed",
                               "test_relationships.py::test_a_plugin_relationship_type_becomes_a_connection_role"),
    "xrm_record_expansions": ("test_relationships.py::test_expand_links_and_connections_on_get_and_list",),
    "xrm_import_targets": ("test_relationships.py::test_connections_and_links_import_from_csv_through_the_cli_and_the_api",),
    "xrm_workflow_actions": ("test_plugins.py::test_a_workflow_action_is_declared_and_found_by_the_automations",
                             "test_automations.py::test_a_plugin_action_runs_with_the_declared_principal_and_scope"),
    "xrm_workflow_triggers": ("test_automations.py::test_a_plugin_trigger_fired_by_its_outbox_event_runs_the_automation_once",
                              "test_automations.py::test_a_plugin_triggers_parameters_are_checked_and_unknown_triggers_refused",
                              "test_plugin_hooks.py::test_declared_workflow_triggers_are_listed",
                              "test_plugin_hooks.py::test_a_definition_may_start_an_automation_on_a_declared_workflow_trigger"),
    "xrm_assistant_tools": ("test_plugin_hooks.py::test_declared_assistant_tools_are_collected_and_listed",),
    "xrm_cli_commands": ("test_plugins.py::test_a_plugin_adds_a_cli_command",),
    "xrm_startup": ("test_plugin_hooks.py::test_shutdown_is_called_when_the_app_stops_and_awaited",
                    "test_plugins.py::test_after_write_runs_in_the_same_transaction"),
    "xrm_shutdown": ("test_plugin_hooks.py::test_shutdown_is_called_when_the_app_stops_and_awaited",
                     "test_plugin_hooks.py::test_a_shutdown_that_raises_when_called_does_not_stop_the_others"),
    "xrm_redact": ("test_plugin_hooks.py::test_erasure_calls_redact_in_its_transaction_and_reports_the_rows",),
    "xrm_before_write": ("test_plugins.py::test_a_before_write_veto_is_a_422_and_writes_nothing",
                         "test_plugin_hooks.py::test_a_before_write_veto_refuses_a_delete_with_a_422"),
    "xrm_after_write": ("test_plugins.py::test_after_write_runs_in_the_same_transaction",),
    "xrm_api_routes": ("test_plugin_hooks.py::test_a_plugin_adds_an_endpoint_its_openapi_and_ui_parts",),
    "xrm_openapi": ("test_plugin_hooks.py::test_a_plugin_adds_an_endpoint_its_openapi_and_ui_parts",),
    "xrm_ui_routes": ("test_plugin_hooks.py::test_a_plugin_adds_an_endpoint_its_openapi_and_ui_parts",),
    "xrm_detail_panels": ("test_plugin_hooks.py::test_a_plugin_adds_an_endpoint_its_openapi_and_ui_parts",),
    "xrm_menu_entries": ("test_plugin_hooks.py::test_a_plugin_adds_an_endpoint_its_openapi_and_ui_parts",),
}
"""Hook -> the tests ("file::function", in tests/) that register an implementation of it and check what a user or developer sees."""

# Where the implementations of a test file's plugins live, besides the file itself (test_plugins.py installs plugins/xrm_iban).
_IMPLEMENTATIONS_OF = {"test_plugins.py": [ROOT / "plugins" / "xrm_iban" / "xrm_iban"],
                       "test_relationships.py": [ROOT / "plugins" / "builtins" / "relationships"]}


def _hookimpls_in(path: Path) -> set[str]:
    """Names of the functions in a file decorated with @hookimpl (at any depth: methods, nested classes)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and any(getattr(d, "id", getattr(d, "attr", None)) == "hookimpl" for d in node.decorator_list)}


def test_every_hook_has_a_test_that_implements_it() -> None:
    hooks = sorted(name for name, value in vars(hookspecs).items() if callable(value) and hasattr(value, "xrm_spec"))
    missing = [hook for hook in hooks if not HOOK_TESTS.get(hook)]
    assert not missing, f"hooks without a test that implements them (add one and list it in HOOK_TESTS): {missing}"
    assert not set(HOOK_TESTS) - set(hooks), f"HOOK_TESTS names hooks that do not exist: {sorted(set(HOOK_TESTS) - set(hooks))}"
    tests_dir = Path(__file__).resolve().parent
    for hook, tests in HOOK_TESTS.items():
        for test in tests:
            file_name, _, function = test.partition("::")
            path = tests_dir / file_name
            assert path.is_file(), f"{hook}: {test} names no file in tests/"
            tree = ast.parse(path.read_text(encoding="utf-8"))
            assert function in {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}, \
                f"{hook}: {test} names no test function"
            implemented = _hookimpls_in(path).union(*(_hookimpls_in(p) for d in _IMPLEMENTATIONS_OF.get(file_name, []) for p in d.glob("*.py")))
            assert hook in implemented, f"{hook}: {file_name} registers no implementation of it (no @hookimpl def {hook})"
