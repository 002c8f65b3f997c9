"""The audit trail: an entry per change in the change's own transaction, field by
field, append-only in the database; read per record, searched and exported."""

from __future__ import annotations

import datetime as dt
import decimal
import io
import json
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from click.testing import CliRunner
from litestar.testing import TestClient

from xrm.audit import AuditLog
from xrm.auth import UserService
from xrm.cli import main
from xrm.db.database import Database
from xrm.errors import ValidationFailed, VersionConflict
from xrm.records.principal import Principal
from xrm.records.service import RecordService
from xrm.registry import Registry
from xrm.transfer import export_records

ROOT = Path(__file__).resolve().parent.parent

SUPPLIER: dict[str, Any] = {
    "type": "object",
    "x-xrm": {"name": "supplier", "label": {"en": "Supplier", "de": "Lieferant"}, "display_field": "name"},
    "required": ["name"],
    "properties": {
        "name": {"type": "string"},
        "rating": {"type": "integer", "minimum": 1, "maximum": 5},
        "credit": {"type": "number", "x-xrm": {"precision": 12, "scale": 2}},
        "last_sync": {"type": "string", "format": "date-time", "x-xrm": {"audit": False}},
    },
}


@pytest.fixture
async def suppliers(db: Database, make_entities: Any) -> RecordService:
    registry: Registry = await make_entities(SUPPLIER)
    anna = Principal(uuid.uuid4(), "anna", frozenset({"sales"}))
    return RecordService(db, registry, "supplier", anna)


async def test_every_change_is_logged_with_old_and_new_values(suppliers: RecordService) -> None:
    created = await suppliers.create({"name": "Teile AG", "rating": 3, "credit": decimal.Decimal("1500.50")})
    updated = await suppliers.update(created["id"], {"rating": 4, "last_sync": "2024-01-01T00:00:00Z"})
    await suppliers.delete(created["id"], expected_version=updated["version"])
    await suppliers.restore(created["id"])

    entries = await suppliers.history(created["id"])
    assert [e.action for e in entries] == ["record.created", "record.updated", "record.deleted", "record.restored"]
    assert all(e.principal_name == "anna" and e.principal_id == suppliers.principal.id for e in entries)
    assert entries[0].changes == {"name": {"old": None, "new": "Teile AG"}, "rating": {"old": None, "new": 3},
                                  "credit": {"old": None, "new": "1500.50"}}
    # last_sync opted out ("audit": false): changed, but not logged.
    assert entries[1].changes == {"rating": {"old": 3, "new": 4}}
    assert entries[0].at <= entries[1].at <= entries[3].at


async def test_a_refused_change_leaves_no_entry(suppliers: RecordService, db: Database) -> None:
    created = await suppliers.create({"name": "Teile AG"})
    with pytest.raises(ValidationFailed):
        await suppliers.update(created["id"], {"rating": 9})
    with pytest.raises(VersionConflict):
        await suppliers.update(created["id"], {"rating": 2}, expected_version=7)
    with pytest.raises(ValidationFailed):
        await suppliers.create_many([{"name": "A"}, {"rating": 2}])  # all or nothing, audit included
    async with db.connection() as connection:
        assert await connection.fetchval("SELECT count(*) FROM xrm_sys.audit_log WHERE entity = 'supplier'") == 1


async def test_a_batch_logs_one_entry_per_record(suppliers: RecordService) -> None:
    records = await suppliers.create_many([{"name": f"S{i}"} for i in range(5)])
    for record in records:
        (entry,) = await suppliers.history(record["id"])
        assert entry.changes == {"name": {"old": None, "new": record["name"]}}


async def test_the_trail_is_append_only_in_the_database(suppliers: RecordService, db: Database) -> None:
    await suppliers.create({"name": "Teile AG"})
    async with db.connection() as connection:
        for statement in ("UPDATE xrm_sys.audit_log SET principal_name = 'mallory'",
                          "DELETE FROM xrm_sys.audit_log",
                          "TRUNCATE xrm_sys.audit_log"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                await connection.execute(statement)
        assert await connection.fetchval("SELECT principal_name FROM xrm_sys.audit_log WHERE entity = 'supplier'") == "anna"


async def test_schema_changes_logins_and_exports_are_logged(db: Database, suppliers: RecordService) -> None:
    log = AuditLog(db)
    (schema,) = await log.search(action="schema.changed")
    assert schema.details["entities"] == ["supplier"] and schema.details["steps"][0]["action"] == "create_entity"

    users = UserService(db)
    await users.create_user("ben", "a-long-password")
    assert await users.authenticate("ben", "a-long-password") is not None
    assert await users.authenticate("ben", "wrong-password") is None
    assert await users.authenticate("nobody", "whatever-long") is None
    logins = await log.search(user="ben")
    assert [(e.action, (e.details or {}).get("reason")) for e in logins] == [("auth.login_failed", "wrong password"), ("auth.login", None)]
    (unknown,) = await log.search(user="nobody")
    assert unknown.action == "auth.login_failed" and unknown.principal_id is None

    await export_records(db, suppliers.registry, "supplier", io.StringIO(), principal=suppliers.principal, where={"rating": 3})
    (export,) = await log.search(action="export")
    assert export.principal_name == "anna" and export.entity == "supplier" and export.details["where"] == {"rating": 3}


async def test_search_filters_and_pages(suppliers: RecordService, db: Database) -> None:
    first = await suppliers.create({"name": "A", "rating": 1})
    for rating in (2, 3, 4):
        await suppliers.update(first["id"], {"rating": rating})
    await suppliers.update(first["id"], {"name": "B"})
    log = AuditLog(db)
    assert len(await log.search(entity="supplier", field="rating")) == 4  # create + 3 updates
    page = await log.search(entity="supplier", limit=2)
    rest = await log.search(entity="supplier", before_id=page[-1].id, limit=10)
    assert [e.id for e in page + rest] == sorted((e.id for e in page + rest), reverse=True)
    assert len(page + rest) == 5
    assert await log.search(entity="supplier", since=dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)) == []
    with pytest.raises(ValidationFailed):
        await log.search(user="a\x00b")


