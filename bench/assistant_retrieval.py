"""Assistant retrieval at scale: permission-filtered vector search p95 and recall@10 against exact search.

Fills entity bench_ticket with --rows records owned by 100 users (a restricted
user owns 1% of them, role "read own"), gives every record a vector in
xrm_index.record_embedding — clustered like real texts: one of 256 centres
(real embeddings of 256 sentences, by the default model) plus noise, made in
SQL so a million rows take minutes, not the model's hours — builds the HNSW
index as xrm.assistant.index does, and measures for the admin and for the
restricted user:

- vector: the vector ranking exactly as HybridRetriever runs it (HNSW with
  iterative scan, permission predicate inside), k=10;
- exact: the same statement with index scans off (a sequential scan and a
  sort: the brute-force answer), the baseline of recall@10;
- hybrid: HybridRetriever.search (full text + vector, fused, records fetched
  through RecordService) for the same questions.

    .venv/bin/python bench/assistant_retrieval.py [--rows 1000000] [--queries 40]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from typing import Any

import _common
from _common import bench_server, fmt_seconds, print_table, timed

import xrm.auth
from xrm.assistant.embedding import get_embedder
from xrm.assistant.index import RecordIndex, vector_literal
from xrm.assistant.retrieval import HybridRetriever
from xrm.auth import UserService
from xrm.db.database import Database
from xrm.records.principal import SYSTEM_PRINCIPAL
from xrm.records.service import RecordService
from xrm.registry import Registry
from xrm.schema.service import SchemaService
from xrm.security.model import SecurityService
from xrm.security.policy import RolePolicy

ENTITY = "bench_ticket"
DOCUMENT: dict[str, Any] = {
    "type": "object",
    "x-xrm": {"name": ENTITY, "label": {"en": "Ticket"}, "display_field": "subject", "search_fields": ["subject"]},
    "properties": {"subject": {"type": "string"}},
}
TOPICS = ["delivery", "invoice", "password", "printer", "licence", "training", "export", "upgrade", "refund", "outage",
          "login", "contract", "shipment", "damaged", "missing", "warranty", "discount", "renewal", "onboarding", "api"]
PLACES = ["Berlin", "Munich", "Hamburg", "Cologne", "Vienna", "Zurich", "London", "Paris", "Madrid", "Rome", "Oslo",
          "Prague", "Warsaw", "Lisbon", "Dublin", "Athens"]


def sentences() -> list[str]:
    rng = random.Random(7)
    return [f"{rng.choice(['Problem with', 'Question about', 'Complaint about', 'Request for'])} {topic} in {place}"
            for topic in TOPICS for place in rng.sample(PLACES, 13)][:256]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=40)
    args = parser.parse_args()
    from argon2 import PasswordHasher

    xrm.auth._hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    embedder = get_embedder()
    texts = sentences()
    centres = embedder.encode(texts)
    async with bench_server() as server:
        print(f"server: PostgreSQL {server.version}, {server.description}")
        db = await Database(server.uri).open()
        try:
            await SchemaService(db).apply([DOCUMENT], principal=SYSTEM_PRINCIPAL)
            registry = await Registry().load(db)
            policy = await RolePolicy().load(db)
            security = SecurityService(db, policy, registry)
            users = UserService(db)
            names = [f"user{i:03d}" for i in range(100)]
            for name in names:
                await users.create_user(name, "a-long-password")
            await security.create_role("own_tickets")
            await security.grant("own_tickets", ENTITY, "read", "own")
            await security.grant_role(names[0], "own_tickets")
            await users.create_user("boss", "a-long-password", ["admin"])
            table = registry.get(ENTITY).table
            async with db.connection() as connection:
                owners = [r["id"] for r in await connection.fetch(
                    "SELECT id FROM xrm_sys.app_user WHERE name = ANY($1::text[]) ORDER BY name", names)]
                await connection.execute("CREATE TEMP TABLE centre (n int PRIMARY KEY, v vector, words text)")
                await connection.executemany("INSERT INTO centre VALUES ($1, $2::vector, $3)",
                                             [(i, vector_literal(v), t) for i, (v, t) in enumerate(zip(centres, texts))])
                started = time.perf_counter()
                await connection.execute(
                    f"INSERT INTO {table} (owner_id, created_by, subject) "
                    f"SELECT ($1::uuid[])[1 + (hashint4(g) & 2147483647) % 100], $2, "
                    f"(SELECT words FROM centre WHERE n = (hashint4(g + 3) & 2147483647) % 256) || ' #' || g "
                    f"FROM generate_series(1, {int(args.rows)}) g", owners, SYSTEM_PRINCIPAL.id)
                filled = time.perf_counter() - started
                # Record the model (prepare), then fill without the HNSW index and build it once at the end.
                index = RecordIndex(db, registry, embedder)
                await index.prepare()
                await connection.execute(f"DROP INDEX xrm_index.\"{index.vector_index_name(ENTITY)}\"")
                started = time.perf_counter()
                # Vector = centre of its sentence + uniform noise per dimension, normalised (as the model's are).
                await connection.execute(
                    "INSERT INTO xrm_index.record_embedding (entity, record_id, text_hash, embedding) "
                    f"SELECT $1, t.id, '\\x00'::bytea, l2_normalize(c.v + (SELECT array_agg((random() - 0.5) * 0.08) "
                    f"FROM generate_series(1, 384) WHERE t.id IS NOT NULL)::vector) "
                    f"FROM {table} t JOIN centre c ON c.n = (hashint4(substr(t.subject, position('#' in t.subject) + 1)::int + 3) & 2147483647) % 256",
                    ENTITY)
                vectors = time.perf_counter() - started
                await connection.execute("ANALYZE")
            print(f"filled {args.rows:,} tickets in {fmt_seconds(filled)} s, vectors in {fmt_seconds(vectors)} s")
            async with db.connection() as connection:
                await connection.execute("SET maintenance_work_mem = '1GB'")
            seconds, _ = await timed(index.prepare())
            print(f"HNSW index (m=16, ef_construction=64) built in {fmt_seconds(seconds)} s")

            principals = {"admin": await security.principal_for_user("boss"),
                          "restricted (1%)": await security.principal_for_user(names[0])}
            rng = random.Random(11)
            questions = [f"{rng.choice(['trouble with', 'complaint about', 'asking about'])} {rng.choice(TOPICS)} in {rng.choice(PLACES)}"
                         for _ in range(args.queries)]
            query_vectors = embedder.encode(questions)
            retriever = HybridRetriever(db, registry, embedder, policy)
            rows = []
            for label, principal in principals.items():
                service = RecordService(db, registry, ENTITY, principal, policy)
                timings: dict[str, list[float]] = {"vector": [], "exact": [], "hybrid": []}
                recalls = []
                for question, vector in zip(questions, query_vectors):
                    approximate, seconds = await ranked(db, service, vector, exact=False)
                    timings["vector"].append(seconds)
                    exact, seconds = await ranked(db, service, vector, exact=True)
                    timings["exact"].append(seconds)
                    recalls.append(len(set(approximate) & set(exact)) / max(1, len(exact)))
                    started = time.perf_counter()
                    await retriever.search(principal, question, entities=[ENTITY], k=10)
                    timings["hybrid"].append(time.perf_counter() - started)
                for kind, values in timings.items():
                    rows.append([label, kind, f"{percentile(values, 50) * 1000:.1f}", f"{percentile(values, 95) * 1000:.1f}",
                                 f"{statistics.mean(recalls):.3f}" if kind == "vector" else ""])
            print()
            print_table(["principal", "query", "p50 ms", "p95 ms", "recall@10"], rows)
        finally:
            await db.close()


async def ranked(db: Database, service: RecordService, vector: list[float], *, exact: bool) -> tuple[list[Any], float]:
    params: list[Any] = []
    permitted = service.read_conditions(params)
    params.append(vector_literal(vector))
    table = service.entity.table
    distance = f"(embedding::vector(384) <=> ${len(params)}::vector(384))"
    async with db.connection() as connection, connection.transaction():
        await connection.execute("SET LOCAL hnsw.iterative_scan = strict_order")
        await connection.execute("SET LOCAL hnsw.ef_search = 50")
        if exact:
            await connection.execute("SET LOCAL enable_indexscan = off")
            await connection.execute("SET LOCAL enable_bitmapscan = off")
        started = time.perf_counter()
        rows = await connection.fetch(
            f"SELECT record_id FROM xrm_index.record_embedding AS indexed WHERE indexed.entity = '{ENTITY}' AND EXISTS ("
            f"SELECT 1 FROM {table} WHERE {table}.id = indexed.record_id AND {permitted}) ORDER BY {distance} LIMIT 10", *params)
        return [r["record_id"] for r in rows], time.perf_counter() - started


if __name__ == "__main__":
    _common  # noqa: B018 - imported for its sys.path and venv check
    asyncio.run(main())
