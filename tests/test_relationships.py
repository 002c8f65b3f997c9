"""The built-in relationships plugin: many-to-many links with attributes, hierarchies, connections, delete behaviours.

Real database, through the API and the web UI (docs/relationships.md).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT, bearer, log_in, make_user, ok, problem
from xrm.errors import DefinitionInvalid
from xrm.plugins import RelationshipType, hookimpl
from xrm.schema.ddl import qualified
from xrm.schema.definition import parse_definition

PROJECT = {
    "type": "object",
    "x-xrm": {
        "name": "project", "label": {"en": "Project", "de": "Projekt"}, "display_field": "name",
        "links": [{
            "name": "members", "target": "contact", "label": {"en": "Team members", "de": "Teammitglieder"},
            "inverse_name": "projects", "inverse_label": {"en": "Projects", "de": "Projekte"},
            "attributes": {"role": {"type": "string", "enum": ["lead", "member"], "label": {"en": "Role", "de": "Rolle"}},
                           "start_date": {"type": "string", "format": "date", "label": {"en": "Start", "de": "Beginn"}}},
            "required": ["role"],
        }],
    },
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "maxLength": 100},
        "account": {"x-xrm": {"type": "reference", "references": "account", "on_delete": "restrict"}},
    },
}
TASK = {"type": "object", "x-xrm": {"name": "task", "label": {"en": "Task"}, "display_field": "title"},
        "properties": {"title": {"type": "string"}, "project": {"x-xrm": {"type": "reference", "references": "project", "on_delete": "cascade"}}}}
MEMO = {"type": "object", "x-xrm": {"name": "memo", "label": {"en": "Memo"}, "display_field": "text"},
        "properties": {"text": {"type": "string"}, "project": {"x-xrm": {"type": "reference", "references": "project", "on_delete": "set_null"}}}}


@pytest.fixture
def app(database_uri: str, tmp_path: Path) -> Iterator[Any]:
    from litestar.testing import TestClient

    from xrm.app import create_app
    from xrm.settings import Settings

    schemas = tmp_path / "schemas"
    schemas.mkdir()
    for source in (ROOT / "entity_schemas").glob("*.json"):
        (schemas / source.name).write_text(source.read_text())
    for document in (PROJECT, TASK, MEMO):
        (schemas / f"{document['x-xrm']['name']}.json").write_text(json.dumps(document))
    settings = Settings(data_dir=tmp_path, database_url=database_uri, schema_dir=schemas, secret_key=None)
    with TestClient(app=create_app(settings), base_url="https://testserver.local") as client:
        yield client


@pytest.fixture
def admin(app: Any) -> dict[str, str]:
    return bearer(app, "root", ["admin"])


def _create(app: Any, headers: dict[str, str], entity: str, **values: Any) -> dict[str, Any]:
    return ok(app.post(f"/api/v1/{entity}", headers=headers, json=values), 201)  # type: ignore[no-any-return]


def _audit(app: Any, action: str) -> list[Any]:
    async def read() -> list[Any]:
        async with app.app.state.platform.db.connection() as connection:
            return await connection.fetch("SELECT entity, record_id, details FROM xrm_sys.audit_log WHERE action = $1 ORDER BY id", action)

    return app.blocking_portal.call(read)  # type: ignore[no-any-return]


def _role(app: Any, admin: dict[str, str], name: str, grants: list[tuple[str, str, str]]) -> None:
    ok(app.post("/api/v1/admin/roles", headers=admin, json={"name": name}), 201)
    for entity, action, scope in grants:
        ok(app.post(f"/api/v1/admin/roles/{name}/grants", headers=admin, json={"entity": entity, "action": action, "scope": scope}))


# -- definitions ------------------------------------------------------------------------------
def test_the_keywords_are_checked_with_pointers() -> None:
    assert parse_definition(PROJECT, known_entities=["account", "contact"]).xrm["links"][0]["name"] == "members"
    bad_link = json.loads(json.dumps(PROJECT))
    bad_link["x-xrm"]["links"][0]["target"] = "nowhere"
    bad_link["x-xrm"]["links"][0]["required"] = ["role", "colour"]
    with pytest.raises(DefinitionInvalid) as error:
        parse_definition(bad_link, known_entities=["account", "contact"])
    assert {p.pointer for p in error.value.problems} == {"/x-xrm/links/0/target", "/x-xrm/links/0/required/1"}
    bad_attribute = json.loads(json.dumps(PROJECT))
    bad_attribute["x-xrm"]["links"][0]["attributes"]["role"]["type"] = "object"
    with pytest.raises(DefinitionInvalid) as error:
        parse_definition(bad_attribute)
    assert error.value.problems[0].pointer.startswith("/x-xrm/links/0/attributes/role")
    tree = {"type": "object", "x-xrm": {"name": "unit", "label": {"en": "Unit"}, "hierarchy": {"parent": "name", "rollups": [{"field": "name", "aggregate": "sum"}]}},
            "properties": {"name": {"type": "string"}, "up": {"x-xrm": {"type": "reference", "references": "unit"}}}}
    with pytest.raises(DefinitionInvalid) as error:
        parse_definition(tree)
    assert [(p.pointer, p.message) for p in error.value.problems] == [
        ("/x-xrm/hierarchy/parent", "the parent must be a reference field to unit itself"),
        ("/x-xrm/hierarchy/rollups/0/field", "sum needs a number or currency field, 'name' is text"),
    ]
    required_null = {"type": "object", "x-xrm": {"name": "unit", "label": {"en": "Unit"}}, "required": ["up"],
                     "properties": {"up": {"x-xrm": {"type": "reference", "references": "unit", "on_delete": "set_null"}},
                                    "name": {"type": "string", "x-xrm": {"on_delete": "cascade"}}}}
    with pytest.raises(DefinitionInvalid) as error:
        parse_definition(required_null)
    assert {(p.pointer, p.message) for p in error.value.problems} == {
        ("/properties/up/x-xrm/on_delete", "set_null cannot clear a required field; use restrict or cascade"),
        ("/properties/name/x-xrm/on_delete", "only reference fields have a delete behaviour"),
    }
    clashing = json.loads(json.dumps(PROJECT))
    clashing["x-xrm"]["links"][0]["inverse_name"] = "connections"  # ?expand=connections is taken
    with pytest.raises(DefinitionInvalid) as error:
        parse_definition(clashing)
    assert [p.pointer for p in error.value.problems] == ["/x-xrm/links/0/inverse_name"]


# -- many-to-many -----------------------------------------------------------------------------
def test_many_to_many_links_with_attributes_from_both_sides(app: Any, admin: dict[str, str]) -> None:
    project = _create(app, admin, "project", name="Apollo")
    ada = _create(app, admin, "contact", full_name="Ada")
    url = f"/api/v1/project/{project['id']}/links/members"
    wrong = problem(app.post(url, headers=admin, json={"target": ada["id"], "attributes": {"role": "boss", "start_date": "soon"}}), 422)
    assert [e["pointer"] for e in wrong["errors"]] == ["/attributes/role", "/attributes/start_date"]
    missing = problem(app.post(url, headers=admin, json={"target": ada["id"]}), 422)
    assert [(e["pointer"], e["detail"]) for e in missing["errors"]] == [("/attributes/role", "is required")]
    extra = problem(app.post(url, headers=admin, json={"target": ada["id"], "attributes": {"role": "lead", "hours": 3}}), 422)
    assert extra["errors"][0]["pointer"] == "/attributes/hours"
    problem(app.post(url, headers=admin, json={"target": project["id"], "attributes": {"role": "lead"}}), 422)  # not a contact

    link = ok(app.post(url, headers=admin, json={"target": ada["id"], "attributes": {"role": "lead", "start_date": "2024-05-01"}}), 201)
    assert link["other"] == {"entity": "contact", "id": ada["id"], "display": "Ada"}
    assert link["attributes"] == {"role": "lead", "start_date": "2024-05-01"}
    again = problem(app.post(url, headers=admin, json={"target": ada["id"], "attributes": {"role": "member"}}), 422)
    assert again["errors"][0]["detail"] == "these two records are linked already"
    assert [row["other"]["display"] for row in ok(app.get(url, headers=admin))["links"]] == ["Ada"]
    # The inverse side: the contact's "projects".
    inverse = ok(app.get(f"/api/v1/contact/{ada['id']}/links/projects", headers=admin))["links"]
    assert [(row["other"]["display"], row["attributes"]["role"]) for row in inverse] == [("Apollo", "lead")]
    audit = _audit(app, "link.created")
    assert {(row["entity"], str(row["record_id"])) for row in audit} == {("project", project["id"]), ("contact", ada["id"])}
    assert audit[0]["details"]["attributes"] == {"role": "lead", "start_date": "2024-05-01"}
    # Removing it from the contact's side; the trail keeps it.
    assert app.delete(f"/api/v1/contact/{ada['id']}/links/projects/{link['id']}", headers=admin).status_code == 204
    assert ok(app.get(url, headers=admin))["links"] == []
    assert len(_audit(app, "link.removed")) == 2
    problem(app.delete(f"/api/v1/contact/{ada['id']}/links/projects/{link['id']}", headers=admin), 404)
    problem(app.get(f"/api/v1/project/{project['id']}/links/nothing", headers=admin), 404)


def test_a_link_is_visible_only_when_both_ends_are_readable(app: Any, admin: dict[str, str]) -> None:
    project = _create(app, admin, "project", name="Apollo")
    ada = _create(app, admin, "contact", full_name="Ada")
    bob = _create(app, admin, "contact", full_name="Bob")
    for person in (ada, bob):
        ok(app.post(f"/api/v1/project/{project['id']}/links/members", headers=admin, json={"target": person["id"], "attributes": {"role": "member"}}), 201)
    _role(app, admin, "pm", [("project", "read", "all"), ("project", "update", "all"), ("contact", "read", "own")])
    pm = bearer(app, "pat", ["pm"])
    mine = _create(app, admin, "contact", full_name="Pat's contact")
    # Only Ada is shared with pat; Bob stays hidden, also through the link.
    app.blocking_portal.call(lambda: app.app.state.platform.security().share("contact", ada["id"], user="pat"))
    seen = ok(app.get(f"/api/v1/project/{project['id']}/links/members", headers=pm))["links"]
    assert [row["other"]["display"] for row in seen] == ["Ada"]
    # Linking needs read permission on the target: an unreadable contact is "no record".
    refused = problem(app.post(f"/api/v1/project/{project['id']}/links/members", headers=pm,
                               json={"target": mine["id"], "attributes": {"role": "member"}}), 422)
    assert refused["errors"][0]["pointer"] == "/target"
    # Changing links needs update permission on the record it is made from.
    _role(app, admin, "viewer", [("project", "read", "all"), ("contact", "read", "all")])
    viewer = bearer(app, "vic", ["viewer"])
    assert len(ok(app.get(f"/api/v1/project/{project['id']}/links/members", headers=viewer))["links"]) == 2
    problem(app.post(f"/api/v1/project/{project['id']}/links/members", headers=viewer,
                     json={"target": ada["id"], "attributes": {"role": "lead"}}), 403)
    # A soft-deleted end hides the link; restoring brings it back.
    ok(app.delete(f"/api/v1/contact/{bob['id']}", headers=admin))
    assert len(ok(app.get(f"/api/v1/project/{project['id']}/links/members", headers=admin))["links"]) == 1
    ok(app.post(f"/api/v1/contact/{bob['id']}/restore", headers=admin))
    assert len(ok(app.get(f"/api/v1/project/{project['id']}/links/members", headers=admin))["links"]) == 2


def test_links_import_from_json_lines_by_name_or_id(app: Any, admin: dict[str, str]) -> None:
    project = _create(app, admin, "project", name="Apollo")
    _create(app, admin, "project", name="Gemini")
    ada = _create(app, admin, "contact", full_name="Ada")
    _create(app, admin, "contact", full_name="Bob")
    lines = "\n".join([
        json.dumps({"source": "Apollo", "target": ada["id"], "attributes": {"role": "lead"}}),
        json.dumps({"source": "Gemini", "target": "Bob", "attributes": {"role": "member", "start_date": "2024-01-01"}}),
        json.dumps({"source": "Nope", "target": "Bob", "attributes": {"role": "member"}}),
        json.dumps({"source": project["id"], "target": "Bob", "attributes": {"role": "chief"}}),
        "{not json",
    ])
    report = ok(app.post("/api/v1/project/_links/members", headers={**admin, "Content-Type": "application/x-ndjson"}, content=lines))
    assert report["created"] == 2 and report["skipped"] == 3 and report["rows"] == 5
    assert [e["row"] for e in report["errors"]] == [3, 4, 5]
    assert "no project record named 'Nope'" in report["errors"][0]["message"]
    assert "/attributes/role" in report["errors"][1]["message"]


# -- hierarchy ----------------------------------------------------------------------------------
def _group(app: Any, admin: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Holding > (Sub A > (A1, A2), Sub B)."""
    eur = lambda amount: {"amount": amount, "currency": "EUR"}  # noqa: E731
    holding = _create(app, admin, "account", name="Holding", annual_revenue=eur(1000), employees=10)
    sub_a = _create(app, admin, "account", name="Sub A", parent_account=holding["id"], annual_revenue=eur(200), employees=5)
    sub_b = _create(app, admin, "account", name="Sub B", parent_account=holding["id"], annual_revenue=eur(30.5), employees=1)
    a1 = _create(app, admin, "account", name="A1", parent_account=sub_a["id"], annual_revenue=eur(7), employees=2)
    a2 = _create(app, admin, "account", name="A2", parent_account=sub_a["id"])
    return {"holding": holding, "sub_a": sub_a, "sub_b": sub_b, "a1": a1, "a2": a2}


