"""The import wizard of the web UI over HTTP on a real database: upload, mapping, dry run, import with progress."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from conftest import log_in, make_user
from litestar.testing import TestClient

CSV = (
    "Name;Ort;Mitarbeiter;Notiz\r\n"
    "Alpha GmbH;München;12;first\r\n"
    "Beta AG;Köln;viele;second\r\n"
    "Gamma KG;Hamburg;1.234.567;third\r\n"
).encode("cp1252")  # what German Excel writes: semicolons, Windows-1252


def _selected(html: str, name: str) -> str:
    select = re.search(rf'<select[^>]*name="{re.escape(name)}"[^>]*>(.*?)</select>', html, re.DOTALL)
    assert select, name
    chosen = re.search(r'<option value="([^"]*)" selected', select.group(1))
    return chosen.group(1) if chosen else ""


def _accounts(ui: TestClient) -> list[dict[str, Any]]:
    async def read() -> list[dict[str, Any]]:
        async with ui.app.state.platform.db.connection() as connection:
            rows = await connection.fetch(
                "SELECT a.name, a.city, a.employees, a.notes, l.principal_name FROM account a "
                "LEFT JOIN xrm_sys.audit_log l ON l.record_id = a.id AND l.action = 'record.created' ORDER BY a.name")
        return [dict(r) for r in rows]

    return ui.blocking_portal.call(read)  # type: ignore[no-any-return]


def _upload(ui: TestClient, token: str, content: bytes = CSV, name: str = "konten.csv", entity: str = "account") -> Any:
    return ui.post(f"/e/{entity}/import", data={"csrf_token": token}, files={"file": (name, content, "text/csv")},
                   follow_redirects=False)


def test_upload_map_dry_run_and_import_with_progress(ui: TestClient, tmp_path: Path) -> None:
    make_user(ui, "anna", ["sales"])
    token = log_in(ui, "anna")
    step1 = ui.get("/e/account/import")
    assert step1.status_code == 200 and 'enctype="multipart/form-data"' in step1.text and 'name="csrf_token"' in step1.text

    uploaded = _upload(ui, token)
    assert uploaded.status_code == 303
    mapping_url = uploaded.headers["location"]
    job_id = mapping_url.rsplit("/", 1)[1]
    assert re.fullmatch(r"/e/account/import/[A-Za-z0-9_-]{30,}", mapping_url)
    assert (tmp_path / "ui-imports" / job_id / "upload.csv").read_bytes() == CSV  # kept on the server, under data_dir

    step2 = ui.get(mapping_url)
    assert step2.status_code == 200
    assert "cp1252" in step2.text and "semicolon" in step2.text and "München" in step2.text  # detected as the importer does
    # Suggested as the importer maps: the name, the German labels (Ort = city, Mitarbeiter = employees), nothing for Notiz.
    assert [_selected(step2.text, f"map.{i}") for i in range(4)] == ["name", "city", "employees", ""]
    assert 'value="annual_revenue"' not in step2.text  # a sensitive field the user may not write is not offered

    check_url = f"/e/account/import/{job_id}/check"
    mapping = {"csrf_token": token, "map.0": "name", "map.1": "city", "map.2": "employees", "map.3": "notes",
               "number_format": "auto", "timezone": ""}
    checked = ui.post(check_url, data=mapping)
    assert checked.status_code == 200, checked.text
    assert "3 rows read" in checked.text and "2 records would be created" in checked.text and "1 row has errors" in checked.text
    error_row = re.search(r"<tr><td class=\"num\">(\d+)</td><td>([^<]*)</td><td>([^<]*)</td></tr>", checked.text)
    assert error_row and error_row.group(1) == "3" and error_row.group(2) == "Mitarbeiter" and "viele" in error_row.group(3)
    assert _accounts(ui) == []  # the dry run wrote nothing

    started = ui.post(f"/e/account/import/{job_id}/run", data={"csrf_token": token}, follow_redirects=False)
    assert started.status_code == 303 and started.headers["location"] == f"/e/account/import/{job_id}/progress"
    progress = ui.get(started.headers["location"])
    assert progress.status_code == 200 and 'id="import-status"' in progress.text
    status_url = f"/e/account/import/{job_id}/status"
    deadline = time.monotonic() + 30
    while True:
        fragment = ui.get(status_url, headers={"HX-Request": "true"}).text
        if 'data-state="done"' in fragment:
            break
        assert 'hx-trigger="every 1s"' in fragment and f'hx-get="{status_url}"' in fragment  # keeps polling
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert "<html" not in fragment and "hx-trigger" not in fragment  # done: polling stops
    assert "Import finished." in fragment and "2 records created" in fragment and "1 row with errors" in fragment
    assert 'href="/e/account"' in fragment and "viele" in fragment

    # Written as anna (the audit trail names her), with the mapping she chose.
    assert _accounts(ui) == [
        {"name": "Alpha GmbH", "city": "München", "employees": 12, "notes": "first", "principal_name": "anna"},
        {"name": "Gamma KG", "city": "Hamburg", "employees": 1234567, "notes": "third", "principal_name": "anna"},
    ]
    assert not (tmp_path / "ui-imports" / job_id).exists()  # the upload is deleted after the import
    assert ui.post(f"/e/account/import/{job_id}/run", data={"csrf_token": token}, follow_redirects=False).status_code == 303
    assert len(_accounts(ui)) == 2  # a second click does not import twice
    assert ui.get(mapping_url).status_code == 404  # the upload is gone


def test_mapping_problems_and_bad_files_are_explained(ui: TestClient) -> None:
    make_user(ui, "anna", ["sales"])
    token = log_in(ui, "anna")
    empty = _upload(ui, token, b"")
    assert empty.status_code == 422 and "The file is empty." in empty.text
    assert _upload(ui, token, b"\n\n;;\n").status_code == 422
    job = _upload(ui, token, b"Firma,Stadt\nACME,Berlin\n").headers["location"].rsplit("/", 1)[1]
    step2 = ui.get(f"/e/account/import/{job}").text
    assert _selected(step2, "map.0") == "" and _selected(step2, "map.1") == ""
    missing = ui.post(f"/e/account/import/{job}/check", data={"csrf_token": token, "map.0": "", "map.1": "city"})
    assert missing.status_code == 422 and "Required field name of account has no column" in missing.text
    assert _selected(missing.text, "map.1") == "city"  # the choice is kept
    forged = ui.post(f"/e/account/import/{job}/check", data={"csrf_token": token, "map.0": "name", "map.1": "annual_revenue"})
    assert forged.status_code == 200 and "1 record would be created" in forged.text
    assert "annual_revenue" not in forged.text  # a field the user may not write is treated as "ignore"


def test_import_needs_create_permission_and_the_jobs_owner(ui: TestClient) -> None:
    make_user(ui, "anna", ["sales"])
    make_user(ui, "ben", ["service"])  # reads accounts, may not create them
    anna = log_in(ui, "anna")
    job = _upload(ui, anna).headers["location"].rsplit("/", 1)[1]

    ben = log_in(ui, "ben")
    # ben may change his own accounts, so he may import connections from them, but not records.
    offered = ui.get("/e/account/import")
    assert offered.status_code == 200 and 'value="_connections"' in offered.text and "Records: Accounts" not in offered.text
    assert _upload(ui, ben).status_code == 403
    assert ui.get(f"/e/account/import/{job}").status_code == 404  # and anna's upload is not his
    make_user(ui, "carl", ["sales"])
    carl = log_in(ui, "carl")
    assert ui.get(f"/e/account/import/{job}").status_code == 404  # anna's upload is not carl's
    assert ui.post(f"/e/account/import/{job}/check", data={"csrf_token": carl, "map.0": "name"}).status_code == 404
    assert ui.post(f"/e/account/import/{job}/run", data={"csrf_token": carl}).status_code == 404
    assert ui.get(f"/e/account/import/{job}/status").status_code == 404
    for bad in ("..%2F..%2Fetc", "..%2e", "x" * 10, "a.b.c.d.e.f.g.h.i.j.k.l.m.n"):
        assert ui.get(f"/e/account/import/{bad}").status_code == 404, bad


def test_every_import_post_needs_the_csrf_token(ui: TestClient) -> None:
    make_user(ui, "anna", ["sales"])
    token = log_in(ui, "anna")
    job = _upload(ui, token).headers["location"].rsplit("/", 1)[1]
    for wrong in (None, "wrong-token"):
        extra = {"csrf_token": wrong} if wrong else {}
        assert ui.post("/e/account/import", data=extra, files={"file": ("a.csv", CSV, "text/csv")}).status_code == 403
        assert ui.post(f"/e/account/import/{job}/check", data={**extra, "map.0": "name"}).status_code == 403
        assert ui.post(f"/e/account/import/{job}/run", data=extra).status_code == 403
    assert _accounts(ui) == []


def test_the_list_offers_import_only_to_users_who_may_create(ui: TestClient) -> None:
    make_user(ui, "anna", ["sales"])
    make_user(ui, "ben", ["service"])
    log_in(ui, "anna")
    assert 'href="/e/account/import"' in ui.get("/e/account").text
    log_in(ui, "ben")
    assert 'href="/e/account/import"' not in ui.get("/e/account").text


def test_uploads_have_a_size_limit(ui: TestClient, monkeypatch: Any) -> None:
    from xrm.webui import views_import

    monkeypatch.setattr(views_import, "UPLOAD_MAX_BYTES", 1000)
    make_user(ui, "anna", ["sales"])
    token = log_in(ui, "anna")
    big = b"name\n" + b"x" * 200_000 + b"\n"
    refused = _upload(ui, token, big)
    assert refused.status_code == 413 and "The file is too large" in refused.text  # refused before the body is read
    over = _upload(ui, token, b"name\n" + b"y" * 5000 + b"\n")
    assert over.status_code == 422 and "Files of up to" in over.text  # bigger than the limit: refused after reading
    assert _accounts(ui) == [] and not list((Path(ui.app.state.platform.settings.data_dir) / "ui-imports").glob("*"))


def _connections(ui: TestClient) -> list[tuple[str, str, str, Any]]:
    async def read() -> list[tuple[str, str, str, Any]]:
        async with ui.app.state.platform.db.connection() as connection:
            rows = await connection.fetch(
                "SELECT l.name, s.full_name, a.name AS account, l.valid_from FROM xrm_sys.record_link l "
                "JOIN contact s ON s.id = l.source_id JOIN account a ON a.id = l.target_id WHERE l.kind = 'connection' ORDER BY s.full_name")
        return [tuple(r) for r in rows]

    return ui.blocking_portal.call(read)  # type: ignore[no-any-return]


def test_the_wizard_imports_connections_all_or_nothing(ui: TestClient, ui_admin: str) -> None:
    from conftest import bearer

    admin = bearer(ui, "root", ["admin"])
    assert ui.post("/api/v1/_connection_roles", headers=admin, json={
        "name": "advisor", "label": {"en": "advisor of", "de": "berät"}, "inverse_label": {"en": "advised by", "de": "wird beraten von"}}).status_code == 201
    for path, body in (("contact", {"full_name": "Max Muster"}), ("contact", {"full_name": "Erika Mustermann"}), ("account", {"name": "ACME"})):
        assert ui.post(f"/api/v1/{path}", headers=admin, json=body).status_code == 201
    step1 = ui.get("/e/contact/import").text
    assert 'name="target"' in step1 and '<option value="_connections">Connections</option>' in step1

    # German column names, one bad row: the check names it, and nothing is imported.
    bad = ("Rolle;Von Entität;Von Datensatz;Zu Entität;Zu Datensatz;Gültig ab\r\n"
           "berät;Kontakt;Max Muster;Firma;ACME;01.02.2024\r\n"
           "berät;Kontakt;Niemand;Firma;ACME;\r\n").encode("cp1252")
    uploaded = ui.post("/e/contact/import", data={"csrf_token": ui_admin, "target": "_connections"},
                       files={"file": ("verbindungen.csv", bad, "text/csv")}, follow_redirects=False)
    assert uploaded.status_code == 303, uploaded.text
    job_id = uploaded.headers["location"].rsplit("/", 1)[1]
    step2 = ui.get(uploaded.headers["location"]).text
    assert [_selected(step2, f"map.{i}") for i in range(6)] == ["role", "from_entity", "from", "to_entity", "to", "valid_from"]
    assert 'value="full_name"' not in step2  # the target's columns, not the contact's fields
    mapping = {"csrf_token": ui_admin, **{f"map.{i}": v for i, v in enumerate(["role", "from_entity", "from", "to_entity", "to", "valid_from"])},
               "number_format": "auto", "timezone": ""}
    checked = ui.post(f"/e/contact/import/{job_id}/check", data=mapping)
    assert checked.status_code == 200, checked.text
    assert "Connections: 0 would be created" in checked.text and "Nothing is imported while any row has problems" in checked.text
    error_row = re.search(r"<tr><td class=\"num\">(\d+)</td><td>([^<]*)</td><td>([^<]*)</td></tr>", checked.text)
    assert error_row and error_row.group(1) == "3" and error_row.group(2) == "Von Datensatz" and "Niemand" in error_row.group(3)
    assert "Import now</button>" in checked.text and " disabled>" in checked.text
    assert _connections(ui) == []

    # The corrected file: checked, then imported in the background.
    good = bad.replace("Niemand".encode("cp1252"), "Erika Mustermann".encode("cp1252"))
    uploaded = ui.post("/e/contact/import", data={"csrf_token": ui_admin, "target": "_connections"},
                       files={"file": ("verbindungen.csv", good, "text/csv")}, follow_redirects=False)
    job_id = uploaded.headers["location"].rsplit("/", 1)[1]
    checked = ui.post(f"/e/contact/import/{job_id}/check", data=mapping)
    assert "Connections: 2 would be created" in checked.text and _connections(ui) == []
    started = ui.post(f"/e/contact/import/{job_id}/run", data={"csrf_token": ui_admin}, follow_redirects=False)
    assert started.status_code == 303
    deadline = time.monotonic() + 30
    while 'data-state="done"' not in (fragment := ui.get(f"/e/contact/import/{job_id}/status", headers={"HX-Request": "true"}).text):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert "Connections: 2 created" in fragment
    import datetime as dt

    assert _connections(ui) == [("advisor", "Erika Mustermann", "ACME", None), ("advisor", "Max Muster", "ACME", dt.date(2024, 2, 1))]
    # In German: the choice and the target's column labels.
    ui.post("/language", data={"csrf_token": ui_admin, "language": "de", "next": "/"})
    german = ui.get("/e/contact/import").text
    assert "Importieren in" in german and '<option value="_connections">Verbindungen</option>' in german
    uploaded = ui.post("/e/contact/import", data={"csrf_token": ui_admin, "target": "_connections"},
                       files={"file": ("v.csv", good, "text/csv")}, follow_redirects=False)
    assert "Von Datensatz (from)" in ui.get(uploaded.headers["location"]).text
