"""The assistant's tools: search_records, query_records, get_record, aggregate — each a call through the one door.

Every tool runs with the asking user's principal and policy (RecordService),
so it sees exactly what that user may open, and records what it did in the
`Toolbox.calls` log (name, arguments, the record ids it returned): the audit
entry and `xrm ask --json` show that log. The same tools back the built-in
planner and an LLM agent (`as_langchain_tools`).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from xrm.db.database import Database
from xrm.records.policy import Policy
from xrm.records.principal import Principal
from xrm.records.query import Condition
from xrm.records.service import AggregateResult, RecordService
from xrm.registry import Registry

from .embedding import Embedder
from .retrieval import Hit, HybridRetriever

__all__ = ["ToolCall", "Toolbox"]


@dataclass
class ToolCall:
    name: str
    arguments: dict[str, Any]
    record_ids: list[str] = field(default_factory=list)
    """Records the call returned (or counted/summed over, up to a bound): what the assistant saw."""


@dataclass
class Toolbox:
    db: Database
    registry: Registry
    principal: Principal
    policy: Policy | None
    embedder: Embedder | None
    embedder_factory: Callable[[], Embedder] | None = None
    """Loads the model on the first search (seconds), so answers that need no search never wait for it."""
    calls: list[ToolCall] = field(default_factory=list)

    def service(self, entity: str) -> RecordService:
        return RecordService(self.db, self.registry, entity, self.principal, self.policy)

    async def search_records(self, query: str, entities: Sequence[str] | None = None, k: int = 8) -> list[Hit]:
        if self.embedder is None and self.embedder_factory is not None:
            self.embedder = await asyncio.to_thread(self.embedder_factory)
        if self.embedder is None:
            raise RuntimeError("no embedding model")
        hits = await HybridRetriever(self.db, self.registry, self.embedder, self.policy).search(
            self.principal, query, entities=entities, k=k)
        self.calls.append(ToolCall("search_records", {"query": query, "entities": list(entities or []), "k": k},
                                   [str(h.id) for h in hits]))
        return hits

    async def query_records(self, entity: str, where: Sequence[Condition] = (), order_by: Sequence[str] | None = None,
                            limit: int = 10, with_total: bool = False) -> tuple[list[dict[str, Any]], int | None]:
        page = await self.service(entity).list(where=list(where), order_by=order_by, limit=limit, with_total=with_total,
                                               total_limit=100_000 if with_total else None)
        self.calls.append(ToolCall("query_records", {"entity": entity, "where": [_condition(c) for c in where],
                                                     "order_by": list(order_by or []), "limit": limit},
                                   [str(r["id"]) for r in page.records]))
        return page.records, page.total

    async def get_record(self, entity: str, record_id: Any) -> dict[str, Any]:
        record = await self.service(entity).get(record_id)
        self.calls.append(ToolCall("get_record", {"entity": entity, "id": str(record_id)}, [str(record["id"])]))
        return record

    async def aggregate(self, entity: str, *, group_by: Sequence[str] = (), measures: Sequence[str] = ("count",),
                        where: Sequence[Condition] = (), order_by: Sequence[str] | None = None,
                        limit: int | None = None) -> AggregateResult:
        result = await self.service(entity).aggregate(group_by=group_by, measures=measures, where=list(where),
                                                      order_by=order_by, limit=limit)
        grouped_ids = [str(row[key]) for row in result.rows for key in result.groups
                       if isinstance(row.get(key), uuid.UUID)]
        self.calls.append(ToolCall("aggregate", {"entity": entity, "group_by": list(group_by), "measures": list(measures),
                                                 "where": [_condition(c) for c in where], "order_by": list(order_by or []),
                                                 "limit": limit}, grouped_ids))
        return result


def _condition(condition: Condition) -> dict[str, Any]:
    value = condition.value
    if isinstance(value, (list, tuple)):
        value = [str(v) for v in value]
    elif value is not None and not isinstance(value, (bool, int, float, str)):
        value = str(value)
    return {"field": condition.field, "op": condition.op, "value": value}


def conditions_of(filters: Sequence[Any]) -> list[Condition]:
    return [Condition(f.field, f.op, f.value) for f in filters]


def as_mapping(record: Mapping[str, Any]) -> dict[str, Any]:
    return dict(record)