def test_cycles_in_a_hierarchy_are_refused_at_the_parent_field(app: Any, admin: dict[str, str]) -> None:
    g = _group(app, admin)
    own = problem(app.patch(f"/api/v1/account/{g['holding']['id']}", headers=admin, json={"parent_account": g["holding"]["id"]}), 422)
    assert [(e["pointer"], e["detail"]) for e in own["errors"]] == [("/parent_account", "a record cannot be its own parent")]
    below = problem(app.patch(f"/api/v1/account/{g['holding']['id']}", headers=admin, json={"parent_account": g["a1"]["id"]}), 422)
    assert below["errors"][0]["pointer"] == "/parent_account" and "cycle" in below["errors"][0]["detail"]
    assert ok(app.get(f"/api/v1/account/{g['holding']['id']}", headers=admin))["parent_account"] is None  # nothing written
    # Moving a subtree elsewhere (no cycle) is fine; so is the bulk path, with the row's pointer on a cycle.
    ok(app.patch(f"/api/v1/account/{g['a1']['id']}", headers=admin, json={"parent_account": g["sub_b"]["id"]}))
    bulk = problem(app.post("/api/v1/account/_bulk", headers=admin, json={"records": [
        {"id": g["sub_b"]["id"], "parent_account": g["sub_a"]["id"]},
        {"id": g["sub_a"]["id"], "parent_account": g["a1"]["id"]}]}), 422)
    assert [e["pointer"] for e in bulk["errors"]] == ["/records/1/parent_account"]


