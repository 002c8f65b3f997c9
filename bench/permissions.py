"""Benchmark: list and count as a user who sees ~1% of the records (team scope) vs as admin.

    .venv/bin/python bench/permissions.py [--rows 1000000] [--teams 100] [--team-size 5] [--shares 20]
                                          [--reps 50] [--warmup 5]

Creates entity "bench_deal" (title text, stage select, amount decimal, close_date
date; indexes on stage and close_date as the shipped deal has) through
SchemaService.apply and fills it with INSERT ... SELECT generate_series (the
table's secondary indexes dropped during the fill and rebuilt: the platform's
own, owner_id index included). Through the security model's API
(UserService, SecurityService) it creates --teams teams of --team-size users
each, an admin user, and a role "bench_team_reader" with read scope `team` on
bench_deal; every row is owned by one of the users, spread evenly (a hash of
the row number), so one team owns ~1/--teams of the rows. --shares records
owned by other teams are shared with the restricted user (the predicate's
share arm then has something to find).

Both principals come from UserService.principal_for_token (what every API
request does: resolve_principal with the owner sets). Each query runs through
RecordService with the platform's RolePolicy, --warmup times, then --reps
times per principal (admin and restricted alternating), on one pooled
connection (so the server's plan cache can be read afterwards). Prints p50/p95
per principal and p95 restricted / p95 admin, then EXPLAIN (ANALYZE, BUFFERS)
of each restricted query, with the plan mode (custom or generic) that its
prepared statement used in the timed loop.

Uses a throwaway embedded PostgreSQL, or a fresh database on XRM_DATABASE_URL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import bench_server, fmt_seconds, percentile, print_table, timed  # noqa: E402

import asyncpg  # noqa: E402

import xrm.auth  # noqa: E402
from xrm.auth import UserService  # noqa: E402
from xrm.db.database import Database  # noqa: E402
from xrm.records.principal import SYSTEM_PRINCIPAL, Principal  # noqa: E402
from xrm.records.service import RecordService  # noqa: E402
from xrm.registry import Registry  # noqa: E402
from xrm.schema.service import SchemaService  # noqa: E402
from xrm.security.model import SecurityService  # noqa: E402
from xrm.security.policy import RolePolicy  # noqa: E402

ENTITY = "bench_deal"
ROLE = "bench_team_reader"
STAGES = ["prospecting", "qualification", "negotiation", "won", "lost"]
FILTER_STAGE = "won"
LIMIT = 50
DOCUMENT: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "x-xrm": {
        "name": ENTITY,
        "label": {"en": "Bench deal"},
        "display_field": "title",
        "indexes": [{"fields": ["stage"]}, {"fields": ["close_date"]}],
    },
    "required": ["title", "stage"],
    "properties": {
        "title": {"type": "string", "maxLength": 200},
        "stage": {"type": "string", "enum": STAGES},
        "amount": {"type": "number", "minimum": 0, "x-xrm": {"precision": 14, "scale": 2}},
        "close_date": {"type": "string", "format": "date"},
    },
}


@dataclass
class Case:
    label: str
    run: Callable[[RecordService], Awaitable[Any]]
    shown: Callable[[Any], str]


def page_size(page: Any) -> str:
    return f"{len(page.records)} recs"


CASES = [
    Case("list page 1 (created_at order)", lambda s: s.list(limit=LIMIT), page_size),
    Case("list page 1 sort=-amount", lambda s: s.list(order_by=["-amount"], limit=LIMIT), page_size),
    Case(f"list stage={FILTER_STAGE}", lambda s: s.list(where={"stage": FILTER_STAGE}, limit=LIMIT), page_size),
    Case("list page 1 + total", lambda s: s.list(limit=LIMIT, with_total=True), lambda p: f"total {p.total:,}"),
    Case("count()", lambda s: s.count(), lambda n: f"{n:,}"),
    Case(f"count(stage={FILTER_STAGE})", lambda s: s.count(where={"stage": FILTER_STAGE}), lambda n: f"{n:,}"),
]


async def bulk_fill(connection: asyncpg.Connection, table: str, insert_sql: str, *args: Any) -> None:
    """Run `insert_sql` with the table's secondary indexes dropped, then rebuild them (as schema_apply.py)."""
    indexes = await connection.fetch(
        "SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS definition "
        "FROM pg_index i WHERE i.indrelid = $1::regclass AND NOT i.indisprimary",
        table,
    )
    async with connection.transaction():
        for index in indexes:
            await connection.execute(f"DROP INDEX {index['name']}")
        await connection.execute(insert_sql, *args)
        for index in indexes:
            await connection.execute(index["definition"])


