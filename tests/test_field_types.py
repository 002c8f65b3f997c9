"""Every field type through the one door (RecordService), against a real PostgreSQL.

For each of the 15 field types: what a user writes comes back as what a user
expects (exact decimals, aware datetimes, ...), an invalid value is refused
with a problem pointing at the field and leaves the table exactly as it was,
and the value is stored in a typed PostgreSQL column (not text or JSON).
"""

from __future__ import annotations

import copy
import datetime as dt
import decimal
import uuid
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from xrm.db.database import Database
from xrm.errors import ValidationFailed
from xrm.records.principal import SYSTEM_PRINCIPAL
from xrm.records.service import RecordService
from xrm.registry import Registry
from xrm.schema.field_types import FIELD_TYPES

D = decimal.Decimal
UTC = dt.timezone.utc

COMPANY = {
    "type": "object",
    "x-xrm": {"name": "company", "label": {"en": "Company"}},
    "required": ["name"],
    "properties": {"name": {"type": "string", "maxLength": 100}},
}

# One field per type; none is required, so each can be tested on its own.
SPECIMEN = {
    "type": "object",
    "x-xrm": {"name": "specimen", "label": {"en": "Specimen"}},
    "properties": {
        "title": {"type": "string", "maxLength": 40},
        "notes": {"x-xrm": {"type": "long_text"}},
        "employees": {"type": "integer", "minimum": 0},
        "revenue": {"type": "number"},
        "rate": {"type": "number", "x-xrm": {"precision": 6, "scale": 2}},
        "price": {"x-xrm": {"type": "currency", "currencies": ["EUR", "USD", "CHF"]}},
        "active": {"type": "boolean"},
        "founded": {"type": "string", "format": "date"},
        "last_contact": {"type": "string", "format": "date-time"},
        "status": {"type": "string", "enum": ["lead", "customer", "lost"]},
        "colours": {"type": "array", "items": {"enum": ["red", "green", "blue"]}},
        "email": {"type": "string", "format": "email"},
        "phone": {"x-xrm": {"type": "phone"}},
        "website": {"type": "string", "format": "uri"},
        "company": {"x-xrm": {"type": "reference", "references": "company"}},
        "extra": {"type": "object"},
    },
}

FIELD_OF_TYPE = {
    "text": "title",
    "long_text": "notes",
    "integer": "employees",
    "decimal": "revenue",
    "currency": "price",
    "boolean": "active",
    "date": "founded",
    "datetime": "last_contact",
    "select": "status",
    "multiselect": "colours",
    "email": "email",
    "phone": "phone",
    "url": "website",
    "reference": "company",
    "json": "extra",
}

COMPANY_ID = uuid.UUID("11111111-2222-4333-8444-555555555555")


def test_every_field_type_is_covered() -> None:
    assert set(FIELD_OF_TYPE) == set(FIELD_TYPES)
    assert len(FIELD_TYPES) == 15


@pytest.fixture
async def reg(make_entities: Any) -> Registry:
    return await make_entities(copy.deepcopy(COMPANY), copy.deepcopy(SPECIMEN))


@pytest.fixture
async def specimens(db: Database, reg: Registry) -> RecordService:
    await RecordService(db, reg, "company", SYSTEM_PRINCIPAL).create({"id": COMPANY_ID, "name": "ACME GmbH"})
    return RecordService(db, reg, "specimen", SYSTEM_PRINCIPAL)


async def table_rows(db: Database, table: str = "specimen") -> list[str]:
    async with db.connection() as c:
        rows = await c.fetch(f"SELECT to_jsonb(t)::text AS row FROM public.{table} t ORDER BY id")
    return [r["row"] for r in rows]


async def outbox_count(db: Database) -> int:
    async with db.connection() as c:
        return await c.fetchval("SELECT count(*) FROM xrm_sys.outbox")


# -- round trips ---------------------------------------------------------------

