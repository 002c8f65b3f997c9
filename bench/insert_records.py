"""Benchmark: inserting records through RecordService vs raw asyncpg.

    .venv/bin/python bench/insert_records.py [--rows 100000] [--sample 2000] [--chunk 1000]

Creates entity "bench_contact" and inserts the same deterministic rows
(random.Random(42)) four ways:

  COPY (plain table)        asyncpg copy_records_to_table into a plain table with
                            the same field columns (+ id uuid primary key): the floor
  COPY (entity table shape) the same into CREATE TABLE ... (LIKE bench_contact
                            INCLUDING ALL): same checks, generated search column and
                            indexes as the entity table, still no validation/outbox
  executemany INSERT        asyncpg executemany of a parameterised INSERT (plain table)
  create_many               RecordService.create_many, one call (= one transaction)
                            per chunk: validation, INSERT ... RETURNING and an
                            outbox event per record
  of which validation      RecordValidator alone (to_json_form + problems) over
                            the same rows, no database: the Python share of create_many
  create (one by one)       RecordService.create for a smaller sample: one
                            transaction per record

Ratios compare time per record with the plain-table COPY of the same run.
Uses a throwaway embedded PostgreSQL, or a fresh database on XRM_DATABASE_URL.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import decimal
import random
import sys
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import bench_server, checkpoint, fmt_rate, fmt_ratio, fmt_seconds, print_table, timed  # noqa: E402

from xrm.db.database import Database  # noqa: E402
from xrm.identifiers import quote_ident  # noqa: E402
from xrm.records.principal import SYSTEM_PRINCIPAL  # noqa: E402
from xrm.records.service import RecordService  # noqa: E402
from xrm.registry import Registry  # noqa: E402
from xrm.schema.ddl import create_table_statements, qualified  # noqa: E402
from xrm.schema.definition import parse_definition  # noqa: E402

ENTITY = "bench_contact"
STAGES = ["lead", "qualified", "proposal", "negotiation", "won", "lost"]
DOCUMENT: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "x-xrm": {"name": ENTITY, "label": {"en": "Bench contact"}},
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "maxLength": 200},
        "email": {"type": "string", "format": "email"},
        "revenue": {"type": "number", "minimum": 0, "x-xrm": {"precision": 14, "scale": 2}},
        "stage": {"type": "string", "enum": STAGES},
        "signed_on": {"type": "string", "format": "date"},
    },
}
FIELDS = list(DOCUMENT["properties"])

FIRST = ["Anna", "Ben", "Clara", "David", "Eva", "Felix", "Greta", "Hugo", "Ida", "Jonas", "Klara", "Luis"]
LAST = ["Meyer", "Schmidt", "Novak", "Rossi", "Dubois", "Smith", "Jansen", "Kowalski", "Berg", "Lund"]


def generate_rows(count: int) -> list[dict[str, Any]]:
    """Records in their JSON form (what an API client would send)."""
    rng = random.Random(42)
    start = dt.date(2015, 1, 1)
    rows = []
    for i in range(count):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        row: dict[str, Any] = {"name": f"{first} {last} {i}"}
        if rng.random() < 0.9:
            row["email"] = f"{first.lower()}.{last.lower()}{i}@example.com"
        if rng.random() < 0.8:
            row["revenue"] = decimal.Decimal(rng.randrange(0, 10_000_000_00)).scaleb(-2)
        row["stage"] = rng.choice(STAGES)
        if rng.random() < 0.5:
            row["signed_on"] = (start + dt.timedelta(days=rng.randrange(0, 3650))).isoformat()
        rows.append(row)
    return rows


def raw_tuples(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """The same rows as column values (uuid id first) for asyncpg."""
    rng = random.Random(7)
    result = []
    for row in rows:
        signed_on = row.get("signed_on")
        result.append(
            (
                uuid.UUID(int=rng.getrandbits(128), version=4),
                row["name"],
                row.get("email"),
                row.get("revenue"),
                row.get("stage"),
                dt.date.fromisoformat(signed_on) if signed_on else None,
            )
        )
    return result


async def create_entity(db: Database) -> tuple[Registry, str]:
    """Through SchemaService if present, else directly with the DDL helpers."""
    try:
        from xrm.schema.service import SchemaService
    except ImportError:
        SchemaService = None  # type: ignore[assignment,misc]  # noqa: N806
    if SchemaService is not None:
        await SchemaService(db).apply([DOCUMENT], principal=SYSTEM_PRINCIPAL)
        how = "SchemaService.apply"
    else:
        definition = parse_definition(DOCUMENT, known_entities=[])
        async with db.transaction() as tx:
            for statement in create_table_statements(definition):
                await tx.connection.execute(statement)
            await tx.connection.execute(
                "INSERT INTO xrm_sys.entity (name, version, definition) VALUES ($1, 1, $2)", ENTITY, DOCUMENT
            )
        how = "create_table_statements (xrm.schema.service not importable)"
    return await Registry().load(db), how


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows for COPY, executemany and create_many (default 100000)")
    parser.add_argument("--sample", type=int, default=2_000, help="rows for one-by-one create (default 2000)")
    parser.add_argument("--chunk", type=int, default=1_000, help="records per create_many call (default 1000)")
    args = parser.parse_args()
    sample = min(args.sample, args.rows)

    rows = generate_rows(args.rows)
    tuples = raw_tuples(rows)

    async with bench_server() as server:
        print(f"server: PostgreSQL {server.version}, {server.description}")
        db = await Database(server.uri).open()
        try:
            registry, how = await create_entity(db)
            entity = registry.get(ENTITY)
            print(f"entity {ENTITY} created via {how}")
            columns = ["id"] + [c.name for f in entity.fields.values() for c in f.columns()]
            types = ["uuid"] + [c.sql_type for f in entity.fields.values() for c in f.columns()]
            assert columns == ["id", *FIELDS], columns

            async with db.connection() as connection:
                # Raw targets. raw_copy/raw_insert: plain tables, same field columns.
                # raw_like: the entity table's shape (checks, generated
                # search_vector, indexes); COPY leaves the generated column out.
                for table in ("raw_copy", "raw_insert"):
                    body = ", ".join(
                        f"{quote_ident(c)} {t}{' PRIMARY KEY' if c == 'id' else ''}{' NOT NULL' if c == 'name' else ''}"
                        for c, t in zip(columns, types)
                    )
                    await connection.execute(f"CREATE TABLE {table} ({body})")
                await connection.execute(f"CREATE TABLE raw_like (LIKE {qualified(ENTITY)} INCLUDING ALL)")
                await connection.execute("VACUUM ANALYZE")

            results: list[tuple[str, int, float]] = []

            async def copy_into(table: str) -> None:
                async with db.connection() as connection:
                    await checkpoint(connection)
                    seconds, _ = await timed(connection.copy_records_to_table(table, records=tuples, columns=columns))
                    assert await connection.fetchval(f"SELECT count(*) FROM {table}") == args.rows
                label = "COPY (plain table)" if table == "raw_copy" else "COPY (entity table shape)"
                results.append((label, args.rows, seconds))

            # (a) COPY
            await copy_into("raw_copy")
            await copy_into("raw_like")

            # (b) executemany INSERT
            async with db.connection() as connection:
                await checkpoint(connection)
                placeholders = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
                sql = f"INSERT INTO raw_insert ({', '.join(map(quote_ident, columns))}) VALUES ({placeholders})"
                seconds, _ = await timed(connection.executemany(sql, tuples))
                assert await connection.fetchval("SELECT count(*) FROM raw_insert") == args.rows
            results.append(("executemany INSERT", args.rows, seconds))

            # (c) RecordService.create_many, one transaction per chunk
            service = RecordService(db, registry, ENTITY, SYSTEM_PRINCIPAL)

            async def create_in_chunks() -> None:
                for start in range(0, len(rows), args.chunk):
                    await service.create_many(rows[start : start + args.chunk])

            async with db.connection() as connection:
                await checkpoint(connection)
            seconds, _ = await timed(create_in_chunks())
            async with db.connection() as connection:
                assert await connection.fetchval(f"SELECT count(*) FROM {entity.table}") == args.rows
                events = await connection.fetchval(
                    "SELECT count(*) FROM xrm_sys.outbox WHERE topic = 'record.created' AND entity = $1", ENTITY
                )
                assert events == args.rows, events
            results.append((f"create_many ({args.chunk}/transaction)", args.rows, seconds))

            # For reading (c): the Python validation alone, no database.
            def validate_all() -> None:
                for row in rows:
                    problems = entity.validator.problems(entity.validator.to_json_form(row))
                    assert not problems, problems

            async def run_validation() -> None:
                validate_all()

            seconds, _ = await timed(run_validation())
            results.append(("  of which validation (no DB)", args.rows, seconds))

            # (d) RecordService.create, one transaction per record (on an emptied table)
            async with db.connection() as connection:
                await connection.execute(f"TRUNCATE {entity.table}")
                await connection.execute("TRUNCATE xrm_sys.outbox")
                await checkpoint(connection)

            async def create_one_by_one() -> None:
                for row in rows[:sample]:
                    await service.create(row)

            seconds, _ = await timed(create_one_by_one())
            async with db.connection() as connection:
                assert await connection.fetchval(f"SELECT count(*) FROM {entity.table}") == sample
                assert await connection.fetchval("SELECT count(*) FROM xrm_sys.outbox") == sample
            results.append(("create (1/transaction)", sample, seconds))
        finally:
            await db.close()

    baseline = results[0][2] / results[0][1]  # seconds per record, plain COPY
    print()
    print(f"insert_records: {args.rows:,} rows (one-by-one sample: {sample:,}); ratio = time per record / COPY's")
    print_table(
        ["method", "rows", "seconds", "records/s", "vs COPY"],
        [
            (label, f"{n:,}", fmt_seconds(s), fmt_rate(n / s), fmt_ratio((s / n) / baseline))
            for label, n, s in results
        ],
    )


if __name__ == "__main__":
    asyncio.run(main())
