"""Import and export over the REST API: /api/v1/{entity}/_import and /_export."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient


ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def admin(api: TestClient, database_uri: str) -> dict[str, str]:
    from conftest import create_token

    return {"Authorization": f"Bearer {create_token(database_uri, 'admin', ['admin'])}"}


def _import(api: TestClient, headers: dict[str, str], entity: str, body: str, **params: str) -> Any:
    return api.post(f"/api/v1/{entity}/_import", headers={**headers, "Content-Type": "text/csv"}, params=params, content=body.encode("utf-8"))


ACCOUNTS = """Name;Branche;Mitarbeiter;Jahresumsatz;Kunde seit
ACME GmbH;manufacturing;1.250;1.234.567,89 EUR;31.12.2019
Globex AG;finance;80;99,50 EUR;01.02.2021
Initech;bogus-sector;12;;2020-05-05
Umbrella KG;health;zwölf;;
"""


def test_import_reports_bad_rows_and_keeps_the_good_ones(api: TestClient, admin: dict[str, str]) -> None:
    dry = _import(api, admin, "account", ACCOUNTS, dry_run="true", number_format="de")
    assert dry.status_code == 200, dry.text
    report = dry.json()
    assert (report["dry_run"], report["rows"], report["created"], report["skipped"]) == (True, 4, 2, 2)
    assert api.get("/api/v1/account?total=true", headers=admin).json()["total"] == 0  # dry run wrote nothing

    done = _import(api, admin, "account", ACCOUNTS, number_format="de").json()
    assert (done["created"], done["skipped"]) == (2, 2)
    by_row = {e["row"]: e for e in done["errors"]}
    assert by_row[4]["column"] == "Branche" and "bogus-sector" in by_row[4]["message"]
    assert by_row[5]["column"] == "Mitarbeiter"
    assert done["mapping"]["Name"] == "name" and done["mapping"]["Kunde seit"] == "customer_since"
    acme = api.get("/api/v1/account?name=ACME%20GmbH", headers=admin).json()["records"][0]
    assert acme["employees"] == 1250
    assert acme["annual_revenue"] == {"amount": 1234567.89, "currency": "EUR"}
    assert acme["customer_since"] == "2019-12-31"


def test_import_resolves_references_by_name_and_upserts(api: TestClient, admin: dict[str, str]) -> None:
    _import(api, admin, "account", "name\nACME GmbH\n")
    contacts = "full_name,email,account\nMax Mustermann,max@acme.example,ACME GmbH\n"
    first = _import(api, admin, "contact", contacts, upsert_key="email").json()
    assert first["created"] == 1 and first["skipped"] == 0
    again = _import(api, admin, "contact", contacts.replace("Max Mustermann", "Max Muster"), upsert_key="email").json()
    assert (again["created"], again["updated"]) == (0, 1)
    (record,) = api.get("/api/v1/contact?expand=account", headers=admin).json()["records"]
    assert record["full_name"] == "Max Muster" and record["account_expanded"]["name"] == "ACME GmbH"


def test_import_takes_json_lines_and_a_column_mapping(api: TestClient, admin: dict[str, str]) -> None:
    lines = '{"Company": "Hooli", "Size": 300}\n{"Company": "Pied Piper", "Size": "12"}\n'
    response = api.post(
        "/api/v1/account/_import",
        headers={**admin, "Content-Type": "application/x-ndjson"},
        params={"mapping": json.dumps({"Company": "name", "Size": "employees"})},
        content=lines.encode(),
    )
    assert response.status_code == 200, response.text
    assert response.json()["created"] == 2
    names = [r["name"] for r in api.get("/api/v1/account?sort=-employees", headers=admin).json()["records"]]
    assert names == ["Hooli", "Pied Piper"]


def test_import_refuses_bad_options_and_empty_bodies(api: TestClient, admin: dict[str, str]) -> None:
    bad = _import(api, admin, "account", "name\nX\n", number_format="fr")
    assert bad.status_code == 400 and bad.json()["errors"][0]["pointer"] == "/number_format"
    assert _import(api, admin, "account", "name\nX\n", colour="red").status_code == 400
    assert _import(api, admin, "account", "name\nX\n", mapping="[1]").status_code == 400
    assert _import(api, admin, "account", "").status_code == 400
    wrong_encoding = _import(api, admin, "account", "name\nX\n", encoding="utf-16")
    assert wrong_encoding.status_code == 400 and "utf-16" in wrong_encoding.json()["detail"]
    assert _import(api, admin, "account", "name\nX\n", encoding="no\x00such").status_code == 400
    assert _import(api, admin, "account", "name\nX\n", timezone="Mars/Base").status_code == 400
    assert _import(api, admin, "nosuchentity", "name\nX\n").status_code == 404
    assert api.post("/api/v1/account/_import", content=b"name\nX\n").status_code == 401
    assert api.get("/api/v1/account?total=true", headers=admin).json()["total"] == 0


def test_export_streams_the_filtered_list_as_csv_and_json_lines(api: TestClient, admin: dict[str, str]) -> None:
    rows = "name,sector,employees\n" + "".join(f"Firma {i},{'finance' if i % 2 else 'retail'},{i}\n" for i in range(2500))
    assert _import(api, admin, "account", rows).json()["created"] == 2500

    response = api.get("/api/v1/account/_export?sector=finance&employees[gte]=100&sort=-employees", headers=admin)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-disposition"] == 'attachment; filename="account.csv"'
    table = list(csv.DictReader(io.StringIO(response.text)))
    expected = [i for i in range(2499, 99, -1) if i % 2]
    assert [int(r["employees"]) for r in table] == expected  # across several 1,000-record pages
    assert table[0]["name"] == "Firma 2499"

    lines = api.get("/api/v1/account/_export?format=jsonl&q=Firma&employees[lt]=3", headers=admin)
    assert lines.headers["content-type"].startswith("application/x-ndjson")
    assert sorted(json.loads(line)["employees"] for line in lines.text.splitlines()) == [0, 1, 2]


def test_export_errors_come_before_the_stream(api: TestClient, admin: dict[str, str]) -> None:
    bad_filter = api.get("/api/v1/account/_export?employees[gte]=many", headers=admin)
    assert bad_filter.status_code == 422
    assert bad_filter.json()["errors"][0]["pointer"] == "/employees[gte]"
    assert api.get("/api/v1/account/_export?format=xlsx", headers=admin).status_code == 400
    assert api.get("/api/v1/account/_export?sort=notes", headers=admin).status_code == 422
    assert api.get("/api/v1/account/_export").status_code == 401


def test_exported_csv_imports_back_unchanged(api: TestClient, admin: dict[str, str]) -> None:
    _import(api, admin, "account", "name,employees,annual_revenue,annual_revenue_currency\nACME,10,12.5,EUR\nGlobex,,,\n")
    exported = api.get("/api/v1/account/_export", headers=admin).text
    before = {r["id"]: r for r in api.get("/api/v1/account", headers=admin).json()["records"]}
    report = _import(api, admin, "account", exported, upsert_key="id").json()
    assert (report["created"], report["updated"], report["skipped"]) == (0, 2, 0)
    after = {r["id"]: r for r in api.get("/api/v1/account", headers=admin).json()["records"]}
    strip = ("version", "updated_at")
    assert {k: {f: v for f, v in r.items() if f not in strip} for k, r in after.items()} == \
        {k: {f: v for f, v in r.items() if f not in strip} for k, r in before.items()}


def test_an_email_address_alone_is_a_contact(api: TestClient, admin: dict[str, str]) -> None:
    # "Dirty CRM": only what the definition requires is required; the shipped
    # contact requires nothing, so a sign-up list of addresses imports as is.
    report = _import(api, admin, "contact", "E-Mail\nlena@example.org\n\nmax@example.org\n").json()
    assert (report["created"], report["skipped"]) == (2, 0)
    emails = sorted(r["email"] for r in api.get("/api/v1/contact", headers=admin).json()["records"])
    assert emails == ["lena@example.org", "max@example.org"]
