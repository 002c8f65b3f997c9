"""Assistant indexing speed: records embedded per second by `xrm reindex` against the model's raw encode rate.

Fills entity bench_note with --rows records (subject and description, varied
text of realistic length, an account reference so the text carries a related
name) and measures, on the same texts in the same run:

- raw: SentenceTransformer.encode of every record's text (xrm.assistant.index.record_text),
  in the batch size the index uses — the ceiling;
- reindex: RecordIndex.reindex (read through RecordService, build texts, look
  up related names, hash, embed, write vectors) from an empty index;
- again: reindex with nothing changed (hashes only; no embedding).

    .venv/bin/python bench/assistant_index.py [--rows 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from typing import Any

import _common
from _common import bench_server, fmt_rate, fmt_ratio, fmt_seconds, print_table

from xrm.assistant.embedding import get_embedder
from xrm.assistant.index import RecordIndex, record_text
from xrm.db.database import Database
from xrm.records.principal import SYSTEM_PRINCIPAL
from xrm.records.service import RecordService
from xrm.registry import Registry
from xrm.schema.service import SchemaService

ACCOUNT: dict[str, Any] = {"type": "object", "x-xrm": {"name": "bench_account", "label": {"en": "Account"}, "display_field": "name"},
                           "properties": {"name": {"type": "string"}}}
NOTE: dict[str, Any] = {
    "type": "object",
    "x-xrm": {"name": "bench_note", "label": {"en": "Note", "de": "Notiz"}, "display_field": "subject",
              "search_fields": ["subject", "description"]},
    "properties": {"subject": {"type": "string"}, "description": {"x-xrm": {"type": "long_text"}},
                   "account": {"x-xrm": {"type": "reference", "references": "bench_account"}}},
}
WORDS = ("delivery invoice password printer licence training export upgrade refund outage login contract shipment damaged "
         "missing warranty discount renewal onboarding customer portal pallet driver update order payment reminder meeting "
         "Lieferung Rechnung Kunde Termin Angebot Vertrag Bestellung Zahlung Mahnung Lager Versand Schulung").split()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    embedder = get_embedder()
    rng = random.Random(5)
    async with bench_server() as server:
        print(f"server: PostgreSQL {server.version}, {server.description}")
        db = await Database(server.uri).open()
        try:
            await SchemaService(db).apply([ACCOUNT, NOTE], principal=SYSTEM_PRINCIPAL)
            registry = await Registry().load(db)
            accounts = await RecordService(db, registry, "bench_account", SYSTEM_PRINCIPAL).create_many(
                [{"name": f"Company {i} GmbH"} for i in range(500)])
            notes = RecordService(db, registry, "bench_note", SYSTEM_PRINCIPAL)
            started = time.perf_counter()
            for start in range(0, args.rows, 1000):
                await notes.create_many([{
                    "subject": " ".join(rng.choices(WORDS, k=rng.randint(3, 7))).capitalize(),
                    "description": " ".join(rng.choices(WORDS, k=rng.randint(15, 60))) + ".",
                    "account": rng.choice(accounts)["id"],
                } for _ in range(min(1000, args.rows - start))])
            print(f"created {args.rows:,} notes in {fmt_seconds(time.perf_counter() - started)} s")

            entity = registry.get("bench_note")
            names = {a["id"]: a["name"] for a in accounts}
            texts, after = [], None
            while True:
                page = await notes.list(limit=1000, after=after)
                texts.extend(record_text(entity, r, names) for r in page.records)
                after = page.next_cursor
                if after is None:
                    break
            started = time.perf_counter()
            for start in range(0, len(texts), 128):
                embedder.encode(texts[start:start + 128])
            raw = time.perf_counter() - started

            index = RecordIndex(db, registry, embedder)
            started = time.perf_counter()
            result = await index.reindex(["bench_note"])
            first = time.perf_counter() - started
            started = time.perf_counter()
            again = await index.reindex(["bench_note"])
            second = time.perf_counter() - started
            assert result["bench_note"].embedded == args.rows and again["bench_note"].unchanged == args.rows
            raw_rate, first_rate, second_rate = args.rows / raw, args.rows / first, args.rows / second
            print()
            print_table(["step", "seconds", "records/s", "vs raw encode"], [
                ["raw encode (model only)", fmt_seconds(raw), fmt_rate(raw_rate), "1.00x"],
                ["xrm reindex (empty index)", fmt_seconds(first), fmt_rate(first_rate), fmt_ratio(first_rate / raw_rate)],
                ["xrm reindex (unchanged)", fmt_seconds(second), fmt_rate(second_rate), fmt_ratio(second_rate / raw_rate)],
            ])
        finally:
            await db.close()


if __name__ == "__main__":
    _common  # noqa: B018 - imported for its sys.path and venv check
    asyncio.run(main())