def test_history_and_search_over_the_api(api: TestClient, database_uri: str) -> None:
    from conftest import create_token

    admin = {"Authorization": f"Bearer {create_token(database_uri, 'root', ['admin'])}"}
    created = api.post("/api/v1/account", headers=admin, json={"name": "ACME", "employees": 10}).json()
    api.patch(f"/api/v1/account/{created['id']}", headers=admin, json={"employees": 12})
    history = api.get(f"/api/v1/account/{created['id']}/history", headers=admin)
    assert history.status_code == 200
    entries = history.json()["entries"]
    assert [e["action"] for e in entries] == ["record.created", "record.updated"]
    assert entries[1]["changes"] == {"employees": {"old": 10, "new": 12}} and entries[1]["user"] == "root"
    assert api.get("/api/v1/account/00000000-0000-0000-0000-000000000001/history", headers=admin).status_code == 404

    found = api.get("/api/v1/admin/audit?entity=account&action=record.updated", headers=admin).json()
    assert [e["record_id"] for e in found["entries"]] == [created["id"]] and found["next_before"] is None
    assert api.get("/api/v1/admin/audit?since=yesterday", headers=admin).status_code == 400
    assert api.get("/api/v1/admin/audit?colour=red", headers=admin).status_code == 400


def test_cli_shows_searches_and_exports_the_trail(database_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XRM_DATABASE_URL", database_uri)
    monkeypatch.setenv("XRM_DATA_DIR", str(tmp_path))
    runner = CliRunner()
    assert runner.invoke(main, ["schema", "apply", str(ROOT / "entity_schemas")]).exit_code == 0
    source = tmp_path / "accounts.csv"
    source.write_text("name,employees\nACME,10\n", encoding="utf-8")
    assert runner.invoke(main, ["import", "account", str(source)]).exit_code == 0
    lines = runner.invoke(main, ["audit", "search", "--entity", "account", "--json"])
    assert lines.exit_code == 0, lines.output
    (entry,) = [json.loads(line) for line in lines.output.splitlines()]
    shown = runner.invoke(main, ["audit", "show", "account", entry["record_id"]])
    assert "record.created" in shown.output and "employees: null -> 10" in shown.output
    out = tmp_path / "audit.jsonl"
    exported = runner.invoke(main, ["audit", "export", "--since", "2000-01-01", "-o", str(out)])
    assert exported.exit_code == 0, exported.output
    actions = [json.loads(line)["action"] for line in out.read_text().splitlines()]
    assert actions.count("record.created") == 1 and "schema.changed" in actions
    assert runner.invoke(main, ["audit", "search", "--since", "yesterday"]).exit_code != 0


def test_every_write_door_of_the_api_leaves_its_entry(api: TestClient, database_uri: str) -> None:
    """Each HTTP way of changing data writes the audit entry the change implies, as the acting user."""
    from conftest import create_token

    admin = {"Authorization": f"Bearer {create_token(database_uri, 'root', ['admin'])}"}
    create_token(database_uri, "bea", ["sales"])

    def newest(count: int) -> list[tuple[str, str | None]]:
        entries = api.get(f"/api/v1/admin/audit?limit={count}", headers=admin).json()["entries"]
        assert all(e["user"] == "root" for e in entries if e["action"].startswith("record."))
        return [(e["action"], e["record_id"]) for e in reversed(entries)]

    created = api.post("/api/v1/account", headers=admin, json={"name": "Door AG"}).json()
    key = created["id"]
    assert newest(1) == [("record.created", key)]
    api.patch(f"/api/v1/account/{key}", headers=admin, json={"employees": 3})
    api.put(f"/api/v1/account/{key}", headers=admin, json={"name": "Door AG", "employees": 4})
    assert newest(2) == [("record.updated", key), ("record.updated", key)]
    api.delete(f"/api/v1/account/{key}", headers=admin)
    api.post(f"/api/v1/account/{key}/restore", headers=admin)
    assert newest(2) == [("record.deleted", key), ("record.restored", key)]
    bulk = api.post("/api/v1/account/_bulk", headers=admin, json={"records": [{"name": "Bulk AG"}, {"id": key, "employees": 5}]}).json()
    assert sorted(newest(2)) == sorted([("record.created", bulk["records"][0]["id"]), ("record.updated", key)])
    report = api.post("/api/v1/account/_import", headers={**admin, "Content-Type": "text/csv"}, content=b"name\nImport AG\n").json()
    assert report["created"] == 1 and newest(1)[0][0] == "record.created"
    assert api.post(f"/api/v1/account/{key}/assign", headers=admin, json={"user": "bea"}).status_code == 200
    assert newest(1)[0][0] == "security.assigned"
    assert api.post(f"/api/v1/account/{key}/shares", headers=admin, json={"user": "bea"}).status_code == 200
    assert newest(1)[0][0] == "security.shared"
    assert api.get("/api/v1/account/_export", headers=admin).status_code == 200
    assert newest(1)[0] == ("export", None)
