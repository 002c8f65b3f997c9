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
from xrm.db.database import APP_ROLE, AUDIT_OWNER_ROLE, Database
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
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only|permission denied"):
                await connection.execute(statement)
        assert await connection.fetchval("SELECT principal_name FROM xrm_sys.audit_log WHERE entity = 'supplier'") == "anna"


async def test_the_applications_database_role_cannot_get_around_the_triggers(suppliers: RecordService, db: Database) -> None:
    """What an owner or superuser could do to the trail, the role the application runs as cannot."""
    await suppliers.create({"name": "Teile AG"})
    async with db.connection() as connection:
        assert await connection.fetchval("SELECT current_user") == APP_ROLE
        assert not await connection.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        for statement in (
            "ALTER TABLE xrm_sys.audit_log DISABLE TRIGGER audit_log_no_change",
            "ALTER TABLE xrm_sys.audit_log DISABLE TRIGGER ALL",
            "DROP TRIGGER audit_log_no_change ON xrm_sys.audit_log",
            "ALTER TABLE xrm_sys.audit_log OWNER TO " + APP_ROLE,
            "DROP TABLE xrm_sys.audit_log",
            "SET session_replication_role = replica",
            "CREATE OR REPLACE FUNCTION xrm_sys.audit_log_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN OLD; END $$",
            "CREATE OR REPLACE FUNCTION xrm_sys.jsonb_is_redaction_of(a jsonb, b jsonb) RETURNS boolean LANGUAGE sql AS $$ SELECT true $$",
            f"SET ROLE {AUDIT_OWNER_ROLE}",
            "SELECT setval(pg_get_serial_sequence('xrm_sys.audit_log', 'id'), 1)",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="must be owner|permission denied"):
                async with connection.transaction():
                    await connection.execute(statement)
        # The trail is still there and still refuses changes; the application still works.
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await connection.execute("DELETE FROM xrm_sys.audit_log")
        assert await connection.fetchval("SELECT count(*) FROM xrm_sys.audit_log WHERE entity = 'supplier'") == 1
    await suppliers.create({"name": "Zweite GmbH"})


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

    # The whole trail (or a filtered part) as JSON Lines, for admins; taking it is audited itself.
    exported = api.get("/api/v1/admin/audit/_export?entity=account", headers=admin)
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in exported.text.splitlines()]
    assert [e["action"] for e in lines] == ["record.updated", "record.created"] and lines[0]["changes"] == {"employees": {"old": 10, "new": 12}}
    taken = api.get("/api/v1/admin/audit?action=audit.exported", headers=admin).json()["entries"]
    assert taken[0]["details"]["filters"] == {"entity": "account"} and taken[0]["details"]["via"] == "token" and taken[0]["user"] == "root"
    assert api.get("/api/v1/admin/audit/_export?before=3", headers=admin).status_code == 400
    assert api.get("/api/v1/admin/audit/_export", headers={"Authorization": f"Bearer {create_token(database_uri, 'ann', ['sales'])}"}).status_code == 403


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


async def test_assign_share_and_unshare_are_in_the_records_history(suppliers: RecordService, db: Database) -> None:
    """Ownership and shares of one record name that record: its history and a search by record show them."""
    from xrm.security.model import SecurityService

    created = await suppliers.create({"name": "Teile AG"})
    users = UserService(db)
    await users.create_user("bea", "a-long-password", ["sales"])
    bea = (await SecurityService(db).principal_for_user("bea")).id
    security = SecurityService(db, registry=suppliers.registry)
    team = (await security.create_team("Einkauf"))["id"]
    await security.assign("supplier", created["id"], user="bea")
    await security.assign("supplier", created["id"], team="Einkauf")
    await security.share("supplier", created["id"], user="bea", write=True)
    await security.unshare("supplier", created["id"], user="bea")

    entries = await suppliers.history(created["id"])
    assert [e.action for e in entries] == [
        "record.created", "security.assigned", "security.assigned", "security.shared", "security.unshared"]
    assert all(e.entity == "supplier" and e.record_id == created["id"] for e in entries)
    first, second, shared, unshared = entries[1:]
    # The owner change is recorded like a field change (old and new value).
    assert first.changes == {"owner_id": {"old": str(created["owner_id"]) if created["owner_id"] else None, "new": str(bea)}}
    assert second.changes == {"owner_id": {"old": str(bea), "new": str(team)}}
    assert second.details == {"user": None, "team": "Einkauf"}
    assert shared.details == {"user": "bea", "team": None, "access": "write"} and shared.changes is None
    assert unshared.details == {"user": "bea", "team": None}
    log = AuditLog(db)
    found = await log.search(record_id=created["id"])
    assert {e.action for e in found} == {"record.created", "security.assigned", "security.shared", "security.unshared"}
    assert [e.id for e in await log.search(entity="supplier", field="owner_id")] == [second.id, first.id]


def test_an_export_records_the_api_token_or_session_it_came_through(api: TestClient, database_uri: str, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Who exported through which token: the export entry names the token id, or says session / cli."""
    users = UserService(api.app.state.platform.db)

    async def make() -> tuple[str, Any]:
        await users.create_user("eve", "a-long-password", ["admin"])
        await users.create_token("eve", "laptop")
        return await users.create_token("eve", "reporting", read_only=True)

    token, info = api.blocking_portal.call(make)
    headers = {"Authorization": f"Bearer {token}"}
    assert api.get("/api/v1/account/_export?format=jsonl", headers=headers).status_code == 200

    def exports() -> list[dict[str, Any]]:
        return api.get("/api/v1/admin/audit?action=export", headers=headers).json()["entries"]

    (entry,) = exports()
    assert entry["user"] == "eve" and entry["entity"] == "account"
    assert entry["details"]["token_id"] == str(info.id) and entry["details"]["via"] == "token"

    login = api.post("/api/v1/auth/login", json={"name": "eve", "password": "a-long-password"})
    assert login.status_code == 200, login.text
    cookie = [v for k, v in login.headers.multi_items() if k.lower() == "set-cookie" and v.startswith("xrm_session=")][0]
    api.cookies.clear()
    session = {"Cookie": cookie.split(";")[0]}
    assert api.get("/api/v1/account/_export", headers=session).status_code == 200
    newest = exports()[0]
    assert newest["details"]["via"] == "session" and newest["details"]["token_id"] is None

    monkeypatch.setenv("XRM_DATABASE_URL", database_uri)
    monkeypatch.setenv("XRM_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(main, ["export", "account", "-o", str(tmp_path / "accounts.csv")])
    assert result.exit_code == 0, result.output
    newest = exports()[0]
    assert newest["user"] == "system" and newest["details"]["via"] == "cli" and newest["details"]["token_id"] is None
