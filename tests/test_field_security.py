"""Field-level security: sensitive fields (x-xrm sensitive) and field grants.

A field marked sensitive is read only by roles granted it (read, or update
which implies read), by admins and by the system principal; for everyone
else it is absent from every result of RecordService (get, list, expand,
create/update/delete/restore, export, history) and refused in filters, sorts,
field selections and writes. Against the real database, through the service
and through the REST API.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient
from xrm.db.database import Database
from xrm.errors import DefinitionInvalid, ValidationFailed
from xrm.records.principal import SYSTEM_PRINCIPAL, Principal
from xrm.records.service import RecordService
from xrm.registry import SYSTEM_FIELDS, Registry
from xrm.schema.definition import parse_definition
from xrm.schema.service import SchemaService
from xrm.security.policy import RolePolicy

from conftest import bearer as _headers, ok as _ok, problem as _problem

ROOT = Path(__file__).resolve().parent.parent


# -- the definition ------------------------------------------------------------
def _definition(document: dict[str, Any]) -> list[str]:
    try:
        parse_definition(document)
    except DefinitionInvalid as error:
        return [f"{p.pointer}: {p.message}" for p in error.problems]
    return []


def test_a_sensitive_field_cannot_be_searched_or_displayed() -> None:
    base = {"type": "object", "properties": {"title": {"type": "string"}, "secret": {"type": "string", "x-xrm": {"sensitive": True}}}}
    ok = {**base, "x-xrm": {"name": "thing", "label": {"en": "Thing"}, "search_fields": ["title"]}}
    assert _definition(ok) == []
    searched = {**base, "x-xrm": {"name": "thing", "label": {"en": "Thing"}, "search_fields": ["title", "secret"]}}
    problems = _definition(searched)
    assert len(problems) == 1 and problems[0].startswith("/x-xrm/search_fields/1: 'secret' is sensitive")
    displayed = {**base, "x-xrm": {"name": "thing", "label": {"en": "Thing"}, "display_field": "secret", "search_fields": ["title"]}}
    assert [p.split(":")[0] for p in _definition(displayed)] == ["/x-xrm/display_field"]
    # The first text field is the display field (and the search field) by default.
    first = {"type": "object", "x-xrm": {"name": "thing", "label": {"en": "Thing"}},
             "properties": {"secret": {"type": "string", "x-xrm": {"sensitive": True}}, "title": {"type": "string"}}}
    assert [p.split(":")[0] for p in _definition(first)] == ["/properties/secret/x-xrm/sensitive"]
    wrong = {**base, "x-xrm": {"name": "thing", "label": {"en": "Thing"}},
             "properties": {"title": {"type": "string", "x-xrm": {"sensitive": "yes"}}}}
    assert any(p.startswith("/properties/title/x-xrm/sensitive") for p in _definition(wrong))


def test_the_demo_entities_mark_sensitive_fields() -> None:
    contact = parse_definition(json.loads((ROOT / "entity_schemas" / "contact.json").read_text()))
    account = parse_definition(json.loads((ROOT / "entity_schemas" / "account.json").read_text()))
    assert contact.fields["birthday"].xrm["sensitive"] is True
    assert account.fields["annual_revenue"].xrm["sensitive"] is True


# -- the REST API --------------------------------------------------------------


def _pointers(problem: dict[str, Any]) -> list[str]:
    return [e["pointer"] for e in problem.get("errors", [])]


@pytest.fixture
def people(api: TestClient) -> dict[str, dict[str, str]]:
    """admin; anna (sales); hr (sales + hr: reads contact.birthday); boss (sales + boss: updates it)."""
    admin = _headers(api, "admin", ["admin"])
    _ok(api.post("/api/v1/admin/roles", headers=admin, json={"name": "hr"}), 201)
    _ok(api.post("/api/v1/admin/roles", headers=admin, json={"name": "boss"}), 201)
    role = _ok(api.post("/api/v1/admin/roles/hr/field-grants", headers=admin, json={"entity": "contact", "field": "birthday", "access": "read"}))
    assert role["field_grants"] == [{"entity": "contact", "field": "birthday", "access": "read"}]
    _ok(api.post("/api/v1/admin/roles/boss/field-grants", headers=admin, json={"entity": "contact", "field": "birthday", "access": "update"}))
    return {
        "admin": admin,
        "anna": _headers(api, "anna", ["sales"]),
        "hr": _headers(api, "hr.user", ["sales", "hr"]),
        "boss": _headers(api, "boss.user", ["sales", "boss"]),
    }


def test_sensitive_fields_are_absent_for_users_without_a_grant(api: TestClient, people: dict[str, dict[str, str]]) -> None:
    admin, anna, hr = people["admin"], people["anna"], people["hr"]
    account = _ok(api.post("/api/v1/account", headers=admin, json={"name": "ACME", "annual_revenue": {"amount": 1000, "currency": "EUR"}}), 201)
    contact = _ok(api.post("/api/v1/contact", headers=admin, json={
        "full_name": "Mia Muster", "account": str(account["id"]), "birthday": "1980-12-31"}), 201)
    cid = contact["id"]
    assert contact["birthday"] == "1980-12-31"

    # get / list / fields: absent (the key, not a blank) for anna; present for hr (read) and admin.
    assert "birthday" not in _ok(api.get(f"/api/v1/contact/{cid}", headers=anna))
    assert _ok(api.get(f"/api/v1/contact/{cid}", headers=hr))["birthday"] == "1980-12-31"
    assert _ok(api.get(f"/api/v1/contact/{cid}", headers=admin))["birthday"] == "1980-12-31"
    listed = _ok(api.get("/api/v1/contact", headers=anna))["records"]
    assert listed and all("birthday" not in r for r in listed) and "full_name" in listed[0]
    assert all("birthday" in r for r in _ok(api.get("/api/v1/contact", headers=hr))["records"])

    # expand: the referenced account of another entity loses its sensitive field too.
    expanded = _ok(api.get(f"/api/v1/contact/{cid}?expand=account", headers=anna))
    assert expanded["account_expanded"]["name"] == "ACME" and "annual_revenue" not in expanded["account_expanded"]
    assert "annual_revenue" in _ok(api.get(f"/api/v1/contact/{cid}?expand=account", headers=admin))["account_expanded"]
    listed = _ok(api.get("/api/v1/contact?expand=account", headers=anna))["records"]
    assert "annual_revenue" not in listed[0]["account_expanded"] and "birthday" not in listed[0]

    # filter / sort / fields on it: 422 naming the parameter.
    assert _pointers(_problem(api.get("/api/v1/contact?birthday=1980-12-31", headers=anna), 422)) == ["/birthday"]
    assert _pointers(_problem(api.get("/api/v1/contact?birthday[gte]=1980-01-01", headers=anna), 422)) == ["/birthday[gte]"]
    assert _pointers(_problem(api.get("/api/v1/account?annual_revenue.currency=EUR", headers=anna), 422)) == ["/annual_revenue.currency"]
    assert _pointers(_problem(api.get("/api/v1/contact?sort=-birthday", headers=anna), 422)) == ["/order_by/0"]
    assert _pointers(_problem(api.get("/api/v1/contact?fields=full_name,birthday", headers=anna), 422)) == ["/fields/1"]
    assert _ok(api.get("/api/v1/contact?birthday=1980-12-31&sort=birthday&fields=birthday", headers=hr))["records"][0]["birthday"] == "1980-12-31"

    # export: no CSV column, no JSON key.
    _ok(api.post("/api/v1/admin/roles/sales/grants", headers=admin, json={"entity": "contact", "action": "export", "scope": "all"}))
    csv_text = api.get("/api/v1/contact/_export?format=csv", headers=anna)
    assert csv_text.status_code == 200, csv_text.text
    header = csv_text.text.splitlines()[0].split(",")
    assert "birthday" not in header and "full_name" in header and "1980-12-31" not in csv_text.text
    lines = api.get("/api/v1/contact/_export?format=jsonl", headers=anna).text.splitlines()
    assert lines and all("birthday" not in json.loads(line) for line in lines)
    assert "birthday" in api.get("/api/v1/contact/_export?format=csv", headers=admin).text.splitlines()[0].split(",")
    _problem(api.get("/api/v1/contact/_export?format=csv&birthday=1980-12-31", headers=anna), 422)

    # history: the audit trail's changes lose the field for anna, keep it for hr.
    _ok(api.patch(f"/api/v1/contact/{cid}", headers=admin, json={"birthday": "1981-01-01", "job_title": "CEO"}))
    entries = _ok(api.get(f"/api/v1/contact/{cid}/history", headers=anna))["entries"]
    assert all("birthday" not in (e["changes"] or {}) for e in entries)
    assert any("job_title" in (e["changes"] or {}) for e in entries)
    assert "1981-01-01" not in json.dumps(entries) and "1980-12-31" not in json.dumps(entries)
    entries = _ok(api.get(f"/api/v1/contact/{cid}/history", headers=hr))["entries"]
    assert any(e["changes"] and e["changes"].get("birthday", {}).get("new") == "1981-01-01" for e in entries)


def test_writing_a_sensitive_field_needs_an_update_grant(api: TestClient, people: dict[str, dict[str, str]]) -> None:
    admin, anna, hr, boss = people["admin"], people["anna"], people["hr"], people["boss"]
    _ok(api.post("/api/v1/admin/roles/sales/grants", headers=admin, json={"entity": "contact", "action": "update", "scope": "all"}))
    contact = _ok(api.post("/api/v1/contact", headers=anna, json={"full_name": "Own Contact"}), 201)
    cid = contact["id"]
    assert "birthday" not in contact

    def stored() -> Any:
        return _ok(api.get(f"/api/v1/contact/{cid}", headers=admin))

    # No grant: refused (422 at the field's pointer) and nothing is written.
    before = stored()
    problem = _problem(api.patch(f"/api/v1/contact/{cid}", headers=anna, json={"birthday": "1990-01-01", "job_title": "X"}), 422)
    assert _pointers(problem) == ["/birthday"]
    assert stored() == before
    _problem(api.patch(f"/api/v1/contact/{cid}", headers=anna, json={"birthday": None}), 422)
    assert _pointers(_problem(api.post("/api/v1/contact", headers=anna, json={"full_name": "N", "birthday": "1990-01-01"}), 422)) == ["/birthday"]
    bulk = _problem(api.post("/api/v1/contact/_bulk", headers=anna, json={"records": [{"full_name": "B", "birthday": "1990-01-01"}]}), 422)
    assert _pointers(bulk) == ["/records/0/birthday"]
    assert _ok(api.get("/api/v1/contact?full_name=N", headers=admin))["records"] == []

    # Update grant: boss writes it; the others' PATCH without it keeps the value, PUT does not clear it.
    updated = _ok(api.patch(f"/api/v1/contact/{cid}", headers=boss, json={"birthday": "1990-01-01"}))
    assert updated["birthday"] == "1990-01-01"
    assert "birthday" not in _ok(api.patch(f"/api/v1/contact/{cid}", headers=anna, json={"job_title": "Buyer"}))
    replaced = _ok(api.put(f"/api/v1/contact/{cid}", headers=anna, json={"full_name": "Own Contact", "job_title": "Lead"}))
    assert "birthday" not in replaced and stored()["birthday"] == "1990-01-01"

    # Read grant only: sees it, may send it unchanged, may not change it.
    seen = _ok(api.get(f"/api/v1/contact/{cid}", headers=hr))
    assert seen["birthday"] == "1990-01-01"
    _ok(api.patch(f"/api/v1/contact/{cid}", headers=hr, json={"birthday": "1990-01-01", "job_title": "Head"}))
    assert _pointers(_problem(api.patch(f"/api/v1/contact/{cid}", headers=hr, json={"birthday": "1991-01-01"}), 422)) == ["/birthday"]
    put = {k: v for k, v in seen.items() if k in ("full_name", "birthday")}
    assert _ok(api.put(f"/api/v1/contact/{cid}", headers=hr, json=put))["birthday"] == "1990-01-01"
    assert _pointers(_problem(api.post("/api/v1/contact", headers=hr, json={"full_name": "H", "birthday": "1990-01-01"}), 422)) == ["/birthday"]
    assert stored()["birthday"] == "1990-01-01"

    # delete / restore results: absent for anna.
    owned = _ok(api.post("/api/v1/contact", headers=boss, json={"full_name": "To delete", "birthday": "1970-01-01"}), 201)
    _ok(api.post("/api/v1/admin/roles/sales/grants", headers=admin, json={"entity": "contact", "action": "delete", "scope": "all"}))
    assert "birthday" not in _ok(api.delete(f"/api/v1/contact/{owned['id']}", headers=anna))
    assert "birthday" not in _ok(api.post(f"/api/v1/contact/{owned['id']}/restore", headers=anna))


def test_search_does_not_find_a_value_held_only_in_a_sensitive_field(api: TestClient, people: dict[str, dict[str, str]]) -> None:
    admin = people["admin"]
    # Sensitive text fields never enter the full-text column (the definition refuses them as search
    # fields), so a value held only in a sensitive field is not found by q=, not even for an admin.
    platform = api.app.state.platform

    async def add() -> None:
        await SchemaService(platform.db).apply([{
            "type": "object", "x-xrm": {"name": "patient", "label": {"en": "Patient"}, "search_fields": ["name"]},
            "properties": {"name": {"type": "string"}, "diagnosis": {"type": "string", "x-xrm": {"sensitive": True}}}}])
        await platform.registry.load(platform.db)

    api.blocking_portal.call(add)
    _ok(api.post("/api/v1/patient", headers=admin, json={"name": "Pat", "diagnosis": "zebrafever"}), 201)
    assert _ok(api.get("/api/v1/patient?q=Pat", headers=admin))["records"]
    assert _ok(api.get("/api/v1/patient?q=zebrafever", headers=admin))["records"] == []
    _ok(api.post("/api/v1/admin/roles/sales/grants", headers=admin, json={"entity": "patient", "action": "read", "scope": "all"}))
    assert _ok(api.get("/api/v1/patient?q=zebrafever", headers=people["anna"]))["records"] == []
    assert [set(r) & {"name", "diagnosis"} for r in _ok(api.get("/api/v1/patient?q=Pat", headers=people["anna"]))["records"]] == [{"name"}]


def test_field_grants_through_the_admin_api_and_the_cli(api: TestClient, people: dict[str, dict[str, str]]) -> None:
    admin, anna = people["admin"], people["anna"]
    errors = _problem(api.post("/api/v1/admin/roles/hr/field-grants", headers=admin, json={"entity": "contact", "field": "nope", "access": "read"}), 422)
    assert _pointers(errors) == ["/field"]
    assert _pointers(_problem(api.post("/api/v1/admin/roles/hr/field-grants", headers=admin,
                                       json={"entity": "contact", "field": "birthday", "access": "write"}), 422)) == ["/access"]
    _problem(api.post("/api/v1/admin/roles/admin/field-grants", headers=admin, json={"entity": "contact", "field": "birthday", "access": "read"}), 403)
    _problem(api.post("/api/v1/admin/roles/hr/field-grants", headers=anna, json={"entity": "contact", "field": "birthday", "access": "read"}), 403)
    _problem(api.post("/api/v1/admin/roles/ghost/field-grants", headers=admin, json={"entity": "contact", "field": "birthday", "access": "read"}), 404)
    contact = _ok(api.post("/api/v1/contact", headers=admin, json={"full_name": "G", "birthday": "2000-02-02"}), 201)
    # Granting takes effect at once (the policy reloads), and so does revoking.
    _ok(api.post("/api/v1/admin/roles/sales/field-grants", headers=admin, json={"entity": "contact", "field": "birthday", "access": "read"}))
    assert _ok(api.get(f"/api/v1/contact/{contact['id']}", headers=anna))["birthday"] == "2000-02-02"
    role = _ok(api.delete("/api/v1/admin/roles/sales/field-grants?entity=contact&field=birthday", headers=admin))
    assert role["field_grants"] == []
    assert "birthday" not in _ok(api.get(f"/api/v1/contact/{contact['id']}", headers=anna))
    _problem(api.delete("/api/v1/admin/roles/sales/field-grants?entity=contact&field=birthday", headers=admin), 404)
    _problem(api.delete("/api/v1/admin/roles/sales/field-grants?entity=contact", headers=admin), 400)
    spec = _ok(api.get("/api/openapi.json"))
    assert set(spec["paths"]["/api/v1/admin/roles/{role}/field-grants"]) >= {"post", "delete"}


def test_cli_grant_field(xrm_cli: Any) -> None:
    run = xrm_cli

    run("schema", "apply", str(ROOT / "entity_schemas"))
    run("role", "create", "hr")
    run("role", "grant-field", "hr", "contact", "nope", "read", code=1)
    assert "field contact.birthday" in run("role", "grant-field", "hr", "contact", "birthday", "update")
    roles = {r["name"]: r for r in json.loads(run("role", "list", "--json"))}
    assert roles["hr"]["field_grants"] == [{"entity": "contact", "field": "birthday", "access": "update"}]
    assert "field contact" not in run("role", "revoke-field", "hr", "contact", "birthday")
    run("role", "grant-field", "hr", "contact", "birthday", "write", code=2)


def test_import_reports_sensitive_cells_as_row_errors(api: TestClient, people: dict[str, dict[str, str]]) -> None:
    anna = people["anna"]
    body = "full_name,birthday\nWith,1990-01-01\nWithout,\n"
    response = api.post("/api/v1/contact/_import", headers={**anna, "Content-Type": "text/csv"}, content=body.encode())
    report = response.json()
    assert response.status_code in (200, 422), response.text
    assert report["created"] == 1 and report["error_count"] == 1
    assert report["errors"][0]["row"] == 2 and "sensitive" in report["errors"][0]["message"]


# -- the service, and a property over random grants -----------------------------
SECRET = {
    "type": "object",
    "x-xrm": {"name": "secret", "label": {"en": "Secret"}, "search_fields": ["title"]},
    "properties": {
        "title": {"type": "string"},
        "plain": {"type": "integer"},
        "a": {"type": "integer", "x-xrm": {"sensitive": True}},
        "b": {"type": "string", "x-xrm": {"sensitive": True}},
        "c": {"x-xrm": {"type": "currency", "sensitive": True}},
        "ref": {"x-xrm": {"type": "reference", "references": "secret"}},
        "d": {"x-xrm": {"type": "reference", "references": "secret", "sensitive": True}},
    },
}
SENSITIVE = ("a", "b", "c", "d")
ROLES = ("r1", "r2", "r3")


async def _prepare(uri: str) -> None:
    db = Database(uri)
    await db.open(min_size=1, max_size=2)
    try:
        await SchemaService(db).apply([SECRET])
        registry = await Registry().load(db)
        system = RecordService(db, registry, "secret", SYSTEM_PRINCIPAL)
        first = await system.create({"title": "one", "plain": 1, "a": 1, "b": "x", "c": {"amount": 1, "currency": "EUR"}})
        await system.create({"title": "two", "a": 2, "ref": str(first["id"]), "d": str(first["id"])})
    finally:
        await db.close()


async def _check(uri: str, grants: dict[str, dict[str, str]], held: frozenset[str]) -> None:
    db = Database(uri)
    await db.open(min_size=1, max_size=2)
    try:
        registry = await Registry().load(db)
        policy = RolePolicy(
            {role: {("*", "read"): "all", ("*", "update"): "all"} for role in ROLES},
            {role: {("secret", name): access for name, access in by_field.items() if access != "none"} for role, by_field in grants.items()},
        )
        import uuid

        principal = Principal(uuid.uuid4(), "someone", held)
        readable = {name for name in SENSITIVE if any(grants[r][name] in ("read", "update") for r in held)}
        writable = {name for name in SENSITIVE if any(grants[r][name] == "update" for r in held)}
        expected = set(SYSTEM_FIELDS) | {"title", "plain", "ref"} | readable
        service = RecordService(db, registry, "secret", principal, policy)
        page = await service.list(expand=["ref"], order_by=["title"])
        assert [set(r) - {"ref_expanded"} for r in page.records] == [expected, expected]
        assert set(page.records[1]["ref_expanded"]) == expected | {"_display"}
        assert set(await service.get(page.records[0]["id"])) == expected
        for name in SENSITIVE:
            if name not in readable:
                with pytest.raises(ValidationFailed):
                    await service.list(where={name: 1} if name == "a" else [(name, "is_null", True)])
                with pytest.raises(ValidationFailed):
                    await service.update(page.records[0]["id"], {name: None})
                with pytest.raises(ValidationFailed):
                    await service.list(order_by=[f"-{name}"] if name != "c" else ["c.currency"])
        if "d" not in readable:
            with pytest.raises(ValidationFailed) as refused:
                await service.list(expand=["ref", "d"])
            assert [p.pointer for p in refused.value.problems] == ["/expand/1"]
        else:
            assert (await service.list(expand=["d"])).records[1]["d_expanded"]["id"] == page.records[0]["id"]
        if "a" in writable:
            assert (await service.update(page.records[0]["id"], {"a": 1}))["a"] == 1
        elif "a" in readable:
            with pytest.raises(ValidationFailed):
                await service.update(page.records[0]["id"], {"a": 5})
    finally:
        await db.close()


def test_returned_keys_equal_the_model_of_field_grants(database_uri: str) -> None:
    asyncio.run(_prepare(database_uri))
    access = st.sampled_from(["none", "read", "update"])
    grants_strategy = st.fixed_dictionaries({role: st.fixed_dictionaries({name: access for name in SENSITIVE}) for role in ROLES})

    @given(grants=grants_strategy, held=st.frozensets(st.sampled_from(ROLES), min_size=1))
    @settings(max_examples=20, derandomize=True, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    def check(grants: dict[str, dict[str, str]], held: frozenset[str]) -> None:
        asyncio.run(_check(database_uri, grants, held))

    check()


async def test_admin_and_system_read_everything_and_history_is_filtered(db: Database) -> None:
    await SchemaService(db).apply([SECRET])
    registry = await Registry().load(db)
    policy = await RolePolicy().load(db)
    system = RecordService(db, registry, "secret", SYSTEM_PRINCIPAL, policy)
    record = await system.create({"title": "t", "a": 7, "b": "hidden words"})
    import uuid

    admin = Principal(uuid.uuid4(), "root", frozenset({"admin"}))
    assert (await RecordService(db, registry, "secret", admin, policy).get(record["id"]))["a"] == 7
    reader = Principal(uuid.uuid4(), "reader", frozenset({"sales"}))
    policy = RolePolicy({"sales": {("*", "read"): "all"}})
    history = await RecordService(db, registry, "secret", reader, policy).history(record["id"])
    assert history and set(history[0].changes or {}) == {"title"}
    assert await RecordService(db, registry, "secret", reader, policy).count(search="hidden") == 0


# -- import look-ups ------------------------------------------------------------
VENDOR = {
    "type": "object",
    "x-xrm": {"name": "vendor", "label": {"en": "Vendor"}, "display_field": "name", "search_fields": ["name"]},
    "required": ["name"],
    "properties": {"name": {"type": "string"}, "tax_id": {"type": "string", "x-xrm": {"unique": True, "sensitive": True}}},
}
ORDER = {
    "type": "object",
    "x-xrm": {"name": "purchase", "label": {"en": "Purchase"}, "display_field": "title"},
    "required": ["title"],
    "properties": {"title": {"type": "string"}, "vendor": {"x-xrm": {"type": "reference", "references": "vendor"}}},
}


async def test_import_look_ups_never_match_on_a_sensitive_field_the_importer_may_not_read(db: Database) -> None:
    """Whether a value of a hidden unique field exists must not show through a reference cell, an upsert key or a look-up."""
    import uuid

    from xrm.errors import XrmError
    from xrm.transfer import import_records
    from xrm.transfer.lookup import ReferenceResolver, find_by_values

    await SchemaService(db).apply([VENDOR, ORDER])
    registry = await Registry().load(db)
    vendor = await RecordService(db, registry, "vendor", SYSTEM_PRINCIPAL).create({"name": "Teile AG", "tax_id": "DE123456789"})
    everything = {("*", action): "all" for action in ("read", "create", "update")}
    policy = RolePolicy({"sales": everything, "tax": everything}, {"tax": {("vendor", "tax_id"): "read"}})
    anna = Principal(uuid.uuid4(), "anna", frozenset({"sales"}))
    tina = Principal(uuid.uuid4(), "tina", frozenset({"tax"}))
    vendors = RecordService(db, registry, "vendor", anna, policy)
    assert vendors.hidden_fields == {"tax_id"}

    # The look-up itself: an existing and a made-up value answer alike; a reader of the field finds it.
    assert await find_by_values(vendors, "tax_id", ["DE123456789", "DE000000000"]) == {"DE123456789": [], "DE000000000": []}
    readable = await find_by_values(RecordService(db, registry, "vendor", tina, policy), "tax_id", ["DE123456789"])
    assert [r["id"] for r in readable["DE123456789"]] == [vendor["id"]]
    resolved = await ReferenceResolver(vendors).resolve(["DE123456789", "DE000000000", "Teile AG"])
    assert resolved["Teile AG"].id == str(vendor["id"])
    assert resolved["DE123456789"].id is None and resolved["DE000000000"].id is None
    assert resolved["DE123456789"].error.replace("DE123456789", "X") == resolved["DE000000000"].error.replace("DE000000000", "X")

    # Through the importer: a reference cell holding the value fails like one holding any other text.
    report = await import_records(db, registry, "purchase", [
        {"title": "A", "vendor": "DE123456789"}, {"title": "B", "vendor": "DE000000000"}, {"title": "C", "vendor": "Teile AG"},
    ], principal=anna, policy=policy)
    assert report.created == 1
    first, second = (e.message for e in report.errors)
    assert first.replace("DE123456789", "X") == second.replace("DE000000000", "X")
    # ... and the hidden field cannot be the upsert key.
    with pytest.raises(XrmError, match="sensitive field you may not read"):
        await import_records(db, registry, "vendor", [{"name": "Teile AG", "tax_id": "DE123456789"}],
                             principal=anna, policy=policy, upsert_key="tax_id")