# (type, value written, value a user expects to read back)
ROUND_TRIPS: list[tuple[str, Any, Any]] = [
    ("text", "Grüße, l'été \"quoted\"", "Grüße, l'été \"quoted\""),
    ("text", "x" * 40, "x" * 40),
    ("long_text", "line 1\nline 2\n" + "ü" * 5000, "line 1\nline 2\n" + "ü" * 5000),
    ("integer", 42, 42),
    ("integer", 0, 0),
    ("integer", 2**63 - 1, 2**63 - 1),
    ("integer", 10.0, 10),  # JSON "10.0" is an integer to JSON Schema
    ("decimal", D("1234.56"), D("1234.56")),
    ("decimal", 0.1, D("0.1")),
    ("decimal", 1, D("1")),
    ("decimal", D("-12345678901234567890.123456789"), D("-12345678901234567890.123456789")),
    ("currency", {"amount": D("99.90"), "currency": "EUR"}, {"amount": D("99.90"), "currency": "EUR"}),
    ("currency", {"amount": 19.99, "currency": "USD"}, {"amount": D("19.99"), "currency": "USD"}),
    ("currency", {"amount": 0, "currency": "CHF"}, {"amount": D("0.00"), "currency": "CHF"}),
    ("boolean", True, True),
    ("boolean", False, False),
    ("date", "2024-12-31", dt.date(2024, 12, 31)),
    ("date", dt.date(2024, 2, 29), dt.date(2024, 2, 29)),
    ("datetime", "2024-12-31T17:30:00+01:00", dt.datetime(2024, 12, 31, 16, 30, tzinfo=UTC)),
    ("datetime", "2024-06-01T08:00:00.250Z", dt.datetime(2024, 6, 1, 8, 0, 0, 250000, tzinfo=UTC)),
    (
        "datetime",
        dt.datetime(2024, 7, 1, 12, 0, tzinfo=ZoneInfo("Europe/Berlin")),
        dt.datetime(2024, 7, 1, 10, 0, tzinfo=UTC),
    ),
    ("select", "customer", "customer"),
    ("multiselect", ["blue", "red"], ["blue", "red"]),
    ("multiselect", ("green",), ["green"]),
    ("multiselect", [], []),
    ("email", "anna.mueller@example.de", "anna.mueller@example.de"),
    ("phone", "+49 30 1234567", "+49 30 1234567"),
    ("phone", "030 123-45/67", "030 123-45/67"),
    ("url", "https://example.com/path?q=1#top", "https://example.com/path?q=1#top"),
    ("reference", COMPANY_ID, COMPANY_ID),
    ("reference", str(COMPANY_ID), COMPANY_ID),
    ("json", {"a": {"b": [1, 2.5, {"c": None}]}, "ü": "ä", "t": True}, {"a": {"b": [1, 2.5, {"c": None}]}, "ü": "ä", "t": True}),
    ("json", {}, {}),
]


async def check_round_trips(specimens: RecordService, type_name: str) -> None:
    """Create then get: the value read back is what the user expects."""
    field = FIELD_OF_TYPE[type_name]
    cases = [(written, expected) for t, written, expected in ROUND_TRIPS if t == type_name]
    assert cases, f"no round trip for {type_name}"
    for written, expected in cases:
        created = await specimens.create({field: written})
        assert created[field] == expected, f"create returned {created[field]!r} for {written!r}"
        read = await specimens.get(created["id"])
        value = read[field]
        assert value == expected, f"{type_name}: wrote {written!r}, read back {value!r}"
        assert isinstance(value, type(expected)), f"{type_name}: read back a {type(value).__name__}"
        assert isinstance(value, bool) == isinstance(expected, bool)
        # Every other field stays empty.
        assert all(read[name] is None for name in specimens.entity.fields if name != field)
        # The value found by equality is the one written (where equality applies).
        if len(specimens.entity.fields[field].columns()) == 1 and type_name not in ("json", "long_text"):
            page = await specimens.list(where={field: written})
            assert created["id"] in [r["id"] for r in page.records]


async def test_decimal_is_exact(specimens: RecordService) -> None:
    created = await specimens.create({"revenue": D("1234.56"), "rate": D("12.5"), "price": {"amount": D("99.90"), "currency": "EUR"}})
    read = await specimens.get(created["id"])
    # Not merely numerically equal: the digits a user typed (no float noise).
    assert str(read["revenue"]) == "1234.56"
    assert str(read["rate"]) == "12.50"  # numeric(6, 2)
    assert str(read["price"]["amount"]) == "99.90"
    from_float = await specimens.create({"revenue": 0.1, "rate": 0.1})
    read = await specimens.get(from_float["id"])
    assert str(read["revenue"]) == "0.1"
    assert str(read["rate"]) == "0.10"
    total = sum([read["revenue"]] * 3, D(0))
    assert total == D("0.3")


