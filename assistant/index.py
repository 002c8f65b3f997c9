"""The assistant's vector index: one embedding per record of the searchable entities, kept current from the outbox.

What is embedded (`record_text`): the entity's name, the display field, the
search fields and the display values of referenced records ("Account: ACME"),
with field labels and select options in English and German. Sensitive fields
(x-xrm sensitive) never enter the text, so no vector carries a value some
reader may not see; the assistant answers them only through permission-checked
reads. The text itself is not stored, only its sha256 (unchanged text is not
embedded again) and the vector.

Storage: xrm_index.record_embedding (entity, record_id, text_hash, embedding),
with one HNSW index per entity (a partial index over that entity's rows, at the
model's dimension). xrm_sys.embedding_model records which model the vectors
come from; another model empties the index (vectors of two models do not
compare) until `xrm reindex` fills it again.

Freshness: `catch_up` reads the outbox events since its cursor (the same
transaction-horizon cursor the automations use, consumer "assistant_index"),
re-embeds the records they name and the records whose text shows a changed
record's name, and drops deleted ones. The worker inside `xrm serve` calls it
every poll, so a change reaches the index within seconds.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from xrm.db.database import Database
from xrm.identifiers import quote_ident, quote_literal
from xrm.records.principal import SYSTEM_PRINCIPAL
from xrm.records.query import Condition
from xrm.records.service import RecordService
from xrm.registry import CompiledEntity, Registry
from xrm.schema.ddl import object_name

from .embedding import Embedder

__all__ = ["CONSUMER", "IndexStats", "RecordIndex", "record_text", "searchable_entities", "vector_literal"]

log = logging.getLogger(__name__)

CONSUMER = "assistant_index"
_BATCH = 128
_RECORD_TOPICS = frozenset({"record.created", "record.updated", "record.deleted", "record.restored", "record.erased",
                            "record.purged", "record.assigned"})


def searchable_entities(registry: Registry) -> list[CompiledEntity]:
    """Entities whose records the assistant indexes: every entity with a display or search field, unless x-xrm assistant: false."""
    return [e for e in registry if e.definition.xrm.get("assistant", True) is not False
            and (e.definition.search_fields or e.definition.display_field)]


def _text_fields(entity: CompiledEntity) -> list[str]:
    definition = entity.definition
    names: list[str] = []
    for name in [definition.display_field, *definition.search_fields,
                 *(n for n, f in entity.fields.items() if f.references)]:
        f = entity.fields.get(name or "")
        if f is not None and name not in names and not f.xrm.get("sensitive"):
            names.append(name)  # type: ignore[arg-type]
    return names


def _value_text(entity: CompiledEntity, name: str, value: Any, related: Mapping[Any, str]) -> str | None:
    if value is None or value == "" or value == []:
        return None
    f = entity.fields[name]
    if f.references:
        return related.get(value)
    options = f.xrm.get("option_labels") or {}
    if isinstance(value, list):
        return ", ".join(_option_text(options, v) for v in value)
    if isinstance(value, str):
        return _option_text(options, value) if value in options else value
    if isinstance(value, Mapping) and "amount" in value:
        return f"{value['amount']} {value.get('currency') or ''}".strip()
    return str(value)


def _option_text(options: Mapping[str, Any], value: str) -> str:
    labels = options.get(value) or {}
    words = [value] + [label for label in (labels.get("en"), labels.get("de")) if label and label.lower() != value.lower()]
    return " / ".join(dict.fromkeys(words))


def record_text(entity: CompiledEntity, record: Mapping[str, Any], related: Mapping[Any, str]) -> str:
    """The text embedded for a record (see the module docstring); `related`: display values of referenced ids."""
    definition = entity.definition
    names = " / ".join(dict.fromkeys([definition.label("en"), definition.label("de")]))
    parts = [names + ":"]
    display = definition.display_field
    for name in _text_fields(entity):
        text = _value_text(entity, name, record.get(name), related)
        if text is None:
            continue
        if name == display:
            parts.insert(1, text + ".")
            continue
        f = entity.fields[name]
        label = " / ".join(dict.fromkeys([f.label("en"), f.label("de")]))
        parts.append(f"{label}: {text}.")
    return " ".join(parts)


def vector_literal(vector: Sequence[float]) -> str:
    return "[" + ",".join(f"{x:.7g}" for x in vector) + "]"


def _hash(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


@dataclass
class IndexStats:
    embedded: int = 0
    """Records whose text was new or changed (embedded now)."""
    unchanged: int = 0
    removed: int = 0

    def add(self, other: IndexStats) -> None:
        self.embedded += other.embedded
        self.unchanged += other.unchanged
        self.removed += other.removed


class RecordIndex:
    """Reads records through RecordService (as the system: the index covers every record) and keeps their vectors."""

    def __init__(self, db: Database, registry: Registry, embedder: Embedder) -> None:
        self.db = db
        self.registry = registry
        self.embedder = embedder

    # -- storage --------------------------------------------------------------
    async def prepare(self) -> None:
        """Make the index fit the model: another model (or dimension) empties it; each entity gets its HNSW index."""
        async with self.db.connection() as connection, connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock(7406007)")
            current = await connection.fetchrow("SELECT model, dimensions FROM xrm_sys.embedding_model")
            if current is None or (current["model"], current["dimensions"]) != (self.embedder.name, self.embedder.dimensions):
                if current is not None:
                    log.warning("the embedding model changed (%s -> %s): the assistant's index is emptied; run xrm reindex",
                                current["model"], self.embedder.name)
                await self._drop_vector_indexes(connection)
                await connection.execute("TRUNCATE xrm_index.record_embedding")
                await connection.execute(
                    "INSERT INTO xrm_sys.embedding_model (singleton, model, dimensions) VALUES (true, $1, $2) "
                    "ON CONFLICT (singleton) DO UPDATE SET model = EXCLUDED.model, dimensions = EXCLUDED.dimensions",
                    self.embedder.name, self.embedder.dimensions)
            for entity in searchable_entities(self.registry):
                await connection.execute(
                    f"CREATE INDEX IF NOT EXISTS {quote_ident(self.vector_index_name(entity.name))} "
                    f"ON xrm_index.record_embedding USING hnsw ((embedding::vector({self.embedder.dimensions})) vector_cosine_ops) "
                    f"WHERE entity = {quote_literal(entity.name)}")

    def vector_index_name(self, entity: str) -> str:
        return object_name("record_embedding", entity, f"hnsw{self.embedder.dimensions}")

    async def _drop_vector_indexes(self, connection: asyncpg.Connection) -> None:
        names = await connection.fetch(
            "SELECT indexname FROM pg_indexes WHERE schemaname = 'xrm_index' AND tablename = 'record_embedding' "
            "AND indexdef ILIKE '%USING hnsw%'")
        for row in names:
            await connection.execute(f"DROP INDEX IF EXISTS xrm_index.{quote_ident(row['indexname'])}")

    # -- writing ----------------------------------------------------------------
    async def refresh(self, entity_name: str, ids: Iterable[uuid.UUID]) -> IndexStats:
        """Bring the vectors of these records up to date (new or changed text embedded; deleted records dropped)."""
        wanted = list(dict.fromkeys(ids))
        stats = IndexStats()
        if entity_name not in self.registry or not wanted:
            return stats
        entity = self.registry.get(entity_name)
        if entity not in searchable_entities(self.registry):
            return stats
        service = RecordService(self.db, self.registry, entity_name, SYSTEM_PRINCIPAL)
        for start in range(0, len(wanted), 1000):
            chunk = wanted[start:start + 1000]
            page = await service.list(where=[Condition("id", "in", [str(i) for i in chunk])], limit=len(chunk))
            stats.add(await self._store(entity, page.records, removed=set(chunk) - {r["id"] for r in page.records}))
        return stats

    async def _store(self, entity: CompiledEntity, records: Sequence[Mapping[str, Any]], removed: set[uuid.UUID]) -> IndexStats:
        stats = IndexStats()
        related = await self._related_names(entity, records)
        texts = {r["id"]: record_text(entity, r, related) for r in records}
        hashes = {i: _hash(t) for i, t in texts.items()}
        async with self.db.connection() as connection:
            stored = {row["record_id"]: bytes(row["text_hash"]) for row in await connection.fetch(
                "SELECT record_id, text_hash FROM xrm_index.record_embedding WHERE entity = $1 AND record_id = ANY($2::uuid[])",
                entity.name, list(hashes))}
        changed = [i for i, h in hashes.items() if stored.get(i) != h]
        stats.unchanged = len(hashes) - len(changed)
        # In a thread: encoding is seconds of CPU that must not hold up the server's event loop.
        vectors = await asyncio.to_thread(self.embedder.encode, [texts[i] for i in changed]) if changed else []
        async with self.db.connection() as connection, connection.transaction():
            if changed:
                await connection.executemany(
                    "INSERT INTO xrm_index.record_embedding (entity, record_id, text_hash, embedding) VALUES ($1, $2, $3, $4::vector) "
                    "ON CONFLICT (entity, record_id) DO UPDATE SET text_hash = EXCLUDED.text_hash, embedding = EXCLUDED.embedding, "
                    "indexed_at = now()",
                    [(entity.name, i, hashes[i], vector_literal(v)) for i, v in zip(changed, vectors, strict=True)])
            if removed:
                status = await connection.execute(
                    "DELETE FROM xrm_index.record_embedding WHERE entity = $1 AND record_id = ANY($2::uuid[])", entity.name, list(removed))
                stats.removed = int(status.split()[-1])
        stats.embedded = len(changed)
        return stats

    async def _related_names(self, entity: CompiledEntity, records: Sequence[Mapping[str, Any]]) -> dict[Any, str]:
        names: dict[Any, str] = {}
        for name in _text_fields(entity):
            target = entity.fields[name].references
            if not target or target not in self.registry:
                continue
            ids = list({r[name] for r in records if r.get(name) is not None} - set(names))
            if ids:
                names.update(await RecordService(self.db, self.registry, target, SYSTEM_PRINCIPAL).display_values(ids))
        return names

    async def reindex(self, entities: Sequence[str] | None = None,
                      progress: Callable[[str, int, int], None] | None = None) -> dict[str, IndexStats]:
        """Every record of the searchable entities (or of `entities`); `progress(entity, done, total)` after each batch."""
        await self.prepare()
        chosen = [e for e in searchable_entities(self.registry) if entities is None or e.name in entities]
        result: dict[str, IndexStats] = {}
        for entity in chosen:
            service = RecordService(self.db, self.registry, entity.name, SYSTEM_PRINCIPAL)
            total = await service.count()
            stats, done, after, seen = IndexStats(), 0, None, set()
            while True:
                page = await service.list(limit=_BATCH * 4, after=after)
                seen.update(r["id"] for r in page.records)
                for start in range(0, len(page.records), _BATCH):
                    stats.add(await self._store(entity, page.records[start:start + _BATCH], removed=set()))
                done += len(page.records)
                if progress is not None:
                    progress(entity.name, done, total)
                after = page.next_cursor
                if after is None:
                    break
            async with self.db.connection() as connection:
                stale = [row["record_id"] for row in await connection.fetch(
                    "SELECT record_id FROM xrm_index.record_embedding WHERE entity = $1", entity.name) if row["record_id"] not in seen]
                if stale:
                    await connection.execute("DELETE FROM xrm_index.record_embedding WHERE entity = $1 AND record_id = ANY($2::uuid[])",
                                             entity.name, stale)
            stats.removed += len(stale)
            result[entity.name] = stats
        return result

    # -- following the outbox --------------------------------------------------------
    async def catch_up(self) -> IndexStats:
        """Apply the outbox events since the last call (one caller at a time; others return at once)."""
        stats = IndexStats()
        async with self.db.connection() as connection, connection.transaction():
            if not await connection.fetchval("SELECT pg_try_advisory_xact_lock(7406008)"):
                return stats
            cursor = await connection.fetchrow(
                "SELECT horizon::text AS last, pg_snapshot_xmin(pg_current_snapshot())::text AS horizon "
                "FROM xrm_sys.automation_cursor WHERE consumer = $1 FOR UPDATE", CONSUMER)
            if cursor is None:
                await connection.execute(
                    "INSERT INTO xrm_sys.automation_cursor (consumer, horizon) VALUES ($1, pg_snapshot_xmin(pg_current_snapshot()))",
                    CONSUMER)
                return stats
            if cursor["last"] == cursor["horizon"]:
                return stats
            events = await connection.fetch(
                "SELECT topic, entity, record_id, payload FROM xrm_sys.outbox "
                "WHERE xact >= $1::text::xid8 AND xact < $2::text::xid8 AND record_id IS NOT NULL ORDER BY xact, id",
                cursor["last"], cursor["horizon"])
            touched: dict[str, set[uuid.UUID]] = {}
            renamed: dict[str, set[uuid.UUID]] = {}
            for event in events:
                if event["topic"] not in _RECORD_TOPICS and not event["topic"].startswith("workflow."):
                    continue
                touched.setdefault(event["entity"], set()).add(event["record_id"])
                if event["topic"] in ("record.updated", "record.erased", "record.deleted", "record.restored"):
                    renamed.setdefault(event["entity"], set()).add(event["record_id"])
            for entity_name, ids in renamed.items():
                for dependent, dependent_ids in (await self._dependents(entity_name, ids)).items():
                    touched.setdefault(dependent, set()).update(dependent_ids)
            # The vectors are written in their own transactions; if this one fails the cursor stays and the next call redoes them.
            for entity_name, ids in touched.items():
                stats.add(await self.refresh(entity_name, ids))
            await connection.execute(
                "UPDATE xrm_sys.automation_cursor SET horizon = $2::text::xid8, updated_at = now() WHERE consumer = $1",
                CONSUMER, cursor["horizon"])
        return stats

    async def _dependents(self, entity_name: str, ids: set[uuid.UUID]) -> dict[str, set[uuid.UUID]]:
        """Records of searchable entities whose text shows one of these records' names (through a reference field)."""
        found: dict[str, set[uuid.UUID]] = {}
        wanted = [str(i) for i in ids]
        for entity in searchable_entities(self.registry):
            for name in _text_fields(entity):
                if entity.fields[name].references != entity_name:
                    continue
                service = RecordService(self.db, self.registry, entity.name, SYSTEM_PRINCIPAL)
                after = None
                while True:  # the reference index (field, created_at, id) serves this
                    page = await service.list(where=[Condition(name, "in", wanted)], fields=[name], limit=1000, after=after)
                    found.setdefault(entity.name, set()).update(r["id"] for r in page.records)
                    after = page.next_cursor
                    if after is None:
                        break
        return found
