"""RecordService against a real PostgreSQL: what a user of the one door notices.

Every test runs on its own fresh database. Where a write must fail without a
trace, the full table contents and the outbox are compared before and after.
"""

from __future__ import annotations

import copy
import decimal
import uuid
from typing import Any

import pytest

from xrm.db.database import Database
from xrm.errors import NotFound, ValidationFailed, VersionConflict
from xrm.records.principal import Principal
from xrm.records.service import RecordService
from xrm.registry import Registry

ANNA = Principal(uuid.UUID("aaaaaaaa-0000-4000-8000-000000000001"), "anna")

ACCOUNT = {
    "type": "object",
    "x-xrm": {"name": "account", "label": {"en": "Account"}, "search_fields": ["name", "city"]},
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "maxLength": 100},
        "vat_number": {"type": "string", "x-xrm": {"unique": True}},
        "number": {"type": "string", "x-xrm": {"unique": True}},
        "city": {"type": "string"},
        "industry": {"type": "string", "enum": ["retail", "software", "energy"]},
        "revenue": {"type": "number", "minimum": 0},
        "notes": {"x-xrm": {"type": "long_text"}},
    },
}

CONTACT = {
    "type": "object",
    "x-xrm": {"name": "contact", "label": {"en": "Contact"}, "search_fields": ["first_name", "last_name"]},
    "required": ["last_name", "email_opt_in"],
    "properties": {
        "first_name": {"type": "string"},
        "last_name": {"type": "string"},
        "email": {"type": "string", "format": "email", "x-xrm": {"unique": True}},
        "email_opt_in": {"type": "boolean", "default": False},
        "account": {"x-xrm": {"type": "reference", "references": "account"}},
    },
}


@pytest.fixture
async def reg(make_entities: Any) -> Registry:
    return await make_entities(copy.deepcopy(ACCOUNT), copy.deepcopy(CONTACT))


@pytest.fixture
def accounts(db: Database, reg: Registry) -> RecordService:
    return RecordService(db, reg, "account", ANNA)


@pytest.fixture
def contacts(db: Database, reg: Registry) -> RecordService:
    return RecordService(db, reg, "contact", ANNA)


async def rows(db: Database, table: str = "account") -> list[str]:
    """Full table contents, deleted rows included."""
    async with db.connection() as c:
        result = await c.fetch(f"SELECT to_jsonb(t)::text AS row FROM (SELECT * FROM public.{table} ORDER BY id) t")
    return [r["row"] for r in result]


async def outbox(db: Database) -> list[dict[str, Any]]:
    async with db.connection() as c:
        result = await c.fetch(
            "SELECT topic, entity, record_id, principal_id, payload FROM xrm_sys.outbox WHERE topic LIKE 'record.%' ORDER BY id"
        )
    return [dict(r) for r in result]


async def state(db: Database) -> tuple[list[str], list[str], list[dict[str, Any]]]:
    return await rows(db, "account"), await rows(db, "contact"), await outbox(db)


def pointers(error: ValidationFailed) -> list[str]:
    return [p.pointer for p in error.problems]


# -- lifecycle -----------------------------------------------------------------


async def test_create_get_update_delete_restore(accounts: RecordService) -> None:
    created = await accounts.create({"name": "ACME", "city": "Berlin", "revenue": decimal.Decimal("10.50")})
    assert isinstance(created["id"], uuid.UUID)
    assert created["version"] == 1
    assert created["created_by"] == created["updated_by"] == created["owner_id"] == ANNA.id
    assert created["created_at"].tzinfo is not None
    assert created["deleted_at"] is None
    assert created["industry"] is None
    assert await accounts.get(created["id"]) == created
    assert await accounts.get(str(created["id"])) == created

    updated = await accounts.update(created["id"], {"city": "Hamburg"})
    assert updated["version"] == 2
    assert updated["city"] == "Hamburg"
    assert updated["name"] == "ACME" and updated["revenue"] == decimal.Decimal("10.50")  # untouched
    assert updated["updated_at"] >= created["updated_at"]
    assert updated["created_at"] == created["created_at"]
    assert await accounts.get(created["id"]) == updated

    cleared = await accounts.update(created["id"], {"city": None})
    assert cleared["city"] is None and cleared["version"] == 3

    deleted = await accounts.delete(created["id"])
    assert deleted["deleted_at"] is not None and deleted["version"] == 4
    with pytest.raises(NotFound):
        await accounts.get(created["id"])
    assert (await accounts.get(created["id"], include_deleted=True))["deleted_at"] is not None

    restored = await accounts.restore(created["id"])
    assert restored["deleted_at"] is None and restored["version"] == 5
    assert await accounts.get(created["id"]) == restored
    assert restored["name"] == "ACME" and restored["revenue"] == decimal.Decimal("10.50")


