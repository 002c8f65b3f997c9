"""The REST API end to end: auth, records, problems, bulk, meta, OpenAPI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from litestar.testing import TestClient

from conftest import api_token as _token, problem as _problem

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def admin(api: TestClient) -> dict[str, str]:
    return {"Authorization": f"Bearer {_token(api, 'admin', ['admin'])}"}


def test_requests_without_a_valid_token_get_401(api: TestClient, admin: dict[str, str]) -> None:
    _problem(api.get("/api/v1/account"), 401)
    _problem(api.get("/api/v1/account", headers={"Authorization": "Bearer xrm_nope"}), 401)
    _problem(api.get("/api/v1/account", headers={"Authorization": "Basic abc"}), 401)
    assert api.get("/api/v1/account", headers=admin).status_code == 200


def test_revoked_token_stops_working(api: TestClient) -> None:
    from xrm.auth import UserService

    headers = {"Authorization": f"Bearer {_token(api, 'carol', ['sales'])}"}  # sales reads every account
    assert api.get("/api/v1/account", headers=headers).status_code == 200
    users = UserService(api.app.state.platform.db)
    (info,) = api.blocking_portal.call(users.list_tokens, "carol")
    api.blocking_portal.call(users.revoke_token, info.id)
    _problem(api.get("/api/v1/account", headers=headers), 401)


def test_record_lifecycle_with_etags(api: TestClient, admin: dict[str, str]) -> None:
    created = api.post("/api/v1/account", headers=admin, json={"name": "ACME", "employees": 10, "annual_revenue": {"amount": 1234.5, "currency": "EUR"}})
    assert created.status_code == 201, created.text
    record = created.json()
    assert created.headers["etag"] == '"1"'
    assert created.headers["location"] == f"/api/v1/account/{record['id']}"
    # Decimals travel as exact JSON numbers.
    assert b'"amount":1234.50' in created.content

    url = f"/api/v1/account/{record['id']}"
    assert api.get(url, headers=admin).json()["name"] == "ACME"
    patched = api.patch(url, headers={**admin, "If-Match": '"1"'}, json={"city": "Köln"})
    assert patched.status_code == 200 and patched.json()["version"] == 2 and patched.json()["employees"] == 10
    stale = _problem(api.patch(url, headers={**admin, "If-Match": '"1"'}, json={"city": "Bonn"}), 409)
    assert stale["current_version"] == 2
    assert api.get(url, headers=admin).json()["city"] == "Köln"

    replaced = api.put(url, headers=admin, json={"name": "ACME Corp"})
    assert replaced.status_code == 200
    assert replaced.json()["city"] is None and replaced.json()["employees"] is None

    assert api.delete(url, headers=admin).status_code == 200
    _problem(api.get(url, headers=admin), 404)
    assert api.post(f"{url}/restore", headers=admin).status_code == 200
    assert api.get(url, headers=admin).json()["name"] == "ACME Corp"


def test_bad_input_gets_specific_problems_and_changes_nothing(api: TestClient, admin: dict[str, str]) -> None:
    invalid = _problem(api.post("/api/v1/account", headers=admin, json={"employees": -1, "website": "nope", "colour": "red"}), 422)
    pointers = {e["pointer"] for e in invalid["errors"]}
    assert pointers == {"/name", "/employees", "/website", "/colour"}
    _problem(api.post("/api/v1/account", headers={**admin, "Content-Type": "application/json"}, content=b"{not json"), 400)
    _problem(api.post("/api/v1/account", headers=admin, json=[1, 2]), 400)
    _problem(api.post("/api/v1/account", headers={**admin, "Content-Type": "application/json"}, content=b"\xff\xfe"), 400)
    _problem(api.get("/api/v1/nothing", headers=admin), 404)
    _problem(api.get("/api/v1/account/not-a-uuid", headers=admin), 404)
    _problem(api.get("/api/v1/account?limit=0", headers=admin), 400)
    _problem(api.patch("/api/v1/account/00000000-0000-0000-0000-000000000001", headers={**admin, "If-Match": "garbage"}, json={}), 400)
    _problem(api.post("/api/v1/account", headers={**admin, "Content-Type": "application/json"}, content=b'{"name": "' + b"x" * 11_000_000 + b'"}'), 413)
    assert api.get("/api/v1/account?total=true", headers=admin).json()["total"] == 0


def test_bulk_is_all_or_nothing_with_per_record_errors(api: TestClient, admin: dict[str, str]) -> None:
    first = api.post("/api/v1/account", headers=admin, json={"name": "Existing"}).json()
    body = {"records": [
        {"name": "A"},
        {"name": "B", "employees": "many"},
        {"id": first["id"], "version": 1, "city": "Berlin"},
        {"name": "Existing"},
    ]}
    failed = _problem(api.post("/api/v1/account/_bulk", headers=admin, json=body), 422)
    assert {e["pointer"] for e in failed["errors"]} == {"/records/1/employees", "/records/3/name"}
    page = api.get("/api/v1/account?total=true", headers=admin).json()
    assert page["total"] == 1 and page["records"][0]["city"] is None

    body["records"] = [body["records"][0], body["records"][2]]
    done = api.post("/api/v1/account/_bulk", headers=admin, json=body)
    assert done.status_code == 200, done.text
    assert [r["name"] for r in done.json()["records"]] == ["A", "Existing"]
    assert api.get(f"/api/v1/account/{first['id']}", headers=admin).json()["city"] == "Berlin"
    too_many = {"records": [{"name": f"n{i}"} for i in range(1001)]}
    _problem(api.post("/api/v1/account/_bulk", headers=admin, json=too_many), 400)


def test_list_filters_sort_and_pages(api: TestClient, admin: dict[str, str]) -> None:
    for i in range(7):
        api.post("/api/v1/account", headers=admin, json={"name": f"Firma {i}", "employees": i * 10, "sector": "retail" if i % 2 else "finance"})
    page = api.get("/api/v1/account?employees[gte]=20&sort=-employees&limit=2&total=true", headers=admin).json()
    assert [r["employees"] for r in page["records"]] == [60, 50] and page["total"] == 5
    seen = [r["employees"] for r in page["records"]]
    while page["next_cursor"]:
        page = api.get(f"/api/v1/account?employees[gte]=20&sort=-employees&limit=2&after={page['next_cursor']}", headers=admin).json()
        seen += [r["employees"] for r in page["records"]]
    assert seen == [60, 50, 40, 30, 20]
    finance = api.get("/api/v1/account?sector=finance&fields=name", headers=admin).json()["records"]
    assert sorted(r["name"] for r in finance) == ["Firma 0", "Firma 2", "Firma 4", "Firma 6"]
    assert "employees" not in finance[0]
    _problem(api.get("/api/v1/account?employees[gte]=many", headers=admin), 422)
    _problem(api.get("/api/v1/account?colour=red", headers=admin), 422)


def test_meta_apply_gives_a_new_entity_an_api_without_restart(api: TestClient, admin: dict[str, str]) -> None:
    names = [e["name"] for e in api.get("/api/v1/meta/entities", headers=admin).json()["entities"]]
    assert {"account", "contact", "deal"} <= set(names) and "supplier" not in names  # and the CRM pack's (plugin crm)
    definition = {"type": "object", "x-xrm": {"name": "supplier", "label": {"en": "Supplier", "de": "Lieferant"}},
                  "required": ["name"], "properties": {"name": {"type": "string"}, "rating": {"type": "integer", "minimum": 1, "maximum": 5}}}
    plan = api.post("/api/v1/meta/plan", headers=admin, json={"definitions": [definition]})
    assert plan.status_code == 200 and plan.json()["steps"][0]["action"] == "create_entity"
    assert "/api/v1/supplier" not in api.get("/api/openapi.json").json()["paths"]
    applied = api.post("/api/v1/meta/apply", headers=admin, json={"definitions": [definition]})
    assert applied.status_code == 200 and applied.json()["changeset_id"]
    spec = api.get("/api/openapi.json").json()
    assert "/api/v1/supplier" in spec["paths"] and "supplier.Input" in spec["components"]["schemas"]
    assert api.post("/api/v1/supplier", headers=admin, json={"name": "Teile AG", "rating": 5}).status_code == 201
    _problem(api.post("/api/v1/supplier", headers=admin, json={"name": "X", "rating": 9}), 422)
    history = api.get("/api/v1/meta/history?entity=supplier", headers=admin).json()["versions"]
    assert [v["version"] for v in history] == [1]
    bad = dict(definition, properties={**definition["properties"], "Bad Name": {"type": "string"}})
    problem = _problem(api.post("/api/v1/meta/apply", headers=admin, json={"definitions": [bad]}), 422)
    assert [e["pointer"] for e in problem["errors"]] == ["/definitions/0/properties/Bad Name"]
    assert api.get("/api/v1/meta/entities/supplier", headers=admin).json()["version"] == 1


def test_meta_changes_need_the_admin_role(api: TestClient) -> None:
    headers = {"Authorization": f"Bearer {_token(api, 'dora', ['sales'])}"}
    assert api.get("/api/v1/meta/entities", headers=headers).status_code == 200
    _problem(api.post("/api/v1/meta/apply", headers=headers, json={"definitions": []}), 403)


def test_openapi_document_is_3_1_with_entity_schemas(api: TestClient) -> None:
    spec = api.get("/api/openapi.json").json()
    assert spec["openapi"] == "3.1.0"
    assert "jsonSchemaDialect" not in spec  # the OAS 3.1 default dialect: JSON Schema 2020-12 (Swagger UI accepts no other value)
    account = spec["components"]["schemas"]["account.Input"]
    assert account["required"] == ["name"]
    assert account["properties"]["sector"]["anyOf"][0]["enum"][0] == "technology"
    operation = spec["paths"]["/api/v1/account/{record_id}"]["patch"]
    assert {"409", "422", "404", "401"} <= set(operation["responses"])
    json.dumps(spec)  # serialisable as is


def test_a_whole_number_written_with_a_fraction_is_an_integer(api: TestClient, admin: dict[str, str]) -> None:
    # JSON Schema counts 11.0 as an integer; the API reads fractions as exact decimals.
    created = api.post("/api/v1/deal", headers=admin, content=b'{"title": "Rollout", "stage": "won", "probability": 11.0}',
                       )
    assert created.status_code == 201, created.text
    assert created.json()["probability"] == 11
    problem = _problem(api.post("/api/v1/deal", headers=admin, content=b'{"title": "X", "stage": "won", "probability": 11.5}'), 422)
    assert [e["pointer"] for e in problem["errors"]] == ["/probability"]


def test_datetimes_are_stored_in_utc_and_out_of_range_ones_are_refused(api: TestClient, admin: dict[str, str]) -> None:
    # RFC 3339 allows offsets up to 23:59; PostgreSQL only up to 15:59. Stored as UTC, both work.
    created = api.post("/api/v1/deal", headers=admin, json={"title": "A", "stage": "won", "closed_at": "2024-06-30T23:30:00+20:30"})
    assert created.status_code == 201, created.text
    assert created.json()["closed_at"] == "2024-06-30T03:00:00Z"
    for moment in ("9999-12-31T23:00:00-05:00", "0001-01-01T00:00:00+05:00"):
        problem = _problem(api.post("/api/v1/deal", headers=admin, json={"title": "B", "stage": "won", "closed_at": moment}), 422)
        assert problem["errors"] == [{"pointer": "/closed_at", "detail": f"{moment!r} is out of range (years 1 to 9999, in UTC)"}]
    _problem(api.get("/api/v1/deal?closed_at[gte]=0001-01-01T00:00:00%2B05:00", headers=admin), 422)
    assert api.get("/api/v1/meta/history?entity=a%00b", headers=admin).status_code == 404


def test_an_unknown_field_is_refused_even_when_null(api: TestClient, admin: dict[str, str]) -> None:
    problem = _problem(api.post("/api/v1/account", headers=admin, json={"name": "ACME", "colour": None}), 422)
    assert [e["pointer"] for e in problem["errors"]] == ["/colour"]
    bulk = _problem(api.post("/api/v1/account/_bulk", headers=admin, json={"records": [{"name": "A", "": None}]}), 422)
    assert [e["pointer"] for e in bulk["errors"]] == ["/records/0/"]
    assert api.get("/api/v1/account?total=true", headers=admin).json()["total"] == 0


def test_system_fields_in_a_patch_are_named_as_such(api: TestClient, admin: dict[str, str]) -> None:
    record = api.post("/api/v1/account", headers=admin, json={"name": "ACME"}).json()
    problem = _problem(api.patch(f"/api/v1/account/{record['id']}", headers=admin, json={"version": 7, "colour": "red"}), 422)
    assert sorted(problem["errors"], key=lambda e: e["pointer"]) == [
        {"pointer": "/colour", "detail": "is not a field of this entity"},
        {"pointer": "/version", "detail": "is set by the system and cannot be written"},
    ]


def test_a_read_only_token_reads_and_exports_but_changes_nothing(api: TestClient, admin: dict[str, str]) -> None:
    import dataclasses

    from xrm.auth import UserService
    from xrm.errors import PermissionDenied
    from xrm.records.service import RecordService

    record = api.post("/api/v1/account", headers=admin, json={"name": "ACME"}).json()
    platform = api.app.state.platform
    token, info = api.blocking_portal.call(lambda: UserService(platform.db).create_token("admin", "reporting", read_only=True))
    assert info.access == "read"
    reader = {"Authorization": f"Bearer {token}"}
    assert api.get(f"/api/v1/account/{record['id']}", headers=reader).status_code == 200
    assert api.get("/api/v1/account/_export", headers=reader).text.count("ACME") == 1
    for response in (
        api.post("/api/v1/account", headers=reader, json={"name": "X"}),
        api.patch(f"/api/v1/account/{record['id']}", headers=reader, json={"name": "Y"}),
        api.delete(f"/api/v1/account/{record['id']}", headers=reader),
        api.post("/api/v1/meta/apply", headers=reader, json={"definitions": []}),
        api.post("/api/v1/admin/roles", headers=reader, json={"name": "x"}),
    ):
        assert "read-only" in _problem(response, 403)["detail"]
    assert api.get(f"/api/v1/account/{record['id']}", headers=admin).json()["version"] == 1
    # The one door refuses it too, whoever builds the service.
    principal = api.blocking_portal.call(lambda: UserService(platform.db).principal_for_token(token))
    assert principal is not None and principal.read_only
    service = RecordService(platform.db, platform.registry, "account", dataclasses.replace(principal), platform.policy)
    with pytest.raises(PermissionDenied):
        api.blocking_portal.call(lambda: service.create({"name": "Z"}))


def test_a_field_with_a_default_is_optional_on_create_only(api: TestClient, admin: dict[str, str]) -> None:
    spec = api.get("/api/openapi.json").json()["components"]["schemas"]
    assert "stage" not in spec["deal.Input"]["required"]  # deal.stage has a default
    assert "stage" in spec["deal.Replace"]["required"]
    created = api.post("/api/v1/deal", headers=admin, json={"title": "Rollout"})
    assert created.status_code == 201 and created.json()["stage"] == "prospecting"