def test_tree_and_rollups_equal_an_independent_sum(app: Any, admin: dict[str, str]) -> None:
    g = _group(app, admin)
    tree = ok(app.get(f"/api/v1/account/{g['holding']['id']}/tree", headers=admin))
    assert tree["count"] == 5 and tree["ancestors"] == []
    assert [c["display"] for c in tree["root"]["children"]] == ["Sub A", "Sub B"]
    assert [c["display"] for c in tree["root"]["children"][0]["children"]] == ["A1", "A2"]
    rollups = {r["name"]: r["value"] for r in tree["rollups"]}

    async def independent() -> Any:
        async with app.app.state.platform.db.connection() as connection:
            return await connection.fetchrow(
                "SELECT sum(annual_revenue_amount) AS revenue, sum(employees) AS employees, count(*) - 1 AS below "
                f"FROM {qualified('account')} WHERE deleted_at IS NULL")

    expected = app.blocking_portal.call(independent)
    assert rollups["sum_annual_revenue"] == [{"amount": float(expected["revenue"]), "currency": "EUR"}] == [{"amount": 1237.5, "currency": "EUR"}]
    assert rollups["sum_employees"] == expected["employees"] == 18 and rollups["count"] == expected["below"] == 4
    sub = ok(app.get(f"/api/v1/account/{g['sub_a']['id']}/tree", headers=admin))
    assert [a["display"] for a in sub["ancestors"]] == ["Holding"]
    assert {r["name"]: r["value"] for r in sub["rollups"]}["sum_employees"] == 7
    # A deleted record leaves the tree and the sums.
    ok(app.delete(f"/api/v1/account/{g['a1']['id']}", headers=admin))
    after = {r["name"]: r["value"] for r in ok(app.get(f"/api/v1/account/{g['holding']['id']}/tree", headers=admin))["rollups"]}
    assert after["sum_employees"] == 16 and after["count"] == 3
    problem(app.get(f"/api/v1/contact/{g['a1']['id']}/tree", headers=admin), 404)  # contact has no hierarchy
    # A company with live subsidiaries cannot be deleted (they would silently drop out of the group's tree and sums).
    refused = problem(app.delete(f"/api/v1/account/{g['sub_a']['id']}", headers=admin), 422)
    assert "1 live account record (parent_account)" in refused["errors"][0]["detail"], refused
    ok(app.delete(f"/api/v1/account/{g['a2']['id']}", headers=admin))
    ok(app.delete(f"/api/v1/account/{g['sub_a']['id']}", headers=admin))  # now a leaf


