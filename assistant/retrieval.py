"""Hybrid retrieval: full-text and vector similarity, fused, over the records a principal may open.

Each entity is asked twice, each time in one SQL statement whose WHERE holds
RecordService.read_conditions (the permission predicate of every read):

- words: the question's words (stop words of English and German left out,
  longer words also as prefixes, so "Liefer" finds "Lieferverzögerung") OR-ed
  into a tsquery against the entity's full-text column, ranked by ts_rank_cd;
- meaning: the question's embedding against the record vectors
  (xrm.assistant.index) by cosine distance, through the entity's HNSW index with
  pgvector's iterative scan, so filtering by permission does not leave the
  top-k short.

The two rankings are fused by reciprocal rank fusion (score = sum of
1 / (60 + rank)), which needs no calibration between the two scores. The
records come back through RecordService.list, so sensitive fields the
principal may not read are absent as everywhere else.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from xrm.db.database import Database
from xrm.errors import PermissionDenied
from xrm.identifiers import quote_literal
from xrm.records.policy import Policy
from xrm.records.principal import Principal
from xrm.records.query import Condition
from xrm.records.service import RecordService
from xrm.registry import Registry

from .embedding import Embedder
from .index import searchable_entities, vector_literal

__all__ = ["Hit", "HybridRetriever", "query_words"]

RRF_K = 60
CANDIDATES = 50
"""Rows taken from each ranking per entity before fusing."""

STOP_WORDS = frozenset("""
a an and are as at be by can do does for from has have how i in is it me my of on or our show the their them there
these this to us was we were what when where which who whom whose why with you your all any about list give tell find
der die das den dem des ein eine einen einem einer eines und oder ist sind war waren wer wen wem wessen was wie wo
welche welcher welches mit von vom zu zum zur im in am an auf aus bei für fur über ueber unter nach vor hat haben
ich mir mich uns unser unsere ihr ihre sie es er zeige zeig gib nenne alle bitte mal noch auch nicht kein keine
""".split())
_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def query_words(text: str) -> list[str]:
    """The question's searchable words: lower case, without stop words, each once."""
    words = [w.lower() for w in _WORD.findall(text or "")]
    return list(dict.fromkeys(w for w in words if len(w) > 1 and w not in STOP_WORDS))


def _tsquery(words: Sequence[str]) -> str:
    # Words are letters and digits only (query_words), so quoting them is safe.
    return " | ".join(f"'{w}':*" if len(w) >= 4 else f"'{w}'" for w in words)


@dataclass
class Hit:
    entity: str
    id: uuid.UUID
    score: float
    record: dict[str, Any]
    ranks: dict[str, int] = field(default_factory=dict)
    """Position (1-based) in the "words" and "meaning" rankings it came from."""


class HybridRetriever:
    def __init__(self, db: Database, registry: Registry, embedder: Embedder, policy: Policy | None = None) -> None:
        self.db = db
        self.registry = registry
        self.embedder = embedder
        self.policy = policy

    async def search(self, principal: Principal, question: str, *, entities: Sequence[str] | None = None,
                     k: int = 10, candidates: int = CANDIDATES) -> list[Hit]:
        """The k records (of `entities`, default every searchable one the principal may read) that fit best."""
        names = [e.name for e in searchable_entities(self.registry) if entities is None or e.name in entities]
        words = query_words(question)
        vector = (await asyncio.to_thread(self.embedder.encode, [question]))[0] if question.strip() else None
        # One ranking per kind across all entities (ordered by the kind's own score), so that the best ticket
        # and the best account do not both come first just for being first of their entity.
        found: dict[str, list[tuple[float, str, uuid.UUID]]] = {}
        for name in names:
            service = RecordService(self.db, self.registry, name, principal, self.policy)
            try:
                rankings = await self._rank(service, words, vector, candidates)
            except PermissionDenied:
                continue  # an entity the principal may not read at all adds nothing
            for kind, scored_ids in rankings.items():
                found.setdefault(kind, []).extend((score, name, record_id) for score, record_id in scored_ids)
        scored: dict[tuple[str, uuid.UUID], Hit] = {}
        for kind, entries in found.items():
            entries.sort(key=lambda entry: (-entry[0], entry[1], str(entry[2])))
            for position, (_, name, record_id) in enumerate(entries[:candidates], start=1):
                hit = scored.setdefault((name, record_id), Hit(name, record_id, 0.0, {}))
                hit.score += 1.0 / (RRF_K + position)
                hit.ranks[kind] = position
        best = sorted(scored.values(), key=lambda h: (-h.score, str(h.id)))[:k]
        for name in {h.entity for h in best}:
            service = RecordService(self.db, self.registry, name, principal, self.policy)
            ids = [str(h.id) for h in best if h.entity == name]
            records = {r["id"]: r for r in (await service.list(where=[Condition("id", "in", ids)], limit=len(ids))).records}
            for hit in best:
                if hit.entity == name:
                    hit.record = records.get(hit.id, {})
        return [h for h in best if h.record]  # a record deleted meanwhile drops out

    async def _rank(self, service: RecordService, words: Sequence[str], vector: Sequence[float] | None,
                    candidates: int) -> dict[str, list[tuple[float, uuid.UUID]]]:
        """Per kind ("words", "meaning"): (score, id) of the best candidates, higher is better."""
        table = service.entity.table
        rankings: dict[str, list[tuple[float, uuid.UUID]]] = {}
        async with self.db.connection() as connection:
            if words:
                params: list[Any] = []
                permitted = service.read_conditions(params)
                params.append(_tsquery(words))
                rows = await connection.fetch(
                    f"SELECT id, ts_rank_cd(search_vector, q) AS score FROM {table}, to_tsquery('simple', ${len(params)}) AS q "
                    f"WHERE {permitted} AND search_vector @@ q "
                    f"ORDER BY score DESC, id LIMIT {int(candidates)}", *params)
                rankings["words"] = [(float(row["score"]), row["id"]) for row in rows]
            if vector is not None:
                dimensions = len(vector)
                params = []
                permitted = service.read_conditions(params)
                params.append(vector_literal(vector))
                distance = f"(embedding::vector({dimensions}) <=> ${len(params)}::vector({dimensions}))"
                async with connection.transaction():
                    # strict_order: keep walking the HNSW graph until `candidates` permitted rows are found, in order.
                    await connection.execute("SET LOCAL hnsw.iterative_scan = strict_order")
                    await connection.execute(f"SET LOCAL hnsw.ef_search = {max(40, int(candidates))}")
                    rows = await connection.fetch(
                        f"SELECT record_id, {distance} AS distance FROM xrm_index.record_embedding AS indexed "
                        f"WHERE indexed.entity = {quote_literal(service.name)} AND EXISTS ("
                        f"SELECT 1 FROM {table} WHERE {table}.id = indexed.record_id AND {permitted}) "
                        f"ORDER BY {distance} LIMIT {int(candidates)}", *params)
                rankings["meaning"] = [(-float(row["distance"]), row["record_id"]) for row in rows]
        return rankings
