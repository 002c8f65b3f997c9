"""Schema evolution against a real PostgreSQL: what a user of `xrm schema` notices.

Every test runs on its own fresh database (fixtures `db` and `registry`). A
refused change must leave the database exactly as it was; `snapshot` captures
all user-visible state so that "nothing changed" is checked, not assumed.
"""

from __future__ import annotations

import copy
import datetime as dt
import decimal
import json
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from xrm.db.database import Database
from xrm.errors import DefinitionInvalid, NotFound, SchemaChangeRefused, ValidationFailed
from xrm.identifiers import quote_ident
from xrm.records.principal import SYSTEM_PRINCIPAL
from xrm.records.service import RecordService
from xrm.registry import Registry
from xrm.schema.service import SchemaService

# -- helpers -------------------------------------------------------------------


def entity(name: str, properties: dict[str, Any], required: list[str] | None = None, **xrm: Any) -> dict[str, Any]:
    """An entity definition document as an admin writes it."""
    return {
        "type": "object",
        "x-xrm": {"name": name, "label": {"en": name.title(), "de": name.title() + " (de)"}, **xrm},
        "required": list(required or []),
        "properties": copy.deepcopy(properties),
    }


def account(**extra: Any) -> dict[str, Any]:
    return entity("account", {"name": {"type": "string", "maxLength": 100}, **extra}, required=["name"])


async def snapshot(db: Database) -> dict[str, Any]:
    """All user-visible state: every row of every entity table (schema public,
    by id), the definitions and their versions, the columns, constraints and
    indexes of schema public, the changes and the archive."""
    state: dict[str, Any] = {}
    async with db.connection() as c:
        tables = [
            r["table_name"]
            for r in await c.fetch(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY table_name"
            )
        ]
        for table in tables:
            rows = await c.fetch(f"SELECT to_jsonb(t)::text AS row FROM public.{quote_ident(table)} t ORDER BY id")
            state[f"public.{table}"] = [r["row"] for r in rows]
        queries = {
            "xrm_sys.entity": "SELECT id, name, version, definition::text AS definition, archived_table, removed_at "
            "FROM xrm_sys.entity ORDER BY id",
            "xrm_sys.entity_version": "SELECT entity_id, version, name, definition::text AS definition, changeset_id, created_at "
            "FROM xrm_sys.entity_version ORDER BY entity_id, version",
            "columns": "SELECT table_name, column_name, ordinal_position, data_type, udt_name, is_nullable, column_default, "
            "character_maximum_length, numeric_precision, numeric_scale, is_generated, generation_expression "
            "FROM information_schema.columns WHERE table_schema = 'public' ORDER BY table_name, ordinal_position",
            "constraints": "SELECT conrelid::regclass::text AS tbl, conname, pg_get_constraintdef(oid) AS def "
            "FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2",
            "indexes": "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1, 2",
            "changesets": "SELECT id, kind, details::text AS details, reverts, reverted_by FROM xrm_sys.schema_changeset ORDER BY id",
            "archive_batches": "SELECT id, field, reason, row_count, restored_at FROM xrm_sys.archive_batch ORDER BY id",
            "archive_values": "SELECT batch_id, record_id, value::text AS value FROM xrm_sys.archive_value ORDER BY 1, 2",
            "archive_tables": "SELECT table_name FROM information_schema.tables WHERE table_schema = 'xrm_archive' ORDER BY 1",
        }
        for key, sql in queries.items():
            state[key] = [dict(r) for r in await c.fetch(sql)]
    return state


def assert_tables_restored(before: dict[str, Any], after: dict[str, Any], *tables: str) -> None:
    """The tables hold the same rows, columns (position aside: a re-added column
    comes last), constraints and indexes as in the `before` snapshot."""
    for table in tables:
        assert after[f"public.{table}"] == before[f"public.{table}"], table

        def shape(state: dict[str, Any], key: str) -> list[Any]:
            found = [{k: v for k, v in r.items() if k != "ordinal_position"} for r in state[key]
                     if table in (r.get("table_name"), r.get("tablename"), r.get("tbl"))]
            return sorted(found, key=lambda r: json.dumps(r, sort_keys=True, default=str))

        for key in ("columns", "constraints", "indexes"):
            assert shape(after, key) == shape(before, key), (table, key)


async def rows(db: Database, sql: str, *args: Any) -> list[dict[str, Any]]:
    async with db.connection() as c:
        return [dict(r) for r in await c.fetch(sql, *args)]


async def value(db: Database, sql: str, *args: Any) -> Any:
    async with db.connection() as c:
        return await c.fetchval(sql, *args)