async def test_defaults_are_filled_in(contacts: RecordService) -> None:
    created = await contacts.create({"last_name": "Weber"})
    assert created["email_opt_in"] is False
    assert (await contacts.get(created["id"]))["email_opt_in"] is False


async def test_create_with_own_id(accounts: RecordService) -> None:
    own = uuid.uuid4()
    created = await accounts.create({"id": str(own), "name": "Own id"})
    assert created["id"] == own
    assert (await accounts.get(own))["name"] == "Own id"
    with pytest.raises(ValidationFailed):
        await accounts.create({"id": own, "name": "Same id again"})
    with pytest.raises(ValidationFailed) as raised:
        await accounts.create({"id": "42", "name": "Bad id"})
    assert pointers(raised.value) == ["/id"]
    assert await accounts.count() == 1


# -- list, paging, count, search ---------------------------------------------


async def test_paging_returns_every_record_exactly_once(accounts: RecordService) -> None:
    # Some in one transaction (equal created_at), some one by one.
    batch = await accounts.create_many([{"name": f"Batch {i:02}", "city": "Köln"} for i in range(13)])
    single = [await accounts.create({"name": f"Single {i:02}", "city": "Bonn" if i % 2 else "Köln"}) for i in range(10)]
    everyone = {r["id"] for r in batch + single}
    assert len(everyone) == 23

    for limit in (1, 5, 7, 23, 50):
        seen: list[uuid.UUID] = []
        cursor = None
        pages = 0
        while True:
            page = await accounts.list(limit=limit, after=cursor)
            pages += 1
            assert len(page.records) <= limit
            seen.extend(r["id"] for r in page.records)
            cursor = page.next_cursor
            if cursor is None:
                break
            assert len(page.records) == limit
            assert pages < 100
        assert len(seen) == len(set(seen)) == 23, f"limit {limit}: duplicates or gaps"
        assert set(seen) == everyone
        assert pages == max(1, -(-23 // limit))
    # Creation order: the batch first, then the single ones in order.
    page = await accounts.list(limit=50)
    assert [r["id"] for r in page.records][13:] == [r["id"] for r in single]

    # Paging with a filter.
    seen = []
    cursor = None
    while True:
        page = await accounts.list(where={"city": "Köln"}, limit=4, after=cursor)
        seen.extend(r["id"] for r in page.records)
        if (cursor := page.next_cursor) is None:
            break
    assert sorted(seen) == sorted(r["id"] for r in batch + single if r["city"] == "Köln")
    assert len(seen) == 18 == await accounts.count(where={"city": "Köln"})
    assert await accounts.count() == 23


async def test_invalid_cursor_and_filters_are_problems(accounts: RecordService) -> None:
    await accounts.create({"name": "ACME"})
    with pytest.raises(ValidationFailed):
        await accounts.list(after="not-a-cursor")
    with pytest.raises(ValidationFailed) as raised:
        await accounts.list(where={"colour": "red"})
    assert pointers(raised.value) == ["/where/colour"]
    with pytest.raises(ValidationFailed) as raised:
        await accounts.list(where={"industry": "mining"})
    assert pointers(raised.value) == ["/where/industry"]


async def test_where_filters_by_equality(accounts: RecordService, contacts: RecordService) -> None:
    acme = await accounts.create({"name": "ACME", "industry": "retail", "revenue": 5})
    other = await accounts.create({"name": "Other", "industry": "software"})
    assert [r["id"] for r in (await accounts.list(where={"industry": "retail"})).records] == [acme["id"]]
    assert [r["id"] for r in (await accounts.list(where={"industry": None})).records] == []
    assert [r["id"] for r in (await accounts.list(where={"revenue": None})).records] == [other["id"]]
    assert [r["id"] for r in (await accounts.list(where={"revenue": decimal.Decimal("5.0")})).records] == [acme["id"]]
    assert [r["id"] for r in (await accounts.list(where={"id": str(other["id"])})).records] == [other["id"]]
    anna = await contacts.create({"last_name": "Schmidt", "email": "anna@example.de", "account": acme["id"]})
    await contacts.create({"last_name": "Schulz", "email": "ben@example.de"})
    # The filter on "email" must not trip over the required field "email_opt_in".
    assert [r["id"] for r in (await contacts.list(where={"email": "anna@example.de"})).records] == [anna["id"]]
    assert await contacts.count(where={"email": "anna@example.de"}) == 1
    assert [r["id"] for r in (await contacts.list(where={"account": acme["id"]})).records] == [anna["id"]]
    assert await contacts.count(where={"email_opt_in": False}) == 2


async def test_full_text_search(accounts: RecordService) -> None:
    mueller = await accounts.create({"name": "Müller GmbH", "city": "Düsseldorf"})
    mueller_ae = await accounts.create({"name": "Mueller AG", "city": "Zürich"})
    schmidt = await accounts.create({"name": "Schmidt & Söhne", "city": "München", "notes": "Müller mentioned in notes"})

    async def found(search: str, **kwargs: Any) -> set[uuid.UUID]:
        return {r["id"] for r in (await accounts.list(search=search, **kwargs)).records}

    assert await found("Müller") == {mueller["id"]}
    assert await found("müller") == {mueller["id"]}
    assert await found("MÜLLER") == {mueller["id"]}
    assert await found("Mueller") == {mueller_ae["id"]}
    assert await found("München") == {schmidt["id"]}  # a second search field
    assert await found("söhne") == {schmidt["id"]}
    assert await found("gmbh düsseldorf") == {mueller["id"]}  # all words
    assert await found("Meier") == set()
    assert await found("mentioned") == set()  # notes is not a search field
    assert await found("Müller", where={"city": "Zürich"}) == set()

    await accounts.update(mueller["id"], {"name": "Meier GmbH"})
    assert await found("Müller") == set()
    assert await found("meier") == {mueller["id"]}


# -- concurrency and validation of updates -------------------------------------


async def test_stale_expected_version_conflicts_and_changes_nothing(db: Database, accounts: RecordService) -> None:
    created = await accounts.create({"name": "ACME", "city": "Berlin"})
    mine = await accounts.update(created["id"], {"city": "Hamburg"}, expected_version=1)
    assert mine["version"] == 2
    before = await state(db)
    with pytest.raises(VersionConflict) as raised:
        await accounts.update(created["id"], {"city": "Bremen"}, expected_version=1)
    assert (raised.value.expected, raised.value.current) == (1, 2)
    with pytest.raises(VersionConflict):
        await accounts.delete(created["id"], expected_version=1)
    assert await state(db) == before
    assert (await accounts.get(created["id"]))["city"] == "Hamburg"
    assert (await accounts.update(created["id"], {"city": "Bremen"}, expected_version=2))["version"] == 3


async def test_update_that_clears_a_required_field_fails(db: Database, accounts: RecordService, contacts: RecordService) -> None:
    created = await accounts.create({"name": "ACME"})
    await contacts.create({"last_name": "Weber"})
    before = await state(db)
    with pytest.raises(ValidationFailed) as raised:
        await accounts.update(created["id"], {"name": None, "city": "Berlin"})
    assert pointers(raised.value) == ["/name"]
    with pytest.raises(ValidationFailed) as raised:
        await accounts.update(created["id"], {"name": "x" * 101})
    assert pointers(raised.value) == ["/name"]
    assert await state(db) == before


async def test_unknown_and_system_fields_are_refused(db: Database, accounts: RecordService) -> None:
    created = await accounts.create({"name": "ACME"})
    before = await state(db)
    for data, expected in [
        ({"name": "X", "colour": "red"}, ["/colour"]),
        ({"name": "X", "version": 7}, ["/version"]),
        ({"name": "X", "created_at": "2020-01-01T00:00:00Z"}, ["/created_at"]),
        ({"name": "X", "owner_id": str(uuid.uuid4())}, ["/owner_id"]),
        ({"name": "X", "deleted_at": None}, ["/deleted_at"]),
        ({"name": "X", "search_vector": "x"}, ["/search_vector"]),
    ]:
        with pytest.raises(ValidationFailed) as raised:
            await accounts.create(data)
        assert pointers(raised.value) == expected, data
    for changes, expected in [
        ({"colour": "red"}, ["/colour"]),
        ({"version": 7}, ["/version"]),
        ({"created_at": "2020-01-01T00:00:00Z"}, ["/created_at"]),
        ({"id": str(uuid.uuid4())}, ["/id"]),
        ({"city": "Berlin", "updated_by": str(uuid.uuid4())}, ["/updated_by"]),
    ]:
        with pytest.raises(ValidationFailed) as raised:
            await accounts.update(created["id"], changes)
        assert pointers(raised.value) == expected, changes
    assert await state(db) == before


# -- batches ----------------------------------------------------------------


async def test_create_many_is_all_or_nothing(db: Database, accounts: RecordService) -> None:
    await accounts.create({"name": "Existing", "vat_number": "DE100"})
    before = await state(db)
    with pytest.raises(ValidationFailed) as raised:
        await accounts.create_many(
            [{"name": "First"}, {"name": "Second", "industry": "mining"}, {"name": "Third"}]
        )
    assert raised.value.row == 1
    assert pointers(raised.value) == ["/1/industry"]
    assert await state(db) == before

    # Several bad records: every problem, each prefixed with its index.
    with pytest.raises(ValidationFailed) as raised:
        await accounts.create_many([{"name": "ok"}, {"city": "no name"}, {"name": "ok"}, "not an object", {"name": 5}])
    assert raised.value.row == 1
    assert pointers(raised.value) == ["/1/name", "/3", "/4/name"]
    assert await state(db) == before

    # Problems the database finds (unique value) also name the record; nothing is written.
    with pytest.raises(ValidationFailed) as raised:
        await accounts.create_many(
            [{"name": "A", "vat_number": "DE200"}, {"name": "B", "vat_number": "DE300"}, {"name": "C", "vat_number": "DE100"}]
        )
    assert pointers(raised.value) == ["/2/vat_number"]
    assert await state(db) == before
    with pytest.raises(ValidationFailed) as raised:
        await accounts.create_many([{"name": "A", "vat_number": "DE1"}, {"name": "B", "vat_number": "DE100"}])
    assert pointers(raised.value) == ["/1/vat_number"]  # not record 0, whose "DE1" is part of "DE100"
    with pytest.raises(ValidationFailed) as raised:
        await accounts.create_many([{"name": "A", "vat_number": "DE7"}, {"name": "B", "vat_number": "DE7"}])
    assert [p.split("/")[-1] for p in pointers(raised.value)] == ["vat_number"]
    assert await state(db) == before

    created = await accounts.create_many([{"name": "A"}, {"name": "B"}, {"name": "C"}])
    assert [r["name"] for r in created] == ["A", "B", "C"]
    assert await accounts.count() == 4
    events = (await outbox(db))[len(before[2]) :]
    assert [(e["topic"], e["record_id"]) for e in events] == [("record.created", r["id"]) for r in created]


async def test_unique_violation_points_at_the_field(db: Database, accounts: RecordService) -> None:
    first = await accounts.create({"name": "ACME", "vat_number": "DE123", "number": "A-1"})
    before = await state(db)
    with pytest.raises(ValidationFailed) as raised:
        await accounts.create({"name": "Copy", "vat_number": "DE123"})
    assert pointers(raised.value) == ["/vat_number"]
    with pytest.raises(ValidationFailed) as raised:
        await accounts.create({"name": "Copy", "number": "A-1"})
    assert pointers(raised.value) == ["/number"]
    other = await accounts.create({"name": "Other", "vat_number": "DE999"})
    before = await state(db)
    with pytest.raises(ValidationFailed) as raised:
        await accounts.update(other["id"], {"vat_number": "DE123"})
    assert pointers(raised.value) == ["/vat_number"]
    assert await state(db) == before

    # A deleted record frees its value; restoring it then conflicts.
    await accounts.delete(first["id"])
    await accounts.update(other["id"], {"vat_number": "DE123"})
    before = await state(db)
    with pytest.raises(ValidationFailed) as raised:
        await accounts.restore(first["id"])
    assert pointers(raised.value) == ["/vat_number"]
    assert await state(db) == before


async def test_reference_to_missing_record_is_a_problem(db: Database, accounts: RecordService, contacts: RecordService) -> None:
    acme = await accounts.create({"name": "ACME"})
    weber = await contacts.create({"last_name": "Weber", "account": acme["id"]})
    before = await state(db)
    with pytest.raises(ValidationFailed) as raised:
        await contacts.create({"last_name": "Ghost", "account": uuid.uuid4()})
    assert pointers(raised.value) == ["/account"]
    with pytest.raises(ValidationFailed) as raised:
        await contacts.update(weber["id"], {"account": str(uuid.uuid4())})
    assert pointers(raised.value) == ["/account"]
    with pytest.raises(ValidationFailed) as raised:
        await contacts.create_many([{"last_name": "A", "account": acme["id"]}, {"last_name": "B", "account": uuid.uuid4()}])
    assert pointers(raised.value) == ["/1/account"]
    assert await state(db) == before
    assert (await contacts.get(weber["id"]))["account"] == acme["id"]


# -- soft delete ---------------------------------------------------------------


async def test_deleted_records_vanish_and_come_back(accounts: RecordService) -> None:
    keep = await accounts.create({"name": "Keep GmbH", "city": "Berlin"})
    gone = await accounts.create({"name": "Gone GmbH", "city": "Berlin"})
    await accounts.delete(gone["id"])

    with pytest.raises(NotFound):
        await accounts.get(gone["id"])
    assert [r["id"] for r in (await accounts.list()).records] == [keep["id"]]
    assert [r["id"] for r in (await accounts.list(where={"city": "Berlin"})).records] == [keep["id"]]
    assert [r["id"] for r in (await accounts.list(search="gone")).records] == []
    assert await accounts.count() == 1
    assert await accounts.count(where={"city": "Berlin"}) == 1
    assert {r["id"] for r in (await accounts.list(include_deleted=True)).records} == {keep["id"], gone["id"]}
    with pytest.raises(NotFound):
        await accounts.update(gone["id"], {"city": "Köln"})
    with pytest.raises(NotFound):
        await accounts.delete(gone["id"])
    with pytest.raises(NotFound):
        await accounts.restore(keep["id"])  # not deleted

    restored = await accounts.restore(gone["id"])
    assert (await accounts.get(gone["id"])) == restored
    assert {r["id"] for r in (await accounts.list()).records} == {keep["id"], gone["id"]}
    assert [r["id"] for r in (await accounts.list(search="gone")).records] == [gone["id"]]
    assert await accounts.count() == 2
    with pytest.raises(NotFound):
        await accounts.restore(gone["id"])  # no longer deleted


# -- outbox ----------------------------------------------------------------------


async def test_outbox_row_per_change(db: Database, accounts: RecordService) -> None:
    created = await accounts.create({"name": "ACME", "city": "Berlin"})
    await accounts.update(created["id"], {"city": "Hamburg"})
    await accounts.delete(created["id"])
    await accounts.restore(created["id"])
    events = await outbox(db)
    assert [e["topic"] for e in events] == ["record.created", "record.updated", "record.deleted", "record.restored"]
    assert all(e["entity"] == "account" and e["record_id"] == created["id"] and e["principal_id"] == ANNA.id for e in events)
    assert [e["payload"]["version"] for e in events] == [1, 2, 3, 4]
    assert events[0]["payload"]["record"]["name"] == "ACME"
    assert events[1]["payload"]["changes"] == {"city": {"old": "Berlin", "new": "Hamburg"}}


async def test_failed_writes_leave_no_outbox_row(db: Database, accounts: RecordService) -> None:
    created = await accounts.create({"name": "ACME", "vat_number": "DE1"})
    await accounts.create({"name": "Other", "vat_number": "DE2"})
    before = await state(db)
    failures = [
        accounts.create({"name": None}),
        accounts.create({"name": "Dup", "vat_number": "DE1"}),  # found by the database
        accounts.create_many([{"name": "ok"}, {"name": "Dup", "vat_number": "DE2"}]),
        accounts.update(created["id"], {"vat_number": "DE2"}),
        accounts.update(created["id"], {"city": "x"}, expected_version=9),
        accounts.update(uuid.uuid4(), {"city": "x"}),
        accounts.delete(uuid.uuid4()),
        accounts.restore(created["id"]),
    ]
    for failure in failures:
        with pytest.raises((ValidationFailed, VersionConflict, NotFound)):
            await failure
    assert await state(db) == before


async def test_record_and_event_share_the_transaction(db: Database, accounts: RecordService) -> None:
    created = await accounts.create({"name": "ACME"})
    before = await state(db)

    class Abort(Exception):
        pass

    with pytest.raises(Abort):
        async with db.transaction():
            await accounts.create({"name": "Rolled back"})
            await accounts.update(created["id"], {"city": "Berlin"})
            await accounts.delete(created["id"])
            assert len(await outbox(db)) == len(before[2]) + 3  # visible inside
            raise Abort
    assert await state(db) == before  # neither rows nor events survive
    assert (await accounts.get(created["id"]))["city"] is None


# -- hostile values and ids ----------------------------------------------------


async def test_values_with_quotes_and_sql_are_stored_literally(db: Database, accounts: RecordService) -> None:
    hostile = [
        "Robert'); DROP TABLE account;--",
        "O'Brien & \"Sons\" \\ $1 %s {x} ;",
        "'; UPDATE account SET name = 'pwned' WHERE ''='",
    ]
    created = [await accounts.create({"name": text, "city": text}) for text in hostile]
    for record, text in zip(created, hostile):
        read = await accounts.get(record["id"])
        assert read["name"] == text and read["city"] == text
        assert [r["id"] for r in (await accounts.list(where={"name": text})).records] == [record["id"]]
        assert await accounts.count(where={"city": text}) == 1
    updated = await accounts.update(created[0]["id"], {"city": hostile[2]})
    assert updated["city"] == hostile[2]
    assert (await accounts.list(search="Robert'); DROP TABLE account;--")).records[0]["id"] == created[0]["id"]
    assert await accounts.count() == 3
    async with db.connection() as c:
        names = await c.fetch("SELECT name FROM public.account ORDER BY created_at, id")
    assert [r["name"] for r in names] == hostile


async def test_malformed_id_is_not_found(accounts: RecordService) -> None:
    await accounts.create({"name": "ACME"})
    for bad_id in ["not-a-uuid", "", "1", "'; DROP TABLE account;--", None, 12345, "0000", uuid.uuid4()]:
        with pytest.raises(NotFound):
            await accounts.get(bad_id)
        with pytest.raises(NotFound):
            await accounts.get(bad_id, include_deleted=True)
        with pytest.raises(NotFound):
            await accounts.update(bad_id, {"city": "x"})
        with pytest.raises(NotFound):
            await accounts.delete(bad_id)
        with pytest.raises(NotFound):
            await accounts.restore(bad_id)
    assert await accounts.count() == 1


async def test_a_capped_total_stops_counting_and_says_so(db: Any, make_entities: Any) -> None:
    from xrm.records.principal import SYSTEM_PRINCIPAL
    from xrm.records.service import RecordService

    registry = await make_entities({"type": "object", "x-xrm": {"name": "tally", "label": {"en": "Tally"}},
                                    "properties": {"n": {"type": "integer"}}})
    tallies = RecordService(db, registry, "tally", SYSTEM_PRINCIPAL)
    await tallies.create_many([{"n": i} for i in range(12)])
    capped = await tallies.list(limit=5, with_total=True, total_limit=10)
    assert (capped.total, capped.total_capped, len(capped.records)) == (10, True, 5)
    exact = await tallies.list(limit=5, with_total=True, total_limit=12)
    assert (exact.total, exact.total_capped) == (12, False)
    assert await tallies.count(limit=10) == 11 and await tallies.count() == 12
