"""Benchmark: schema changes through SchemaService on a large entity table.

    .venv/bin/python bench/schema_apply.py [--rows 1000000]

Creates entity "bench_big" (name text, amount integer, code text) through
SchemaService, fills it with N rows (INSERT ... SELECT generate_series), then
times four changes, each a full definition passed to SchemaService.apply
(plan() is timed separately as a dry run):

  add field      a nullable text field "note" (metadata only in PostgreSQL)
  rename field   amount -> total (x-xrm.renamed_from on the new property)
  change type    code: text holding digits -> integer (checks every value,
                 archives the old values, rewrites the column)
  remove field   total (values copied to the archive, then the column dropped)

Baselines from the same run: SELECT count(*) on the entity table (a full scan;
every ratio is against it) and the bare DDL for each change (ADD COLUMN,
RENAME COLUMN, ALTER COLUMN TYPE ... USING, DROP COLUMN) on a copy of the
table with the same shape (CREATE TABLE ... (LIKE bench_big INCLUDING ALL):
same checks, generated search column and indexes) and the same rows. Uses a throwaway embedded PostgreSQL, or a fresh database on
XRM_DATABASE_URL.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import bench_server, checkpoint, fmt_ratio, fmt_seconds, print_table, timed  # noqa: E402

from xrm.db.database import Database  # noqa: E402
from xrm.records.principal import SYSTEM_PRINCIPAL  # noqa: E402
from xrm.schema.ddl import qualified  # noqa: E402

ENTITY = "bench_big"
TABLE = qualified(ENTITY)
SCANS = 3


def document(properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "x-xrm": {"name": ENTITY, "label": {"en": "Bench big"}},
        "properties": copy.deepcopy(properties),
    }


NAME = {"type": "string", "maxLength": 200}
TEXT = {"type": "string"}
INTEGER = {"type": "integer"}

DOC_CREATE = document({"name": NAME, "amount": INTEGER, "code": TEXT})
DOC_ADD = document({"name": NAME, "amount": INTEGER, "code": TEXT, "note": TEXT})
DOC_RENAME = document(
    {"name": NAME, "total": {**INTEGER, "x-xrm": {"renamed_from": "amount"}}, "code": TEXT, "note": TEXT}
)
DOC_CONVERT = document({"name": NAME, "total": INTEGER, "code": INTEGER, "note": TEXT})
DOC_REMOVE = document({"name": NAME, "code": INTEGER, "note": TEXT})

CHANGES = [
    # (label, document, expected step actions, label of the bare DDL, bare DDL on the copy)
    ("add nullable field", DOC_ADD, {"add_field"}, "ADD COLUMN", "ALTER TABLE raw_big ADD COLUMN note text"),
    (
        "rename field",
        DOC_RENAME,
        {"rename_field"},
        "RENAME COLUMN",
        "ALTER TABLE raw_big RENAME COLUMN amount TO total",
    ),
    (
        "change type text->integer",
        DOC_CONVERT,
        {"alter_field"},
        "ALTER COLUMN TYPE",
        # the text field's length CHECK (ck_code) must go first, as in the service
        "ALTER TABLE raw_big DROP CONSTRAINT ck_code, ALTER COLUMN code TYPE bigint USING code::bigint",
    ),
    ("remove field (archived)", DOC_REMOVE, {"archive_field"}, "DROP COLUMN", "ALTER TABLE raw_big DROP COLUMN total"),
]


async def bulk_fill(connection: Any, table: str, insert_sql: str) -> None:
    """Run `insert_sql` with the table's secondary indexes dropped, then rebuild them.

    (Building a GIN index once is much faster than updating it row by row.)
    """
    indexes = await connection.fetch(
        "SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS definition "
        "FROM pg_index i WHERE i.indrelid = $1::regclass AND NOT i.indisprimary",
        table,
    )
    async with connection.transaction():
        for index in indexes:
            await connection.execute(f"DROP INDEX {index['name']}")
        await connection.execute(insert_sql)
        for index in indexes:
            await connection.execute(index["definition"])


def load_schema_service() -> Any:
    try:
        from xrm.schema.service import SchemaService
    except ImportError as error:
        print(f"schema_apply: skipped, xrm.schema.service is not importable yet ({error}).")
        print("This benchmark measures SchemaService.plan/apply; run it once the service exists.")
        sys.exit(0)
    return SchemaService


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in bench_big (default 1000000)")
    args = parser.parse_args()
    SchemaService = load_schema_service()  # noqa: N806

    async with bench_server() as server:
        print(f"server: PostgreSQL {server.version}, {server.description}")
        db = await Database(server.uri).open()
        try:
            service = SchemaService(db)
            await service.apply([DOC_CREATE], principal=SYSTEM_PRINCIPAL)

            async with db.connection() as connection:
                seconds, _ = await timed(
                    bulk_fill(
                        connection,
                        TABLE,
                        f"INSERT INTO {TABLE} (name, amount, code) "
                        f"SELECT 'Name ' || g, g % 100000, (g % 1000000)::text FROM generate_series(1, {int(args.rows)}) g",
                    )
                )
                print(f"filled {ENTITY} with {args.rows:,} rows in {fmt_seconds(seconds)} s")
                # The copy for the bare DDL: same columns, checks, generated
                # search column and indexes (a rewrite rebuilds them all).
                await connection.execute(f"CREATE TABLE raw_big (LIKE {TABLE} INCLUDING ALL)")
                columns = "id, created_at, created_by, updated_at, updated_by, owner_id, version, deleted_at, name, amount, code"
                await bulk_fill(connection, "raw_big", f"INSERT INTO raw_big ({columns}) SELECT {columns} FROM {TABLE}")
                await connection.execute("VACUUM ANALYZE")
                await checkpoint(connection)
                size = await connection.fetchval(f"SELECT pg_size_pretty(pg_total_relation_size('{TABLE}'))")
                print(f"{ENTITY}: {size} with indexes")

                scans = []
                for _ in range(SCANS):
                    seconds, count = await timed(connection.fetchval(f"SELECT count(*) FROM {TABLE}"))
                    assert count == args.rows, count
                    scans.append(seconds)
                scan = min(scans)

            results: list[tuple[str, float, str, str]] = [
                (f"scan: SELECT count(*) (best of {SCANS})", scan, "", "")
            ]

            for label, doc, actions, raw_label, raw_sql in CHANGES:
                async with db.connection() as connection:
                    await checkpoint(connection)
                    raw_seconds, _ = await timed(connection.execute(raw_sql))
                results.append((f"raw {raw_label} (copy)", raw_seconds, "", ""))

                plan_seconds, plan = await timed(service.plan([doc]))
                got = {step.action for step in plan.steps}
                assert got == actions and not plan.refusals, plan.render()
                async with db.connection() as connection:
                    await checkpoint(connection)
                seconds, applied = await timed(
                    service.apply([doc], principal=SYSTEM_PRINCIPAL, allow_destructive=True)
                )
                assert applied.changeset_id is not None, applied.render()
                print(f"\n{label}: plan {fmt_seconds(plan_seconds)} s, apply {fmt_seconds(seconds)} s")
                print(applied.render())
                impact = "; ".join(s.impact for s in applied.steps if s.impact) or "-"
                results.append((f"SchemaService: {label}", seconds, fmt_seconds(plan_seconds), impact))

            async with db.connection() as connection:
                code_type = await connection.fetchval(
                    "SELECT data_type FROM information_schema.columns "
                    "WHERE table_schema = 'public' AND table_name = $1 AND column_name = 'code'",
                    ENTITY,
                )
                assert code_type == "bigint", code_type
                archived = await connection.fetch(
                    "SELECT field, reason, row_count FROM xrm_sys.archive_batch ORDER BY id"
                )
                print("\narchive batches: " + ", ".join(f"{r['field']} ({r['reason']}): {r['row_count']:,}" for r in archived))
        finally:
            await db.close()

    print()
    print(f"schema_apply: {args.rows:,} rows; ratio = seconds / full-scan seconds")
    print_table(
        ["operation", "seconds", "vs scan", "plan s", "impact (from the plan)"],
        [(label, fmt_seconds(s), fmt_ratio(s / scan), plan_s, impact) for label, s, plan_s, impact in results],
        align="lrrrl",
    )


if __name__ == "__main__":
    asyncio.run(main())
