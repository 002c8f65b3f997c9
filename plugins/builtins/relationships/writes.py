"""What the plugin does inside other writes (xrm_after_write): hierarchy cycles and delete behaviours.

Both run in the write's transaction, on its connection, after the row
changed; a Veto rolls the whole write back (HTTP 422 at the pointer).

- Hierarchy: a parent that is the record itself or one of its descendants is
  refused ("/<parent field>"). The walk up the parents reads every row (also
  ones the writer may not read, and deleted ones): a cycle is a cycle whoever
  made the rows; the message names no record.
- Delete behaviours of reference fields (`on_delete`): for a record being
  (soft-)deleted, every live record referencing it through a field with
  `restrict` refuses the delete, with `cascade` is deleted too, with
  `set_null` has the reference cleared. Cascades and clearing go through
  RecordService as the deleting user, without that user's row permissions
  (the definition decided it), so each has its own audit entry and outbox
  event, and is restorable like any soft delete.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import asyncpg

from xrm.errors import NotFound, Veto
from xrm.identifiers import quote_ident
from xrm.records.policy import OpenPolicy
from xrm.records.service import RecordService
from xrm.schema.ddl import qualified

__all__ = ["after_write"]

async def after_write(entity: str, action: str, record: Mapping[str, Any], previous: Mapping[str, Any] | None,
                      principal: Any, connection: asyncpg.Connection, db: Any, registry: Any) -> None:
    if action in ("create", "update"):
        await _refuse_cycles(entity, record, previous, connection, registry)
    elif action == "delete":
        await _delete_behaviours(entity, record, principal, connection, db, registry)


async def _refuse_cycles(entity: str, record: Mapping[str, Any], previous: Mapping[str, Any] | None, connection: asyncpg.Connection,
                         registry: Any) -> None:
    # Cheap for entities without a hierarchy: one look at the stored definition only when a self-reference changed.
    candidates = [name for name, value in record.items() if name != "id" and value is not None
                  and (previous is None or previous.get(name) != value) and _looks_like_id(value)]
    if not candidates:
        return
    hierarchy = registry.get(entity).definition.xrm.get("hierarchy") if entity in registry else None
    if not hierarchy or hierarchy["parent"] not in candidates:
        return
    parent_field = hierarchy["parent"]
    parent = str(record[parent_field])
    if parent == str(record["id"]):
        raise Veto("a record cannot be its own parent", "/" + parent_field)
    column = quote_ident(parent_field)
    found = await connection.fetchval(
        f"WITH RECURSIVE up AS (SELECT {column} AS id FROM {qualified(entity)} WHERE id = $1"
        f" UNION ALL SELECT t.{column} FROM {qualified(entity)} t JOIN up ON t.id = up.id)"
        f" CYCLE id SET looped USING path"
        f" SELECT 1 FROM up WHERE id = $2 LIMIT 1",
        uuid.UUID(parent), uuid.UUID(str(record["id"])),
    )
    if found:
        raise Veto("this parent is below this record in the hierarchy; a record cannot be its own ancestor (cycle)", "/" + parent_field)


def _looks_like_id(value: Any) -> bool:
    if isinstance(value, uuid.UUID):
        return True
    if isinstance(value, str) and len(value) == 36:
        try:
            uuid.UUID(value)
            return True
        except ValueError:
            return False
    return False


async def _delete_behaviours(entity: str, record: Mapping[str, Any], principal: Any, connection: asyncpg.Connection,
                             db: Any, registry: Any) -> None:
    rows = [{"entity": other.name, "field": name, "rule": f.xrm["on_delete"]} for other in registry
            for name, f in other.fields.items()
            if f.references == entity and f.xrm.get("on_delete") in ("restrict", "cascade", "set_null")]
    if not rows:
        return
    referencing: list[tuple[str, str, str, list[Any]]] = []
    for row in rows:
        ids = [r["id"] for r in await connection.fetch(
            f"SELECT id FROM {qualified(row['entity'])} WHERE {quote_ident(row['field'])} = $1 AND deleted_at IS NULL AND id <> $1 ORDER BY id",
            record["id"])]
        if ids:
            referencing.append((row["entity"], row["field"], row["rule"], ids))
    restricted = [(e, f, ids) for e, f, rule, ids in referencing if rule == "restrict"]
    if restricted:
        parts = [f"{len(ids)} live {e} record{'s' if len(ids) != 1 else ''} ({f})" for e, f, ids in restricted]
        raise Veto("it is still referenced by " + ", ".join(parts) + "; delete them or change their reference first")
    work = [(e, f, rule, ids) for e, f, rule, ids in referencing if rule in ("cascade", "set_null")]
    if not work:
        return
    for other, field, rule, ids in work:
        service = RecordService(db, registry, other, principal, OpenPolicy())
        for record_id in ids:
            try:
                if rule == "cascade":
                    await service.delete(record_id)
                else:
                    await service.update(record_id, {field: None})
            except NotFound:
                continue  # deleted meanwhile by an earlier step of the same cascade