async def test_datetime_keeps_the_instant_and_is_aware(specimens: RecordService) -> None:
    written = dt.datetime(2024, 3, 31, 1, 59, 59, 123456, tzinfo=dt.timezone(dt.timedelta(hours=-7, minutes=-30)))
    created = await specimens.create({"last_contact": written})
    value = (await specimens.get(created["id"]))["last_contact"]
    assert value.tzinfo is not None and value.utcoffset() is not None
    assert value == written
    assert value.timestamp() == written.timestamp()


# -- invalid values ------------------------------------------------------------

# (type, invalid value). Every one must be refused with a problem on the field.
INVALID: list[tuple[str, Any]] = [
    ("text", "x" * 41),  # maxLength 40
    ("text", 123),
    ("text", ["a"]),
    ("text", "NUL \x00 inside"),  # PostgreSQL text cannot hold it
    ("long_text", 42),
    ("long_text", "x" * 100_001),  # default limit of long text
    ("long_text", "\x00"),
    ("integer", "12"),
    ("integer", 1.5),
    ("integer", True),
    ("integer", -1),  # minimum 0
    ("integer", 2**63),  # beyond bigint
    ("decimal", "1.5"),
    ("decimal", float("nan")),
    ("decimal", float("inf")),
    ("decimal", D("NaN")),
    ("decimal", D("-Infinity")),
    ("decimal", True),
    ("currency", {"amount": 1, "currency": "JPY"}),  # not among the field's currencies
    ("currency", {"amount": 1, "currency": "eur"}),
    ("currency", {"amount": 5}),
    ("currency", {"currency": "EUR"}),
    ("currency", {"amount": D("1.234"), "currency": "EUR"}),  # scale 2
    ("currency", {"amount": "5", "currency": "EUR"}),
    ("currency", {"amount": float("nan"), "currency": "EUR"}),
    ("currency", {"amount": D("1e16"), "currency": "EUR"}),  # numeric(18, 2)
    ("currency", {"amount": 1, "currency": "EUR", "note": "x"}),
    ("currency", "5 EUR"),
    ("boolean", "true"),
    ("boolean", 1),
    ("date", "2024-02-30"),
    ("date", "31.12.2024"),
    ("date", "2024-12-31T10:00:00+00:00"),
    ("date", dt.datetime(2024, 12, 31, 10, 0, tzinfo=UTC)),
    ("datetime", dt.datetime(2024, 12, 31, 17, 30)),  # naive: which time zone?
    ("datetime", "2024-12-31T17:30:00"),
    ("datetime", "2024-12-31"),
    ("datetime", "2024-12-31T23:59:60Z"),
    ("datetime", dt.date(2024, 12, 31)),
    ("select", "prospect"),
    ("select", "Customer"),
    ("multiselect", ["red", "pink"]),
    ("multiselect", ["red", "red"]),
    ("multiselect", "red"),
    ("multiselect", [None]),
    ("email", "not-an-email"),
    ("email", "anna@localhost"),
    ("email", "anna mueller@example.de"),
    ("phone", "call me"),
    ("phone", "12"),
    ("url", "example.com"),
    ("url", "ftp://example.com/file"),
    ("url", "javascript:alert(1)"),
    ("reference", "not-a-uuid"),
    ("reference", 17),
    ("reference", uuid.UUID("99999999-2222-4333-8444-555555555555")),  # no such company
    ("json", [1, 2]),
    ("json", "text"),
    ("json", {"nested": {"k": "a\x00"}}),
    ("json", {"k\x00": 1}),
    ("json", {"values": [1, float("nan")]}),
    ("json", {"k": float("inf")}),
]


async def check_refusals(db: Database, specimens: RecordService, type_name: str) -> None:
    """Each invalid value: ValidationFailed on the field; table and outbox unchanged."""
    field = FIELD_OF_TYPE[type_name]
    cases = [value for t, value in INVALID if t == type_name]
    assert cases, f"no invalid value for {type_name}"
    before, events = await table_rows(db), await outbox_count(db)
    for value in cases:
        with pytest.raises(ValidationFailed) as raised:
            await specimens.create({field: value})
        pointers = [p.pointer for p in raised.value.problems]
        assert pointers, f"{type_name}: {value!r} refused without a problem"
        assert all(p == f"/{field}" or p.startswith(f"/{field}/") for p in pointers), (
            f"{type_name}: {value!r} gave {raised.value.problems}"
        )
        assert all(p.message for p in raised.value.problems)
        assert await table_rows(db) == before, f"{type_name}: {value!r} changed the table"
        assert await outbox_count(db) == events


