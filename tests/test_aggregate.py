"""RecordService.aggregate against a real PostgreSQL: grouped numbers equal plain SQL, over permitted rows only.

Every aggregate is checked against an independent SQL statement (or a Python
computation over the rows), for an admin and for a user who may read only
their own records; refusals name the part of the request.
"""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from typing import Any

import pytest

from xrm.auth import UserService
from xrm.db.database import Database
from xrm.errors import ValidationFailed
from xrm.records.principal import SYSTEM_PRINCIPAL
from xrm.records.service import RecordService
from xrm.security.model import SecurityService
from xrm.security.policy import RolePolicy

D = decimal.Decimal

ACCOUNT = {
    "type": "object",
    "x-xrm": {"name": "account", "label": {"en": "Account"}, "display_field": "name"},
    "required": ["name"],
    "properties": {"name": {"type": "string"}, "revenue": {"x-xrm": {"type": "currency", "sensitive": True}}},
}
DEAL = {
    "type": "object",
    "x-xrm": {"name": "deal", "label": {"en": "Deal"}},
    "properties": {
        "title": {"type": "string"},
        "stage": {"type": "string", "enum": ["open", "won", "lost"]},
        "amount": {"x-xrm": {"type": "currency", "currencies": ["EUR", "USD"]}},
        "seats": {"type": "integer"},
        "close_date": {"type": "string", "format": "date"},
        "closed_at": {"type": "string", "format": "date-time"},
        "notes": {"x-xrm": {"type": "long_text"}},
        "account": {"x-xrm": {"type": "reference", "references": "account"}},
    },
}


@pytest.fixture
async def world(db: Database, make_entities: Any) -> dict[str, Any]:
    registry = await make_entities(dict(ACCOUNT), dict(DEAL))
    policy = RolePolicy()
    await policy.load(db)
    security = SecurityService(db, policy, registry)
    users = UserService(db)
    ids = {name: (await users.create_user(name, "a-long-password")).id for name in ("boss", "rep")}
    await security.create_role("own_deals")
    await security.grant("own_deals", "deal", "read", "own")
    await security.grant("own_deals", "account", "read", "own")
    await security.grant_role("rep", "own_deals")
    await security.grant_role("boss", "admin")
    system_accounts = RecordService(db, registry, "account", SYSTEM_PRINCIPAL)
    acme = await system_accounts.create({"name": "ACME", "revenue": {"amount": D("100"), "currency": "EUR"}})
    globex = await system_accounts.create({"name": "Globex"})
    system = RecordService(db, registry, "deal", SYSTEM_PRINCIPAL)
    rows = [
        # title, stage, amount, currency, seats, close_date, owner, account
        ("a", "won", "100.50", "EUR", 3, "2026-01-15", "rep", acme),
        ("b", "won", "200", "EUR", 5, "2026-01-31", "boss", acme),
        ("c", "won", "300", "USD", None, "2026-02-01", "rep", globex),
        ("d", "open", "50", "EUR", 1, "2026-04-10", "rep", globex),
        ("e", "lost", None, None, 2, None, "boss", None),
        ("f", "open", "999", "EUR", 7, "2025-12-31", "boss", globex),
    ]
    for title, stage, amount, currency, seats, close, owner, account in rows:
        values: dict[str, Any] = {"title": title, "stage": stage, "seats": seats, "close_date": close,
                                  "account": account["id"] if account else None}
        if amount is not None:
            values["amount"] = {"amount": D(amount), "currency": currency}
        record = await system.create({k: v for k, v in values.items() if v is not None})
        async with db.connection() as connection:
            await connection.execute("UPDATE public.deal SET owner_id = $2 WHERE id = $1", record["id"], ids[owner])
    async with db.connection() as connection:
        await connection.execute("UPDATE public.account SET owner_id = $2 WHERE id = $1", acme["id"], ids["rep"])
    return {
        "db": db, "registry": registry, "policy": policy, "acme": acme["id"], "globex": globex["id"],
        "boss": await security.principal_for_user("boss"), "rep": await security.principal_for_user("rep"),
    }


def deals(world: dict[str, Any], who: str, entity: str = "deal") -> RecordService:
    return RecordService(world["db"], world["registry"], entity, world[who], world["policy"])


async def sql(world: dict[str, Any], statement: str) -> list[Any]:
    async with world["db"].connection() as connection:
        return [tuple(row) for row in await connection.fetch(statement)]