@contextlib.contextmanager
def captured_sql() -> Iterator[list[tuple[str, tuple[Any, ...]]]]:
    """The queries (fetch/fetchrow/fetchval) run on asyncpg connections while the block runs."""
    calls: list[tuple[str, tuple[Any, ...]]] = []
    names = ("fetch", "fetchrow", "fetchval")
    originals = {name: getattr(asyncpg.Connection, name) for name in names}

    def wrap(original: Any) -> Any:
        async def wrapper(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
            calls.append((query, args))
            return await original(self, query, *args, **kwargs)

        return wrapper

    for name, original in originals.items():
        setattr(asyncpg.Connection, name, wrap(original))
    try:
        yield calls
    finally:
        for name, original in originals.items():
            setattr(asyncpg.Connection, name, original)


def plan_lines(node: dict[str, Any], depth: int = 0) -> list[str]:
    """One line per plan node: type, relation/index, actual rows x loops, time, buffers."""
    kind = node["Node Type"]
    if node.get("Strategy") in ("Sorted", "Hashed", "Plain") and kind == "Aggregate":
        kind = f"{node['Strategy']} Aggregate" if node["Strategy"] != "Plain" else kind
    parts = [kind]
    if node.get("Parent Relationship") in ("InitPlan", "SubPlan"):
        parts[0] = f"[{node['Parent Relationship']}] {kind}"
    if "Index Name" in node:
        parts.append(f"using {node['Index Name']}")
    elif "Relation Name" in node:
        parts.append(f"on {node['Relation Name']}")
    text = " ".join(parts)
    actual = node.get("Actual Rows", 0)  # PostgreSQL 18 reports a fraction (an average over loops)
    details = [f"rows={actual:,.0f}" if float(actual).is_integer() else f"rows={actual:,.2f}"]
    if node.get("Actual Loops", 1) != 1:
        details.append(f"loops={node['Actual Loops']}")
    details.append(f"time={node.get('Actual Total Time', 0):.2f}ms")
    hit, read = node.get("Shared Hit Blocks", 0), node.get("Shared Read Blocks", 0)
    if hit or read:
        details.append(f"buffers={hit + read:,}" + (f" ({read:,} read)" if read else ""))
    if node.get("Rows Removed by Filter"):
        details.append(f"removed by filter={node['Rows Removed by Filter']:,}")
    if node.get("Exact Heap Blocks") or node.get("Lossy Heap Blocks"):
        details.append(f"heap blocks={node.get('Exact Heap Blocks', 0):,}"
                       + (f" lossy={node['Lossy Heap Blocks']:,}" if node.get("Lossy Heap Blocks") else ""))
    if "Sort Method" in node:
        details.append(node["Sort Method"])
    if node.get("Workers Launched"):
        details.append(f"workers={node['Workers Launched']}")
    lines = [f"{'  ' * depth}{text}  {' '.join(details)}"]
    for child in node.get("Plans", []):
        lines.extend(plan_lines(child, depth + 1))
    return lines


async def explain(connection: asyncpg.Connection, sql: str, args: tuple[Any, ...], mode: str) -> list[str]:
    """EXPLAIN (ANALYZE, BUFFERS) of one statement with plan_cache_mode forced to `mode`'s plan."""
    async with connection.transaction():
        await connection.execute(f"SET LOCAL plan_cache_mode = force_{mode}_plan")
        result = await connection.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}", *args)
    top = result[0]
    return plan_lines(top["Plan"]) + [
        f"planning {top['Planning Time']:.2f} ms, execution {top['Execution Time']:.2f} ms"
    ]