def test_the_tree_respects_permissions(app: Any, admin: dict[str, str]) -> None:
    g = _group(app, admin)
    _role(app, admin, "reader", [("account", "read", "own")])
    bearer(app, "rita", ["reader"])
    security = app.app.state.platform.security()
    for key in ("holding", "sub_b", "a1"):  # Sub A is hidden: so is its subtree (A1, A2)
        app.blocking_portal.call(lambda key=key: security.share("account", g[key]["id"], user="rita"))
    rita = bearer(app, "rita2", ["reader"])  # a second user with the same role sees nothing of it
    problem(app.get(f"/api/v1/account/{g['holding']['id']}/tree", headers=rita), 404)
    token = {"Authorization": "Bearer " + app.blocking_portal.call(_token_for, app, "rita")}
    tree = ok(app.get(f"/api/v1/account/{g['holding']['id']}/tree", headers=token))
    assert [c["display"] for c in tree["root"]["children"]] == ["Sub B"] and tree["count"] == 2
    # annual_revenue is sensitive and rita has no field grant: that roll-up is left out.
    assert {r["name"] for r in tree["rollups"]} == {"sum_employees", "count"}
    assert {r["name"]: r["value"] for r in tree["rollups"]}["sum_employees"] == 11


async def _token_for(app: Any, name: str) -> str:
    from xrm.auth import UserService

    token, _ = await UserService(app.app.state.platform.db).create_token(name)
    return token


# -- connections ------------------------------------------------------------------------------------
def test_connections_with_roles_from_both_sides_and_validity(app: Any, admin: dict[str, str]) -> None:
    role = ok(app.post("/api/v1/_connection_roles", headers=admin, json={
        "name": "advisor", "label": {"en": "advisor of", "de": "berät"}, "inverse_label": {"en": "advised by", "de": "wird beraten von"},
        "source_entities": ["contact"], "target_entities": ["account"]}), 201)
    assert role["source_entities"] == ["contact"]
    ok(app.post("/api/v1/_connection_roles", headers=admin, json={"name": "supplies", "label": {"en": "supplies", "de": "beliefert"},
                                                                 "inverse_label": {"en": "supplied by", "de": "wird beliefert von"}}), 201)
    problem(app.post("/api/v1/_connection_roles", headers=admin, json={"name": "advisor", "label": {"en": "x"}}), 422)
    problem(app.post("/api/v1/_connection_roles", headers=bearer(app, "joe", ["sales"]), json={"name": "x", "label": {"en": "x"}}), 403)
    max_ = _create(app, admin, "contact", full_name="Max")
    acme = _create(app, admin, "account", name="ACME")
    globex = _create(app, admin, "account", name="Globex")
    made = ok(app.post(f"/api/v1/contact/{max_['id']}/connections", headers=admin, json={
        "role": "advisor", "other_entity": "account", "other_id": acme["id"], "valid_from": "2024-01-01", "valid_until": "2024-12-31"}), 201)
    assert made["label"]["en"] == "advisor of" and made["direction"] == "forward"
    # Made from the account's side with direction reverse: the contact advises Globex.
    ok(app.post(f"/api/v1/account/{globex['id']}/connections", headers=admin, json={
        "role": "advisor", "other_entity": "contact", "other_id": max_["id"], "direction": "reverse"}), 201)
    wrong_way = problem(app.post(f"/api/v1/account/{globex['id']}/connections", headers=admin, json={
        "role": "advisor", "other_entity": "contact", "other_id": max_["id"]}), 422)
    assert wrong_way["errors"][0]["pointer"] == "/role"
    ok(app.post(f"/api/v1/account/{acme['id']}/connections", headers=admin, json={"role": "supplies", "other_entity": "account", "other_id": globex["id"]}), 201)

    from_contact = ok(app.get(f"/api/v1/contact/{max_['id']}/connections", headers=admin))["connections"]
    assert sorted((c["label"]["en"], c["other"]["display"]) for c in from_contact) == [("advisor of", "ACME"), ("advisor of", "Globex")]
    from_acme = ok(app.get(f"/api/v1/account/{acme['id']}/connections", headers=admin))["connections"]
    assert sorted((c["label"]["de"], c["other"]["display"], c["direction"]) for c in from_acme) == [
        ("beliefert", "Globex", "forward"), ("wird beraten von", "Max", "reverse")]
    from_globex = ok(app.get(f"/api/v1/account/{globex['id']}/connections", headers=admin))["connections"]
    assert sorted(c["label"]["en"] for c in from_globex) == ["advised by", "supplied by"]
    # Validity: at a date outside 2024 the ACME advice is not listed.
    at_2025 = ok(app.get(f"/api/v1/contact/{max_['id']}/connections?at=2025-06-01", headers=admin))["connections"]
    assert [c["other"]["display"] for c in at_2025] == ["Globex"]
    assert len(ok(app.get(f"/api/v1/contact/{max_['id']}/connections?at=2024-06-01", headers=admin))["connections"]) == 2
    problem(app.get(f"/api/v1/contact/{max_['id']}/connections?at=someday", headers=admin), 400)
    problem(app.post(f"/api/v1/contact/{max_['id']}/connections", headers=admin, json={
        "role": "advisor", "other_entity": "account", "other_id": acme["id"], "valid_from": "2025-01-01", "valid_until": "2024-01-01"}), 422)
    # In use: the role cannot be deleted; removing from either side works and is audited.
    problem(app.delete("/api/v1/_connection_roles/advisor", headers=admin), 422)
    assert app.delete(f"/api/v1/account/{acme['id']}/connections/{made['id']}", headers=admin).status_code == 204
    assert len(_audit(app, "connection.removed")) == 2 and len(_audit(app, "connection.created")) == 6
    # A user who may not read contacts sees the account's connections to accounts only.
    _role(app, admin, "acc", [("account", "read", "all")])
    acc = bearer(app, "ann", ["acc"])
    assert [c["other"]["display"] for c in ok(app.get(f"/api/v1/account/{globex['id']}/connections", headers=acc))["connections"]] == ["ACME"]


