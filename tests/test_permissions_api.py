"""Permissions over the REST API: admin endpoints, 403 vs 404, shares, assign, explain, export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from litestar.testing import TestClient

from conftest import bearer as _headers, ok as _ok, problem as _problem

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def people(api: TestClient) -> dict[str, dict[str, str]]:
    """admin; anna and carl (sales) in team Sales below Company; ben (service) in Service; nobody (no roles)."""
    headers = {
        "admin": _headers(api, "admin", ["admin"]),
        "anna": _headers(api, "anna", ["sales"]),
        "carl": _headers(api, "carl", ["sales"]),
        "ben": _headers(api, "ben", ["service"]),
        "nobody": _headers(api, "nobody", []),
    }
    admin = headers["admin"]
    _ok(api.post("/api/v1/admin/teams", headers=admin, json={"name": "Company"}), 201)
    _ok(api.post("/api/v1/admin/teams", headers=admin, json={"name": "Sales", "parent": "Company"}), 201)
    _ok(api.post("/api/v1/admin/teams", headers=admin, json={"name": "Service", "parent": "Company"}), 201)
    for team, user in (("Sales", "anna"), ("Sales", "carl"), ("Service", "ben")):
        _ok(api.put(f"/api/v1/admin/teams/{team}/members/{user}", headers=admin))
    return headers


def test_admin_endpoints_need_the_admin_role(api: TestClient, people: dict[str, dict[str, str]]) -> None:
    for who in ("anna", "nobody"):
        _problem(api.get("/api/v1/admin/roles", headers=people[who]), 403)
        _problem(api.post("/api/v1/admin/teams", headers=people[who], json={"name": "X"}), 403)
        _problem(api.get("/api/v1/admin/explain?user=anna&entity=account&id=00000000-0000-0000-0000-000000000001", headers=people[who]), 403)
    _problem(api.get("/api/v1/admin/roles"), 401)


def test_roles_and_grants_through_the_api(api: TestClient, people: dict[str, dict[str, str]]) -> None:
    admin = people["admin"]
    roles = {r["name"]: r for r in _ok(api.get("/api/v1/admin/roles", headers=admin))["roles"]}
    assert roles["admin"]["built_in"] and {"entity": "*", "action": "read", "scope": "all"} in roles["admin"]["grants"]
    assert {"entity": "deal", "action": "read", "scope": "team_tree"} in roles["sales"]["grants"]
    assert set(roles["sales"]["users"]) == {"anna", "carl"}
    role = _ok(api.post("/api/v1/admin/roles", headers=admin, json={"name": "auditor", "description": "reads everything"}), 201)
    assert role == {"name": "auditor", "description": "reads everything", "built_in": False, "grants": [], "field_grants": [], "users": []}
    _problem(api.post("/api/v1/admin/roles", headers=admin, json={"name": "auditor"}), 422)
    _problem(api.post("/api/v1/admin/roles", headers=admin, json={"name": "Bad Name"}), 422)
    role = _ok(api.post("/api/v1/admin/roles/auditor/grants", headers=admin, json={"entity": "*", "action": "read", "scope": "all"}))
    assert role["grants"] == [{"entity": "*", "action": "read", "scope": "all"}]
    _problem(api.post("/api/v1/admin/roles/auditor/grants", headers=admin, json={"entity": "*", "action": "read", "scope": "most"}), 422)
    _problem(api.post("/api/v1/admin/roles/admin/grants", headers=admin, json={"entity": "*", "action": "read", "scope": "none"}), 403)
    _problem(api.delete("/api/v1/admin/roles/admin", headers=admin), 403)
    # the nobody user gets the role: the running server's policy knows it at once
    _problem(api.get("/api/v1/account", headers=people["nobody"]), 403)
    assert _ok(api.put("/api/v1/admin/users/nobody/roles/auditor", headers=admin)) == {"user": "nobody", "roles": ["auditor"]}
    _ok(api.get("/api/v1/account", headers=people["nobody"]))
    _problem(api.post("/api/v1/account", headers=people["nobody"], json={"name": "X"}), 403)
    _ok(api.delete("/api/v1/admin/roles/auditor/grants?entity=*&action=read", headers=admin))
    _problem(api.get("/api/v1/account", headers=people["nobody"]), 403)
    _ok(api.delete("/api/v1/admin/users/nobody/roles/auditor", headers=admin))
    assert _ok(api.delete("/api/v1/admin/roles/auditor", headers=admin)) == {"deleted": "auditor"}
    _problem(api.get("/api/v1/admin/roles/auditor", headers=admin), 404)
    _problem(api.put("/api/v1/admin/users/nobody/roles/no-such-role", headers=admin), 404)


def test_teams_through_the_api(api: TestClient, people: dict[str, dict[str, str]]) -> None:
    admin = people["admin"]
    teams = {t["name"]: t for t in _ok(api.get("/api/v1/admin/teams", headers=admin))["teams"]}
    assert teams["Sales"]["parent"] == "Company" and teams["Sales"]["members"] == ["anna", "carl"]
    _problem(api.patch("/api/v1/admin/teams/Company", headers=admin, json={"parent": "Sales"}), 422)  # a cycle
    _problem(api.delete("/api/v1/admin/teams/Company", headers=admin), 400)  # has sub-teams
    _problem(api.post("/api/v1/admin/teams", headers=admin, json={"name": "Sales"}), 422)
    _problem(api.post("/api/v1/admin/teams", headers=admin, json={"name": "X", "parent": "nope"}), 404)
    _ok(api.delete("/api/v1/admin/teams/Sales/members/carl", headers=admin))
    _problem(api.delete("/api/v1/admin/teams/Sales/members/carl", headers=admin), 404)
    _ok(api.patch("/api/v1/admin/teams/Service", headers=admin, json={"parent": None}))
    assert _ok(api.get("/api/v1/admin/teams/Service", headers=admin))["parent"] is None


def test_scopes_403_and_404_shares_and_assign(api: TestClient, people: dict[str, dict[str, str]]) -> None:
    admin, anna, carl, ben = people["admin"], people["anna"], people["carl"], people["ben"]
    account = _ok(api.post("/api/v1/account", headers=admin, json={"name": "ACME"}), 201)
    mine = _ok(api.post("/api/v1/account", headers=anna, json={"name": "Anna's"}), 201)
    deal = _ok(api.post("/api/v1/deal", headers=anna, json={"title": "Big one", "stage": "prospecting"}), 201)
    admin_deal = _ok(api.post("/api/v1/deal", headers=admin, json={"title": "Secret", "stage": "prospecting"}), 201)
    # no roles: 403 for reads
    _problem(api.get("/api/v1/account", headers=people["nobody"]), 403)
    # sales reads all accounts, updates its team's only: visible but not writable is 403
    assert {r["name"] for r in _ok(api.get("/api/v1/account", headers=carl))["records"]} == {"ACME", "Anna's"}
    _problem(api.patch(f"/api/v1/account/{account['id']}", headers=anna, json={"city": "Bonn"}), 403)
    assert _ok(api.patch(f"/api/v1/account/{mine['id']}", headers=carl, json={"city": "Köln"}))["city"] == "Köln"  # team
    # deals: team_tree; the admin's deal is invisible (404, not 403), anna's is the team's
    assert [r["title"] for r in _ok(api.get("/api/v1/deal?total=true", headers=carl))["records"]] == ["Big one"]
    assert _ok(api.get("/api/v1/deal?total=true", headers=carl))["total"] == 1
    _problem(api.get(f"/api/v1/deal/{admin_deal['id']}", headers=carl), 404)
    _problem(api.patch(f"/api/v1/deal/{admin_deal['id']}", headers=carl, json={"probability": 5}), 404)
    _problem(api.delete(f"/api/v1/deal/{deal['id']}", headers=carl), 403)  # delete own only
    # service reads deals of its own team only
    assert _ok(api.get("/api/v1/deal", headers=ben))["records"] == []
    _problem(api.post("/api/v1/deal", headers=ben, json={"title": "x", "stage": "won"}), 403)
    # sharing: anna may share her deal (share: own); carl may not (not his)
    _problem(api.post(f"/api/v1/deal/{deal['id']}/shares", headers=carl, json={"user": "ben"}), 403)
    _problem(api.post(f"/api/v1/deal/{deal['id']}/shares", headers=anna, json={"user": "ben", "team": "Sales"}), 422)
    share = _ok(api.post(f"/api/v1/deal/{deal['id']}/shares", headers=anna, json={"user": "ben"}))
    assert share["user"] == "ben" and share["access"] == "read" and share["granted_by"] == "anna"
    assert _ok(api.get(f"/api/v1/deal/{deal['id']}", headers=ben))["title"] == "Big one"
    assert len(_ok(api.get(f"/api/v1/deal/{deal['id']}/shares", headers=anna))["shares"]) == 1
    _problem(api.get(f"/api/v1/deal/{admin_deal['id']}/shares", headers=anna), 404)
    assert _ok(api.delete(f"/api/v1/deal/{deal['id']}/shares?user=ben", headers=anna))["shares"] == []
    _problem(api.get(f"/api/v1/deal/{deal['id']}", headers=ben), 404)
    _problem(api.delete(f"/api/v1/deal/{deal['id']}/shares?user=ben", headers=anna), 404)
    # explain, as the admin
    url = f"/api/v1/admin/explain?user=carl&entity=deal&id={deal['id']}&action=read"
    explanation = _ok(api.get(url, headers=admin))
    assert explanation["allowed"] and "a member of your team 'Sales'" in explanation["reasons"][0]
    explanation = _ok(api.get(url.replace("action=read", "action=delete"), headers=admin))
    assert not explanation["allowed"] and explanation["reasons"] == []
    _problem(api.get(url.replace("action=read", "action=fly"), headers=admin), 422)
    _problem(api.get("/api/v1/admin/explain?user=carl&entity=deal&id=nope", headers=admin), 404)
    # assign to the team: carl (assign: team) can; ben cannot see it
    assigned = _ok(api.post(f"/api/v1/deal/{deal['id']}/assign", headers=carl, json={"team": "Sales"}))
    assert assigned["version"] == 2
    assert _ok(api.get(f"/api/v1/deal/{deal['id']}", headers=carl))["owner_id"] == assigned["owner_id"]
    _problem(api.post(f"/api/v1/deal/{deal['id']}/assign", headers=ben, json={"user": "ben"}), 404)
    assert _ok(api.get("/api/v1/admin/shares?entity=deal&include_revoked=true", headers=admin))["shares"][0]["revoked_at"]


def test_export_over_http_follows_the_export_scope(api: TestClient, people: dict[str, dict[str, str]]) -> None:
    admin, anna = people["admin"], people["anna"]
    _ok(api.post("/api/v1/account", headers=admin, json={"name": "ACME"}), 201)
    _ok(api.post("/api/v1/account", headers=anna, json={"name": "Anna's"}), 201)
    exported = api.get("/api/v1/account/_export?format=jsonl", headers=anna)
    assert exported.status_code == 200
    assert [json.loads(line)["name"] for line in exported.text.splitlines()] == ["Anna's"]  # export: team
    _problem(api.get("/api/v1/deal/_export", headers=people["ben"]), 403)
    assert len(api.get("/api/v1/account/_export?format=jsonl", headers=admin).text.splitlines()) == 2


def test_openapi_lists_the_permission_operations(api: TestClient) -> None:
    spec = api.get("/api/openapi.json").json()
    for path in ("/api/v1/admin/roles", "/api/v1/admin/teams/{team}/members/{user}", "/api/v1/admin/explain",
                 "/api/v1/deal/{record_id}/shares", "/api/v1/deal/{record_id}/assign"):
        assert path in spec["paths"]
    assert "Explanation" in spec["components"]["schemas"]


def test_import_over_http_respects_create_and_update_rights(api: TestClient, people: dict[str, dict[str, str]]) -> None:
    admin, anna = people["admin"], people["anna"]
    acme = _ok(api.post("/api/v1/account", headers=admin, json={"name": "ACME"}), 201)
    csv = f"id,name\n{acme['id']},ACME renamed\n,New one\n".encode()
    report = _ok(api.post("/api/v1/account/_import?upsert_key=id", headers={**anna, "Content-Type": "text/csv"}, content=csv))
    assert report["created"] == 1 and report["updated"] == 0 and report["error_count"] == 1  # ACME is not anna's team's
    assert "may not update" in report["errors"][0]["message"]
    _problem(api.post("/api/v1/deal/_import", headers={**people["ben"], "Content-Type": "text/csv"}, content=b"title,stage\nx,won\n"), 403)


def test_share_listing_refuses_a_malformed_record_id(api: TestClient) -> None:
    admin = _headers(api, "root", ["admin"])
    for bad in ("", "nope"):
        assert _problem(api.get(f"/api/v1/admin/shares?record_id={bad}", headers=admin), 400)["errors"][0]["pointer"] == "/record_id"
    assert _ok(api.get("/api/v1/admin/shares?record_id=00000000-0000-0000-0000-000000000001", headers=admin)) == {"shares": []}