async def create_security(db: Database, registry: Registry, policy: RolePolicy, teams: int, team_size: int) -> list[str]:
    """Teams, users, the admin and the restricted role, through UserService and SecurityService."""
    users = UserService(db)
    security = SecurityService(db, policy, registry)
    await security.create_role(ROLE, "bench: read bench_deal at scope team")
    await security.grant(ROLE, ENTITY, "read", "team")
    await users.create_user("bench_admin", "bench-password", ["admin"])
    names = []
    for t in range(teams):
        team = f"Team {t:03d}"
        await security.create_team(team)
        for m in range(team_size):
            name = f"bench_u{t * team_size + m:04d}"
            await users.create_user(name, "bench-password", [ROLE])
            await security.add_member(team, name)
            names.append(name)
    return names


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="records in bench_deal (default 1000000)")
    parser.add_argument("--teams", type=int, default=100, help="teams (default 100)")
    parser.add_argument("--team-size", type=int, default=5, help="users per team (default 5)")
    parser.add_argument("--shares", type=int, default=20, help="other teams' records shared with the restricted user (default 20)")
    parser.add_argument("--reps", type=int, default=50, help="timed repetitions per query and principal (default 50)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed runs per query and principal first (default 5)")
    args = parser.parse_args()

    # The users' passwords are never used: hash them cheaply (argon2 defaults take ~0.16 s each here).
    from argon2 import PasswordHasher

    xrm.auth._hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)

    async with bench_server() as server:
        print(f"server: PostgreSQL {server.version}, {server.description}")
        db = await Database(server.uri).open()
        measure_db: Database | None = None
        try:
            await SchemaService(db).apply([DOCUMENT], principal=SYSTEM_PRINCIPAL)
            registry = await Registry().load(db)
            table = registry.get(ENTITY).table
            policy = await RolePolicy().load(db)

            seconds, user_names = await timed(create_security(db, registry, policy, args.teams, args.team_size))
            print(f"{args.teams} teams x {args.team_size} users, role {ROLE} (read: team) in {fmt_seconds(seconds)} s")

            async with db.connection() as connection:
                ids = await connection.fetch(
                    "SELECT id FROM xrm_sys.app_user WHERE name = ANY($1::text[]) ORDER BY name", user_names
                )
                owners = [r["id"] for r in ids]
                # Row g: owner = one of the users by a hash of g (evenly spread over the table), created one
                # minute after row g-1 (so created_at order is insertion order, as in a real table). Stage,
                # amount and close date from other hashes, independent of the owner (hashint8(g) would not
                # do: for values in int4 range it equals hashint4(g), and every owner had one stage only).
                fill = (
                    f"INSERT INTO {table} (created_at, updated_at, created_by, owner_id, title, stage, amount, close_date) "
                    "SELECT ts, ts, o, o, 'Deal ' || g, "
                    "($2::text[])[1 + (hashint4(g + 29) & 2147483647) % 5], "
                    "((hashint4(g + 7) & 2147483647) % 10000000) / 100.0, "
                    "date '2020-01-01' + (hashint4(g + 13) & 2147483647) % 2000 "
                    "FROM (SELECT g, timestamptz '2020-01-01 00:00+00' + g * interval '1 minute' AS ts, "
                    "($1::uuid[])[1 + (hashint4(g) & 2147483647) % cardinality($1::uuid[])] AS o "
                    f"FROM generate_series(1, {int(args.rows)}) g) s"
                )
                seconds, _ = await timed(bulk_fill(connection, table, fill, owners, STAGES))
                print(f"filled {ENTITY} with {args.rows:,} rows in {fmt_seconds(seconds)} s")

            # The restricted user: the first member of the first team; the admin holds role admin.
            restricted_name = user_names[0]
            security = SecurityService(db, policy, registry)
            team_members = (await security.get_team("Team 000"))["members"]
            async with db.connection() as connection:
                team_ids = [r["id"] for r in await connection.fetch(
                    "SELECT id FROM xrm_sys.app_user WHERE name = ANY($1::text[])", team_members)]
                shared = [r["id"] for r in await connection.fetch(
                    f"SELECT id FROM {table} WHERE NOT owner_id = ANY($1::uuid[]) ORDER BY id LIMIT $2",
                    team_ids, args.shares)]
            for record_id in shared:
                await security.share(ENTITY, record_id, user=restricted_name)

            async with db.connection() as connection:
                seconds, _ = await timed(connection.execute("VACUUM ANALYZE"))
                print(f"VACUUM ANALYZE in {fmt_seconds(seconds)} s")
                size = await connection.fetchval(f"SELECT pg_size_pretty(pg_total_relation_size('{table}'))")
                indexes = await connection.fetch(
                    "SELECT indexrelid::regclass::text AS name, pg_size_pretty(pg_relation_size(indexrelid)) AS size "
                    "FROM pg_index WHERE indrelid = $1::regclass ORDER BY 1", table)
                listed = ", ".join(f"{i['name']} {i['size']}" for i in indexes)
                print(f"{table}: {size} with indexes ({listed})")
                expected = await connection.fetchval(
                    f"SELECT count(*) FROM {table} WHERE owner_id = ANY($1::uuid[]) OR id = ANY($2::uuid[])",
                    team_ids, shared)

            # Principals as an API request gets them: from a token (resolve_principal, with the owner sets).
            users = UserService(db)
            principals: dict[str, Principal] = {}
            for label, name in (("admin", "bench_admin"), ("restricted", restricted_name)):
                token, _ = await users.create_token(name, "bench")
                principal = await users.principal_for_token(token)
                assert principal is not None
                principals[label] = principal
            restricted = principals["restricted"]
            print(f"restricted user {restricted.name}: team scope = {len(restricted.team_owners | restricted.teams | {restricted.id})} "
                  f"owner ids, {len(shared)} shared records; sees {expected:,} of {args.rows:,} records "
                  f"({100 * expected / max(1, args.rows):.2f}%)")

            # One connection for every timed call, so its plan cache (pg_prepared_statements) tells what ran.
            measure_db = await Database(server.uri).open(min_size=1, max_size=1, bootstrap=False)
            services = {label: RecordService(measure_db, registry, ENTITY, p, policy) for label, p in principals.items()}
            assert await services["restricted"].count() == expected
            assert await services["admin"].count() == args.rows

            rows = []
            statements: dict[str, list[tuple[str, tuple[Any, ...]]]] = {}
            for case in CASES:
                shown = {}
                for label, service in services.items():
                    for _ in range(args.warmup):
                        shown[label] = case.shown(await case.run(service))
                times: dict[str, list[float]] = {label: [] for label in services}
                for i in range(args.reps):
                    order = ("admin", "restricted") if i % 2 == 0 else ("restricted", "admin")
                    for label in order:
                        start = time.perf_counter()
                        await case.run(services[label])
                        times[label].append((time.perf_counter() - start) * 1000)
                with captured_sql() as calls:
                    await case.run(services["restricted"])
                statements[case.label] = calls
                a, r = sorted(times["admin"]), sorted(times["restricted"])
                ratio = percentile(r, 0.95) / percentile(a, 0.95)
                rows.append((
                    case.label,
                    f"{percentile(a, 0.5):.2f}", f"{percentile(a, 0.95):.2f}",
                    f"{percentile(r, 0.5):.2f}", f"{percentile(r, 0.95):.2f}",
                    f"{percentile(r, 0.5) / percentile(a, 0.5):.2f}x", f"{ratio:.2f}x", "ok" if ratio <= 2 else "SLOWER",
                    shown["admin"], shown["restricted"],
                ))

            async with measure_db.connection() as connection:
                cache = {r["statement"]: (r["generic_plans"], r["custom_plans"]) for r in await connection.fetch(
                    "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements")}
                explained = []
                for case in CASES:
                    for sql, sql_args in statements[case.label]:
                        generic, custom = cache.get(sql, (0, 0))
                        mode = "generic" if generic > custom else "custom"
                        lines = await explain(connection, sql, sql_args, mode)
                        explained.append((case.label, sql, mode, generic, custom, lines))
        finally:
            if measure_db is not None:
                await measure_db.close()
            await db.close()

    print()
    print(f"permissions: {args.rows:,} records, restricted user sees {expected:,} ({100 * expected / max(1, args.rows):.2f}%: "
          f"scope team, {args.teams} teams x {args.team_size} users, {len(shared)} shares); "
          f"{args.reps} reps after {args.warmup} warm-up; ms; ratio = restricted / admin")
    print_table(
        ["query", "admin p50", "admin p95", "restr. p50", "restr. p95", "p50 ratio", "p95 ratio", "p95 <=2x",
         "admin result", "restr. result"],
        rows,
    )
    print()
    print("EXPLAIN (ANALYZE, BUFFERS) of the restricted queries (plan mode = what the timed loop's prepared statement used)")
    for label, sql, mode, generic, custom, lines in explained:
        short = sql if len(sql) < 160 else sql[:100] + " ... " + sql[-55:]
        print(f"\n-- {label}: {mode} plan (loop: {generic} generic, {custom} custom)")
        print(f"   {' '.join(short.split())}")
        for line in lines:
            print(f"   {line}")


if __name__ == "__main__":
    asyncio.run(main())