async def test_count_and_sums_by_stage_equal_sql_for_everyone_who_may_read_all(world: dict[str, Any]) -> None:
    result = await deals(world, "boss").aggregate(group_by=["stage"], measures=["count", "sum:amount", "avg:seats"])
    assert result.groups == ["stage", "amount.currency"]  # a currency sum is split by currency
    got = [(r["stage"], r["amount.currency"], r["count"], r["sum:amount"], r["avg:seats"]) for r in result.rows]
    expected = await sql(world, """
        SELECT stage, amount_currency, count(*), sum(amount_amount), avg(seats) FROM public.deal
        WHERE deleted_at IS NULL GROUP BY 1, 2 ORDER BY 1 NULLS FIRST, 2 NULLS FIRST""")
    assert got == expected
    assert ("won", "EUR", 2, D("300.50"), D("4")) in got


async def test_a_user_who_reads_only_own_records_gets_numbers_over_those_only(world: dict[str, Any]) -> None:
    everything = await deals(world, "boss").aggregate(measures=["count", "max:seats"])
    own = await deals(world, "rep").aggregate(measures=["count", "max:seats"])
    assert everything.rows == [{"count": 6, "max:seats": 7}]
    assert own.rows == [{"count": 3, "max:seats": 3}]  # a, c, d


async def test_month_buckets_and_order_by_measure(world: dict[str, Any]) -> None:
    result = await deals(world, "boss").aggregate(
        group_by=["close_date:month"], measures=["count"], where=[("close_date", "is_null", False)])
    assert [(r["close_date:month"], r["count"]) for r in result.rows] == [
        (dt.date(2025, 12, 1), 1), (dt.date(2026, 1, 1), 2), (dt.date(2026, 2, 1), 1), (dt.date(2026, 4, 1), 1)]
    quarters = await deals(world, "boss").aggregate(group_by=["close_date:quarter"], order_by=["-count"], limit=1)
    assert quarters.rows == [{"close_date:quarter": dt.date(2026, 1, 1), "count": 3}]
    assert quarters.truncated


async def test_top_accounts_by_amount_with_labels_of_readable_accounts_only(world: dict[str, Any]) -> None:
    request = {"group_by": ["account"], "measures": ["sum:amount"], "where": {"amount.currency": "EUR"},
               "order_by": ["-sum:amount"], "limit": 2}
    boss = await deals(world, "boss").aggregate(**request)
    assert [(r["account"], r["sum:amount"]) for r in boss.rows] == [(world["globex"], D("1049")), (world["acme"], D("300.50"))]
    assert boss.labels["account"] == {world["globex"]: "Globex", world["acme"]: "ACME"}
    rep = await deals(world, "rep").aggregate(**request)
    assert [(r["account"], r["sum:amount"]) for r in rep.rows] == [(world["acme"], D("100.50")), (world["globex"], D("50"))]
    assert rep.labels["account"] == {world["acme"]: "ACME"}  # Globex is not the rep's to open


@pytest.mark.parametrize(("request_", "at", "words"), [
    ({"group_by": ["nope"]}, "/group_by/0", "unknown field"),
    ({"group_by": ["stage:month"]}, "/group_by/0", "only date and datetime"),
    ({"group_by": ["close_date:fortnight"]}, "/group_by/0", "not a date bucket"),
    ({"group_by": ["notes"]}, "/group_by/0", "cannot be grouped"),
    ({"measures": ["sum:title"]}, "/measures/0", "does not apply"),
    ({"measures": ["median:seats"]}, "/measures/0", "not a measure"),
    ({"measures": ["count", "sum"]}, "/measures/1", "needs a field"),
    ({"order_by": ["-seats"]}, "/order_by/0", "must name a group or measure"),
    ({"limit": 0}, "/limit", "from 1 to"),
])
async def test_bad_requests_name_the_part(world: dict[str, Any], request_: dict[str, Any], at: str, words: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        await deals(world, "boss").aggregate(**request_)
    assert [(p.pointer, words in p.message) for p in refused.value.problems] == [(at, True)]


async def test_a_sensitive_field_cannot_be_aggregated_without_its_grant(world: dict[str, Any]) -> None:
    with pytest.raises(ValidationFailed) as refused:
        await deals(world, "rep", "account").aggregate(measures=["sum:revenue"])
    assert "sensitive" in refused.value.problems[0].message
    admin = await deals(world, "boss", "account").aggregate(measures=["sum:revenue"])
    assert admin.rows == [{"revenue.currency": None, "sum:revenue": None}, {"revenue.currency": "EUR", "sum:revenue": D("100")}]
