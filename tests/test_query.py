"""The query language of RecordService.list against a real PostgreSQL.

Filters (every operator on the types it fits, NULLs, umlauts), refusals with
pointers, sorting by several keys with NULLs, keyset paging under any sort
(property-based: every row exactly once, in the order of one big query),
cursor stability while rows are inserted, fields, totals, expand, injection
attempts, and that a deep page reads an index instead of sorting the table.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import datetime as dt
import decimal
import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xrm.db.database import Database
from xrm.errors import ValidationFailed
from xrm.records.principal import Principal
from xrm.records.query import Condition, parse_filter_params
from xrm.records.service import RecordService
from xrm.registry import Registry
from xrm.schema.service import SchemaService

D = decimal.Decimal
C = Condition
ANNA = Principal(uuid.UUID("aaaaaaaa-0000-4000-8000-000000000001"), "anna")
BEN = Principal(uuid.UUID("bbbbbbbb-0000-4000-8000-000000000002"), "ben")
BERLIN = ZoneInfo("Europe/Berlin")

ACCOUNT = {
    "type": "object",
    "x-xrm": {"name": "account", "label": {"en": "Account"}},
    "required": ["name"],
    "properties": {"name": {"type": "string", "maxLength": 100}, "city": {"type": "string"}},
}

DEAL = {
    "type": "object",
    "x-xrm": {"name": "deal", "label": {"en": "Deal"}, "indexes": [{"fields": ["employees"]}]},
    "properties": {
        "name": {"type": "string", "maxLength": 200},
        "notes": {"x-xrm": {"type": "long_text"}},
        "stage": {"type": "string", "enum": ["lead", "qualified", "won", "lost"]},
        "employees": {"type": "integer"},
        "probability": {"type": "number"},
        "value": {"x-xrm": {"type": "currency", "currencies": ["EUR", "USD", "CHF"]}},
        "closed": {"type": "boolean"},
        "close_date": {"type": "string", "format": "date"},
        "next_call": {"type": "string", "format": "date-time"},
        "tags": {"type": "array", "items": {"enum": ["hot", "cold", "partner"]}},
        "email": {"type": "string", "format": "email"},
        "account": {"x-xrm": {"type": "reference", "references": "account"}},
        "extra": {"type": "object"},
    },
}


@pytest.fixture
async def reg(make_entities: Any) -> Registry:
    return await make_entities(copy.deepcopy(ACCOUNT), copy.deepcopy(DEAL))


@pytest.fixture
def deals(db: Database, reg: Registry) -> RecordService:
    return RecordService(db, reg, "deal", ANNA)


@pytest.fixture
def accounts(db: Database, reg: Registry) -> RecordService:
    return RecordService(db, reg, "account", ANNA)


def pointers(error: ValidationFailed) -> list[str]:
    return [p.pointer for p in error.problems]


async def all_pages(service: RecordService, limit: int, after: str | None = None, **kwargs: Any) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    cursor = after
    seen: set[str] = set()
    while True:
        page = await service.list(limit=limit, after=cursor, **kwargs)
        assert len(page.records) <= limit
        records.extend(page.records)
        cursor = page.next_cursor
        if cursor is None:
            return records
        assert len(page.records) == limit, "a page before the last must be full"
        assert cursor not in seen, "paging does not move on"
        seen.add(cursor)


def sort_value(record: dict[str, Any], name: str) -> Any:
    value = record[name]
    return value["amount"] if isinstance(value, dict) else value


def model_order(records: list[dict[str, Any]], order_by: list[str]) -> list[dict[str, Any]]:
    """The order PostgreSQL must produce: NULLs last ascending, first descending;
    id breaks ties in the direction of the last key."""
    keys = [(s.lstrip("-"), s.startswith("-")) for s in order_by]
    if "id" not in [name for name, _ in keys]:
        keys.append(("id", keys[-1][1]))
    result = list(records)
    for name, desc in reversed(keys):  # stable sorts, least significant key first
        present = [r for r in result if sort_value(r, name) is not None]
        missing = [r for r in result if sort_value(r, name) is None]
        present.sort(key=lambda r: sort_value(r, name), reverse=desc)
        result = missing + present if desc else present + missing
    return result


@asynccontextmanager
async def logged_queries(db: Database, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[list[tuple[str, tuple]]]:
    """Every statement run through db.connection() while the block runs."""
    executed: list[tuple[str, tuple]] = []
    original = db.connection

    def log(record: Any) -> None:
        executed.append((record.query, record.args))

    @asynccontextmanager
    async def connection() -> AsyncIterator[Any]:
        async with original() as c:
            c.add_query_logger(log)
            try:
                yield c
            finally:
                c.remove_query_logger(log)

    monkeypatch.setattr(db, "connection", connection)
    try:
        yield executed
    finally:
        monkeypatch.undo()


# -- filters -------------------------------------------------------------------


@pytest.fixture
async def sample(deals: RecordService, accounts: RecordService) -> dict[str, dict[str, Any]]:
    acme = await accounts.create({"name": "ACME"})
    rows = [
        {
            "name": "Müller GmbH", "stage": "won", "employees": 10, "probability": D("0.9"),
            "value": {"amount": D("1000"), "currency": "EUR"}, "closed": True, "close_date": "2024-12-31",
            "next_call": "2024-12-31T17:30:00+01:00", "tags": ["hot", "partner"], "email": "mueller@example.de",
            "account": acme["id"], "extra": {"a": 1},
        },
        {
            "name": "MÜLLERS Laden", "stage": "lost", "employees": 5, "probability": D("0.10"),
            "value": {"amount": D("250.50"), "currency": "USD"}, "closed": True, "close_date": "2024-06-30", "tags": ["cold"],
        },
        {
            "name": "Straßenbau Öztürk", "stage": "lead", "probability": None, "closed": False, "close_date": "2025-01-01",
            "next_call": "2025-01-02T09:00:00Z", "tags": [], "email": "oez@example.de",
        },
        {
            "name": "Bäckerei Schulz", "employees": 10, "probability": D("0.5"), "value": {"amount": D("1000"), "currency": "CHF"},
            "notes": "Frau Schulz: Brötchen 50% günstiger",
        },
        {
            "name": "100% Bio_Markt", "stage": "qualified", "employees": 0, "probability": D("0"),
            "value": {"amount": D("0"), "currency": "EUR"}, "closed": False, "close_date": "2024-01-01",
        },
        {"name": "Anna"},
    ]
    created = await deals.create_many(rows)
    return {r["name"]: r for r in created} | {"_acme": acme}


async def test_every_operator_on_the_types_it_fits(deals: RecordService, sample: dict[str, dict[str, Any]]) -> None:
    everyone = {name for name in sample if not name.startswith("_")}

    async def names(where: Any) -> set[str]:
        found = {r["name"] for r in (await deals.list(where=where)).records}
        assert await deals.count(where=where) == len(found)
        return found

    mueller, laden, strasse, baecker, bio, anna = (
        "Müller GmbH", "MÜLLERS Laden", "Straßenbau Öztürk", "Bäckerei Schulz", "100% Bio_Markt", "Anna",
    )
    # integer: comparisons, in, NULLs (ne keeps records without a value)
    assert await names([C("employees", "eq", 10)]) == {mueller, baecker}
    assert await names([C("employees", "ne", 10)]) == {laden, strasse, bio, anna}
    assert await names([C("employees", "lt", 10)]) == {laden, bio}
    assert await names([C("employees", "lte", 10)]) == {mueller, laden, baecker, bio}
    assert await names([C("employees", "gt", 5)]) == {mueller, baecker}
    assert await names([C("employees", "gte", "5")]) == {mueller, laden, baecker}
    assert await names([C("employees", "in", [0, 5])]) == {laden, bio}
    assert await names([C("employees", "in", [])]) == set()
    assert await names([C("employees", "is_null", True)]) == {strasse, anna}
    assert await names([C("employees", "is_null", False)]) == {mueller, laden, baecker, bio}
    assert await names([C("employees", "eq", None)]) == {strasse, anna}
    assert await names([C("employees", "ne", None)]) == {mueller, laden, baecker, bio}
    # decimal: exact, whatever the notation
    assert await names([C("probability", "gte", "0.5")]) == {mueller, baecker}
    assert await names([C("probability", "eq", D("0.1000"))]) == {laden}
    assert await names([C("probability", "lt", 0.1)]) == {bio}
    # currency: the amount, and "<field>.currency" for the code
    assert await names([C("value", "gte", 1000)]) == {mueller, baecker}
    assert await names([C("value", "lt", "300")]) == {laden, bio}
    assert await names([C("value", "eq", D("250.5"))]) == {laden}
    assert await names([C("value.currency", "eq", "EUR")]) == {mueller, bio}
    assert await names([C("value.currency", "in", ["USD", "CHF"])]) == {laden, baecker}
    assert await names([C("value", "is_null", True)]) == {strasse, anna}
    # date range (gte/lt), a date object, and datetimes in any zone
    assert await names([C("close_date", "gte", "2024-06-30"), C("close_date", "lt", "2025-01-01")]) == {mueller, laden}
    assert await names([C("close_date", "eq", dt.date(2024, 12, 31))]) == {mueller}
    assert await names([C("close_date", "is_null", True)]) == {baecker, anna}
    assert await names([C("next_call", "gte", "2024-12-31T16:30:00Z")]) == {mueller, strasse}
    assert await names([C("next_call", "gt", "2024-12-31T16:30:00+00:00")]) == {strasse}
    assert await names([C("next_call", "lt", dt.datetime(2025, 1, 1, tzinfo=BERLIN))]) == {mueller}
    # boolean
    assert await names([C("closed", "eq", True)]) == {mueller, laden}
    assert await names([C("closed", "eq", "false")]) == {strasse, bio}
    assert await names([C("closed", "ne", True)]) == {strasse, baecker, bio, anna}
    assert await names([C("closed", "is_null", True)]) == {baecker, anna}
    # select
    assert await names([C("stage", "in", ["won", "lost"])]) == {mueller, laden}
    assert await names([C("stage", "ne", "won")]) == everyone - {mueller}
    assert await names([C("stage", "eq", None)]) == {baecker, anna}
    # text: case-insensitive contains / starts_with, umlauts included; % and _ are literal
    assert await names([C("name", "contains", "müller")]) == {mueller, laden}
    assert await names([C("name", "contains", "ÖZTÜRK")]) == {strasse}
    assert await names([C("name", "contains", "straß")]) == {strasse}
    assert await names([C("name", "starts_with", "mü")]) == {mueller, laden}
    assert await names([C("name", "starts_with", "BÄCK")]) == {baecker}
    assert await names([C("name", "starts_with", "laden")]) == set()
    assert await names([C("name", "contains", "%")]) == {bio}
    assert await names([C("name", "contains", "o_m")]) == {bio}
    assert await names([C("name", "contains", "ü_l")]) == set()  # "_" would match "Müller"
    assert await names([C("name", "contains", "1%B")]) == set()  # "%" would match "100% B"
    assert await names([C("name", "eq", "anna")]) == set()  # eq is exact
    assert await names([C("name", "lt", "B")]) == {bio, anna}
    assert await names([C("name", "in", ["Anna", "Müller GmbH"])]) == {anna, mueller}
    assert await names([C("notes", "contains", "brötchen 50%")]) == {baecker}
    assert await names([C("notes", "starts_with", "frau")]) == {baecker}
    assert await names([C("email", "is_null", False)]) == {mueller, strasse}
    # multiselect: contains one option or all of several; eq is the set; empty counts as no value
    assert await names([C("tags", "contains", "hot")]) == {mueller}
    assert await names([C("tags", "contains", ["partner", "hot"])]) == {mueller}
    assert await names([C("tags", "contains", ["hot", "cold"])]) == set()
    assert await names([C("tags", "eq", ["partner", "hot"])]) == {mueller}
    assert await names([C("tags", "ne", ["cold"])]) == everyone - {laden}
    assert await names([C("tags", "is_null", True)]) == {strasse, baecker, bio, anna}
    assert await names([C("tags", "is_null", False)]) == {mueller, laden}
    # reference and json
    acme = sample["_acme"]["id"]
    assert await names([C("account", "eq", acme)]) == {mueller}
    assert await names([C("account", "in", [str(acme)])]) == {mueller}
    assert await names([C("account", "is_null", True)]) == everyone - {mueller}
    assert await names([C("extra", "is_null", False)]) == {mueller}
    # system fields
    assert await names([C("id", "in", [sample[anna]["id"], str(sample[bio]["id"])])]) == {anna, bio}
    assert await names([C("owner_id", "eq", ANNA.id)]) == everyone
    assert await names([C("version", "eq", 1)]) == everyone
    before = sample[anna]["updated_at"]
    await deals.update(sample[anna]["id"], {"stage": "lead"})
    assert await names([C("version", "gt", 1)]) == {anna}
    assert await names([C("updated_at", "gt", before)]) == {anna}
    assert await names([C("created_at", "lte", before.isoformat())]) == everyone
    # several conditions all hold; the {field: value} form still means equality
    assert await names([C("stage", "eq", "lead"), C("closed", "ne", True)]) == {strasse, anna}
    assert await names({"stage": "won", "closed": True}) == {mueller}
    assert await names({"value": 1000, "value.currency": "CHF"}) == {baecker}
    # also as plain {field, op, value} mappings (JSON callers)
    assert await names([{"field": "employees", "op": "gte", "value": 10}]) == {mueller, baecker}


async def test_refused_operators_and_values_name_field_operator_and_place(deals: RecordService) -> None:
    await deals.create({"name": "Anna"})
    refused = [
        (C("closed", "lt", True), ["closed", "lt", "boolean"]),
        (C("employees", "contains", "1"), ["employees", "contains", "integer"]),
        (C("extra", "eq", {"a": 1}), ["extra", "eq", "json"]),
        (C("extra", "gt", 1), ["extra", "gt", "json"]),
        (C("employees", "gte", "abc"), ["employees", "gte", "'abc'", "whole number"]),
        (C("employees", "eq", True), ["employees", "eq", "whole number"]),
        (C("employees", "eq", 2**63), ["employees", "out of range"]),
        (C("version", "gt", 2**40), ["version", "out of range"]),
        (C("probability", "gt", "NaN"), ["probability", "not a number"]),
        (C("close_date", "gte", "31.12.2024"), ["close_date", "gte", "2024-12-31"]),
        (C("next_call", "gte", "2024-12-31T10:00:00"), ["next_call", "time zone"]),
        (C("next_call", "gte", "2024-12-31"), ["next_call", "time zone"]),
        (C("stage", "eq", "mining"), ["stage", "'mining' is not one of the options"]),
        (C("stage", "lt", "won"), ["stage", "lt", "select"]),
        (C("stage", "in", "won"), ["stage", "in", "list"]),
        (C("stage", "in", ["won", None]), ["stage", "is_null"]),
        (C("tags", "contains", "warm"), ["tags", "'warm'"]),
        (C("tags", "lt", ["hot"]), ["tags", "lt", "multiselect"]),
        (C("notes", "lt", "x"), ["notes", "lt", "long_text"]),
        (C("account", "eq", "42"), ["account", "'42'", "uuid"]),
        (C("account", "contains", "4"), ["account", "contains", "reference"]),
        (C("employees", "like", 1), ["employees", "unknown operator 'like'"]),
        (C("employees", "gt", None), ["employees", "gt", "needs a value"]),
        (C("employees", "is_null", "maybe"), ["employees", "is_null", "'maybe'"]),
        (C("colour", "eq", "red"), ["unknown field 'colour'"]),
        (C("deleted_at", "is_null", False), ["unknown field 'deleted_at'"]),
        (C("value.currency", "lt", "EUR"), ["value.currency", "lt"]),
        (C("value.currency", "eq", "JPY"), ["value.currency", "'JPY'"]),
        (C("value.amount", "eq", 1), ["unknown field 'value.amount'"]),
        (C("name.currency", "eq", "EUR"), ["unknown field 'name.currency'"]),
        (C("name", "contains", "a\x00b"), ["name", "NUL"]),
    ]
    for condition, words in refused:
        with pytest.raises(ValidationFailed) as raised:
            await deals.list(where=[condition])
        assert pointers(raised.value) == ["/where/0"], condition
        message = raised.value.problems[0].message
        assert all(word in message for word in words), (condition, message)
        with pytest.raises(ValidationFailed):
            await deals.count(where=[condition])
    # Every problem at once, each at its condition's index.
    with pytest.raises(ValidationFailed) as raised:
        await deals.list(where=[C("name", "eq", "Anna"), C("closed", "lt", True), C("stage", "eq", "won"), C("colour", "eq", 1)])
    assert pointers(raised.value) == ["/where/1", "/where/3"]
    with pytest.raises(ValidationFailed) as raised:
        await deals.list(where={"stage": "mining", "name": "Anna"})
    assert pointers(raised.value) == ["/where/stage"]
    with pytest.raises(ValidationFailed) as raised:
        await deals.list(where="stage=won")
    assert pointers(raised.value) == ["/where"]
    with pytest.raises(ValidationFailed) as raised:
        await deals.list(where=["stage"])
    assert pointers(raised.value) == ["/where/0"]
    # Sort keys that cannot sort.
    for order_by, at, word in [
        (["notes"], "/order_by/0", "long_text"),
        (["tags"], "/order_by/0", "multiselect"),
        (["name", "-extra"], "/order_by/1", "json"),
        (["value.currency"], "/order_by/0", "value.currency"),
        (["owner_id"], "/order_by/0", "owner_id"),
        (["name", "-name"], "/order_by/1", "twice"),
        (["colour"], "/order_by/0", "colour"),
        ([""], "/order_by/0", "sort key"),
    ]:
        with pytest.raises(ValidationFailed) as raised:
            await deals.list(order_by=order_by)
        assert pointers(raised.value) == [at], order_by
        assert word in raised.value.problems[0].message


async def test_parse_filter_params(deals: RecordService, sample: dict[str, dict[str, Any]]) -> None:
    entity = deals.entity
    conditions = parse_filter_params(
        entity,
        {
            "employees[gte]": "5",
            "stage[in]": "won,lost",
            "close_date[gte]": "2024-01-01",
            "email[is_null]": "true",
            "name": "MÜLLERS Laden",
        },
    )
    assert conditions == [
        C("employees", "gte", 5),
        C("stage", "in", ["won", "lost"]),
        C("close_date", "gte", dt.date(2024, 1, 1)),
        C("email", "is_null", True),
        C("name", "eq", "MÜLLERS Laden"),
    ]
    assert [r["name"] for r in (await deals.list(where=conditions)).records] == ["MÜLLERS Laden"]

    def found(params: dict[str, Any]) -> Any:
        return deals.list(where=parse_filter_params(entity, params))

    assert {r["name"] for r in (await found({"value[gte]": "1000", "value.currency": "CHF"})).records} == {"Bäckerei Schulz"}
    assert {r["name"] for r in (await found({"tags[contains]": "partner,hot"})).records} == {"Müller GmbH"}
    assert {r["name"] for r in (await found({"tags": "hot,partner"})).records} == {"Müller GmbH"}
    assert {r["name"] for r in (await found({"next_call[lt]": "2025-01-01T00:00:00+01:00"})).records} == {"Müller GmbH"}
    # A key given twice: each value holds; "in" lists are joined.
    assert parse_filter_params(entity, {"employees[gte]": ["1", "5"]}) == [C("employees", "gte", 1), C("employees", "gte", 5)]
    assert parse_filter_params(entity, {"stage[in]": ["won", "lost,lead"]}) == [C("stage", "in", ["won", "lost", "lead"])]
    assert parse_filter_params(entity, {}) == []

    with pytest.raises(ValidationFailed) as raised:
        parse_filter_params(
            entity,
            {
                "employees[gte]": "many",
                "colour": "red",
                "stage[like]": "won",
                "name[gte": "x",
                "value.currency[in]": "EUR,JPY",
                "closed[lt]": "true",
                "email[is_null]": "perhaps",
                "stage": "won",
            },
        )
    problems = {p.pointer: p.message for p in raised.value.problems}
    assert set(problems) == {
        "/employees[gte]", "/colour", "/stage[like]", "/name[gte", "/value.currency[in]", "/closed[lt]", "/email[is_null]",
    }
    assert "'many'" in problems["/employees[gte]"] and "employees" in problems["/employees[gte]"]
    assert "unknown field 'colour'" in problems["/colour"]
    assert "unknown operator 'like'" in problems["/stage[like]"]
    assert "'JPY'" in problems["/value.currency[in]"]
    assert "boolean" in problems["/closed[lt]"]


# -- sorting and paging ----------------------------------------------------------


async def test_sort_by_several_keys_mixed_directions_with_nulls(deals: RecordService) -> None:
    rows = [
        {"name": "a", "stage": "won", "employees": 3},
        {"name": "b", "stage": "won", "employees": None},
        {"name": "c", "stage": None, "employees": 7},
        {"name": "d", "stage": "lead", "employees": 3},
        {"name": "e", "stage": "won", "employees": 9},
        {"name": "f", "stage": None, "employees": None},
        {"name": "g", "stage": "lead", "employees": 3},
        {"name": "h", "stage": "lost", "employees": 1},
        {"name": "i", "stage": "won", "employees": 3},
    ]
    created = await deals.create_many(rows)
    by_name = {r["name"]: r for r in created}

    async def order(order_by: list[str], limit: int = 100) -> list[str]:
        return [r["name"] for r in await all_pages(deals, limit, order_by=order_by)]

    # stage ascending (NULLs last), then employees descending (NULLs first), then id.
    expected_prefix = ["d|g", "d|g", "h", "b", "e", "a|i", "a|i", "f", "c"]
    got = await order(["stage", "-employees"])
    assert [n in option.split("|") for n, option in zip(got, expected_prefix)] == [True] * 9, got
    assert got == [r["name"] for r in model_order(created, ["stage", "-employees"])]
    # Ties among equal keys fall back to id, in the direction of the last key.
    ties = sorted([by_name["a"], by_name["i"]], key=lambda r: r["id"], reverse=True)
    assert got[5:7] == [r["name"] for r in ties]
    for spec in (["-stage", "employees"], ["employees", "-stage", "name"], ["-employees", "-name"], ["-created_at"], ["id"]):
        expected = [r["name"] for r in model_order(created, spec)]
        assert await order(spec) == expected, spec
        for limit in (1, 2, 4):
            assert await order(spec, limit) == expected, (spec, limit)
    # Currency sorts by amount; dates and decimals too.
    prices = await deals.create_many(
        [
            {"name": "p1", "value": {"amount": 5, "currency": "EUR"}, "close_date": "2024-02-29", "probability": D("0.25")},
            {"name": "p2", "value": {"amount": D("5.01"), "currency": "USD"}, "close_date": "2023-12-31", "probability": D("0.250")},
            {"name": "p3", "value": {"amount": -1, "currency": "CHF"}},
        ]
    )
    assert [r["name"] for r in (await deals.list(where=[C("name", "starts_with", "p")], order_by=["-value"])).records] == ["p2", "p1", "p3"]
    assert [r["name"] for r in (await deals.list(where=[C("name", "starts_with", "p")], order_by=["close_date"])).records] == ["p2", "p1", "p3"]
    assert [r["name"] for r in await all_pages(deals, 1, where=[C("name", "starts_with", "p")], order_by=["probability", "-close_date"])] == [
        r["name"] for r in model_order(prices, ["probability", "-close_date"])
    ]


ITEM = {
    "type": "object",
    "x-xrm": {"name": "item", "label": {"en": "Item"}},
    "properties": {
        "name": {"type": "string"},
        "stage": {"type": "string", "enum": ["a", "b", "c"]},
        "qty": {"type": "integer"},
        "ratio": {"type": "number"},
        "day": {"type": "string", "format": "date"},
        "flag": {"type": "boolean"},
    },
}

_ROW = st.fixed_dictionaries(
    {
        "name": st.none() | st.sampled_from(["Ärger", "apfel", "Zoo", "zoo", "Öl", "b"]),
        "stage": st.none() | st.sampled_from(["a", "b", "c"]),
        "qty": st.none() | st.integers(-2, 2),
        "ratio": st.none() | st.sampled_from([D("0.5"), D("0.50"), D("-1"), D("2.25")]),
        "day": st.none() | st.sampled_from(["2024-01-01", "2024-02-29", "1999-12-31"]),
        "flag": st.none() | st.booleans(),
    }
)
_KEYS = ["name", "stage", "qty", "ratio", "day", "flag", "created_at", "version"]
_SPEC = st.tuples(
    st.lists(st.tuples(st.sampled_from(_KEYS), st.booleans()), min_size=1, max_size=3, unique_by=lambda k: k[0]),
    st.sampled_from([None, "id", "-id"]),
).map(lambda t: [("-" if desc else "") + name for name, desc in t[0]] + ([t[1]] if t[1] else []))


def test_paging_under_any_sort_returns_every_row_once_in_order(database_uri: str) -> None:
    """Property: for any data (NULLs, duplicates, equal created_at) and any sort,
    paging with a small limit returns exactly the rows of one big query, in its order."""
    loop = asyncio.new_event_loop()

    async def open_database() -> tuple[Database, RecordService]:
        db = await Database(database_uri).open(min_size=1, max_size=2)
        await SchemaService(db).apply([copy.deepcopy(ITEM)])
        return db, RecordService(db, await Registry().load(db), "item", ANNA)

    db, items = loop.run_until_complete(open_database())

    async def check(rows: list[dict[str, Any]], order_by: list[str], limit: int) -> None:
        async with db.connection() as c:
            await c.execute(f"TRUNCATE {items.entity.table}")
        created = await items.create_many(rows)  # one transaction: equal created_at
        single = (await items.list(order_by=order_by, limit=1000)).records
        paged = await all_pages(items, limit, order_by=order_by)
        assert [r["id"] for r in paged] == [r["id"] for r in single]
        assert sorted(r["id"] for r in paged) == sorted(r["id"] for r in created)
        if not any(k.lstrip("-") == "name" for k in order_by):  # text order depends on the collation
            assert [r["id"] for r in single] == [r["id"] for r in model_order(created, order_by)]

    @settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(rows=st.lists(_ROW, max_size=25), order_by=_SPEC, limit=st.integers(1, 4))
    def property_holds(rows: list[dict[str, Any]], order_by: list[str], limit: int) -> None:
        loop.run_until_complete(check(rows, order_by, limit))

    try:
        property_holds()
    finally:
        loop.run_until_complete(db.close())
        loop.close()


async def test_cursor_is_stable_while_rows_are_inserted(deals: RecordService) -> None:
    originals = await deals.create_many(
        [{"name": f"Deal {i:02}", "employees": [None, 1, 5, 5, 9][i % 5], "stage": [None, "lead", "won"][i % 3]} for i in range(30)]
    )
    original_ids = {r["id"] for r in originals}
    for order_by in (None, ["-employees"], ["stage", "name"], ["employees", "-stage"]):
        seen: list[uuid.UUID] = []
        cursor = None
        round_ = 0
        while True:
            page = await deals.list(order_by=order_by, limit=7, after=cursor)
            seen.extend(r["id"] for r in page.records)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
            # New rows: before, at and after the cursor's position, with NULLs.
            round_ += 1
            last = page.records[-1]
            await deals.create_many(
                [
                    {"name": f"New {round_} a", "employees": last["employees"], "stage": last["stage"]},
                    {"name": f"New {round_} b", "employees": None, "stage": None},
                    {"name": "Deal 00", "employees": 0, "stage": "lead"},
                    {"name": "ZZZ", "employees": 100, "stage": "won"},
                ]
            )
            assert round_ < 50
        assert len(seen) == len(set(seen)), f"{order_by}: a row came twice"
        assert original_ids <= set(seen), f"{order_by}: a row that existed before the first page was skipped"


async def test_cursor_from_another_sort_or_forged_is_refused(deals: RecordService) -> None:
    await deals.create_many([{"name": f"D{i}", "close_date": f"2024-01-0{i + 1}"} for i in range(5)])
    by_name = (await deals.list(order_by=["name"], limit=2)).next_cursor
    assert by_name is not None
    for order_by in (["-name"], None, ["name", "stage"], ["close_date"]):
        with pytest.raises(ValidationFailed) as raised:
            await deals.list(order_by=order_by, limit=2, after=by_name)
        assert pointers(raised.value) == ["/after"]
        assert "sort order" in raised.value.problems[0].message
    # The same sort continues, also with a different filter.
    assert len((await deals.list(order_by=["name"], limit=2, after=by_name)).records) == 2

    by_date = (await deals.list(order_by=["-close_date"], limit=2)).next_cursor
    assert by_date is not None
    document = json.loads(base64.urlsafe_b64decode(by_date + "=" * (-len(by_date) % 4)))
    assert document["k"][0] == ["d", "2024-01-04"]  # typed: a date stays a date

    def forged(change: Callable[[dict[str, Any]], None]) -> str:
        doc = copy.deepcopy(document)
        change(doc)
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode()

    bad = [
        "not-a-cursor",
        "e30",  # {}
        base64.urlsafe_b64encode(b"[1, 2]").decode(),
        forged(lambda d: d["k"].__setitem__(0, ["s", "'; DROP TABLE deal; --"])),
        forged(lambda d: d["k"].__setitem__(0, ["d", "yesterday"])),
        forged(lambda d: d["k"].__setitem__(1, None)),  # id is never NULL
        forged(lambda d: d["k"].pop()),
        forged(lambda d: d["k"].__setitem__(1, ["u", 42])),
    ]
    for cursor in bad:
        with pytest.raises(ValidationFailed) as raised:
            await deals.list(order_by=["-close_date"], after=cursor)
        assert pointers(raised.value) == ["/after"], cursor
    # Values the database could not take are refused, not a server error.
    for order_by, value in ((["version"], ["i", 2**40]), (["probability"], ["n", "1e999999"]), (["close_date"], ["d", 20240101])):
        cursor = (await deals.list(order_by=order_by, limit=1)).next_cursor
        assert cursor is not None
        doc = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        doc["k"][0] = value
        with pytest.raises(ValidationFailed) as raised:
            await deals.list(order_by=order_by, after=base64.urlsafe_b64encode(json.dumps(doc).encode()).decode())
        assert pointers(raised.value) == ["/after"], order_by
    # A NULL for a field key is a legal position (NULLs sort first descending).
    null_position = forged(lambda d: d["k"].__setitem__(0, None))
    assert len((await deals.list(order_by=["-close_date"], after=null_position)).records) == 5


# -- fields, total, expand ---------------------------------------------------------


async def test_fields_selection(deals: RecordService) -> None:
    await deals.create_many(
        [{"name": f"D{i}", "stage": "won", "employees": i, "value": {"amount": i, "currency": "EUR"}} for i in range(5)]
    )
    page = await deals.list(fields=["name", "value"], order_by=["-employees"], limit=2)
    assert [set(r) for r in page.records] == [{"id", "version", "name", "value"}] * 2
    assert [r["name"] for r in page.records] == ["D4", "D3"]
    assert page.records[0]["value"] == {"amount": D("4.00"), "currency": "EUR"}
    # The cursor works although the sort key was not among the fields.
    rest = await all_pages(deals, 2, fields=["name"], order_by=["-employees"], after=page.next_cursor)
    assert [r["name"] for r in rest] == ["D2", "D1", "D0"]
    assert set((await deals.list(fields=["created_at", "owner_id"])).records[0]) == {"id", "version", "created_at", "owner_id"}
    with pytest.raises(ValidationFailed) as raised:
        await deals.list(fields=["name", "colour", "value.currency"])
    assert pointers(raised.value) == ["/fields/1", "/fields/2"]


class OwnRowsOnly:
    """A policy whose row filter lets each principal read only what it owns."""

    def authorize(self, principal: Principal, entity: str, action: Any) -> None:
        return None

    def row_filter(self, principal: Principal, entity: str, action: Any, params: list[object]) -> str:
        params.append(principal.id)
        return f"owner_id = ${len(params)}"


async def test_with_total_counts_every_match_under_the_permission_predicate(db: Database, reg: Registry, deals: RecordService) -> None:
    await deals.create_many([{"name": f"A{i}", "employees": i} for i in range(12)])
    bens = RecordService(db, reg, "deal", BEN, OwnRowsOnly())
    await bens.create_many([{"name": f"B{i}", "employees": i} for i in range(3)])

    page = await deals.list(where=[C("employees", "gte", 2)], limit=4, with_total=True)
    assert len(page.records) == 4 and page.total == 11 == await deals.count(where=[C("employees", "gte", 2)])
    assert (await deals.list(limit=4)).total is None
    last = await deals.list(where=[C("employees", "gte", 2)], limit=4, with_total=True, after=page.next_cursor)
    assert last.total == 11  # the total ignores the cursor
    assert (await deals.list(where=[C("name", "eq", "nobody")], with_total=True)).total == 0
    # Ben sees and counts only his own rows, whatever the filter.
    ben_page = await bens.list(where=[C("employees", "gte", 1)], limit=1, with_total=True)
    assert ben_page.total == 2 and [r["name"] for r in await all_pages(bens, 1, order_by=["name"])] == ["B0", "B1", "B2"]
    assert await bens.count() == 3
    async with db.transaction():  # inside a caller's transaction as well
        assert (await deals.list(limit=1, with_total=True)).total == 15


async def test_expand_adds_referenced_records_in_one_query(
    db: Database, reg: Registry, deals: RecordService, accounts: RecordService, monkeypatch: pytest.MonkeyPatch
) -> None:
    acme, globex, initech, gone = await accounts.create_many(
        [{"name": "ACME", "city": "Köln"}, {"name": "Globex"}, {"name": "Initech"}, {"name": "Gone"}]
    )
    await accounts.delete(gone["id"])
    targets = [acme, globex, initech, None, gone, acme, globex, acme]
    await deals.create_many([{"name": f"D{i}", "account": t["id"] if t else None} for i, t in enumerate(targets)])

    async with logged_queries(db, monkeypatch) as executed:
        page = await deals.list(expand=["account"], limit=8, order_by=["name"])
    account_queries = [q for q, _ in executed if reg.get("account").table in q]
    assert len(account_queries) == 1, account_queries  # for all accounts of the page
    assert "ANY($1" in account_queries[0]
    assert len([q for q, _ in executed if reg.get("deal").table in q]) == 1

    by_name = {r["name"]: r for r in page.records}
    assert by_name["D0"]["account_expanded"]["name"] == "ACME"
    assert by_name["D0"]["account_expanded"]["city"] == "Köln"
    assert by_name["D0"]["account_expanded"]["id"] == acme["id"] == by_name["D0"]["account"]
    assert by_name["D0"]["account_expanded"]["_display"] == "ACME"
    assert by_name["D1"]["account_expanded"]["name"] == "Globex"
    assert by_name["D3"]["account_expanded"] is None  # no reference
    assert by_name["D4"]["account_expanded"] is None  # deleted account
    assert by_name["D7"]["account_expanded"] == by_name["D0"]["account_expanded"]
    # With fields and paging: one query per page.
    async with logged_queries(db, monkeypatch) as executed:
        small = await deals.list(expand=["account"], fields=["name"], limit=3, order_by=["name"])
    assert len([q for q, _ in executed if '"public"' in q]) == 2
    assert set(small.records[0]) == {"id", "version", "name", "account_expanded"}
    assert [r["account_expanded"]["name"] for r in small.records] == ["ACME", "Globex", "Initech"]

    for expand, at, word in [
        (["colour"], "/expand/0", "unknown field"),
        (["account", "name"], "/expand/1", "reference"),
        (["extra"], "/expand/0", "reference"),
    ]:
        with pytest.raises(ValidationFailed) as raised:
            await deals.list(expand=expand)
        assert pointers(raised.value) == [at]
        assert word in raised.value.problems[0].message

    # The referenced entity's permission predicate applies to what is expanded.
    bens_deals = RecordService(db, reg, "deal", BEN, OwnRowsOnly())
    bens_accounts = RecordService(db, reg, "account", BEN, OwnRowsOnly())
    own = await bens_accounts.create({"name": "Ben's"})
    await bens_deals.create_many([{"name": "B1", "account": acme["id"]}, {"name": "B2", "account": own["id"]}])
    expanded = {r["name"]: r["account_expanded"] for r in (await bens_deals.list(expand=["account"])).records}
    assert expanded == {"B1": None, "B2": {**own, "_display": "Ben's"}}


# -- injection -----------------------------------------------------------------------


async def test_sql_injection_in_values_and_names_is_harmless_or_refused(db: Database, deals: RecordService) -> None:
    await deals.create_many([{"name": "Anna"}, {"name": "O'Brien; DROP TABLE deal; --"}])
    evil_values = ["' OR '1'='1", "'; DROP TABLE public.deal; --", "\\' OR 1=1 --", "%' OR name LIKE '%", "$1", "O'Brien"]
    for value in evil_values:
        for op in ("eq", "ne", "contains", "starts_with", "lt"):
            page = await deals.list(where=[C("name", op, value)])
            expected = {"eq": set(), "contains": set(), "starts_with": set()}.get(op)
            if op == "contains" and value in ("O'Brien",):
                expected = {"O'Brien; DROP TABLE deal; --"}
            if op == "starts_with" and value == "O'Brien":
                expected = {"O'Brien; DROP TABLE deal; --"}
            if expected is not None:
                assert {r["name"] for r in page.records} == expected, (op, value)
        assert (await deals.list(where=[C("name", "in", [value, "Anna"])])).records[0]["name"] == "Anna"
        assert parse_filter_params(deals.entity, {"name[contains]": value}) == [C("name", "contains", value)]
    assert {r["name"] for r in (await deals.list(where={"name": "O'Brien; DROP TABLE deal; --"})).records} == {
        "O'Brien; DROP TABLE deal; --"
    }

    evil_names = ['name" = name OR "1', "name; DROP TABLE deal", 'name"--', "stage) OR (1=1", "NAME", "id::text"]
    for name in evil_names:
        for call in (
            lambda: deals.list(where=[C(name, "eq", "x")]),
            lambda: deals.list(where={name: "x"}),
            lambda: deals.list(order_by=[name]),
            lambda: deals.list(order_by=["-" + name]),
            lambda: deals.list(fields=[name]),
            lambda: deals.list(expand=[name]),
            lambda: deals.count(where=[C(name, "is_null", True)]),
        ):
            with pytest.raises(ValidationFailed) as raised:
                await call()
            assert "unknown field" in raised.value.problems[0].message
        with pytest.raises(ValidationFailed):
            parse_filter_params(deals.entity, {name: "x", f"{name}[eq]": "x"})
    with pytest.raises(ValidationFailed):
        await deals.list(where=[C("name", "eq); DROP TABLE deal; --", "x")])
    with pytest.raises(ValidationFailed):
        parse_filter_params(deals.entity, {"name[eq] OR 1=1]": "x"})
    assert await deals.count() == 2
    async with db.connection() as c:
        assert await c.fetchval(f"SELECT count(*) FROM {deals.entity.table}") == 2


# -- deep pages read an index --------------------------------------------------------

BIG = {
    "type": "object",
    "x-xrm": {"name": "big", "label": {"en": "Big"}, "indexes": [{"fields": ["score"]}]},
    "properties": {"score": {"type": "integer"}, "label": {"type": "string"}},
}


def _plan_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    nodes = [plan]
    for child in plan.get("Plans", []):
        nodes.extend(_plan_nodes(child))
    return nodes


async def test_a_deep_page_reads_an_index_not_the_whole_table(
    db: Database, make_entities: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    reg = await make_entities(copy.deepcopy(BIG))
    big = RecordService(db, reg, "big", ANNA)
    table = big.entity.table
    async with db.connection() as c:
        # 20,000 rows with one created_at, duplicate scores, and NULLs (5 %).
        await c.execute(
            f"INSERT INTO {table} (score, label) SELECT CASE WHEN i % 20 = 0 THEN NULL ELSE (i * 7919) % 5000 END, "
            "'row ' || i FROM generate_series(1, 20000) AS i"
        )
        await c.execute(f"ANALYZE {table}")

    for order_by, deep in (
        (["score"], [C("score", "gte", 4000)]),
        (["-score"], [C("score", "lte", 900)]),
        (["score", "-label"], [C("score", "gte", 3000)]),  # the range on score plus an OR for the rest
        (None, None),
    ):
        if deep is not None:
            cursor = (await big.list(order_by=order_by, where=deep, limit=1)).next_cursor
        else:  # the default order: created_at (equal for all rows here), id
            cursor = None
            for _ in range(15):
                cursor = (await big.list(order_by=order_by, limit=1000, after=cursor, fields=["id"])).next_cursor
        assert cursor is not None
        async with logged_queries(db, monkeypatch) as executed:
            page = await big.list(order_by=order_by, limit=50, after=cursor)
        assert len(page.records) == 50
        ((sql, args),) = [(q, a) for q, a in executed if table in q]  # one statement for the page
        async with db.connection() as c:
            (plan,) = await c.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", *args)
        nodes = _plan_nodes(plan["Plan"])
        kinds = [n["Node Type"] for n in nodes]
        scans = [n for n in nodes if "Scan" in n["Node Type"]]
        # Rows the scans read: returned plus thrown away by a filter.
        read = sum((n["Actual Rows"] + n.get("Rows Removed by Filter", 0)) * n.get("Actual Loops", 1) for n in scans)
        assert "Seq Scan" not in kinds and "Sort" not in kinds, (order_by, kinds)
        assert scans and all(n["Node Type"] in ("Index Scan", "Index Only Scan") and "Index Cond" in n for n in scans), scans
        assert read < 500, (order_by, read, kinds)  # not the 15,000 rows before the page
