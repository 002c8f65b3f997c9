"""Benchmark: server time to render a 50-row list page of the web UI over 1,000,000 deals.

    .venv/bin/python bench/ui_list.py [--rows 1000000] [--reps 40] [--warmup 5] [--deep 50000]

Applies the shipped entity_schemas/ (account, contact, deal) to a fresh
database, fills `deal` with --rows rows (INSERT ... SELECT generate_series,
secondary indexes dropped during the fill and rebuilt; every deal references
one of 1,000 accounts), logs an admin in through the login form, and then asks
the app in-process (Litestar TestClient, no network) for each page --reps
times. Baseline in the same run: the REST API's JSON for the same query
(`/api/v1/deal?...&limit=50&expand=account`), so the ratio is the cost of the
HTML page (session, navigation, permissions of the buttons, the capped count of
matches, rendering) over the data it shows; the API with `total=true` (an exact
count of every match) is shown for reference. Prints p50/p95 per page.

Pages: the first page (default order), a deep page (cursor after --deep rows,
reached by walking the API in pages of 1,000), a filter (stage=won), the same
filter --deep rows deep, and a filter with a sort on an unindexed field
(stage=negotiation, sort=-amount).
Uses a throwaway embedded PostgreSQL, or a fresh database on XRM_DATABASE_URL.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import bench_server, fmt_seconds, percentile, print_table, timed  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
STAGES = ["prospecting", "qualification", "negotiation", "won", "lost"]


async def prepare(uri: str, rows: int) -> None:
    from xrm.auth import UserService
    from xrm.db.database import Database
    from xrm.registry import Registry
    from xrm.schema.files import load_documents
    from xrm.schema.service import SchemaService

    async with Database(uri) as db:
        await SchemaService(db).apply([document for _, document in load_documents(ROOT / "entity_schemas")])
        registry = await Registry().load(db)
        users = UserService(db)
        admin = await users.create_user("admin", "a-long-password", ["admin"])
        deal, account = registry.get("deal").table, registry.get("account").table
        async with db.connection() as connection:
            await connection.execute(
                f"INSERT INTO {account} (owner_id, name) SELECT $1, 'Company ' || g FROM generate_series(1, 1000) g", admin.id
            )
            indexes = await connection.fetch(
                "SELECT indexname AS name, indexdef AS definition FROM pg_indexes WHERE tablename = 'deal' "
                "AND indexname NOT LIKE '%pkey'"
            )
            for index in indexes:
                await connection.execute(f"DROP INDEX {index['name']}")
            fill = (
                f"INSERT INTO {deal} (created_at, updated_at, created_by, owner_id, title, stage, amount_amount, "
                "amount_currency, close_date, account) "
                "SELECT ts, ts, $1, $1, 'Deal ' || g, ($2::text[])[1 + (hashint8(g) & 2147483647) % 5], "
                "((hashint4(g + 7) & 2147483647) % 10000000) / 100.0, 'EUR', "
                "date '2020-01-01' + (hashint4(g + 13) & 2147483647) % 2000, "
                "(SELECT array_agg(id ORDER BY name) FROM " + account + ")[1 + (hashint4(g + 3) & 2147483647) % 1000] "
                "FROM (SELECT g, timestamptz '2020-01-01 00:00+00' + g * interval '1 minute' AS ts "
                f"FROM generate_series(1, {int(rows)}) g) s"
            )
            seconds, _ = await timed(connection.execute(fill, admin.id, STAGES))
            for index in indexes:
                await connection.execute(index["definition"])
            await connection.execute(f"ANALYZE {deal}")
            print(f"filled deal with {rows:,} rows in {fmt_seconds(seconds)} s (indexes rebuilt, analyzed)")


def measure(client: Any, url: str, headers: dict[str, str], reps: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        assert client.get(url, headers=headers).status_code == 200, url
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        response = client.get(url, headers=headers)
        times.append(time.perf_counter() - start)
        assert response.status_code == 200, (url, response.text[:300])
    return sorted(times)


def main() -> None:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request would interleave with the table
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--deep", type=int, default=50_000)
    args = parser.parse_args()

    async def setup() -> tuple[Any, Any]:
        context = bench_server()
        server = await context.__aenter__()
        await prepare(server.uri, args.rows)
        return context, server

    loop = asyncio.new_event_loop()
    context, server = loop.run_until_complete(setup())
    try:
        run(server.uri, args)
    finally:
        loop.run_until_complete(context.__aexit__(None, None, None))


def run(uri: str, args: argparse.Namespace) -> None:
    from litestar.testing import TestClient

    from xrm.app import create_app
    from xrm.settings import Settings

    settings = Settings(data_dir=Path(tempfile.mkdtemp()), database_url=uri, schema_dir=ROOT / "entity_schemas", secret_key=None)
    with TestClient(app=create_app(settings), base_url="https://bench.local") as client:
        login = client.post("/login", data={"name": "admin", "password": "a-long-password", "next": "/"}, follow_redirects=False)
        assert login.status_code == 303
        token, _ = client.blocking_portal.call(_token, client)
        bearer = {"Authorization": f"Bearer {token}"}
        cursor = _deep_cursor(client, bearer, args.deep, "")
        won_cursor = _deep_cursor(client, bearer, args.deep, "stage=won")
        pages = [
            ("first page", ""),
            (f"page after {args.deep:,} rows", f"after={cursor}"),
            ("stage=won", "stage=won"),
            (f"stage=won, page after {args.deep:,} won", f"stage=won&after={won_cursor}"),
            ("stage=negotiation, sort=-amount", "stage=negotiation&sort=-amount"),
        ]
        rows = []
        for name, query in pages:
            html = measure(client, f"/e/deal?{query}", {}, args.reps, args.warmup)
            page_only = measure(client, f"/api/v1/deal?{query}&limit=50&expand=account", bearer, args.reps, args.warmup)
            first = "after=" not in query
            exact = measure(client, f"/api/v1/deal?{query}&limit=50&expand=account&total=true", bearer, args.reps, args.warmup) if first else None
            sample = client.get(f"/e/deal?{query}").text
            shown = len(re.findall(r'<td><a href="/e/deal/[0-9a-f-]{36}">', sample))
            ms = lambda values, q: f"{percentile(values, q) * 1000:.1f}"  # noqa: E731
            rows.append([name, shown, ms(page_only, 0.5), ms(page_only, 0.95), ms(exact, 0.95) if exact else "-",
                         ms(html, 0.5), ms(html, 0.95), f"{percentile(html, 0.95) / percentile(page_only, 0.95):.2f}x"])
        print()
        print(f"web UI list page vs REST API (same query), {args.rows:,} deals, {args.reps} requests each, in-process, ms")
        print("(the UI page counts matches up to 10,000 and says 'more than 10,000'; the API's total=true counts them all)")
        print_table(["page", "rows shown", "API page p50", "API page p95", "API + exact total p95", "UI p50", "UI p95",
                     "UI/API page p95"], rows)


async def _token(client: Any) -> tuple[str, Any]:
    from xrm.auth import UserService

    return await UserService(client.app.state.platform.db).create_token("admin", "bench")


def _deep_cursor(client: Any, headers: dict[str, str], deep: int, query: str) -> str:
    after = ""
    for _ in range(deep // 1000):
        page = client.get(f"/api/v1/deal?{query}&limit=1000{'&after=' + after if after else ''}&fields=title", headers=headers).json()
        after = page["next_cursor"]
    return after


if __name__ == "__main__":
    main()