# -- delete behaviours ---------------------------------------------------------------------------------
def test_delete_restrict_cascade_and_set_null(app: Any, admin: dict[str, str]) -> None:
    acme = _create(app, admin, "account", name="ACME")
    project = _create(app, admin, "project", name="Apollo", account=acme["id"])
    refused = problem(app.delete(f"/api/v1/account/{acme['id']}", headers=admin), 422)
    assert "1 live project record (account)" in refused["errors"][0]["detail"]
    assert ok(app.get(f"/api/v1/account/{acme['id']}", headers=admin))["deleted_at"] is None
    # contact.account has no on_delete: today's behaviour (keep) stays.
    contact = _create(app, admin, "contact", full_name="Max", account=acme["id"])

    tasks = [_create(app, admin, "task", title=f"Task {i}", project=project["id"]) for i in range(3)]
    memo = _create(app, admin, "memo", text="Remember", project=project["id"])
    ok(app.delete(f"/api/v1/project/{project['id']}", headers=admin))
    for task in tasks:
        problem(app.get(f"/api/v1/task/{task['id']}", headers=admin), 404)  # soft-deleted with the project
    assert ok(app.get(f"/api/v1/memo/{memo['id']}", headers=admin))["project"] is None
    # Cascaded deletes are ordinary soft deletes: restorable, in the trail.
    restored = ok(app.post(f"/api/v1/task/{tasks[0]['id']}/restore", headers=admin))
    assert restored["deleted_at"] is None and restored["project"] == project["id"]
    assert {str(r["record_id"]) for r in _audit(app, "record.deleted")} >= {t["id"] for t in tasks}
    # With the project gone, the account may go; the contact keeps its reference.
    ok(app.delete(f"/api/v1/account/{acme['id']}", headers=admin))
    assert ok(app.get(f"/api/v1/contact/{contact['id']}", headers=admin))["account"] == acme["id"]


# -- web UI ---------------------------------------------------------------------------------------------
def test_detail_page_panels_graph_and_forms(app: Any, admin: dict[str, str]) -> None:
    make_user(app, "boss", ["admin"])
    csrf = log_in(app, "boss")
    roles_page = app.get("/admin/connection-roles")
    assert roles_page.status_code == 200 and "Connection roles" in roles_page.text
    made = app.post("/admin/connection-roles", data={"csrf_token": csrf, "name": "partner", "label_en": "partner of", "label_de": "Partner von"},
                    follow_redirects=False)
    assert made.status_code == 303
    evil = _create(app, admin, "account", name="<script>alert(1)</script> & Co")
    other = _create(app, admin, "account", name="Partner AG", parent_account=evil["id"],
                    employees=12, annual_revenue={"amount": 5, "currency": "EUR"})
    project = _create(app, admin, "project", name="Apollo")
    ada = _create(app, admin, "contact", full_name="Ada <b>")
    # Add a connection and a link through the forms.
    connected = app.post(f"/r/account/{other['id']}/connections", data={
        "csrf_token": csrf, "choice": f"partner|forward|account", "other_id": evil["id"], "valid_from": "2024-01-01"}, follow_redirects=False)
    assert connected.status_code == 303, connected.text
    linked = app.post(f"/r/project/{project['id']}/links/members", data={
        "csrf_token": csrf, "target": ada["id"], "attr__role": "lead", "attr__start_date": "2024-02-01"}, follow_redirects=False)
    assert linked.status_code == 303, linked.text
    refused = app.post(f"/r/project/{project['id']}/links/members", data={"csrf_token": csrf, "target": ada["id"], "attr__role": "boss"})
    assert refused.status_code == 400 and "is not one of" in refused.text
    assert app.post(f"/r/project/{project['id']}/links/members", data={"target": ada["id"], "attr__role": "lead"}).status_code == 403  # no CSRF

    page = app.get(f"/e/account/{evil['id']}").text
    assert "<svg" in page and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; Co" in page and "<script>alert(1)" not in page
    assert f'<a href="/e/account/{other["id"]}"><title>Partner AG (Account) — partner of</title>' in page
    assert "Hierarchy" in page and f'href="/r/account/{evil["id"]}/tree"' in page and "Group employees" in page
    project_page = app.get(f"/e/project/{project['id']}").text
    assert "Team members (1)" in project_page and "Ada &lt;b&gt;" in project_page and "lead" in project_page
    assert 'hx-get="/e/contact/lookup?field=target"' in project_page
    tree = app.get(f"/r/account/{evil['id']}/tree").text
    assert "Partner AG" in tree and "Group revenue" in tree
    lookup = app.get("/r/lookup?choice=partner|forward|account&other_id__search=Part").text
    assert 'data-lookup-field="other_id"' in lookup and "Partner AG" in lookup
    # Remove the link from the contact's page form.
    link_id = ok(app.get(f"/api/v1/project/{project['id']}/links/members", headers=admin))["links"][0]["id"]
    assert app.post(f"/r/contact/{ada['id']}/links/projects/{link_id}/remove", data={"csrf_token": csrf}, follow_redirects=False).status_code == 303
    assert ok(app.get(f"/api/v1/project/{project['id']}/links/members", headers=admin))["links"] == []
    # German.
    app.post("/language", data={"csrf_token": csrf, "language": "de", "next": "/"})
    german = app.get(f"/e/account/{evil['id']}").text
    assert "Verbindungen (1)" in german and "Hierarchie" in german and "Mitarbeiter im Konzern" in german
    assert "Partner von" in german and re.search(r"1 Datensatz unter diesem", german)


