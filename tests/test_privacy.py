"""Data protection: data-subject access, erasure (leaving no trace anywhere in the
database), retention rules, audit retention, the consent field group."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import uuid
import zipfile
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from xrm.audit import AuditLog
from xrm.db.database import Database
from xrm.errors import DefinitionInvalid, PermissionDenied, XrmError
from xrm.privacy.audit_retention import archive_expired_audit
from xrm.privacy.service import PrivacyService, SubjectQuery
from xrm.records.principal import SYSTEM_PRINCIPAL, Principal
from xrm.records.service import RecordService
from xrm.registry import Registry
from xrm.schema.definition import parse_definition
from xrm.schema.service import SchemaService
from xrm.transfer import export_records

from conftest import bearer, ok, problem

PERSON: dict[str, Any] = {
    "type": "object",
    "x-xrm": {"name": "person", "label": {"en": "Person"}, "display_field": "name", "search_fields": ["name", "email"],
              "consent": {"channels": ["email", "sms"]}},
    "required": ["name", "email"],
    "properties": {
        "name": {"type": "string", "x-xrm": {"personal": True}},
        "email": {"type": "string", "format": "email", "x-xrm": {"personal": True, "unique": True}},
        "phone": {"x-xrm": {"type": "phone", "personal": True}},
        "nickname": {"type": "string", "x-xrm": {"personal": True}},
        "birthday": {"type": "string", "format": "date", "x-xrm": {"personal": True, "sensitive": True}},
        "segment": {"type": "string", "enum": ["a", "b", "c"]},
    },
}
TICKET: dict[str, Any] = {
    "type": "object",
    "x-xrm": {"name": "ticket", "label": {"en": "Ticket"}, "display_field": "subject"},
    "required": ["subject"],
    "properties": {
        "subject": {"type": "string"},
        "reporter": {"x-xrm": {"type": "reference", "references": "person"}},
        "reporter_email": {"type": "string", "format": "email", "x-xrm": {"personal": True}},
        "hours": {"type": "integer"},
    },
}
ADMIN = Principal(uuid.uuid4(), "dpo", frozenset({"admin"}))


@pytest.fixture
async def crm(db: Database, make_entities: Any) -> Registry:
    return await make_entities(PERSON, TICKET)


def records(db: Database, registry: Registry, entity: str) -> RecordService:
    return RecordService(db, registry, entity, ADMIN)


async def tables_containing(db: Database, needle: str) -> list[str]:
    """Every table of the database (all schemas but PostgreSQL's own) whose rows' text contains `needle`."""
    async with db.connection() as connection:
        tables = await connection.fetch(
            "SELECT quote_ident(table_schema) || '.' || quote_ident(table_name) AS t FROM information_schema.tables "
            "WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema')"
        )
        found = []
        for row in tables:
            if await connection.fetchval(f"SELECT count(*) FROM {row['t']} x WHERE lower(x::text) LIKE $1", f"%{needle.lower()}%"):
                found.append(row["t"])
    return found


async def test_access_bundle_finds_the_person_in_every_entity(db: Database, crm: Registry) -> None:
    people, tickets = records(db, crm, "person"), records(db, crm, "ticket")
    max_ = await people.create({"name": "Max Mustermann", "email": "Max@Globex.example", "phone": "+49 89 1234568", "birthday": "1971-09-23"})
    other = await people.create({"name": "Erika Musterfrau", "email": "erika@example.org"})
    own_ticket = await tickets.create({"subject": "Invoice wrong", "reporter": str(max_["id"]), "hours": 2})
    mailed = await tickets.create({"subject": "Website form", "reporter_email": "max@globex.EXAMPLE"})
    await tickets.create({"subject": "Someone else", "reporter": str(other["id"])})
    await people.update(max_["id"], {"segment": "a"})

    bundle = await PrivacyService(db, crm, ADMIN).access(SubjectQuery(email="max@globex.example"))

    subject = {(r["entity"], r["id"]): r for r in bundle["subject_records"]}
    assert set(subject) == {("person", max_["id"]), ("ticket", mailed["id"])}
    person = subject[("person", max_["id"])]
    assert person["matched_by"] == ["email"]
    assert person["record"]["birthday"] == dt.date(1971, 9, 23)  # sensitive fields too: it is the person's own data
    assert [e["action"] for e in person["history"]] == ["record.created", "record.updated"]
    assert set(person["personal_fields"]) == {"name", "email", "phone", "nickname", "birthday"}
    assert [(r["entity"], r["id"], r["matched_by"]) for r in bundle["related_records"]] == [
        ("ticket", own_ticket["id"], ["reference:ticket.reporter"])
    ]
    # By phone, however it is written, and by naming a record.
    by_phone = await PrivacyService(db, crm, ADMIN).access(SubjectQuery(phone="+49-89-1234568"))
    assert [r["id"] for r in by_phone["subject_records"]] == [max_["id"]]
    by_record = await PrivacyService(db, crm, ADMIN).access(SubjectQuery(entity="person", record_id=str(other["id"])))
    assert [r["id"] for r in by_record["subject_records"]] == [other["id"]]

    # The request is audited without the e-mail address it was about.
    entries = await AuditLog(db).search(action="privacy.access")
    assert entries[-1].principal_name == "dpo"
    assert "globex" not in json.dumps(entries[-1].details, default=str).lower()


async def test_requests_need_the_admin_role_and_a_named_person(db: Database, crm: Registry) -> None:
    with pytest.raises(PermissionDenied):
        PrivacyService(db, crm, Principal(uuid.uuid4(), "anna", frozenset({"sales"})))
    service = PrivacyService(db, crm, ADMIN)
    with pytest.raises(XrmError) as error:
        await service.access(SubjectQuery())
    assert "name the person" in str(error.value)
    with pytest.raises(XrmError) as error:
        await service.erase(SubjectQuery(phone="12"))
    assert error.value.problems[0].pointer == "/phone"


async def test_erasure_leaves_no_personal_value_anywhere_in_the_database(db: Database, crm: Registry, tmp_path: Path) -> None:
    people, tickets = records(db, crm, "person"), records(db, crm, "ticket")
    person = await people.create({
        "name": "Maximilian Quästor", "email": "old.address@quaestor.example", "phone": "+49 30 9876543",
        "nickname": "Quaxi", "birthday": "1971-09-23", "segment": "b",
    })
    await people.update(person["id"], {"email": "maximilian@quaestor.example"})  # the old address lives on in the trail
    ticket = await tickets.create({"subject": "Delivery late", "reporter": str(person["id"]), "hours": 5})
    web = await tickets.create({"subject": "Contact form", "reporter_email": "maximilian@quaestor.example", "hours": 1})
    keeper = await people.create({"name": "Someone Else", "email": "else@example.org", "nickname": "Keeper"})
    # An export filtered by the address: the trail records the filter.
    with open(tmp_path / "out.csv", "w", newline="") as out:
        await export_records(db, crm, "person", out, where={"email": "maximilian@quaestor.example"}, principal=ADMIN)
    # A schema change archives a removed personal field (restorable), value included.
    changed = json.loads(json.dumps(PERSON))
    del changed["properties"]["nickname"]
    await SchemaService(db).apply([changed], allow_destructive=True)
    crm = await Registry().load(db)
    # Copies in plugins' own tables: a rendered automation e-mail, a job, a link's attribute.
    async with db.connection() as connection:
        await connection.execute(
            "INSERT INTO xrm_sys.mail_outbox (recipients, subject, body) VALUES ($1, 'Hello', 'Dear Maximilian Quästor')",
            ["maximilian@quaestor.example"])
        await connection.execute("INSERT INTO xrm_sys.job (kind, payload, idempotency_key) VALUES ('mail.send', $1, 'test:1')",
                                 {"to": "maximilian@quaestor.example", "n": 1})
        await connection.execute(
            "INSERT INTO xrm_sys.record_link (kind, name, source_entity, source_id, target_entity, target_id, attributes) "
            "VALUES ('connection', 'advisor', 'person', $1, 'ticket', $2, $3)", person["id"], ticket["id"], {"note": "calls him Quaxi"})
    entries_before = await _count(db, "SELECT count(*) FROM xrm_sys.audit_log")

    values = ["Quästor", "Quaxi", "old.address@quaestor", "maximilian@quaestor", "9876543", "1971-09-23"]
    for value in values:
        assert await tables_containing(db, value), value  # the test can fail: they are there now

    report = await PrivacyService(db, crm, ADMIN).erase(SubjectQuery(email="Maximilian@Quaestor.example"))

    assert sorted((r["entity"], str(r["id"])) for r in report["records"]) == sorted(
        [("person", str(person["id"])), ("ticket", str(web["id"]))]
    )
    assert report["related_records_kept"] == 1 and report["audit_entries_redacted"] >= 4
    assert report["archived_values_redacted"] == 1 and report["plugin_rows_redacted"] == 3
    for value in values:
        assert await tables_containing(db, value) == [], value
    # Business facts stay: the tickets, their hours, the reference; the person record exists, anonymised.
    people, tickets = records(db, crm, "person"), records(db, crm, "ticket")
    erased = await people.get(person["id"])
    assert (erased["name"], erased["phone"], erased["birthday"], erased["segment"]) == ("[erased]", None, None, "b")
    assert erased["email"] == f"erased-{person['id']}@erased.invalid"
    assert (await tickets.get(ticket["id"]))["reporter"] == person["id"]
    assert (await tickets.get(web["id"]))["hours"] == 1
    assert (await people.get(keeper["id"]))["name"] == "Someone Else"
    assert await tables_containing(db, "Keeper")  # only the person's values went
    # The trail loses values, never entries, and says that an erasure happened.
    assert await _count(db, "SELECT count(*) FROM xrm_sys.audit_log") == entries_before + 3
    history = [e.action for e in await people.history(person["id"])]
    assert history == ["record.created", "record.updated", "record.erased"]
    created = (await people.history(person["id"]))[0]
    assert created.changes["name"] == {"old": None, "new": "[redacted]"} and created.changes["segment"]["new"] == "b"
    # Found again? Nothing personal is left to find.
    again = await PrivacyService(db, crm, ADMIN).access(SubjectQuery(email="maximilian@quaestor.example"))
    assert again["subject_records"] == []


async def test_a_dry_run_reports_exactly_and_changes_nothing(db: Database, crm: Registry) -> None:
    people = records(db, crm, "person")
    person = await people.create({"name": "Dora Dry", "email": "dora@example.org", "nickname": "Dodo"})
    entries = await _count(db, "SELECT count(*) FROM xrm_sys.audit_log")

    report = await PrivacyService(db, crm, ADMIN).erase(SubjectQuery(email="dora@example.org"), dry_run=True)

    assert report["dry_run"] and [r["id"] for r in report["records"]] == [person["id"]]
    assert report["audit_entries_redacted"] == 1
    assert (await people.get(person["id"]))["nickname"] == "Dodo"
    assert await _count(db, "SELECT count(*) FROM xrm_sys.audit_log") == entries


async def test_the_audit_trail_can_only_lose_values_never_change_them(db: Database, crm: Registry) -> None:
    person = await records(db, crm, "person").create({"name": "Rita Redact", "email": "rita@example.org"})
    async with db.connection() as connection:
        entry = await connection.fetchval("SELECT id FROM xrm_sys.audit_log WHERE record_id = $1", person["id"])
        redacted = {"name": {"old": None, "new": "[redacted]"}, "email": {"old": None, "new": "rita@example.org"}}
        forged = {"name": {"old": None, "new": "Someone Else"}, "email": {"old": None, "new": "rita@example.org"}}
        added = {**redacted, "segment": {"old": None, "new": "[redacted]"}}
        attempts = [
            ("UPDATE xrm_sys.audit_log SET changes = $2 WHERE id = $1", redacted, False),  # no redaction transaction
            ("UPDATE xrm_sys.audit_log SET changes = $2 WHERE id = $1", forged, True),     # a new value, not a redaction
            ("UPDATE xrm_sys.audit_log SET changes = $2 WHERE id = $1", added, True),      # a key that was not there
            ("UPDATE xrm_sys.audit_log SET changes = $2, action = 'record.deleted' WHERE id = $1", redacted, True),
        ]
        for sql, changes, redaction_on in attempts:
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                async with connection.transaction():
                    if redaction_on:
                        await connection.execute("SET LOCAL xrm.audit_redaction = 'on'")
                    await connection.execute(sql, entry, changes)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with connection.transaction():
                await connection.execute("SET LOCAL xrm.audit_redaction = 'on'")
                await connection.execute("DELETE FROM xrm_sys.audit_log WHERE id = $1", entry)
        async with connection.transaction():
            await connection.execute("SET LOCAL xrm.audit_redaction = 'on'")
            await connection.execute("UPDATE xrm_sys.audit_log SET changes = $2 WHERE id = $1", entry, redacted)
        assert await connection.fetchval("SELECT changes -> 'name' ->> 'new' FROM xrm_sys.audit_log WHERE id = $1", entry) == "[redacted]"


async def test_retention_rules_delete_or_anonymise_records_untouched_for_n_days(db: Database, make_entities: Any) -> None:
    lead = {
        "type": "object",
        "x-xrm": {"name": "lead", "label": {"en": "Lead"}, "retention": {"days": 30, "action": "delete"}},
        "properties": {"name": {"type": "string", "x-xrm": {"personal": True}}, "source": {"type": "string"}},
    }
    applicant = {
        "type": "object",
        "x-xrm": {"name": "applicant", "label": {"en": "Applicant"},
                  "retention": {"days": 180, "action": "anonymise", "after": "decided_on"}},
        "properties": {"name": {"type": "string", "x-xrm": {"personal": True}}, "decided_on": {"type": "string", "format": "date"},
                       "position": {"type": "string"}},
    }
    note = {
        "type": "object", "x-xrm": {"name": "note", "label": {"en": "Note"}},
        "properties": {"text": {"type": "string"}, "lead": {"x-xrm": {"type": "reference", "references": "lead"}}},
    }
    registry = await make_entities(lead, applicant, note)
    leads, applicants = records(db, registry, "lead"), records(db, registry, "applicant")
    stale = await leads.create({"name": "Stale Lead", "source": "fair"})
    referenced = await leads.create({"name": "Referenced Lead"})
    fresh = await leads.create({"name": "Fresh Lead"})
    await records(db, registry, "note").create({"text": "call back", "lead": str(referenced["id"])})
    old = await applicants.create({"name": "Old Applicant", "decided_on": "2020-01-31", "position": "Clerk"})
    recent = await applicants.create({"name": "Recent Applicant", "decided_on": dt.date.today().isoformat()})
    async with db.connection() as connection:
        await connection.execute("UPDATE lead SET updated_at = now() - interval '31 days' WHERE id = ANY($1::uuid[])",
                                 [stale["id"], referenced["id"]])
        await connection.execute(  # a connection of the stale lead: it goes with the lead
            "INSERT INTO xrm_sys.record_link (kind, name, source_entity, source_id, target_entity, target_id) "
            "VALUES ('connection', 'knows', 'lead', $1, 'lead', $2)", stale["id"], fresh["id"])
    privacy = PrivacyService(db, registry, ADMIN)

    plan = {r["entity"]: r for r in await privacy.retention(dry_run=True)}
    assert (plan["lead"]["due"], plan["lead"]["kept_referenced"], plan["lead"]["sample"]) == (1, 1, [stale["id"]])
    assert (plan["applicant"]["due"], plan["applicant"]["sample"]) == (1, [old["id"]])
    assert (await leads.get(stale["id"]))["name"] == "Stale Lead"  # a dry run changes nothing

    done = {r["entity"]: r for r in await privacy.retention()}
    assert done["lead"]["due"] == 1 and done["applicant"]["due"] == 1
    async with db.connection() as connection:
        assert await connection.fetchval("SELECT count(*) FROM lead WHERE id = $1", stale["id"]) == 0  # gone for good
    assert {(await leads.get(r["id"]))["name"] for r in (referenced, fresh)} == {"Referenced Lead", "Fresh Lead"}
    assert await tables_containing(db, "Stale Lead") == []  # its trail is redacted too
    assert await _count(db, f"SELECT count(*) FROM xrm_sys.record_link WHERE source_id = '{stale['id']}'") == 0
    anonymised = await applicants.get(old["id"])
    assert (anonymised["name"], anonymised["position"]) == (None, "Clerk")
    assert (await applicants.get(recent["id"]))["name"] == "Recent Applicant"
    # Already anonymised records are not due again.
    assert {r["entity"]: r["due"] for r in await privacy.retention(dry_run=True)} == {"lead": 0, "applicant": 0}
    with pytest.raises(XrmError, match="no retention rule"):
        await privacy.retention("note")


async def test_audit_retention_archives_old_entries_and_the_database_keeps_younger_ones(
    db: Database, make_entities: Any, tmp_path: Path
) -> None:
    visit = {"type": "object", "x-xrm": {"name": "visit", "label": {"en": "Visit"}, "audit_retention": {"days": 90}},
             "properties": {"place": {"type": "string"}}}
    await make_entities(visit)
    async with db.connection() as connection:
        for days in (200, 100, 10):
            await connection.execute(
                "INSERT INTO xrm_sys.audit_log (at, principal_name, action, entity, record_id, changes) "
                "VALUES (now() - make_interval(days => $1), 'anna', 'record.created', 'visit', gen_random_uuid(), $2)",
                days, {"place": {"old": None, "new": f"place {days}"}},
            )
    assert [r["entries"] for r in await archive_expired_audit(db, SYSTEM_PRINCIPAL, tmp_path, dry_run=True)] == [2]

    [report] = await archive_expired_audit(db, SYSTEM_PRINCIPAL, tmp_path)

    assert report["entries"] == 2
    with gzip.open(report["file"], "rt", encoding="utf-8") as archive:
        archived = [json.loads(line) for line in archive]
    assert [e["changes"]["place"]["new"] for e in archived] == ["place 200", "place 100"]
    async with db.connection() as connection:
        left = await connection.fetch("SELECT action, changes FROM xrm_sys.audit_log WHERE entity = 'visit' ORDER BY id")
        assert [r["changes"]["place"]["new"] for r in left if r["action"] == "record.created"] == ["place 10"]
        assert [r["action"] for r in left][-1] == "audit.archived"
        # Even in an archive transaction the database refuses to drop an entry within its retention.
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with connection.transaction():
                await connection.execute("SET LOCAL xrm.audit_archive = 'on'")
                await connection.execute("DELETE FROM xrm_sys.audit_log WHERE entity = 'visit'")


async def test_the_consent_group_records_channel_permission_with_time_and_source(db: Database, crm: Registry) -> None:
    people = records(db, crm, "person")
    assert list(crm.get("person").fields)[-6:] == [
        "consent_email", "consent_email_at", "consent_email_source", "consent_sms", "consent_sms_at", "consent_sms_source",
    ]
    person = await people.create({"name": "Clara Consent", "email": "clara@example.org", "consent_email": "granted",
                                  "consent_email_source": "web form"})
    granted_at = person["consent_email_at"]
    assert granted_at is not None and person["consent_sms_at"] is None

    same = await people.update(person["id"], {"consent_email": "granted", "segment": "a"})
    assert same["consent_email_at"] == granted_at  # unchanged consent keeps its time
    withdrawn = await people.update(person["id"], {"consent_email": "withdrawn", "consent_email_source": "unsubscribe link"})
    assert withdrawn["consent_email_at"] > granted_at
    given = "2024-05-01T10:00:00+00:00"
    stated = await people.update(person["id"], {"consent_sms": "granted", "consent_sms_at": given})
    assert stated["consent_sms_at"] == dt.datetime.fromisoformat(given)  # a stated time (e.g. an import) is kept
    page = await people.list(where={"consent_email": "withdrawn"})
    assert [r["id"] for r in page.records] == [person["id"]]
    changes = (await people.history(person["id"]))[2].changes
    assert changes["consent_email"] == {"old": "granted", "new": "withdrawn"}  # the trail proves who changed it when


@pytest.mark.parametrize(("change", "pointer", "message"), [
    (lambda d: d["required"].append("phone"), "/required/2", "must be text, long_text or email"),
    (lambda d: d["x-xrm"].update(retention={"days": 10, "action": "delete", "after": "segment"}), "/x-xrm/retention/after", "date or datetime"),
    (lambda d: d["x-xrm"].update(consent={"channels": ["fax"]}), "/x-xrm/consent/channels/0", "fax"),
    (lambda d: d["properties"].update(consent_email={"type": "string"}), "/x-xrm/consent", "declares itself"),
    (lambda d: d["properties"]["segment"]["x-xrm"].update(set_on_change_of="name") if "x-xrm" in d["properties"]["segment"]
     else d["properties"]["segment"].update({"x-xrm": {"set_on_change_of": "name"}}),
     "/properties/segment/x-xrm/set_on_change_of", "only a datetime field"),
])
def test_privacy_vocabulary_mistakes_are_refused_at_their_pointer(change: Any, pointer: str, message: str) -> None:
    document = json.loads(json.dumps(PERSON))
    change(document)
    with pytest.raises(DefinitionInvalid) as error:
        parse_definition(document)
    assert any(p.pointer == pointer and message in p.message for p in error.value.problems), error.value.problems


def test_anonymising_needs_personal_fields() -> None:
    document = {"type": "object", "x-xrm": {"name": "visit", "label": {"en": "Visit"}, "retention": {"days": 5, "action": "anonymise"}},
                "properties": {"place": {"type": "string"}}}
    with pytest.raises(DefinitionInvalid) as error:
        parse_definition(document)
    assert error.value.problems[0].pointer == "/x-xrm/retention/action"


def test_privacy_api_for_admins_only(api: Any) -> None:
    admin, sales = bearer(api, "dpo", ["admin"]), bearer(api, "anna", ["sales"])
    contact = ok(api.post("/api/v1/contact", json={"full_name": "Greta Gone", "email": "greta@example.org", "phone": "+43 1 5550100"},
                          headers=admin), 201)
    problem(api.post("/api/v1/admin/privacy/access", json={"email": "greta@example.org"}, headers=sales), 403)
    assert problem(api.post("/api/v1/admin/privacy/access", json={}, headers=admin), 422)["errors"]

    bundle = ok(api.post("/api/v1/admin/privacy/access", json={"email": "greta@example.org"}, headers=admin))
    assert [r["id"] for r in bundle["subject_records"]] == [contact["id"]]
    dry = ok(api.post("/api/v1/admin/privacy/erase", json={"phone": "+43 1 5550100", "dry_run": True}, headers=admin))
    assert dry["dry_run"] and ok(api.get(f"/api/v1/contact/{contact['id']}", headers=admin))["full_name"] == "Greta Gone"
    done = ok(api.post("/api/v1/admin/privacy/erase", json={"email": "greta@example.org"}, headers=admin))
    assert [r["fields"] for r in done["records"]] == [["full_name", "email", "phone", "birthday"]]
    assert ok(api.get(f"/api/v1/contact/{contact['id']}", headers=admin))["full_name"] is None
    assert ok(api.post("/api/v1/admin/privacy/retention", json={"dry_run": True}, headers=admin)) == {"rules": []}


def test_privacy_cli_access_bundle_and_erasure(xrm_cli: Any, tmp_path: Path) -> None:
    xrm_cli("demo")
    out = xrm_cli("privacy", "access", "--email", "max.mustermann@globex.example", "-o", "max.zip")
    assert "1 records of the person" in out
    with zipfile.ZipFile(tmp_path / "max.zip") as bundle:
        assert {"bundle.json", "contact.csv", "history.csv"} <= set(bundle.namelist())
        assert "Max Mustermann" in bundle.read("contact.csv").decode()
    dry = xrm_cli("privacy", "erase", "--email", "max.mustermann@globex.example", "--dry-run")
    assert "full_name, email, phone, birthday" in dry and "Erased" not in dry
    assert "Erased 1 records." in xrm_cli("privacy", "erase", "--email", "max.mustermann@globex.example", "--yes")
    assert "No record of this person" in xrm_cli("privacy", "erase", "--email", "max.mustermann@globex.example", "--yes")
    assert "No entity has a retention rule" in xrm_cli("privacy", "retention", "--dry-run")
    assert "Error: The data subject is not named clearly" in xrm_cli("privacy", "access", code=1)


async def _count(db: Database, sql: str) -> int:
    async with db.connection() as connection:
        return int(await connection.fetchval(sql))


async def test_adding_a_consent_channel_later_is_a_safe_field_addition(db: Database, make_entities: Any) -> None:
    document = json.loads(json.dumps(PERSON))
    del document["x-xrm"]["consent"]
    registry = await make_entities(document)
    person = await records(db, registry, "person").create({"name": "Lea Later", "email": "lea@example.org"})
    document["x-xrm"]["consent"] = {"channels": ["letter"]}

    plan = await SchemaService(db).plan([document])
    assert [(s.kind, s.action, s.field) for s in plan.steps] == [
        ("safe", "add_field", f) for f in ("consent_letter", "consent_letter_at", "consent_letter_source")
    ], plan.steps
    await SchemaService(db).apply([document])
    registry = await Registry().load(db)
    updated = await records(db, registry, "person").update(person["id"], {"consent_letter": "granted"})
    assert updated["consent_letter_at"] is not None


async def test_erasure_leaves_other_peoples_equal_dates_alone(db: Database, crm: Registry) -> None:
    people = records(db, crm, "person")
    erased = await people.create({"name": "Gone Person", "email": "gone@example.org", "birthday": "1980-01-01"})
    twin = await people.create({"name": "Twin Person", "email": "twin@example.org", "birthday": "1980-01-01"})
    await PrivacyService(db, crm, ADMIN).erase(SubjectQuery(email="gone@example.org"))
    twin_created = (await people.history(twin["id"]))[0]
    assert twin_created.changes["birthday"] == {"old": None, "new": "1980-01-01"}  # the same date, someone else's
    gone_created = (await people.history(erased["id"]))[0]
    assert gone_created.changes["birthday"] == {"old": None, "new": "[redacted]"}


LEAD: dict[str, Any] = {
    "type": "object",
    "x-xrm": {"name": "lead", "label": {"en": "Lead"}, "display_field": "name"},
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "x-xrm": {"personal": True}},
        "email": {"type": "string", "format": "email", "x-xrm": {"personal": True}},
        "work_email": {"type": "string", "format": "email", "x-xrm": {"personal": True}},
        "mobile": {"x-xrm": {"type": "phone", "personal": True}},
    },
}


async def test_a_person_named_by_email_and_phone_is_found_in_entities_with_two_email_fields(
    db: Database, make_entities: Any
) -> None:
    """Each personal field is one query with its own parameter: naming e-mail and phone together (or an
    entity with two e-mail fields) once sent every parameter to every query ("expects 1 argument, 2 were passed")."""
    registry = await make_entities(PERSON, TICKET, LEAD)
    person = await records(db, registry, "person").create({"name": "Paula Both", "email": "paula@both.example", "phone": "+49 40 1112223"})
    by_work = await records(db, registry, "lead").create({"name": "Paula B.", "work_email": "Paula@Both.example"})
    by_mobile = await records(db, registry, "lead").create({"name": "P. Both", "email": "p@elsewhere.example", "mobile": "040 1112223-0"})
    by_phone_only = await records(db, registry, "lead").create({"name": "Paula", "mobile": "+49 (40) 111 2223"})
    await records(db, registry, "lead").create({"name": "Not Paula", "email": "other@example.org", "work_email": "x@example.org"})
    query = SubjectQuery(email="paula@both.example", phone="+49 40 1112223")

    bundle = await PrivacyService(db, registry, ADMIN).access(query)
    found = {(r["entity"], r["id"]): r["matched_by"] for r in bundle["subject_records"]}
    assert found == {("person", person["id"]): ["email", "phone"], ("lead", by_work["id"]): ["email"],
                     ("lead", by_phone_only["id"]): ["phone"]}
    assert ("lead", by_mobile["id"]) not in found  # 0401112223 0 is another number

    dry = await PrivacyService(db, registry, ADMIN).erase(query, dry_run=True)
    assert dry["dry_run"] and sorted(str(r["id"]) for r in dry["records"]) == sorted(
        str(key) for key in (person["id"], by_work["id"], by_phone_only["id"]))
    assert (await records(db, registry, "lead").get(by_work["id"]))["work_email"] == "Paula@Both.example"


async def test_erasure_redacts_the_persons_entries_in_audit_archive_files(db: Database, crm: Registry, tmp_path: Path) -> None:
    """Entries audit retention moved to a file are still the person's: erasure rewrites the file without their values."""
    people = records(db, crm, "person")
    person = await people.create({"name": "Archibald Oldentry", "email": "archie.first@oldentry.example"})
    await people.update(person["id"], {"email": "archie@oldentry.example"})
    other = await people.create({"name": "Bystander Person", "email": "bystander@example.org"})
    # The person's entries age past a retention of 30 days and are archived to a file.
    kept = json.loads(json.dumps(PERSON))
    kept["x-xrm"]["audit_retention"] = {"days": 30}
    await SchemaService(db).apply([kept])
    async with db.transaction() as tx:  # the trail cannot be backdated (append-only): add aged copies of the entries instead
        for entry in await tx.connection.fetch(
            "SELECT principal_name, action, entity, record_id, changes FROM xrm_sys.audit_log WHERE entity = 'person' ORDER BY id"
        ):
            await tx.connection.execute(
                "INSERT INTO xrm_sys.audit_log (at, principal_name, action, entity, record_id, changes) "
                "VALUES (now() - interval '400 days', $1, $2, $3, $4, $5)", *entry.values())
    [report] = [r for r in await archive_expired_audit(db, ADMIN, tmp_path / "archive") if r["entity"] == "person"]
    assert report["entries"] >= 3
    path = Path(report["file"])

    def archived() -> str:
        with gzip.open(path, "rt", encoding="utf-8") as lines:
            return lines.read()

    assert "archie.first@oldentry.example" in archived() and "bystander@example.org" in archived()
    dry = await PrivacyService(db, crm, ADMIN).erase(SubjectQuery(email="archie@oldentry.example"), dry_run=True)
    assert dry["archive_file_entries_redacted"] >= 2 and "archie.first" in archived()  # a dry run changes no file
    report = await PrivacyService(db, crm, ADMIN).erase(SubjectQuery(email="archie@oldentry.example"))
    assert report["archive_file_entries_redacted"] == dry["archive_file_entries_redacted"] and report["archive_files_missing"] == []
    text = archived()
    for value in ("Archibald", "Oldentry", "archie.first@oldentry.example", "archie@oldentry.example"):
        assert value.casefold() not in text.casefold(), value
    assert "bystander@example.org" in text and "[redacted]" in text  # other people's entries stay as they were
    assert (await people.get(other["id"]))["email"] == "bystander@example.org"