async def public_tables(db: Database) -> set[str]:
    return {
        r["table_name"]
        for r in await rows(db, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'")
    }


async def columns(db: Database, table: str) -> dict[str, str]:
    found = await rows(
        db,
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = 'public' AND table_name = $1",
        table,
    )
    return {r["column_name"]: r["data_type"] for r in found}


def records(db: Database, registry: Registry, name: str) -> RecordService:
    """A record service on the current definition (build it after each schema change)."""
    return RecordService(db, registry, name, SYSTEM_PRINCIPAL)


async def refused(coro: Any) -> SchemaChangeRefused:
    with pytest.raises(SchemaChangeRefused) as caught:
        await coro
    return caught.value


@pytest.fixture
def schema(db: Database, registry: Registry) -> SchemaService:
    return SchemaService(db, registry)


async def with_records(schema: SchemaService, db: Database, registry: Registry, document: dict[str, Any], values: list[dict[str, Any]]) -> list[str]:
    """Apply `document` and create one record per entry of `values`; the ids as strings."""
    await schema.apply([document])
    created = await records(db, registry, document["x-xrm"]["name"]).create_many(values)
    return [str(r["id"]) for r in created]


async def field_values(db: Database, registry: Registry, entity_name: str, field: str, ids: list[str]) -> list[Any]:
    service = records(db, registry, entity_name)
    return [(await service.get(i))[field] for i in ids]


# -- the snapshot itself ---------------------------------------------------------


class _Rollback(Exception):
    pass


async def test_snapshot_sees_values_definitions_and_table_shape(schema: SchemaService, db: Database, registry: Registry) -> None:
    """`snapshot(db) == before` proves something only if the snapshot notices changes."""
    ids = await with_records(schema, db, registry, account(), [{"name": "A"}])
    before = await snapshot(db)
    assert await snapshot(db) == before
    changes = [
        f"UPDATE public.account SET name = 'B' WHERE id = '{ids[0]}'",
        "UPDATE xrm_sys.entity SET definition = '{}'::json",
        "ALTER TABLE public.account ADD CONSTRAINT ck_x CHECK (true)",
        "CREATE INDEX account_extra ON public.account (name)",
        "ALTER TABLE public.account ALTER COLUMN name DROP NOT NULL",
        "ALTER TABLE public.account ADD COLUMN extra text",
    ]
    for sql in changes:
        with pytest.raises(_Rollback):
            async with db.transaction() as tx:  # snapshot() joins this transaction
                await tx.connection.execute(sql)
                assert await snapshot(db) != before, sql
                raise _Rollback
    assert await snapshot(db) == before


# -- adding ----------------------------------------------------------------------


async def test_add_entity_creates_a_usable_table(schema: SchemaService, db: Database, registry: Registry) -> None:
    plan = await schema.plan([account(city={"type": "string"})])
    assert [(s.kind, s.action, s.entity) for s in plan.steps] == [("safe", "create_entity", "account")]
    assert "account" not in await public_tables(db)  # plan changes nothing

    applied = await schema.apply([account(city={"type": "string"})])
    assert applied.changeset_id is not None
    assert {"name": "text", "city": "text", "id": "uuid"}.items() <= (await columns(db, "account")).items()
    record = await records(db, registry, "account").create({"name": "ACME", "city": "Berlin"})
    assert (await records(db, registry, "account").get(record["id"]))["city"] == "Berlin"
    assert [(v["version"], v["name"]) for v in await schema.history("account")] == [(1, "account")]


async def test_add_nullable_field_gives_existing_records_null(schema: SchemaService, db: Database, registry: Registry) -> None:
    ids = await with_records(schema, db, registry, account(), [{"name": "A"}, {"name": "B"}])
    plan = await schema.apply([account(city={"type": "string"})])
    assert [(s.kind, s.action, s.field) for s in plan.steps] == [("safe", "add_field", "city")]
    assert await field_values(db, registry, "account", "city", ids) == [None, None]
    # and the new field is writable
    updated = await records(db, registry, "account").update(ids[0], {"city": "Bonn"})
    assert updated["city"] == "Bonn"


async def test_add_field_with_default_fills_existing_records(schema: SchemaService, db: Database, registry: Registry) -> None:
    ids = await with_records(schema, db, registry, account(), [{"name": "A"}, {"name": "B"}, {"name": "C"}])
    document = account(
        tier={"type": "string", "enum": ["standard", "gold"], "default": "standard"},
        seats={"type": "integer", "default": 5},
    )
    document["required"] = ["name", "tier"]
    plan = await schema.plan([document])
    tier = next(s for s in plan.steps if s.field == "tier")
    assert tier.kind == "backfill" and tier.impact == "fills 3 existing records"
    await schema.apply([document])
    assert await field_values(db, registry, "account", "tier", ids) == ["standard"] * 3
    assert await field_values(db, registry, "account", "seats", ids) == [5, 5, 5]
    # new records get the default from the application, not a stale column default
    assert (await records(db, registry, "account").create({"name": "D"}))["tier"] == "standard"
    assert await value(db, "SELECT count(*) FROM public.account WHERE tier IS NULL") == 0


async def test_add_required_field_without_default_is_refused_when_records_exist(schema: SchemaService, db: Database, registry: Registry) -> None:
    ids = await with_records(schema, db, registry, account(), [{"name": "A"}, {"name": "B"}])
    document = account(vat_id={"type": "string"})
    document["required"] = ["name", "vat_id"]
    before = await snapshot(db)

    plan = await schema.plan([document])
    assert len(plan.refusals) == 1

    error = await refused(schema.apply([document]))
    (refusal,) = error.refusals
    assert (refusal.entity, refusal.field) == ("account", "vat_id")
    assert refusal.record_ids == sorted(ids) and refusal.total == 2
    assert "default" in refusal.reason
    assert all(i in str(error) for i in ids)
    assert await snapshot(db) == before
    assert "vat_id" not in registry.get("account").fields


async def test_add_required_field_without_default_on_empty_table(schema: SchemaService, db: Database, registry: Registry) -> None:
    await schema.apply([account()])
    document = account(vat_id={"type": "string"})
    document["required"] = ["name", "vat_id"]
    await schema.apply([document])
    nullable = await value(
        db, "SELECT is_nullable FROM information_schema.columns WHERE table_name = 'account' AND column_name = 'vat_id'"
    )
    assert nullable == "NO"
    with pytest.raises(ValidationFailed):
        await records(db, registry, "account").create({"name": "A"})
    assert (await records(db, registry, "account").create({"name": "A", "vat_id": "DE1"}))["vat_id"] == "DE1"


# -- renaming --------------------------------------------------------------------


async def test_rename_field_keeps_values_and_rules(schema: SchemaService, db: Database, registry: Registry) -> None:
    document = entity(
        "account",
        {"code": {"type": "string", "maxLength": 10, "x-xrm": {"unique": True}}, "note": {"type": "string"}},
    )
    ids = await with_records(schema, db, registry, document, [{"code": f"C{i}", "note": f"n{i}"} for i in range(5)] + [{"note": "none"}])
    renamed = entity(
        "account",
        {"ref": {"type": "string", "maxLength": 10, "x-xrm": {"unique": True, "renamed_from": "code"}}, "note": {"type": "string"}},
    )
    plan = await schema.plan([renamed])
    assert [(s.kind, s.action, s.field, s.previous) for s in plan.steps] == [("safe", "rename_field", "ref", "code")]
    await schema.apply([renamed])

    assert await field_values(db, registry, "account", "ref", ids) == ["C0", "C1", "C2", "C3", "C4", None]
    assert await field_values(db, registry, "account", "note", ids) == ["n0", "n1", "n2", "n3", "n4", "none"]
    assert "code" not in await columns(db, "account")
    assert (await schema.plan([renamed])).steps == []  # renamed_from left in the file: nothing more to do
    # the unique index and the CHECK follow the field, under its new name
    names = {r["conname"] for r in await rows(db, "SELECT conname FROM pg_constraint WHERE conrelid = 'public.account'::regclass")}
    assert "ck_ref" in names and "ck_code" not in names
    with pytest.raises(ValidationFailed) as duplicate:
        await records(db, registry, "account").create({"ref": "C1"})
    assert duplicate.value.problems[0].pointer == "/ref"
    async with db.connection() as c:
        with pytest.raises(asyncpg.UniqueViolationError):
            await c.execute("INSERT INTO public.account (ref) VALUES ('C2')")
        with pytest.raises(asyncpg.CheckViolationError):
            await c.execute("INSERT INTO public.account (ref) VALUES ('ABCDEFGHIJK')")


def contact(reference_to: str = "account") -> dict[str, Any]:
    return entity(
        "contact",
        {"last_name": {"type": "string"}, "employer": {"type": "string", "format": "uuid", "x-xrm": {"type": "reference", "references": reference_to}}},
        required=["last_name"],
    )


async def test_rename_entity_keeps_data_and_references_follow(schema: SchemaService, db: Database, registry: Registry) -> None:
    await schema.apply([account(), contact()])
    acme = await records(db, registry, "account").create({"name": "ACME"})
    person = await records(db, registry, "contact").create({"last_name": "Doe", "employer": str(acme["id"])})
    entity_id = await value(db, "SELECT id FROM xrm_sys.entity WHERE name = 'account'")

    company = account()
    company["x-xrm"].update(name="company", renamed_from="account")
    plan = await schema.apply([company])
    assert ("safe", "rename_entity", "company") in [(s.kind, s.action, s.entity) for s in plan.steps]

    tables = await public_tables(db)
    assert "company" in tables and "account" not in tables
    assert await value(db, "SELECT id FROM xrm_sys.entity WHERE name = 'company'") == entity_id
    assert "account" not in registry and "company" in registry
    # the untouched contact definition now references company, and so does its foreign key
    assert registry.get("contact").fields["employer"].references == "company"
    target = await value(
        db, "SELECT confrelid::regclass::text FROM pg_constraint WHERE conrelid = 'public.contact'::regclass AND contype = 'f'"
    )
    assert target == "company"
    # records are readable and writable under the new name
    companies = records(db, registry, "company")
    assert (await companies.get(acme["id"]))["name"] == "ACME"
    beta = await companies.create({"name": "Beta"})
    moved = await records(db, registry, "contact").update(person["id"], {"employer": str(beta["id"])})
    assert moved["employer"] == beta["id"]
    with pytest.raises(ValidationFailed):
        await records(db, registry, "contact").create({"last_name": "X", "employer": str(uuid.uuid4())})
    with pytest.raises(NotFound):
        records(db, registry, "account")
    # the index names follow the table name
    indexes = {r["indexname"] for r in await rows(db, "SELECT indexname FROM pg_indexes WHERE tablename = 'company'")}
    assert not any(i.startswith("account_") for i in indexes)


# -- type changes ----------------------------------------------------------------


async def test_text_to_integer_converts_values(schema: SchemaService, db: Database, registry: Registry) -> None:
    document = account(code={"type": "string"})
    ids = await with_records(schema, db, registry, document, [{"name": "A", "code": "0042"}, {"name": "B", "code": "-7"}, {"name": "C"}])
    changed = account(code={"type": "integer"})
    plan = await schema.plan([changed])
    (step,) = plan.steps
    assert (step.kind, step.action, step.impact) == ("backfill", "alter_field", "converts 2 values")
    await schema.apply([changed])
    assert await field_values(db, registry, "account", "code", ids) == [42, -7, None]
    assert (await columns(db, "account"))["code"] == "bigint"


async def test_text_to_integer_is_refused_when_values_do_not_convert(schema: SchemaService, db: Database, registry: Registry) -> None:
    good = [{"name": f"good{i}", "code": str(i)} for i in range(3)]
    bad = [{"name": f"bad{i}", "code": f"x{i}"} for i in range(25)]
    ids = await with_records(schema, db, registry, account(code={"type": "string"}), good + bad)
    bad_ids = sorted(ids[3:])
    before = await snapshot(db)

    error = await refused(schema.apply([account(code={"type": "integer"})]))
    (refusal,) = error.refusals
    assert (refusal.entity, refusal.field, refusal.total) == ("account", "code", 25)
    assert refusal.record_ids == bad_ids[:20]
    assert "cannot be converted to integer" in refusal.reason
    assert "showing 20 of 25" in str(error)
    assert await snapshot(db) == before
    assert await field_values(db, registry, "account", "code", ids[:1]) == ["0"]


async def test_integer_to_decimal(schema: SchemaService, db: Database, registry: Registry) -> None:
    ids = await with_records(schema, db, registry, account(size={"type": "integer"}), [{"name": "A", "size": 12}, {"name": "B", "size": -3}])
    await schema.apply([account(size={"type": "number"})])
    assert await field_values(db, registry, "account", "size", ids) == [decimal.Decimal(12), decimal.Decimal(-3)]
    updated = await records(db, registry, "account").update(ids[0], {"size": decimal.Decimal("12.25")})
    assert updated["size"] == decimal.Decimal("12.25")


async def test_select_to_multiselect(schema: SchemaService, db: Database, registry: Registry) -> None:
    # an option may hold a comma: a select value is still ONE option, not a list to split
    single = account(status={"type": "string", "enum": ["lead", "customer", "Sales, EMEA"]})
    ids = await with_records(
        schema, db, registry, single,
        [{"name": "A", "status": "lead"}, {"name": "B", "status": "customer"}, {"name": "C"}, {"name": "D", "status": "Sales, EMEA"}],
    )
    multi = account(status={"type": "array", "items": {"type": "string", "enum": ["lead", "customer", "Sales, EMEA", "partner"]}})
    await schema.apply([multi])
    assert await field_values(db, registry, "account", "status", ids) == [["lead"], ["customer"], None, ["Sales, EMEA"]]
    updated = await records(db, registry, "account").update(ids[0], {"status": ["lead", "partner"]})
    assert updated["status"] == ["lead", "partner"]


async def test_text_to_date(schema: SchemaService, db: Database, registry: Registry) -> None:
    ids = await with_records(schema, db, registry, account(since={"type": "string"}), [{"name": "A", "since": "2024-02-29"}, {"name": "B"}])
    await schema.apply([account(since={"type": "string", "format": "date"})])
    assert await field_values(db, registry, "account", "since", ids) == [dt.date(2024, 2, 29), None]
    assert (await columns(db, "account"))["since"] == "date"


async def test_text_to_date_is_refused_for_non_dates(schema: SchemaService, db: Database, registry: Registry) -> None:
    ids = await with_records(
        schema, db, registry, account(since={"type": "string"}), [{"name": "A", "since": "2024-02-30"}, {"name": "B", "since": "2024-01-01"}]
    )
    before = await snapshot(db)
    error = await refused(schema.apply([account(since={"type": "string", "format": "date"})]))
    assert error.refusals[0].record_ids == [ids[0]] and error.refusals[0].total == 1
    assert await snapshot(db) == before


# -- tightening rules ------------------------------------------------------------


async def test_making_a_field_required_is_refused_for_records_without_it(schema: SchemaService, db: Database, registry: Registry) -> None:
    ids = await with_records(
        schema, db, registry, account(city={"type": "string"}), [{"name": "A", "city": "Bonn"}, {"name": "B"}, {"name": "C"}]
    )
    document = account(city={"type": "string"})
    document["required"] = ["name", "city"]
    before = await snapshot(db)
    error = await refused(schema.apply([document]))
    (refusal,) = error.refusals
    assert (refusal.field, refusal.record_ids, refusal.total) == ("city", sorted(ids[1:]), 2)
    assert await snapshot(db) == before


async def test_making_a_field_required_with_default_fills_empty_values(schema: SchemaService, db: Database, registry: Registry) -> None:
    ids = await with_records(
        schema, db, registry, account(city={"type": "string"}), [{"name": "A", "city": "Bonn"}, {"name": "B"}, {"name": "C"}]
    )
    document = account(city={"type": "string", "default": "unknown"})
    document["required"] = ["name", "city"]
    plan = await schema.plan([document])
    assert [(s.kind, s.impact) for s in plan.steps] == [("backfill", "fills 2 empty values")]
    await schema.apply([document])
    assert await field_values(db, registry, "account", "city", ids) == ["Bonn", "unknown", "unknown"]
    async with db.connection() as c:
        with pytest.raises(asyncpg.NotNullViolationError):
            await c.execute("UPDATE public.account SET city = NULL")


async def test_smaller_max_length_is_refused_for_longer_values(schema: SchemaService, db: Database, registry: Registry) -> None:
    ids = await with_records(schema, db, registry, account(), [{"name": "Short"}, {"name": "A much longer name"}, {"name": "Also too long"}])
    before = await snapshot(db)
    narrower = account()
    narrower["properties"]["name"]["maxLength"] = 6
    error = await refused(schema.apply([narrower]))
    (refusal,) = error.refusals
    assert (refusal.field, refusal.record_ids, refusal.total) == ("name", sorted(ids[1:]), 2)
    assert await snapshot(db) == before
    # a limit every value meets is fine, and enforced afterwards
    narrower["properties"]["name"]["maxLength"] = 20
    await schema.apply([narrower])
    with pytest.raises(ValidationFailed):
        await records(db, registry, "account").create({"name": "x" * 21})


async def test_removing_a_select_option_in_use_is_refused(schema: SchemaService, db: Database, registry: Registry) -> None:
    document = account(status={"type": "string", "enum": ["lead", "customer", "lost"]})
    ids = await with_records(schema, db, registry, document, [{"name": "A", "status": "lead"}, {"name": "B", "status": "lost"}])
    before = await snapshot(db)
    error = await refused(schema.apply([account(status={"type": "string", "enum": ["lead", "customer"]})]))
    (refusal,) = error.refusals
    assert (refusal.field, refusal.record_ids, refusal.total) == ("status", [ids[1]], 1)
    assert await snapshot(db) == before
    # removing an option nobody uses is fine
    await schema.apply([account(status={"type": "string", "enum": ["lead", "lost"]})])
    async with db.connection() as c:
        with pytest.raises(asyncpg.CheckViolationError):
            await c.execute("INSERT INTO public.account (name, status) VALUES ('X', 'customer')")


# -- removing and restoring --------------------------------------------------------


async def test_remove_field_is_destructive_archived_and_restorable(schema: SchemaService, db: Database, registry: Registry) -> None:
    document = account(city={"type": "string", "maxLength": 30})
    ids = await with_records(schema, db, registry, document, [{"name": "A", "city": "Bonn"}, {"name": "B", "city": "Köln"}, {"name": "C"}])

    plan = await schema.plan([account()])
    (step,) = plan.steps
    assert (step.kind, step.action, step.field) == ("destructive", "archive_field", "city")
    assert step.impact == "archives 2 values (restorable)"
    assert plan.destructive == [step]

    before = await snapshot(db)
    error = await refused(schema.apply([account()]))
    assert "allow_destructive" in str(error)
    assert await snapshot(db) == before

    await schema.apply([account()], allow_destructive=True)
    assert "city" not in await columns(db, "account")
    assert "city" not in registry.get("account").fields
    (archived,) = [a for a in await schema.archives() if a["kind"] == "field"]
    assert (archived["entity"], archived["field"], archived["reason"], archived["row_count"]) == ("account", "city", "removed", 2)

    await schema.restore_field(archived["id"])
    assert await field_values(db, registry, "account", "city", ids) == ["Bonn", "Köln", None]
    assert [a for a in await schema.archives() if a["kind"] == "field"] == []
    # the restored field has its rules again
    async with db.connection() as c:
        with pytest.raises(asyncpg.CheckViolationError):
            await c.execute(f"UPDATE public.account SET city = '{'x' * 31}'")


async def test_remove_entity_archives_the_table_and_restore_brings_it_back(schema: SchemaService, db: Database, registry: Registry) -> None:
    await schema.apply([account(), contact()])
    acme = await records(db, registry, "account").create({"name": "ACME"})
    people = await records(db, registry, "contact").create_many(
        [{"last_name": f"P{i}", "employer": str(acme["id"])} for i in range(4)]
    )
    before = await rows(db, "SELECT to_jsonb(t) - 'search_vector' AS r FROM public.contact t ORDER BY id")

    plan = await schema.plan([], remove=["contact"])
    (step,) = plan.steps
    assert (step.kind, step.action, step.impact) == ("destructive", "archive_entity", "moves 4 records to the archive (restorable)")
    await refused(schema.apply([], remove=["contact"]))
    assert "contact" in await public_tables(db)

    await schema.apply([], remove=["contact"], allow_destructive=True)
    assert "contact" not in await public_tables(db)
    assert "contact" not in registry
    (archived,) = [a for a in await schema.archives() if a["kind"] == "entity"]
    assert archived["name"] == "contact"
    archive_tables = {r["table_name"] for r in await rows(db, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'xrm_archive'")}
    assert archived["archived_table"] in archive_tables

    await schema.restore_entity("contact")
    assert await rows(db, "SELECT to_jsonb(t) - 'search_vector' AS r FROM public.contact t ORDER BY id") == before
    assert [a for a in await schema.archives() if a["kind"] == "entity"] == []
    service = records(db, registry, "contact")
    assert {(await service.get(p["id"]))["last_name"] for p in people} == {"P0", "P1", "P2", "P3"}
    await service.create({"last_name": "New", "employer": str(acme["id"])})


async def test_removing_a_referenced_entity_is_refused(schema: SchemaService, db: Database, registry: Registry) -> None:
    await schema.apply([account(), contact()])
    await records(db, registry, "account").create({"name": "ACME"})
    before = await snapshot(db)
    with pytest.raises(DefinitionInvalid) as caught:
        await schema.apply([], remove=["account"], allow_destructive=True)
    pointers = [p.pointer for p in caught.value.problems]
    assert "/contact/properties/employer/x-xrm/references" in pointers
    assert any("account" in p.message and "removed" in p.message for p in caught.value.problems)
    assert await snapshot(db) == before


# -- revert ----------------------------------------------------------------------


async def test_revert_type_change_restores_exact_original_values(schema: SchemaService, db: Database, registry: Registry) -> None:
    document = account(code={"type": "string"})
    ids = await with_records(
        schema, db, registry, document, [{"name": "A", "code": "0042"}, {"name": "B", "code": " 7 "}, {"name": "C"}]
    )
    await schema.apply([account(code={"type": "integer"})])
    assert await field_values(db, registry, "account", "code", ids) == [42, 7, None]

    await schema.revert()
    assert await field_values(db, registry, "account", "code", ids) == ["0042", " 7 ", None]
    assert (await columns(db, "account"))["code"] == "text"
    assert registry.get("account").fields["code"].type.name == "text"


async def test_revert_field_removal_brings_values_back(schema: SchemaService, db: Database, registry: Registry) -> None:
    ids = await with_records(schema, db, registry, account(city={"type": "string"}), [{"name": "A", "city": "Bonn"}, {"name": "B"}])
    await schema.apply([account()], allow_destructive=True)
    await schema.revert()
    assert await field_values(db, registry, "account", "city", ids) == ["Bonn", None]


async def test_revert_field_rename_renames_back(schema: SchemaService, db: Database, registry: Registry) -> None:
    ids = await with_records(schema, db, registry, account(city={"type": "string", "x-xrm": {"unique": True}}), [{"name": "A", "city": "Bonn"}])
    await schema.apply([account(town={"type": "string", "x-xrm": {"unique": True, "renamed_from": "city"}})])
    await schema.revert()
    assert set(await columns(db, "account")) >= {"city"} and "town" not in await columns(db, "account")
    assert await field_values(db, registry, "account", "city", ids) == ["Bonn"]
    with pytest.raises(ValidationFailed) as duplicate:
        await records(db, registry, "account").create({"name": "B", "city": "Bonn"})
    assert duplicate.value.problems[0].pointer == "/city"


async def test_revert_entity_rename_renames_back(schema: SchemaService, db: Database, registry: Registry) -> None:
    await schema.apply([account(), contact()])
    acme = await records(db, registry, "account").create({"name": "ACME"})
    await records(db, registry, "contact").create({"last_name": "Doe", "employer": str(acme["id"])})
    before = await snapshot(db)
    company = account()
    company["x-xrm"].update(name="company", renamed_from="account")
    await schema.apply([company])
    await schema.revert()
    after = await snapshot(db)
    for key in ("public.account", "public.contact", "columns", "constraints", "indexes"):
        assert after[key] == before[key], key
    assert registry.get("contact").fields["employer"].references == "account"


async def test_revert_twice_undoes_two_changes_in_order(schema: SchemaService, db: Database, registry: Registry) -> None:
    await schema.apply([account()])
    ids = [str(r["id"]) for r in await records(db, registry, "account").create_many([{"name": "A"}, {"name": "B"}])]
    await schema.apply([account(city={"type": "string"})])  # change 2: add a field
    await records(db, registry, "account").update(ids[0], {"city": "Bonn"})
    await schema.apply([account(town={"type": "string", "x-xrm": {"renamed_from": "city"}})])  # change 3: rename it

    first = await schema.revert()
    assert list(registry.get("account").fields) == ["name", "city"]
    assert await field_values(db, registry, "account", "city", ids) == ["Bonn", None]

    second = await schema.revert()
    assert list(registry.get("account").fields) == ["name"]
    assert "city" not in await columns(db, "account")
    assert await field_values(db, registry, "account", "name", ids) == ["A", "B"]
    reverted = await rows(db, "SELECT id, reverts FROM xrm_sys.schema_changeset WHERE kind = 'revert' ORDER BY id")
    assert [(r["id"], r["reverts"]) for r in reverted] == [(first.changeset_id, 3), (second.changeset_id, 2)]


async def test_revert_with_nothing_to_revert_raises_not_found(schema: SchemaService, db: Database, registry: Registry) -> None:
    with pytest.raises(NotFound):
        await schema.revert()
    await schema.apply([account()])
    await schema.revert()  # undoes the creation: the entity is archived
    assert "account" not in await public_tables(db)
    with pytest.raises(NotFound):
        await schema.revert()


# -- history, validation, idempotence -----------------------------------------------


async def test_history_lists_versions_newest_first(schema: SchemaService, db: Database, registry: Registry) -> None:
    v1, v2 = account(), account(city={"type": "string"})
    await schema.apply([v1])
    await schema.apply([v2])
    v3 = copy.deepcopy(v2)
    v3["x-xrm"].update(name="company", renamed_from="account")
    await schema.apply([v3])
    history = await schema.history("account")
    assert [(h["version"], h["name"]) for h in history] == [(3, "company"), (2, "account"), (1, "account")]
    assert [h["definition"] for h in history] == [v3, v2, v1]
    assert [h["kind"] for h in history] == ["apply"] * 3
    assert [h["version"] for h in await schema.history("company")] == [3, 2, 1]


async def test_invalid_definition_is_refused_with_a_pointer(schema: SchemaService, db: Database, registry: Registry) -> None:
    await schema.apply([account()])
    before = await snapshot(db)
    with pytest.raises(DefinitionInvalid) as caught:
        await schema.apply([account(**{"na me": {"type": "string"}})])
    assert "/properties/na me" in [p.pointer for p in caught.value.problems]
    with pytest.raises(DefinitionInvalid):
        await schema.plan([account(**{"na me": {"type": "string"}})])
    assert await snapshot(db) == before


async def test_applying_the_same_definition_twice_changes_nothing(schema: SchemaService, db: Database, registry: Registry) -> None:
    document = account(city={"type": "string"})
    await schema.apply([document])
    before = await snapshot(db)
    plan = await schema.plan([document])
    assert plan.steps == [] and plan.render().startswith("No changes")
    again = await schema.apply([json.loads(json.dumps(document))])
    assert again.steps == [] and again.changeset_id is None
    assert await snapshot(db) == before
    assert [h["version"] for h in await schema.history("account")] == [1]


# -- declared indexes -------------------------------------------------------------


async def index_columns(db: Database, table: str) -> dict[str, tuple[list[str], bool, str | None]]:
    """Index name -> (columns in order, unique, predicate) of a table in schema public."""
    found = await rows(
        db,
        "SELECT c.relname AS name, i.indisunique AS is_unique, pg_get_expr(i.indpred, i.indrelid) AS predicate, "
        "array(SELECT a.attname::text FROM unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) "
        "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum ORDER BY k.n) AS columns "
        "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = $1::regclass",
        f"public.{table}",
    )
    return {r["name"]: (list(r["columns"]), r["is_unique"], r["predicate"]) for r in found}


def indexed_account(*indexes: dict[str, Any]) -> dict[str, Any]:
    properties = {"name": {"type": "string", "maxLength": 100}, "status": {"type": "string", "enum": ["a", "b"]},
                  "city": {"type": "string"}, "code": {"type": "string"}}
    return entity("account", properties, required=["name"], indexes=list(indexes))


async def test_declared_non_unique_indexes_end_with_the_default_sort_key(schema: SchemaService, db: Database, registry: Registry) -> None:
    """(fields, created_at, id): a filtered list in the default order walks the index and stops after a page."""
    await schema.apply([indexed_account({"fields": ["status"]}, {"fields": ["code"], "unique": True}, {"fields": ["status", "city"]})])
    indexes = await index_columns(db, "account")
    assert indexes["account__ix_0_sorted"] == (["status", "created_at", "id"], False, None)
    assert indexes["account__ix_1"] == (["code"], True, "(deleted_at IS NULL)")  # uniqueness is on the field alone
    assert indexes["account__ix_2_sorted"] == (["status", "city", "created_at", "id"], False, None)
    assert "account__ix_0" not in indexes and "account__ix_2" not in indexes

    await records(db, registry, "account").create_many(
        [{"name": f"n{i}", "status": "a" if i % 50 == 0 else "b"} for i in range(2000)]
    )
    async with db.connection() as c:
        await c.execute("ANALYZE public.account")
        (plan,) = await c.fetchval(
            "EXPLAIN (FORMAT JSON) SELECT id FROM public.account WHERE status = 'a' AND deleted_at IS NULL "
            "ORDER BY created_at, id LIMIT 10"
        )
    text = json.dumps(plan)
    assert '"Index Name": "account__ix_0_sorted"' in text and '"Node Type": "Sort"' not in text, text

    # a changed index list rebuilds them in the same shape
    plan = await schema.apply([indexed_account({"fields": ["city"]}, {"fields": ["code"], "unique": True})])
    assert ("safe", "rebuild_indexes") in [(s.kind, s.action) for s in plan.steps]
    indexes = await index_columns(db, "account")
    assert indexes["account__ix_0_sorted"] == (["city", "created_at", "id"], False, None)
    assert indexes["account__ix_1"] == (["code"], True, "(deleted_at IS NULL)")
    assert not {"account__ix_0", "account__ix_2_sorted", "account__ix_2"} & set(indexes)


async def old_shape(db: Database, position: int, field: str) -> None:
    """Put back the index an install made before: (field) named account__ix_<n>."""
    async with db.connection() as c:
        await c.execute(f"DROP INDEX public.account__ix_{position}_sorted")
        await c.execute(f"CREATE INDEX account__ix_{position} ON public.account ({field})")


async def test_an_index_of_the_old_shape_is_rebuilt_at_start(
    schema: SchemaService, db: Database, registry: Registry, database_uri: str, tmp_path: Path
) -> None:
    from xrm.runtime import open_platform
    from xrm.schema.evolution import index_upgrades
    from xrm.settings import Settings

    document = indexed_account({"fields": ["status"]}, {"fields": ["code"], "unique": True}, {"fields": ["city"]})
    await with_records(schema, db, registry, document, [{"name": "A", "status": "a"}, {"name": "B", "code": "x"}])
    current = await index_columns(db, "account")
    await old_shape(db, 0, "status")
    definition = registry.get("account").definition
    async with db.connection() as c:
        (change,) = await index_upgrades(c, [definition])
        assert (change.step.kind, change.step.action, change.step.entity) == ("safe", "upgrade_indexes", "account")
        assert await change.impact(c) == "indexes 2 records 1 time"
    # An existing install gets the new shape when the platform starts (server or any CLI command).
    async with open_platform(Settings(data_dir=tmp_path, database_url=database_uri, schema_dir=tmp_path, secret_key=None)):
        pass
    async with db.connection() as c:
        assert await index_upgrades(c, [definition]) == []  # done: nothing planned again
    assert await index_columns(db, "account") == current  # the unique ix_1 and the current ix_2 untouched

    # a change of the index list drops an old-shape index too (both names of each position)
    await old_shape(db, 0, "status")
    await schema.apply([indexed_account({"fields": ["status"]})])
    indexes = await index_columns(db, "account")
    assert indexes["account__ix_0_sorted"] == (["status", "created_at", "id"], False, None)
    assert not {"account__ix_0", "account__ix_1", "account__ix_2_sorted"} & set(indexes)


async def test_an_owner_index_of_the_old_shape_is_replaced_at_start(
    schema: SchemaService, db: Database, registry: Registry, database_uri: str, tmp_path: Path
) -> None:
    from xrm.runtime import open_platform
    from xrm.settings import Settings

    await with_records(schema, db, registry, account(), [{"name": "A"}])
    assert (await index_columns(db, "account"))["account__owner_sorted"] == (["owner_id", "created_at", "id"], False, None)
    async with db.connection() as c:  # what an install from before per-owner pages has
        await c.execute("DROP INDEX public.account__owner_sorted")
        await c.execute("CREATE INDEX account__owner ON public.account (owner_id)")
    async with open_platform(Settings(data_dir=tmp_path, database_url=database_uri, schema_dir=tmp_path, secret_key=None)):
        pass
    indexes = await index_columns(db, "account")
    assert indexes["account__owner_sorted"] == (["owner_id", "created_at", "id"], False, None)
    assert "account__owner" not in indexes


async def test_every_reference_has_an_index_that_follows_the_field(
    schema: SchemaService, db: Database, registry: Registry, database_uri: str, tmp_path: Path
) -> None:
    """(reference, created_at, id): the records pointing at one record are found without scanning the table."""
    from xrm.runtime import open_platform
    from xrm.settings import Settings

    contact = entity("contact", {"name": {"type": "string"}, "company": {"x-xrm": {"type": "reference", "references": "account"}}})
    await schema.apply([account(), contact])
    assert (await index_columns(db, "contact"))["contact__company__ref"] == (["company", "created_at", "id"], False, None)
    # A reference added later gets one; a rename takes it along; removing the field drops it.
    contact["properties"]["referrer"] = {"x-xrm": {"type": "reference", "references": "account"}}
    await schema.apply([account(), contact])
    assert "contact__referrer__ref" in await index_columns(db, "contact")
    renamed = json.loads(json.dumps(contact))
    renamed["properties"]["employer"] = renamed["properties"].pop("company")
    renamed["properties"]["employer"]["x-xrm"]["renamed_from"] = "company"
    await schema.apply([account(), renamed])
    indexes = await index_columns(db, "contact")
    assert indexes["contact__employer__ref"] == (["employer", "created_at", "id"], False, None) and "contact__company__ref" not in indexes
    # An install from before gets the index at start.
    async with db.connection() as c:
        await c.execute("DROP INDEX public.contact__employer__ref")
    async with open_platform(Settings(data_dir=tmp_path, database_url=database_uri, schema_dir=tmp_path, secret_key=None)):
        pass
    assert "contact__employer__ref" in await index_columns(db, "contact")
    async with db.connection() as c:
        await c.execute("INSERT INTO public.account (name) SELECT 'A' || g FROM generate_series(1, 200) g")
        await c.execute("INSERT INTO public.contact (name, employer) SELECT 'C' || g, (SELECT id FROM public.account "
                        "ORDER BY id OFFSET g % 200 LIMIT 1) FROM generate_series(1, 5000) g")
        await c.execute("ANALYZE public.contact")
        plan = "\n".join(r[0] for r in await c.fetch(
            "EXPLAIN SELECT id FROM public.contact WHERE employer = $1 AND deleted_at IS NULL ORDER BY created_at, id LIMIT 10", uuid.uuid4()))
    assert "contact__employer__ref" in plan and "Sort" not in plan, plan


# -- SQL injection -------------------------------------------------------------------


INJECTION = 'x"; DROP TABLE account; --'


async def test_injection_in_entity_and_field_names_is_rejected(schema: SchemaService, db: Database, registry: Registry) -> None:
    await schema.apply([account()])
    await records(db, registry, "account").create({"name": "ACME"})
    before = await snapshot(db)

    bad_entity = account()
    bad_entity["x-xrm"]["name"] = INJECTION
    with pytest.raises(DefinitionInvalid) as caught:
        await schema.apply([bad_entity])
    assert "/x-xrm/name" in [p.pointer for p in caught.value.problems]

    with pytest.raises(DefinitionInvalid) as caught:
        await schema.apply([account(**{INJECTION: {"type": "string"}})])
    assert "/properties/" + INJECTION in [p.pointer for p in caught.value.problems]

    renamed = account()
    renamed["x-xrm"]["renamed_from"] = INJECTION
    with pytest.raises(DefinitionInvalid):
        await schema.apply([renamed])
    with pytest.raises(NotFound):
        await schema.apply([], remove=[INJECTION], allow_destructive=True)
    assert await snapshot(db) == before
    assert "account" in await public_tables(db)


async def test_quotes_in_options_patterns_and_defaults_work_in_constraints(schema: SchemaService, db: Database, registry: Registry) -> None:
    document = entity(
        "person",
        {
            "family": {"type": "string", "enum": ["O'Brien", "Smith", "'); DROP TABLE person; --"]},
            "nickname": {"type": "string", "pattern": "^[A-Za-z' ]+$"},
        },
    )
    ids = await with_records(schema, db, registry, document, [{"family": "O'Brien", "nickname": "Pat O'Neil"}, {"family": "Smith"}])
    service = records(db, registry, "person")
    assert (await service.get(ids[0]))["family"] == "O'Brien"
    assert (await service.create({"family": "'); DROP TABLE person; --"}))["family"].startswith("');")
    async with db.connection() as c:
        with pytest.raises(asyncpg.CheckViolationError):
            await c.execute("INSERT INTO public.person (family) VALUES ('OBrien')")
        with pytest.raises(asyncpg.CheckViolationError):
            await c.execute("INSERT INTO public.person (nickname) VALUES ('R2-D2')")
    with pytest.raises(ValidationFailed):
        await service.create({"nickname": "R2-D2"})

    # a new field whose default holds a quote fills existing rows; a multiselect with quoted options converts
    document["properties"]["title"] = {"type": "string", "enum": ["Ma'am", "Sir"], "default": "Ma'am"}
    document["properties"]["family"] = {"type": "array", "items": {"type": "string", "enum": ["O'Brien", "Smith", "'); DROP TABLE person; --"]}}
    await schema.apply([document])
    assert await field_values(db, registry, "person", "title", ids) == ["Ma'am", "Ma'am"]
    assert await field_values(db, registry, "person", "family", ids) == [["O'Brien"], ["Smith"]]
    assert "person" in await public_tables(db)



async def test_type_change_of_a_unique_field_names_bad_values_and_new_duplicates(schema: SchemaService, db: Database, registry: Registry) -> None:
    document = account(code={"type": "string", "x-xrm": {"unique": True}})
    ids = await with_records(
        schema, db, registry, document,
        [{"name": "A", "code": "0042"}, {"name": "B", "code": "42"}, {"name": "C", "code": "abc"}, {"name": "D", "code": "7"}],
    )
    before = await snapshot(db)
    error = await refused(schema.apply([account(code={"type": "integer", "x-xrm": {"unique": True}})]))
    by_reason = {("converted" in r.reason): r for r in error.refusals}
    assert by_reason[True].record_ids == [ids[2]]
    assert by_reason[False].record_ids == sorted(ids[:2]) and "unique" in by_reason[False].reason
    assert await snapshot(db) == before


async def test_soft_deleted_records_count_when_converting(schema: SchemaService, db: Database, registry: Registry) -> None:
    ids = await with_records(schema, db, registry, account(code={"type": "string"}), [{"name": "A", "code": "x"}, {"name": "B", "code": "1"}])
    await records(db, registry, "account").delete(ids[0])
    before = await snapshot(db)
    error = await refused(schema.apply([account(code={"type": "integer"})]))
    assert error.refusals[0].record_ids == [ids[0]]
    assert await snapshot(db) == before


async def test_decimal_to_currency_and_back(schema: SchemaService, db: Database, registry: Registry) -> None:
    ids = await with_records(
        schema, db, registry, account(price={"type": "number"}), [{"name": "A", "price": decimal.Decimal("12.50")}, {"name": "B"}]
    )
    before = await snapshot(db)
    with pytest.raises(SchemaChangeRefused):  # which currency are the amounts in?
        await schema.apply([account(price={"type": "object", "x-xrm": {"type": "currency"}})])
    assert await snapshot(db) == before
    await schema.apply([account(price={"type": "object", "x-xrm": {"type": "currency", "default_currency": "EUR"}})])
    assert await field_values(db, registry, "account", "price", ids) == [{"amount": decimal.Decimal("12.50"), "currency": "EUR"}, None]
    await schema.revert()
    assert_tables_restored(before, await snapshot(db), "account")


async def test_multiselect_to_text_and_revert(schema: SchemaService, db: Database, registry: Registry) -> None:
    multi = account(tags={"type": "array", "items": {"type": "string", "enum": ["a", "b", "c, d"]}})
    ids = await with_records(schema, db, registry, multi, [{"name": "A", "tags": ["a", "c, d"]}, {"name": "B", "tags": []}, {"name": "C"}])
    before = await snapshot(db)
    await schema.apply([account(tags={"type": "string"})])
    assert await field_values(db, registry, "account", "tags", ids) == ["a, c, d", "", None]
    await schema.revert()  # the archived arrays come back exactly, not re-split text
    assert await field_values(db, registry, "account", "tags", ids) == [["a", "c, d"], [], None]
    assert_tables_restored(before, await snapshot(db), "account")


async def test_revert_of_required_with_default_empties_the_filled_values(schema: SchemaService, db: Database, registry: Registry) -> None:
    ids = await with_records(schema, db, registry, account(city={"type": "string"}), [{"name": "A", "city": "Bonn"}, {"name": "B"}])
    before = await snapshot(db)
    document = account(city={"type": "string", "default": "unknown"})
    document["required"] = ["name", "city"]
    await schema.apply([document])
    assert await field_values(db, registry, "account", "city", ids) == ["Bonn", "unknown"]
    await schema.revert()
    assert await field_values(db, registry, "account", "city", ids) == ["Bonn", None]
    assert_tables_restored(before, await snapshot(db), "account")


async def test_revert_entity_removal_moves_the_table_back(schema: SchemaService, db: Database, registry: Registry) -> None:
    await schema.apply([account(), contact()])
    acme = await records(db, registry, "account").create({"name": "ACME"})
    await records(db, registry, "contact").create({"last_name": "Doe", "employer": str(acme["id"])})
    before = await snapshot(db)
    await schema.apply([], remove=["contact"], allow_destructive=True)
    await schema.revert()
    assert_tables_restored(before, await snapshot(db), "account", "contact")
    assert "contact" in registry
    assert [a for a in await schema.archives() if a["kind"] == "entity"] == []


async def test_rename_and_convert_a_field_in_one_change_then_revert(schema: SchemaService, db: Database, registry: Registry) -> None:
    ids = await with_records(
        schema, db, registry, account(code={"type": "string", "maxLength": 10}), [{"name": "A", "code": "0042"}, {"name": "B"}]
    )
    before = await snapshot(db)
    changed = account(number={"type": "integer", "minimum": 0, "x-xrm": {"renamed_from": "code"}})
    await schema.apply([changed])
    assert await field_values(db, registry, "account", "number", ids) == [42, None]
    assert set(await columns(db, "account")) & {"code", "number"} == {"number"}
    assert (await schema.plan([changed])).steps == []
    await schema.revert()
    assert await field_values(db, registry, "account", "code", ids) == ["0042", None]
    assert_tables_restored(before, await snapshot(db), "account")


async def test_rename_entity_and_field_and_remove_a_field_at_once_then_revert(schema: SchemaService, db: Database, registry: Registry) -> None:
    document = account(code={"type": "string", "x-xrm": {"unique": True}}, city={"type": "string"})
    ids = await with_records(schema, db, registry, document, [{"name": "A", "code": "X", "city": "Bonn"}])
    before = await snapshot(db)
    changed = account(ref={"type": "string", "x-xrm": {"unique": True, "renamed_from": "code"}})
    changed["x-xrm"].update(name="company", renamed_from="account")
    await schema.apply([changed], allow_destructive=True)
    assert await field_values(db, registry, "company", "ref", ids) == ["X"]
    with pytest.raises(ValidationFailed):
        await records(db, registry, "company").create({"name": "B", "ref": "X"})
    await schema.revert()
    assert await field_values(db, registry, "account", "city", ids) == ["Bonn"]
    assert_tables_restored(before, await snapshot(db), "account")
    assert "company" not in await public_tables(db)


async def test_restoring_a_required_field_needs_a_value_for_every_record(schema: SchemaService, db: Database, registry: Registry) -> None:
    document = account(city={"type": "string"})
    document["required"] = ["name", "city"]
    await with_records(schema, db, registry, document, [{"name": "A", "city": "X"}])
    await schema.apply([account()], allow_destructive=True)
    newer = await records(db, registry, "account").create({"name": "B"})
    (archived,) = await schema.archives()
    before = await snapshot(db)
    error = await refused(schema.restore_field(archived["id"]))
    assert error.refusals[0].record_ids == [str(newer["id"])]
    assert await snapshot(db) == before


async def test_pattern_postgresql_cannot_compile_is_refused_at_its_pointer(db):
    from xrm.errors import DefinitionInvalid
    from xrm.schema.service import SchemaService

    document = {
        "type": "object",
        "x-xrm": {"name": "thing", "label": {"en": "Thing"}},
        "properties": {"code": {"type": "string", "pattern": "^(?P<prefix>[A-Z]+)-[0-9]+$"}},
    }
    with pytest.raises(DefinitionInvalid) as raised:
        await SchemaService(db).apply([document])
    assert [p.pointer for p in raised.value.problems] == ["/thing/properties/code/pattern"]
    async with db.connection() as connection:
        assert await connection.fetchval("SELECT count(*) FROM xrm_sys.entity") == 0
        assert await connection.fetchval("SELECT to_regclass('public.thing')") is None