# -- ?expand= links and connections ----------------------------------------------------------------------
def test_expand_links_and_connections_on_get_and_list(app: Any, admin: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    from xrm.builtins.relationships import store

    ok(app.post("/api/v1/_connection_roles", headers=admin, json={
        "name": "advisor", "label": {"en": "advisor of", "de": "berät"}, "inverse_label": {"en": "advised by", "de": "wird beraten von"}}), 201)
    apollo = _create(app, admin, "project", name="Apollo")
    gemini = _create(app, admin, "project", name="Gemini")
    ada = _create(app, admin, "contact", full_name="Ada")
    bob = _create(app, admin, "contact", full_name="Bob")
    acme = _create(app, admin, "account", name="ACME")
    for project, person, role in ((apollo, ada, "lead"), (apollo, bob, "member"), (gemini, bob, "lead")):
        ok(app.post(f"/api/v1/project/{project['id']}/links/members", headers=admin, json={"target": person["id"], "attributes": {"role": role}}), 201)
    ok(app.post(f"/api/v1/contact/{ada['id']}/connections", headers=admin, json={
        "role": "advisor", "other_entity": "account", "other_id": acme["id"], "valid_from": "2024-01-01"}), 201)
    ok(app.post(f"/api/v1/contact/{bob['id']}/connections", headers=admin, json={
        "role": "advisor", "other_entity": "contact", "other_id": ada["id"], "direction": "reverse"}), 201)  # Ada advises Bob

    one = ok(app.get(f"/api/v1/project/{apollo['id']}?expand=members", headers=admin))
    assert [(m["record"]["full_name"], m["attributes"]["role"], m["entity"]) for m in one["members_expanded"]] == [("Ada", "lead", "contact"), ("Bob", "member", "contact")]
    assert one["members_expanded"][0]["record"]["_display"] == "Ada"
    # The inverse side and connections together, on a list page: both ends of Ada -> Bob are on the page.
    calls: list[int] = []
    original = store.Relationships._connection_rows

    async def counted(self: Any, entity: str, ids: Any, limit: int, at: Any = None) -> Any:
        calls.append(len(ids))
        return await original(self, entity, ids, limit, at)

    monkeypatch.setattr(store.Relationships, "_connection_rows", counted)
    listed = ok(app.get("/api/v1/contact?expand=connections,projects,account&sort=full_name", headers=admin))["records"]
    assert calls == [2]  # one query for the whole page, not one per record
    by_name = {r["full_name"]: r for r in listed}
    assert sorted((c["label"]["en"], c["other"]["display"], c["direction"]) for c in by_name["Ada"]["connections_expanded"]) == [
        ("advisor of", "ACME", "forward"), ("advisor of", "Bob", "forward")]
    (advised,) = by_name["Bob"]["connections_expanded"]
    assert (advised["label"]["de"], advised["direction"], advised["record"]["full_name"]) == ("wird beraten von", "reverse", "Ada")
    acme_link = [c for c in by_name["Ada"]["connections_expanded"] if c["other"]["entity"] == "account"][0]
    assert acme_link["valid_from"] == "2024-01-01" and acme_link["record"]["name"] == "ACME" and acme_link["active"]
    assert sorted(p["record"]["name"] for p in by_name["Bob"]["projects_expanded"]) == ["Apollo", "Gemini"]
    assert by_name["Ada"]["account_expanded"] is None  # reference fields keep working alongside
    # Only what the caller may read: a user who may read contacts but no accounts sees Ada's advice to Bob only.
    _role(app, admin, "people", [("contact", "read", "all"), ("project", "read", "all")])
    people = bearer(app, "pia", ["people"])
    seen = ok(app.get(f"/api/v1/contact/{ada['id']}?expand=connections", headers=people))["connections_expanded"]
    assert [c["other"]["display"] for c in seen] == ["Bob"]
    # Unknown names are a 422 naming the parameter and what may be expanded.
    wrong = problem(app.get(f"/api/v1/contact/{ada['id']}?expand=friends", headers=admin), 422)
    assert wrong["errors"][0]["pointer"] == "/expand/0" and "connections" in wrong["errors"][0]["detail"] and "projects" in wrong["errors"][0]["detail"]
    problem(app.get("/api/v1/project?expand=projects", headers=admin), 422)  # the inverse name belongs to contact
    # The OpenAPI document lists the allowed values.
    spec = ok(app.get("/api/openapi.json"))
    (parameter,) = [p for p in spec["paths"]["/api/v1/project"]["get"]["parameters"] if p["name"] == "expand"]
    assert re.fullmatch(parameter["schema"]["pattern"], "members,connections,account")
    assert not re.fullmatch(parameter["schema"]["pattern"], "projects")


def test_expand_is_bounded_per_record(app: Any, admin: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    from xrm.builtins.relationships import store

    monkeypatch.setattr(store, "EXPAND_LIMIT", 2)
    project = _create(app, admin, "project", name="Apollo")
    for name in ("A", "B", "C"):
        person = _create(app, admin, "contact", full_name=name)
        ok(app.post(f"/api/v1/project/{project['id']}/links/members", headers=admin, json={"target": person["id"], "attributes": {"role": "member"}}), 201)
    expanded = ok(app.get(f"/api/v1/project/{project['id']}?expand=members", headers=admin))["members_expanded"]
    assert [m["record"]["full_name"] for m in expanded] == ["A", "B"]  # the oldest two; the sub-resource lists all
    assert len(ok(app.get(f"/api/v1/project/{project['id']}/links/members", headers=admin))["links"]) == 3


# -- relationship types declared by plugins ----------------------------------------------------------------
class PartnersPlugin:
    """Declares two relationship types; the built-in plugin turns them into connection roles at start."""

    def __init__(self) -> None:
        self.kinds = [RelationshipType("works_with", {"en": "works with", "de": "arbeitet mit"}),  # symmetric, any entities
                      RelationshipType("supplier_of", {"en": "supplier of", "de": "Lieferant von"}, source="account", target="account",
                                       inverse_label={"en": "supplied by", "de": "beliefert von"}),
                      RelationshipType("Bad Name", {"en": "bad"})]

    @hookimpl
    def xrm_relationship_types(self) -> list[RelationshipType]:
        return self.kinds


@pytest.fixture
def partners() -> Iterator[PartnersPlugin]:
    from xrm.plugins import get_plugin_manager

    plugin = PartnersPlugin()
    get_plugin_manager().register(plugin, name="partners")
    try:
        yield plugin
    finally:
        get_plugin_manager().unregister(name="partners")


def test_a_plugin_relationship_type_becomes_a_connection_role(partners: PartnersPlugin, app: Any, admin: dict[str, str]) -> None:
    from xrm.builtins.relationships.store import sync_plugin_roles

    roles = {r["name"]: r for r in ok(app.get("/api/v1/_connection_roles", headers=admin))["roles"]}
    assert set(roles) == {"works_with", "supplier_of"}  # "Bad Name" is refused (logged), the built-in kinds make no role
    assert roles["supplier_of"] == {"name": "supplier_of", "label": {"en": "supplier of", "de": "Lieferant von"},
                                    "inverse_label": {"en": "supplied by", "de": "beliefert von"},
                                    "source_entities": ["account"], "target_entities": ["account"], "plugin": "partners"}
    assert roles["works_with"]["inverse_label"] == roles["works_with"]["label"] and roles["works_with"]["source_entities"] is None
    # It works like any role, with its entity restrictions.
    acme = _create(app, admin, "account", name="ACME")
    globex = _create(app, admin, "account", name="Globex")
    max_ = _create(app, admin, "contact", full_name="Max")
    made = ok(app.post(f"/api/v1/account/{acme['id']}/connections", headers=admin,
                       json={"role": "supplier_of", "other_entity": "account", "other_id": globex["id"]}), 201)
    assert made["label"]["de"] == "Lieferant von"
    wrong = problem(app.post(f"/api/v1/account/{acme['id']}/connections", headers=admin,
                             json={"role": "supplier_of", "other_entity": "contact", "other_id": max_["id"]}), 422)
    assert wrong["errors"][0]["pointer"] == "/other_entity" and "points at account" in wrong["errors"][0]["detail"]
    # Admins cannot delete a plugin's role, even unused; the page says whose it is and offers no delete button.
    refused = problem(app.delete("/api/v1/_connection_roles/works_with", headers=admin), 422)
    assert "comes from the plugin 'partners'" in refused["errors"][0]["detail"]
    make_user(app, "boss", ["admin"])
    log_in(app, "boss")
    page = app.get("/admin/connection-roles").text
    assert page.count("from the plugin partners") == 2
    assert 'action="/admin/connection-roles/works_with/delete"' not in page
    ok(app.post("/api/v1/_connection_roles", headers=admin, json={"name": "mentor", "label": {"en": "mentor of"}}), 201)
    assert 'action="/admin/connection-roles/mentor/delete"' in app.get("/admin/connection-roles").text
    # At the next start a changed declaration updates the role (audited); an admin's role of the same name is left alone.
    partners.kinds[0] = RelationshipType("works_with", {"en": "partner of", "de": "Partner von"})
    partners.kinds.append(RelationshipType("mentor", {"en": "hijacked"}))
    platform = app.app.state.platform
    warnings = app.blocking_portal.call(sync_plugin_roles, platform.db, platform.registry)
    assert ok(app.get("/api/v1/_connection_roles", headers=admin))["roles"][-1]["label"] == {"en": "partner of", "de": "Partner von"}
    assert [row["details"]["name"] for row in _audit(app, "connection_role.updated")] == ["works_with"]
    roles = {r["name"]: r for r in ok(app.get("/api/v1/_connection_roles", headers=admin))["roles"]}
    assert roles["mentor"]["label"] == {"en": "mentor of"} and roles["mentor"]["plugin"] is None
    assert any("'mentor' exists already (made by an admin)" in w for w in warnings)


# -- importing links and connections -------------------------------------------------------------------------
def _connections_of(app: Any, admin: dict[str, str], entity: str, record: dict[str, Any]) -> list[tuple[str, str, Any, Any]]:
    rows = ok(app.get(f"/api/v1/{entity}/{record['id']}/connections", headers=admin))["connections"]
    return sorted(((c["label"]["en"], c["other"]["display"], c["valid_from"], c["valid_until"]) for c in rows), key=str)


def test_connections_and_links_import_from_csv_through_the_cli_and_the_api(app: Any, admin: dict[str, str], xrm_cli: Any,
                                                                           tmp_path: Path) -> None:
    ok(app.post("/api/v1/_connection_roles", headers=admin, json={
        "name": "advisor", "label": {"en": "advisor of", "de": "berät"}, "inverse_label": {"en": "advised by", "de": "wird beraten von"},
        "source_entities": ["contact"], "target_entities": ["account"]}), 201)
    max_ = _create(app, admin, "contact", full_name="Max Muster")
    _create(app, admin, "account", name="ACME")
    _create(app, admin, "account", name="Globex")
    # German headers, semicolons, German dates, entities by label, a record by id, a role by its reverse label (direction swapped).
    good = tmp_path / "verbindungen.csv"
    good.write_text("Rolle;Von Entität;Von Datensatz;Zu Entität;Zu Datensatz;Gültig ab;Gültig bis\n"
                    "advisor;contact;max muster;account;ACME;01.01.2024;31.12.2024\n"
                    f"wird beraten von;Firma;Globex;Kontakt;{max_['id']};;\n", encoding="utf-8")
    dry = xrm_cli("import", "_connections", str(good), "--dry-run")
    assert "2 rows read, 2 would be created" in dry and "Dry run: nothing was written." in dry
    assert _connections_of(app, admin, "contact", max_) == []
    assert "2 rows read, 2 created" in xrm_cli("import", "_connections", str(good))
    assert _connections_of(app, admin, "contact", max_) == [("advisor of", "ACME", "2024-01-01", "2024-12-31"), ("advisor of", "Globex", None, None)]
    assert len(_audit(app, "connection.created")) == 4  # each end, each connection: the same door as one POST

    # One bad row and nothing is written; every error names its row and column.
    bad = ("role,from_entity,from,to_entity,to,valid_from\n"
           "advisor,contact,Max Muster,account,ACME,2025-01-01\n"       # row 2: fine on its own
           "colleague,contact,Max Muster,account,Globex,\n"             # row 3: no such role
           "advisor,contact,Max Muster,account,Globex,31.02.2024\n"     # row 4: no such date
           "advisor,contact,Nobody,account,Initech,\n"                  # row 5: no such records
           "advisor,account,ACME,contact,Max Muster,\n")                # row 6: the role starts at contact
    headers = {**admin, "Content-Type": "text/csv"}
    report = ok(app.post("/api/v1/_connections/_import", headers=headers, content=bad))
    assert (report["rows"], report["created"], report["skipped"]) == (5, 0, 5)
    errors = {(e["row"], e["column"]) for e in report["errors"]}
    assert errors == {(3, "role"), (4, "valid_from"), (5, "from"), (5, "to"), (6, "from_entity"), (6, "to_entity")}
    messages = {(e["row"], e["column"]): e["message"] for e in report["errors"]}
    assert "'colleague' is not a connection role" in messages[(3, "role")] and "31.02.2024" in messages[(4, "valid_from")]
    assert "Nobody" in messages[(5, "from")] and "starts at contact, not account" in messages[(6, "from_entity")]
    assert len(_connections_of(app, admin, "contact", max_)) == 2  # row 2 was not written either
    missing = problem(app.post("/api/v1/_connections/_import", headers=headers, content="role,from\nadvisor,Max\n"), 400)
    assert "no column for from_entity, to_entity, to" in missing["detail"]
    (tmp_path / "bad.csv").write_text(bad, encoding="utf-8")
    printed = xrm_cli("import", "_connections", str(tmp_path / "bad.csv"), code=1)
    assert "0 created" in printed and "nothing was imported: 4 row(s) have errors" in printed and "row 3, column 'role'" in printed

    # JSON Lines: keys are the columns.
    lines = json.dumps({"Rolle": "berät", "von_entität": "Kontakt", "from": "Max Muster", "to_entity": "account", "to": "Globex",
                        "valid_from": "2026-01-01"}) + "\n"
    jsonl = ok(app.post("/api/v1/_connections/_import", headers={**admin, "Content-Type": "application/x-ndjson"}, content=lines))
    assert (jsonl["created"], jsonl["errors"]) == (1, [])
    assert ("advisor of", "Globex", "2026-01-01", None) in _connections_of(app, admin, "contact", max_)

    # Links, with their attribute columns (by label), from the source's and from the target's side.
    apollo = _create(app, admin, "project", name="Apollo")
    _create(app, admin, "contact", full_name="Ada")
    links = ok(app.post("/api/v1/project.members/_import?dry_run=false", headers=headers,
                        content="from,to,Rolle,Beginn\nApollo,Ada,Lead,01.05.2024\nApollo,Max Muster,member,\n"))
    assert (links["created"], links["errors"]) == (2, [])
    shown = ok(app.get(f"/api/v1/project/{apollo['id']}/links/members", headers=admin))["links"]
    assert sorted((row["other"]["display"], row["attributes"]) for row in shown) == [
        ("Ada", {"role": "lead", "start_date": "2024-05-01"}), ("Max Muster", {"role": "member"})]
    inverse = ok(app.post("/api/v1/contact.projects/_import", headers=headers, content="from,to,role\nAda,Apollo,member\nAda,Apollo,boss\n"))
    assert inverse["created"] == 0 and [(e["row"], e["column"]) for e in inverse["errors"]] == [(2, "to"), (3, "role")]
    assert "linked already" in inverse["errors"][0]["message"]
    # A user who may read but not change the records cannot import connections from them.
    _role(app, admin, "viewer", [("contact", "read", "all"), ("account", "read", "all")])
    viewer = bearer(app, "vic", ["viewer"])
    refused = ok(app.post("/api/v1/_connections/_import", headers={**viewer, "Content-Type": "text/csv"},
                          content="role,from_entity,from,to_entity,to\nadvisor,contact,Max Muster,account,ACME\n"))
    assert refused["created"] == 0 and refused["errors"][0]["row"] == 2 and "allows update on contact" in refused["errors"][0]["message"]


def test_the_graph_shows_a_second_ring_of_permitted_records(app: Any, admin: dict[str, str]) -> None:
    ok(app.post("/api/v1/_connection_roles", headers=admin, json={"name": "partner", "label": {"en": "partner of", "de": "Partner von"}}), 201)
    hub = _create(app, admin, "account", name="Hub")
    near = _create(app, admin, "account", name="Near <AG>")
    far = _create(app, admin, "account", name="Far")
    hidden = _create(app, admin, "contact", full_name="Secret Person")
    for a, b in ((hub, near), (near, far)):
        ok(app.post(f"/api/v1/account/{a['id']}/connections", headers=admin, json={"role": "partner", "other_entity": "account", "other_id": b["id"]}), 201)
    ok(app.post(f"/api/v1/account/{near['id']}/connections", headers=admin, json={"role": "partner", "other_entity": "contact", "other_id": hidden["id"]}), 201)
    make_user(app, "boss", ["admin"])
    log_in(app, "boss")
    page = app.get(f"/e/account/{hub['id']}").text
    assert "<svg" in page, page[-3000:]
    graph = page[page.index("<svg"):page.index("</svg>")]
    # The second ring: Near's own connections, each a link to the record with a title; every name escaped.
    assert f'<a href="/e/account/{far["id"]}"><title>Far (Account) — partner of</title>' in graph
    assert f'<a href="/e/contact/{hidden["id"]}">' in graph and 'class="node outer"' in graph
    assert "Near &lt;AG&gt;" in graph and "Near <AG>" not in page
    assert graph.count(f'href="/e/account/{hub["id"]}"') == 0  # the record itself is the centre, not a link back
    # The same in text: a table of the further connections.
    table = page[page.index('class="further-connections"'):]
    assert "Connections of the connected records (2)" in table and "Far" in table and "Secret Person" in table
    # A user who may read accounts but not contacts sees no contact in either ring.
    _role(app, admin, "acc", [("account", "read", "all")])
    make_user(app, "ann", ["acc"])
    log_in(app, "ann")
    theirs = app.get(f"/e/account/{hub['id']}").text
    assert "Secret Person" not in theirs and hidden["id"] not in theirs and f'href="/e/account/{far["id"]}"' in theirs
    assert "Connections of the connected records (1)" in theirs
    # German.
    german = app.get(f"/e/account/{hub['id']}", headers={"Accept-Language": "de"}).text
    assert "Verbindungen der verbundenen Datensätze (1)" in german