# One database per type (not per check) keeps the file fast.
@pytest.mark.parametrize("type_name", sorted(FIELD_OF_TYPE))
async def test_field_type(db: Database, specimens: RecordService, type_name: str) -> None:
    await check_round_trips(specimens, type_name)
    await check_refusals(db, specimens, type_name)


async def test_invalid_value_in_update_is_refused_and_changes_nothing(db: Database, specimens: RecordService) -> None:
    created = await specimens.create({"title": "keep", "revenue": D("1.5"), "last_contact": "2024-01-01T00:00:00Z"})
    before = await table_rows(db)
    for field, value in [
        ("revenue", "a lot"),
        ("last_contact", dt.datetime(2024, 12, 31, 17, 30)),
        ("rate", D("10000")),  # numeric(6, 2) holds at most 4 digits before the point
        ("company", uuid.uuid4()),
    ]:
        with pytest.raises(ValidationFailed) as raised:
            await specimens.update(created["id"], {field: value})
        assert [p.pointer for p in raised.value.problems] == [f"/{field}"], raised.value.problems
    assert await table_rows(db) == before


async def test_reference_to_missing_record_names_the_field(specimens: RecordService) -> None:
    with pytest.raises(ValidationFailed) as raised:
        await specimens.create({"company": uuid.uuid4()})
    (problem,) = raised.value.problems
    assert problem.pointer == "/company"
    assert "company" in problem.message


# -- storage -------------------------------------------------------------------


async def test_storage_types_in_postgresql(db: Database, reg: Registry) -> None:
    async with db.connection() as c:
        rows = await c.fetch(
            "SELECT column_name, data_type, udt_name, numeric_precision, numeric_scale, character_maximum_length "
            "FROM information_schema.columns WHERE table_schema = 'public' AND table_name = 'specimen'"
        )
        foreign_keys = await c.fetch(
            "SELECT a.attname AS column_name, confrelid::regclass::text AS target "
            "FROM pg_constraint k JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = ANY (k.conkey) "
            "WHERE k.contype = 'f' AND k.conrelid = 'public.specimen'::regclass"
        )
    columns = {r["column_name"]: r for r in rows}
    expected = {
        "title": "text",
        "notes": "text",
        "employees": "bigint",
        "revenue": "numeric",
        "rate": "numeric",
        "price_amount": "numeric",
        "price_currency": "character",
        "active": "boolean",
        "founded": "date",
        "last_contact": "timestamp with time zone",
        "status": "text",
        "colours": "ARRAY",
        "email": "text",
        "phone": "text",
        "website": "text",
        "company": "uuid",
        "extra": "jsonb",
    }
    assert {name: columns[name]["data_type"] for name in expected} == expected
    assert "price" not in columns
    assert columns["colours"]["udt_name"] == "_text"
    assert (columns["rate"]["numeric_precision"], columns["rate"]["numeric_scale"]) == (6, 2)
    assert columns["revenue"]["numeric_precision"] is None  # unconstrained numeric, never float
    assert (columns["price_amount"]["numeric_precision"], columns["price_amount"]["numeric_scale"]) == (18, 2)
    assert columns["price_currency"]["character_maximum_length"] == 3
    assert [(r["column_name"], r["target"]) for r in foreign_keys] == [("company", "company")]


async def test_database_enforces_the_rules_too(db: Database, specimens: RecordService) -> None:
    """A write that bypasses the service still cannot store what validation refuses."""
    import asyncpg

    statements = [
        "INSERT INTO public.specimen (status) VALUES ('prospect')",
        "INSERT INTO public.specimen (colours) VALUES (ARRAY['pink'])",
        "INSERT INTO public.specimen (price_amount) VALUES (5)",
        "INSERT INTO public.specimen (price_amount, price_currency) VALUES (5, 'JPY')",
        "INSERT INTO public.specimen (title) VALUES (repeat('x', 41))",
        "INSERT INTO public.specimen (employees) VALUES (-1)",
        f"INSERT INTO public.specimen (company) VALUES ('{uuid.uuid4()}')",
    ]
    async with db.connection() as c:
        for statement in statements:
            with pytest.raises(asyncpg.IntegrityConstraintViolationError):
                await c.execute(statement)
