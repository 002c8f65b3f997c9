"""The plugin system: hookspecs, the manager, `xrm plugins list`, and the example plugin plugins/xrm_iban.

The example plugin is built and installed with pip (offline, no build
isolation) into a folder of its own, put on sys.path for this module only:
the test venv stays as CI installs it, and other test modules never see the
plugin.
"""

from __future__ import annotations

import ast
import importlib
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from conftest import bearer, ok, problem
from xrm import hookspecs
from xrm.errors import DefinitionInvalid, Veto
from xrm.plugins import PluginError, PluginManager, get_plugin_manager, hookimpl, load_plugins, reset_plugin_manager

ROOT = Path(__file__).resolve().parent.parent
GOOD = "DE89370400440532013000"
GOOD_SPACED = "de89 3704 0044 0532 0130 00"
BAD_CHECKSUM = "DE89 3704 0044 0532 0130 01"


# -- installing the example plugin ------------------------------------------------
@pytest.fixture(scope="session")
def iban_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """plugins/xrm_iban built and installed by pip into a folder of its own (once per session)."""
    source = tmp_path_factory.mktemp("xrm-iban-source") / "xrm_iban"
    shutil.copytree(ROOT / "plugins" / "xrm_iban", source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = tmp_path_factory.mktemp("xrm-iban-site")
    command = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
               "--target", str(target), str(source)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (target / "xrm_iban").is_dir() and list(target.glob("xrm_iban-*.dist-info"))
    return target


@pytest.fixture(scope="module", autouse=True)
def iban_installed(iban_site: Path) -> Iterator[Path]:
    """The plugin on sys.path (its entry point visible to importlib.metadata) for this module's tests."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("XRM_PLUGINS", raising=False)
        patch.delenv("XRM_DISABLE_PLUGINS", raising=False)
        sys.path.insert(0, str(iban_site))
        reset_plugin_manager()
        try:
            yield iban_site
        finally:
            sys.path.remove(str(iban_site))
            for name in [m for m in sys.modules if m == "xrm_iban" or m.startswith("xrm_iban.")]:
                del sys.modules[name]
            reset_plugin_manager()


@pytest.fixture
def admin_headers(api: Any) -> dict[str, str]:
    return bearer(api, "admin", ["admin"])


def _fetchval(client: Any, sql: str, *args: Any) -> Any:
    db = client.app.state.platform.db

    async def run() -> Any:
        async with db.connection() as connection:
            return await connection.fetchval(sql, *args)

    return client.blocking_portal.call(run)


# -- the manager, discovery, allow- and denylist ---------------------------------------
def test_builtins_come_through_the_same_entry_point_group() -> None:
    from importlib import metadata

    builtins = {"core": "xrm.core_plugin", "automations": "xrm.builtins.automations", "relationships": "xrm.builtins.relationships",
                "statemachine": "xrm.builtins.statemachine", "crm": "xrm.builtins.crm", "assistant": "xrm.assistant.plugin"}
    points = {ep.name: ep for ep in metadata.entry_points(group="xrm.plugins")}
    for name, module in builtins.items():
        assert name in points, f"built-in plugin {name!r} is not declared in the xrm.plugins entry-point group"
        assert points[name].value == module and points[name].dist.metadata["Name"] == "xrm", points[name]
    assert {name for name, ep in points.items() if ep.dist.metadata["Name"] == "xrm"} == set(builtins)  # no other built-in
    assert points["iban"].value == "xrm_iban" and points["iban"].dist.metadata["Name"] == "xrm-iban"
    manager = get_plugin_manager()
    assert manager is get_plugin_manager()  # one per process
    for name, module in builtins.items():  # loaded from the entry points, not from the fallback for an uninstalled xrm
        info = manager.infos[name]
        assert (info.builtin, info.module, info.distribution) == (True, module, "xrm"), info
        assert manager.get_plugin(name) is importlib.import_module(module)
    assert not manager.infos["iban"].builtin
    from xrm.schema.field_types import FIELD_TYPES

    assert "text" in FIELD_TYPES and "iban" in FIELD_TYPES and len(FIELD_TYPES) == 16


@pytest.mark.parametrize(
    ("environ", "loaded"),
    [
        ({}, {"core", "iban"}),
        ({"XRM_PLUGINS": ""}, {"core"}),  # the allowlist never drops built-ins
        ({"XRM_PLUGINS": "iban"}, {"core", "iban"}),
        ({"XRM_PLUGINS": "xrm-iban"}, {"core", "iban"}),  # by distribution name too
        ({"XRM_PLUGINS": "something-else"}, {"core"}),
        ({"XRM_DISABLE_PLUGINS": "iban"}, {"core"}),
        ({"XRM_DISABLE_PLUGINS": "xrm_iban"}, {"core"}),
        ({"XRM_PLUGINS": "iban", "XRM_DISABLE_PLUGINS": "iban"}, {"core"}),
        ({"XRM_DISABLE_PLUGINS": "core"}, {"core", "iban"}),  # built-ins cannot be disabled
    ],
)
def test_allowlist_and_denylist(environ: dict[str, str], loaded: set[str]) -> None:
    manager = PluginManager()
    load_plugins(manager, environ=environ)
    # Other built-ins (statemachine, ...) always load too; the third-party ones follow the environment.
    assert {name for name, info in manager.infos.items() if not info.builtin or name == "core"} == loaded
    assert ("iban" in manager.field_types()) == ("iban" in loaded)


def test_the_environment_reaches_the_process_manager(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XRM_DISABLE_PLUGINS", "iban")
    reset_plugin_manager()
    try:
        assert "iban" not in get_plugin_manager().infos and "core" in get_plugin_manager().infos
        listed = {plugin["name"] for plugin in _cli("plugins", "list", "--json")}
        assert "core" in listed and "iban" not in listed
    finally:
        monkeypatch.delenv("XRM_DISABLE_PLUGINS")
        reset_plugin_manager()


class _Clash:
    def __init__(self, name: str) -> None:
        self.name = name

    @hookimpl
    def xrm_field_types(self) -> list[Any]:
        from xrm_iban import IbanType

        clone = IbanType()
        clone.name = self.name  # type: ignore[misc]
        return [clone]


@pytest.mark.parametrize(("type_name", "other"), [("iban", "iban"), ("text", "core")])
def test_a_field_type_name_clash_names_both_plugins(type_name: str, other: str) -> None:
    manager = get_plugin_manager()
    manager.register(_Clash(type_name), name="clashing-test-plugin")
    try:
        with pytest.raises(PluginError) as caught:
            manager.field_types()
        assert f"'{other}'" in str(caught.value) and "'clashing-test-plugin'" in str(caught.value)
        assert type_name in str(caught.value)
    finally:
        manager.unregister(name="clashing-test-plugin")
    assert "iban" in manager.field_types()


def test_a_hook_with_a_misspelt_name_is_refused() -> None:
    class Typo:
        @hookimpl
        def xrm_feild_types(self) -> list[Any]:
            return []

    class FakeEntryPoint:
        name, value, dist = "typo", "typo", None

        def load(self) -> Any:
            return Typo()

    with pytest.raises(PluginError, match="typo"):
        load_plugins(PluginManager(), environ={}, entry_points=[FakeEntryPoint()])


# -- xrm plugins list -------------------------------------------------------------------
def _cli(*args: str, code: int = 0) -> Any:
    from xrm.cli import main

    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == code, result.output
    return json.loads(result.output) if "--json" in args else result.output


def test_plugins_list_shows_hooks_and_capabilities() -> None:
    plugins = {p["name"]: p for p in _cli("plugins", "list", "--json")}
    iban = plugins["iban"]
    assert (iban["distribution"], iban["version"], iban["module"], iban["builtin"]) == ("xrm-iban", "0.1.0", "xrm_iban", False)
    assert {"xrm_field_types", "xrm_entity_definitions", "xrm_workflow_actions", "xrm_capabilities", "xrm_cli_commands"} <= set(iban["hooks"])
    assert iban["capabilities"]["network"] is False and iban["capabilities"]["writes"] == ["bank_account"]
    assert iban["provides"]["field_types"] == ["iban"] and iban["provides"]["workflow_actions"] == ["mask_iban"]
    assert iban["provides"]["entity_definitions"] == ["bank_account"]
    assert plugins["core"]["builtin"] and plugins["core"]["distribution"] == "xrm" and "text" in plugins["core"]["provides"]["field_types"]

    text = _cli("plugins", "list")
    assert "iban (xrm-iban 0.1.0) -> xrm_iban" in text and "xrm_field_types" in text and "network: False" in text


def test_a_plugin_adds_a_cli_command() -> None:
    assert "iban-check" in _cli("--help")
    assert _cli("iban-check", GOOD_SPACED).strip() == "DE89 3704 0044 0532 0130 00"
    assert "check digits" in _cli("iban-check", BAD_CHECKSUM, code=1)


def test_a_workflow_action_is_declared_and_found_by_the_automations() -> None:
    (action,) = [a for _, result in get_plugin_manager().each("xrm_workflow_actions") for a in result if a.name == "mask_iban"]
    assert action.name == "mask_iban" and action.label["de"] == "IBAN maskieren"
    assert action.run(record={"iban": GOOD}) == {"text": "DE89 **** **** **** **30 00"}


@pytest.fixture
def quiet_api(database_uri: str, tmp_path: Path) -> Iterator[Any]:
    """The app (shipped entities and the plugin's bank_account) without its in-process worker: the test runs the jobs."""
    from litestar.testing import TestClient

    from xrm.app import create_app
    from xrm.settings import Settings

    settings = Settings(data_dir=tmp_path, database_url=database_uri, schema_dir=ROOT / "entity_schemas", secret_key=None, worker=False)
    with TestClient(app=create_app(settings)) as client:
        yield client


def test_mask_iban_runs_from_the_job_queue_on_a_bank_account_within_its_declared_scope(quiet_api: Any) -> None:
    api = quiet_api
    headers = bearer(api, "admin", ["admin"])
    platform = api.app.state.platform
    # The plugin's own entity, with a text field for the masked value (for notification texts).
    from xrm_iban import xrm_entity_definitions

    (bank_account,) = xrm_entity_definitions()
    bank_account["properties"]["iban_masked"] = {"type": "string", "maxLength": 64, "x-xrm": {"label": {"en": "IBAN (masked)", "de": "IBAN (maskiert)"}}}

    async def extend() -> None:
        await platform.schema.apply([bank_account])
        await platform.registry.load(platform.db)

    api.blocking_portal.call(extend)
    for body in (
        {"name": "mask", "entity": "bank_account", "trigger": {"on": "created"},
         "actions": [{"type": "mask_iban", "save": {"text": "iban_masked"}}]},
        # Saved into the IBAN itself: the write goes through the one door, and the validator refuses a masked IBAN.
        {"name": "mask_over_iban", "entity": "bank_account", "trigger": {"on": "updated", "changed": ["holder"]},
         "actions": [{"type": "mask_iban", "save": {"text": "iban"}, "max_attempts": 1}]},
        # An account is not what the plugin declared it reads.
        {"name": "mask_account", "entity": "account", "trigger": {"on": "created"},
         "actions": [{"type": "mask_iban", "parameters": {"field": "name"}, "save": {"text": "name"}, "max_attempts": 1}]},
    ):
        ok(api.post("/api/v1/admin/automations", headers=headers, json={**body, "run_as": "admin"}), 201)
    created = ok(api.post("/api/v1/bank_account", headers=headers, json={"holder": "Erika", "iban": GOOD_SPACED}), 201)
    account = ok(api.post("/api/v1/account", headers=headers, json={"name": GOOD}), 201)

    from xrm.builtins.automations.engine import Worker

    api.blocking_portal.call(Worker(platform, name="iban-worker", poll_seconds=0.05).run_until_idle)
    stored = ok(api.get(f"/api/v1/bank_account/{created['id']}", headers=headers))
    assert stored["iban_masked"] == "DE89 **** **** **** **30 00" and stored["iban"] == GOOD
    assert ok(api.get(f"/api/v1/account/{account['id']}", headers=headers))["name"] == GOOD
    jobs = {j["automation"]: j for j in ok(api.get("/api/v1/admin/jobs", headers=headers))["jobs"]}
    assert jobs["db:mask"]["state"] == "done" and jobs["db:mask"]["result"] == {"text": "DE89 **** **** **** **30 00"}
    assert jobs["db:mask_account"]["state"] == "dead"
    assert "plugin 'iban' declared it reads bank_account; its action 'mask_iban' may not get a account record" in jobs["db:mask_account"]["last_error"]
    # The masked value was written by the run-as user, audited like any change.
    assert _fetchval(api, "SELECT principal_name FROM xrm_sys.audit_log WHERE entity = 'bank_account' AND action = 'record.updated'") == "admin"

    ok(api.patch(f"/api/v1/bank_account/{created['id']}", headers=headers, json={"holder": "Erika Muster"}))
    api.blocking_portal.call(Worker(platform, name="iban-worker", poll_seconds=0.05).run_until_idle)
    over = ok(api.get("/api/v1/admin/jobs?automation=mask_over_iban", headers=headers))["jobs"]
    assert [j["state"] for j in over] == ["dead"] and over[0]["last_error"].startswith("Invalid bank_account record: /iban ")
    assert ok(api.get(f"/api/v1/bank_account/{created['id']}", headers=headers))["iban"] == GOOD


# -- the field type in definitions -----------------------------------------------------
def test_definitions_accept_plugin_types_and_name_unknown_ones() -> None:
    from xrm.schema.definition import meta_schema, parse_definition

    (document,) = get_plugin_manager().hook.xrm_entity_definitions()[0]
    definition = parse_definition(document, known_entities=["account"])
    assert definition.fields["iban"].type.name == "iban" and definition.fields["iban"].unique
    assert "iban" in meta_schema()["$defs"]["field_xrm"]["properties"]["type"]["enum"]

    broken = json.loads(json.dumps(document))
    broken["properties"]["iban"]["x-xrm"]["type"] = "ibna"
    with pytest.raises(DefinitionInvalid) as caught:
        parse_definition(broken, known_entities=["account"])
    (found,) = caught.value.problems
    assert found.pointer == "/properties/iban/x-xrm/type"
    assert "'ibna' is not one of" in found.message and "iban" in found.message


# -- API, OpenAPI, import and forms: no IBAN-specific code in the core ----------------------
def test_bank_account_is_applied_at_start_and_validates_ibans(api: Any, admin_headers: dict[str, str]) -> None:
    entities = ok(api.get("/api/v1/meta/entities", headers=admin_headers))
    names = [e["name"] for e in (entities["entities"] if isinstance(entities, dict) else entities)]
    assert "bank_account" in names

    bad = problem(api.post("/api/v1/bank_account", headers=admin_headers, json={"holder": "Erika", "iban": BAD_CHECKSUM}), 422)
    assert [e["pointer"] for e in bad["errors"]] == ["/iban"]
    assert "check digits do not match" in bad["errors"][0]["detail"] and "mod-97" in bad["errors"][0]["detail"]
    short = problem(api.post("/api/v1/bank_account", headers=admin_headers, json={"holder": "Erika", "iban": "DE89 3704"}), 422)
    assert short["errors"][0]["pointer"] == "/iban" and "IBAN" in short["errors"][0]["detail"]
    assert _fetchval(api, "SELECT count(*) FROM bank_account") == 0

    created = ok(api.post("/api/v1/bank_account", headers=admin_headers, json={"holder": "Erika", "iban": GOOD_SPACED}), 201)
    assert created["iban"] == GOOD
    assert _fetchval(api, "SELECT iban FROM bank_account WHERE id = $1", __import__("uuid").UUID(created["id"])) == GOOD
    again = problem(api.post("/api/v1/bank_account", headers=admin_headers, json={"holder": "Max", "iban": GOOD}), 422)
    assert again["errors"][0]["pointer"] == "/iban"  # unique, compared in normal form

    spec = ok(api.get("/api/openapi.json", headers=admin_headers))
    schemas = spec["components"]["schemas"]
    found = [s["properties"]["iban"] for name, s in schemas.items() if "bank_account" in name.lower() and "iban" in s.get("properties", {})]
    assert any(f.get("type") == "string" and re.fullmatch(f["pattern"], GOOD) for f in found), found


def test_csv_import_reads_ibans_with_spaces(api: Any, admin_headers: dict[str, str]) -> None:
    body = "holder,iban\nErika Mustermann,de89 3704 0044 0532 0130 00\nJohn Smith,GB82 WEST 1234 5698 7654 32\nTypo,DE89 3704 0044 0532 0130 01\n"
    response = api.post("/api/v1/bank_account/_import", headers={**admin_headers, "Content-Type": "text/csv"}, content=body.encode())
    report = ok(response)
    assert (report["created"], report["skipped"]) == (2, 1)
    assert "check digits" in report["errors"][0]["message"]
    listed = ok(api.get("/api/v1/bank_account?sort=holder", headers=admin_headers))["records"]
    assert [r["iban"] for r in listed] == [GOOD, "GB82WEST12345698765432"]


def test_the_form_for_bank_accounts_renders_and_saves(ui: Any, ui_admin: str) -> None:
    page = ui.get("/e/bank_account/new")
    assert page.status_code == 200, page.text
    assert 'name="iban"' in page.text and 'placeholder="DE89 3704 0044 0532 0130 00"' in page.text

    refused = ui.post("/e/bank_account/new", data={"csrf_token": ui_admin, "holder": "Erika", "iban": BAD_CHECKSUM}, follow_redirects=False)
    assert refused.status_code in (200, 422) and "check digits" in refused.text
    saved = ui.post("/e/bank_account/new", data={"csrf_token": ui_admin, "holder": "Erika", "iban": GOOD_SPACED}, follow_redirects=False)
    assert saved.status_code in (302, 303), saved.text
    record_id = _fetchval(ui, "SELECT id FROM bank_account")
    assert _fetchval(ui, "SELECT iban FROM bank_account") == GOOD
    edit = ui.get(f"/e/bank_account/{record_id}/edit")
    assert edit.status_code == 200 and 'value="DE89 3704 0044 0532 0130 00"' in edit.text  # in groups of 4
    assert ui.get(f"/e/bank_account/{record_id}").status_code == 200


# -- write hooks -------------------------------------------------------------------------
class _Recorder:
    """A test plugin: vetoes holders named "Mallory", records what it sees after each write."""

    def __init__(self) -> None:
        self.platform: Any = None
        self.before: list[tuple[str, str, Any, Any]] = []
        self.after: list[dict[str, Any]] = []
        self.veto_after = False

    @hookimpl
    def xrm_startup(self, platform: Any) -> Any:
        async def remember() -> None:
            self.platform = platform

        return remember()

    @hookimpl
    def xrm_before_write(self, entity: str, action: str, record: Any, previous: Any) -> None:
        self.before.append((entity, action, record, previous))
        if entity == "bank_account" and record.get("holder") == "Mallory":
            raise Veto("Mallory may not hold a bank account here", "/holder")

    @hookimpl
    async def xrm_after_write(self, entity: str, action: str, record: Any, previous: Any, principal: Any, connection: Any) -> None:
        if entity != "bank_account":
            return
        from xrm.records.service import RecordService

        seen = await connection.fetchval("SELECT iban FROM bank_account WHERE id = $1", record["id"])
        audited = await connection.fetchval("SELECT count(*) FROM xrm_sys.audit_log WHERE record_id = $1", record["id"])
        self.after.append({"action": action, "seen": seen, "audited": audited, "in_transaction": connection.is_in_transaction(),
                           "previous": previous, "principal": principal.name})
        if action == "create":  # a write through the one door, in the same transaction
            accounts = RecordService(self.platform.db, self.platform.registry, "account", principal)
            await accounts.create({"name": f"Account of {record['holder']}"})
        if self.veto_after:
            raise Veto("refused after the fact")


@pytest.fixture
def recorder(request: pytest.FixtureRequest) -> Iterator[tuple[_Recorder, Any]]:
    """The recording plugin registered before the app starts; (plugin, api client)."""
    plugin = _Recorder()
    manager = get_plugin_manager()
    manager.register(plugin, name="recorder-test-plugin")
    try:
        yield plugin, request.getfixturevalue("api")
    finally:
        manager.unregister(name="recorder-test-plugin")


def test_a_before_write_veto_is_a_422_and_writes_nothing(recorder: tuple[_Recorder, Any]) -> None:
    plugin, api = recorder
    headers = bearer(api, "admin", ["admin"])
    audit_before = _fetchval(api, "SELECT count(*) FROM xrm_sys.audit_log")
    outbox_before = _fetchval(api, "SELECT count(*) FROM xrm_sys.outbox")
    body = problem(api.post("/api/v1/bank_account", headers=headers, json={"holder": "Mallory", "iban": GOOD}), 422)
    assert body["title"] == "Refused by a plugin" and "Mallory may not hold" in body["detail"]
    assert body["errors"] == [{"pointer": "/holder", "detail": "Mallory may not hold a bank account here"}]
    assert plugin.before[-1][:2] == ("bank_account", "create") and plugin.before[-1][2]["iban"] == GOOD
    assert _fetchval(api, "SELECT count(*) FROM bank_account") == 0
    assert _fetchval(api, "SELECT count(*) FROM xrm_sys.audit_log") == audit_before
    assert _fetchval(api, "SELECT count(*) FROM xrm_sys.outbox") == outbox_before
    assert plugin.after == []

    # In a batch (import), the pointer names the row; the other rows are still written.
    report = ok(api.post("/api/v1/bank_account/_import", headers={**headers, "Content-Type": "text/csv"},
                         content=f"holder,iban\nErika,{GOOD}\nMallory,GB82WEST12345698765432\n".encode()))
    assert (report["created"], report["skipped"]) == (1, 1) and "Mallory may not hold" in report["errors"][0]["message"]

    # An update to a vetoed value is refused too, with the stored record as `previous`.
    erika = ok(api.get("/api/v1/bank_account", headers=headers))["records"][0]
    problem(api.patch(f"/api/v1/bank_account/{erika['id']}", headers=headers, json={"holder": "Mallory"}), 422)
    assert plugin.before[-1][1] == "update" and plugin.before[-1][3]["holder"] == "Erika"
    assert ok(api.get(f"/api/v1/bank_account/{erika['id']}", headers=headers))["holder"] == "Erika"


def test_after_write_runs_in_the_same_transaction(recorder: tuple[_Recorder, Any]) -> None:
    plugin, api = recorder
    headers = bearer(api, "admin", ["admin"])
    assert plugin.platform is not None  # xrm_startup ran (and its coroutine was awaited)
    created = ok(api.post("/api/v1/bank_account", headers=headers, json={"holder": "Erika", "iban": GOOD_SPACED}), 201)
    (seen,) = plugin.after
    assert seen == {"action": "create", "seen": GOOD, "audited": 1, "in_transaction": True, "previous": None, "principal": "admin"}
    assert _fetchval(api, "SELECT count(*) FROM account WHERE name = 'Account of Erika'") == 1

    assert api.delete(f"/api/v1/bank_account/{created['id']}", headers=headers).status_code < 300
    assert plugin.after[-1]["action"] == "delete" and plugin.after[-1]["previous"]["holder"] == "Erika"

    # Raising after the write rolls back everything: the row, its audit entry and the plugin's own write.
    plugin.veto_after = True
    body = problem(api.post("/api/v1/bank_account", headers=headers, json={"holder": "Max", "iban": "GB82WEST12345698765432"}), 422)
    assert "refused after the fact" in body["detail"]
    assert plugin.after[-1]["seen"] == "GB82WEST12345698765432"  # it was there, inside the transaction
    assert _fetchval(api, "SELECT count(*) FROM bank_account WHERE holder = 'Max'") == 0
    assert _fetchval(api, "SELECT count(*) FROM account WHERE name = 'Account of Max'") == 0
    assert _fetchval(api, "SELECT count(*) FROM xrm_sys.audit_log WHERE entity = 'bank_account' AND action = 'record.created'") == 1


# -- every hook is documented ----------------------------------------------------------------
def _hookspec_names() -> list[str]:
    return sorted(name for name, value in vars(hookspecs).items() if callable(value) and hasattr(value, "xrm_spec"))


def test_every_hookspec_has_a_docstring_and_a_section_in_docs() -> None:
    names = _hookspec_names()
    assert {"xrm_field_types", "xrm_entity_definitions", "xrm_before_write", "xrm_after_write", "xrm_cli_commands",
            "xrm_startup", "xrm_capabilities", "xrm_relationship_types", "xrm_workflow_actions", "xrm_workflow_triggers",
            "xrm_detail_panels", "xrm_menu_entries", "xrm_assistant_tools"} <= set(names)
    docs = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    for name in names:
        function = getattr(hookspecs, name)
        assert function.__doc__ and len(function.__doc__.split()) >= 15, f"hookspec {name} needs a docstring"
        assert "__annotations__" in dir(function) and "return" in function.__annotations__, f"hookspec {name} needs types"
        assert re.search(rf"^### `{name}\(", docs, re.MULTILINE), f"docs/plugins.md has no section for hook {name}"
    documented = set(re.findall(r"^### `(xrm_[a-z_]+)\(", docs, re.MULTILINE))
    assert documented == set(names), f"docs/plugins.md documents hooks that do not exist: {documented - set(names)}"


def test_hookspecs_are_all_hooks_and_have_no_firstresult_by_accident() -> None:
    tree = ast.parse(Path(hookspecs.__file__).read_text(encoding="utf-8"))
    functions = [node.name for node in tree.body if isinstance(node, ast.FunctionDef)]
    assert sorted(functions) == _hookspec_names()  # nothing but hooks in the spec module
    for name in functions:
        assert getattr(hookspecs, name).xrm_spec.get("firstresult") is False


def test_no_platform_module_knows_about_iban() -> None:
    for path in (ROOT / "platform").rglob("*.py"):
        assert "iban" not in path.read_text(encoding="utf-8").lower(), path
    importlib.import_module("xrm.plugins")
