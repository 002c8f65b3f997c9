"""Links, connections, connection roles and hierarchies, read and written for one principal.

Rules (docs/relationships.md):

- A link or connection is visible only while BOTH ends are live records the
  principal may read: each end's permission predicate (the policy's
  row_filter) is inside the SQL, never applied after fetching.
- Creating or removing one needs update permission on the record it is made
  from (the path's record, either end) and read permission on the other end.
- Every change writes an audit entry for each end (link.created /
  link.removed, connection.created / connection.removed) and an outbox event,
  in the change's transaction.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from xrm.audit import AuditLog
from xrm.errors import NotFound, PermissionDenied, Problem, ValidationFailed, pointer
from xrm.identifiers import quote_ident
from xrm.records.principal import Principal
from xrm.records.service import RecordService

from .model import Hierarchy, LinkDefinition, hierarchy_of, link_definitions, resolve_link

__all__ = ["Door", "Relationships", "as_uuid", "display_of", "sync_plugin_roles"]

TREE_LIMIT = 2000
"""Nodes a tree shows at most."""
EXPAND_LIMIT = 20
"""Links or connections `?expand=` adds per record at most (the sub-resources list them all)."""


def as_uuid(value: Any) -> uuid.UUID | None:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except (ValueError, TypeError, AttributeError):
        return None


def display_of(entity: Any, record: Mapping[str, Any] | None) -> str:
    if not record:
        return ""
    name = entity.definition.display_field
    value = record.get(name) if name else None
    return str(value) if value not in (None, "") else str(record.get("id", ""))[:8]


def _date(value: Any, at: str, problems: list[Problem]) -> dt.date | None:
    if value is None or value == "":
        return None
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        problems.append(Problem(at, "must be a date (YYYY-MM-DD)"))
        return None


def _plugin_loaded(name: str) -> bool:
    from xrm.plugins import get_plugin_manager

    return get_plugin_manager().get_plugin(name) is not None


async def sync_plugin_roles(db: Any, registry: Any) -> list[str]:
    """Create or update one connection role per relationship type other plugins declare (xrm_relationship_types).

    Runs at start-up. A role is the plugin's (column `plugin`); a role of the same name an admin made, or another
    plugin declared first, is left alone with a warning. Returns the warnings (also logged).
    """
    import logging
    import re

    from xrm.plugins import RelationshipType, get_plugin_manager
    from xrm.records.principal import SYSTEM_PRINCIPAL

    log = logging.getLogger("xrm")
    warnings: list[str] = []
    wanted: list[tuple[str, RelationshipType]] = []
    for plugin_name, kinds in get_plugin_manager().each("xrm_relationship_types"):
        if plugin_name == "relationships":
            continue  # the four kinds this plugin implements itself
        for kind in kinds or []:
            problem = None
            if not isinstance(kind, RelationshipType) or not re.fullmatch(r"[a-z][a-z0-9_]{0,62}", str(kind.name)):
                problem = "is not a RelationshipType with a name of a-z, 0-9 and _"
            elif not isinstance(kind.label, Mapping) or not str(kind.label.get("en") or "").strip():
                problem = "needs an English label"
            else:
                unknown = [e for e in (kind.source, kind.target) if e is not None and e not in registry]
                if unknown:
                    problem = f"names an entity that does not exist: {unknown[0]}"
            if problem:
                warnings.append(f"plugin {plugin_name!r}: relationship type {getattr(kind, 'name', kind)!r} {problem}; no role made")
            else:
                wanted.append((plugin_name, kind))
    async with db.transaction() as tx:
        owners = {r["name"]: r["plugin"] for r in await tx.connection.fetch("SELECT name, plugin FROM xrm_sys.connection_role")}
        seen: dict[str, str] = {}
        for plugin_name, kind in wanted:
            if kind.name in seen or (kind.name in owners and owners[kind.name] != plugin_name):
                by = seen.get(kind.name) or owners.get(kind.name)
                warnings.append(f"plugin {plugin_name!r}: connection role {kind.name!r} exists already "
                                f"({'from plugin ' + repr(by) if by else 'made by an admin'}); the plugin's is not applied")
                continue
            seen[kind.name] = plugin_name
            label = {k: v.strip() for k, v in kind.label.items() if k in ("en", "de") and isinstance(v, str) and v.strip()}
            inverse = {k: v.strip() for k, v in (kind.inverse_label or kind.label).items() if k in ("en", "de") and isinstance(v, str) and v.strip()} or label
            sources = [kind.source] if kind.source else None
            targets = [kind.target] if kind.target else None
            changed = await tx.connection.fetchval(
                "INSERT INTO xrm_sys.connection_role AS r (name, label, inverse_label, source_entities, target_entities, plugin) "
                "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO UPDATE SET label = EXCLUDED.label, inverse_label = EXCLUDED.inverse_label, "
                "source_entities = EXCLUDED.source_entities, target_entities = EXCLUDED.target_entities "
                "WHERE (r.label, r.inverse_label, r.source_entities, r.target_entities) IS DISTINCT FROM "
                "(EXCLUDED.label, EXCLUDED.inverse_label, EXCLUDED.source_entities, EXCLUDED.target_entities) "
                "RETURNING (xmax = 0)",
                kind.name, label, inverse, sources, targets, plugin_name)
            if changed is not None:  # None: unchanged since the last start
                await AuditLog.write(tx.connection, SYSTEM_PRINCIPAL, "connection_role.created" if changed else "connection_role.updated",
                                     details={"name": kind.name, "label": label, "inverse_label": inverse, "source_entities": sources,
                                              "target_entities": targets, "plugin": plugin_name})
    for warning in warnings:
        log.warning(warning)
    return warnings


class Door:
    """What Relationships needs of the platform (db, registry, policy), e.g. taken from a caller's RecordService:
    the same door, the same rights."""

    def __init__(self, db: Any, registry: Any, policy: Any) -> None:
        self.db, self.registry, self.policy = db, registry, policy


class Relationships:
    """The relationships of records, through the principal's permissions."""

    def __init__(self, platform: Any, principal: Principal) -> None:
        self.platform = platform
        self.db = platform.db
        self.registry = platform.registry
        self.policy = platform.policy
        self.principal = principal

    def records(self, entity: str) -> RecordService:
        return RecordService(self.db, self.registry, entity, self.principal, self.policy)

    # -- permission predicates ----------------------------------------------------
    def _readable(self, entity: str, id_sql: str, params: list[Any]) -> str:
        """SQL: the record `id_sql` of `entity` is live and readable by the principal."""
        if entity not in self.registry:
            return "FALSE"
        compiled = self.registry.get(entity)
        predicate = self.policy.row_filter(self.principal, entity, "read", params)
        if predicate == "FALSE":
            return "FALSE"
        # Inside the sub-select the unqualified columns of the predicate (id, owner_id) are the entity's.
        return f"EXISTS (SELECT 1 FROM {compiled.table} WHERE id = {id_sql} AND deleted_at IS NULL AND ({predicate}))"

    async def _require_record(self, entity: str, record_id: Any) -> dict[str, Any]:
        """The record, if the principal may read it (NotFound otherwise)."""
        return await self.records(entity).get(record_id)

    async def _require_update(self, entity: str, record_id: Any) -> dict[str, Any]:
        record = await self._require_record(entity, record_id)
        service = self.records(entity)
        service.policy.authorize(self.principal, entity, "update")
        if "update" not in await service.allowed_actions(record["id"], ("update",)):
            raise PermissionDenied(f"You may not change this {entity} record, so you may not change its links")
        return record

    async def _names(self, by_entity: Mapping[str, set[uuid.UUID]]) -> dict[uuid.UUID, str]:
        """Display names of readable records, by id (one query per entity)."""
        names: dict[uuid.UUID, str] = {}
        for entity, ids in by_entity.items():
            if not ids or entity not in self.registry:
                continue
            service = self.records(entity)
            if service.policy_scope("read") == "none":
                continue
            page = await service.list(where=[("id", "in", [str(i) for i in ids])], limit=1000)
            compiled = self.registry.get(entity)
            for record in page.records:
                names[record["id"]] = display_of(compiled, record)
        return names

    # -- many-to-many links ----------------------------------------------------------
    def link(self, entity: str, name: str) -> tuple[LinkDefinition, bool]:
        found = resolve_link(self.registry, entity, name)
        if found is None:
            raise NotFound(f"{entity} has no link {name!r}")
        return found

    def links_for(self, entity: str) -> list[tuple[LinkDefinition, bool]]:
        """Every link the entity takes part in: (definition, inverse?), own ones first."""
        own = [(link, False) for link in link_definitions(self.registry) if link.source == entity]
        inverse = [(link, True) for link in link_definitions(self.registry) if link.target == entity and link.source in self.registry]
        return own + inverse

    async def list_links(self, entity: str, record_id: Any, name: str) -> list[dict[str, Any]]:
        link, inverse = self.link(entity, name)
        record = await self._require_record(entity, record_id)
        return await self._links(link, inverse, [record["id"]])

    async def _links(self, link: LinkDefinition, inverse: bool, ids: Sequence[uuid.UUID]) -> list[dict[str, Any]]:
        here, there = ("target", "source") if inverse else ("source", "target")
        other_entity = link.source if inverse else link.target
        params: list[Any] = [list(ids), link.name, link.source]
        other_ok = self._readable(other_entity, f"l.{there}_id", params)
        async with self.db.connection() as connection:
            rows = await connection.fetch(
                f"SELECT l.* FROM xrm_sys.record_link l WHERE l.{here}_id = ANY($1::uuid[]) AND l.kind = 'link' "
                f"AND l.name = $2 AND l.source_entity = $3 AND ({other_ok}) ORDER BY l.created_at, l.id",
                *params,
            )
        names = await self._names({other_entity: {row[f"{there}_id"] for row in rows}})
        return [
            {"id": row["id"], "link": link.inverse_name if inverse else link.name, "record_id": row[f"{here}_id"],
             "other": {"entity": other_entity, "id": row[f"{there}_id"], "display": names.get(row[f"{there}_id"], "")},
             "attributes": row["attributes"], "created_at": row["created_at"], "created_by": row["created_by"]}
            for row in rows if row[f"{there}_id"] in names
        ]

    async def create_link(self, entity: str, record_id: Any, name: str, body: Any) -> dict[str, Any]:
        link, inverse = self.link(entity, name)
        problems: list[Problem] = []
        if not isinstance(body, Mapping):
            raise ValidationFailed(entity, [Problem("", "a link must be a JSON object {\"target\": id, \"attributes\": {...}}")])
        for key in body:
            if key not in ("target", "attributes"):
                problems.append(Problem(pointer(key), "is not part of a link (target, attributes)"))
        other_entity = link.source if inverse else link.target
        other_id = as_uuid(body.get("target"))
        if other_id is None:
            problems.append(Problem("/target", f"must be the id of a {other_entity} record"))
        attributes = body.get("attributes") if body.get("attributes") is not None else {}
        problems.extend(link.attribute_problems(attributes))
        if problems:
            raise ValidationFailed(entity, problems)
        async with self.db.transaction() as tx:
            record = await self._require_update(entity, record_id)
            try:
                await self._require_record(other_entity, other_id)
            except NotFound:
                raise ValidationFailed(entity, [Problem("/target", f"no {other_entity} record with this id that you may read")]) from None
            source_id, target_id = (other_id, record["id"]) if inverse else (record["id"], other_id)
            try:
                async with tx.connection.transaction():
                    row = await tx.connection.fetchrow(
                        "INSERT INTO xrm_sys.record_link (kind, name, source_entity, source_id, target_entity, target_id, attributes, created_by) "
                        "VALUES ('link', $1, $2, $3, $4, $5, $6, $7) RETURNING *",
                        link.name, link.source, source_id, link.target, target_id, attributes, self.principal.id,
                    )
            except asyncpg.UniqueViolationError:
                raise ValidationFailed(entity, [Problem("/target", "these two records are linked already")]) from None
            await self._record_change(tx.connection, "link.created", row)
        names = await self._names({other_entity: {other_id}})
        return {"id": row["id"], "link": name, "record_id": record["id"],
                "other": {"entity": other_entity, "id": other_id, "display": names.get(other_id, "")},
                "attributes": row["attributes"], "created_at": row["created_at"], "created_by": row["created_by"]}

    async def remove(self, entity: str, record_id: Any, link_id: Any, *, kind: str, name: str | None = None) -> None:
        """Remove a link (kind 'link', with its name as seen from entity) or a connection."""
        key = as_uuid(link_id)
        if key is None:
            raise NotFound(f"No {kind} with id {link_id!r}")
        if kind == "link":
            link, inverse = self.link(entity, name or "")
            other_entity = link.source if inverse else link.target
        async with self.db.transaction() as tx:
            record = await self._require_record(entity, record_id)
            params: list[Any] = [key, record["id"], kind]
            where = "id = $1 AND (source_id = $2 OR target_id = $2) AND kind = $3"
            if kind == "link":
                params += [link.name, link.source]
                where += f" AND name = $4 AND source_entity = $5 AND {'target' if inverse else 'source'}_id = $2"
            row = await tx.connection.fetchrow(f"SELECT * FROM xrm_sys.record_link WHERE {where} FOR UPDATE", *params)
            if row is not None:
                there = "target" if row["source_id"] == record["id"] and row["source_entity"] == entity else "source"
                other_entity = row[f"{there}_entity"]
                readable: list[Any] = [row[f"{there}_id"]]
                check = self._readable(other_entity, "$1", readable)
                if not await tx.connection.fetchval(f"SELECT {check}", *readable):
                    row = None
            if row is None:
                raise NotFound(f"No {kind} with id {link_id} at this {entity} record")
            await self._require_update(entity, record["id"])
            await tx.connection.execute("DELETE FROM xrm_sys.record_link WHERE id = $1", key)
            await self._record_change(tx.connection, f"{kind}.removed", row)

    async def _record_change(self, connection: asyncpg.Connection, action: str, row: Mapping[str, Any]) -> None:
        """Audit entries for both ends and one outbox event, on the change's connection."""
        details = {"id": row["id"], "kind": row["kind"], "name": row["name"],
                   "source": {"entity": row["source_entity"], "id": row["source_id"]},
                   "target": {"entity": row["target_entity"], "id": row["target_id"]},
                   "attributes": row["attributes"], "valid_from": row["valid_from"], "valid_until": row["valid_until"]}
        for end in ("source", "target"):
            await AuditLog.write(connection, self.principal, action, entity=row[f"{end}_entity"], record_id=row[f"{end}_id"], details=details)
        await connection.execute(
            "INSERT INTO xrm_sys.outbox (topic, entity, record_id, principal_id, payload) VALUES ($1, $2, $3, $4, $5)",
            action, row["source_entity"], row["source_id"], self.principal.id, details,
        )

    # -- many records at once (?expand=, the graph's second ring) -------------------------
    async def _records_of(self, wanted: Mapping[str, set[uuid.UUID]]) -> dict[tuple[str, uuid.UUID], dict[str, Any]]:
        """Readable live records as RecordService shows them (with "_display"), one query per entity."""
        found: dict[tuple[str, uuid.UUID], dict[str, Any]] = {}
        for entity, ids in wanted.items():
            if not ids or entity not in self.registry:
                continue
            service = self.records(entity)
            if service.policy_scope("read") == "none":
                continue
            compiled = self.registry.get(entity)
            for key, record in (await service.read_many(list(ids))).items():
                found[(entity, key)] = {**record, "_display": display_of(compiled, record)}
        return found

    async def expand_links(self, entity: str, name: str, ids: Sequence[uuid.UUID], limit: int | None = None) -> dict[uuid.UUID, list[dict[str, Any]]]:
        """The link `name` of each record in `ids` (records the caller read already): at most `limit` each, oldest first,
        with the linked record; two queries whatever the number of ids."""
        link, inverse = self.link(entity, name)
        here, there = ("target", "source") if inverse else ("source", "target")
        other_entity = link.source if inverse else link.target
        params: list[Any] = [list(ids), link.name, link.source]
        other_ok = self._readable(other_entity, f"l.{there}_id", params)
        async with self.db.connection() as connection:
            rows = await connection.fetch(
                f"SELECT * FROM (SELECT l.*, row_number() OVER (PARTITION BY l.{here}_id ORDER BY l.created_at, l.id) AS n "
                f"FROM xrm_sys.record_link l WHERE l.{here}_id = ANY($1::uuid[]) AND l.kind = 'link' AND l.name = $2 "
                f"AND l.source_entity = $3 AND ({other_ok})) x WHERE n <= {int(limit or EXPAND_LIMIT)} ORDER BY n",
                *params,
            )
        records = await self._records_of({other_entity: {row[f"{there}_id"] for row in rows}})
        result: dict[uuid.UUID, list[dict[str, Any]]] = {}
        for row in rows:
            other = records.get((other_entity, row[f"{there}_id"]))
            if other is not None:
                result.setdefault(row[f"{here}_id"], []).append({
                    "id": row["id"], "link": name, "entity": other_entity, "record": other,
                    "attributes": row["attributes"], "created_at": row["created_at"]})
        return result

    async def _connection_rows(self, entity: str, ids: Sequence[uuid.UUID], limit: int, at: dt.date | None = None) -> list[Any]:
        """Connections of many records of one entity, one row per (record, connection) seen from that record:
        here_id, other_entity, other_id, forward, role labels; at most `limit` per record; only readable other ends."""
        params: list[Any] = [list(ids), entity]
        ends = " OR ".join(
            f"(c.other_entity = '{other}' AND {self._readable(other, 'c.other_id', params)})" for other in self.registry.names()) or "FALSE"
        validity = ""
        if at is not None:
            params.append(at)
            validity = f" AND (c.valid_from IS NULL OR c.valid_from <= ${len(params)}) AND (c.valid_until IS NULL OR c.valid_until >= ${len(params)})"
        # Each connection once from each end that is in `ids` (both, when the page holds both ends).
        sides = (
            "SELECT l.*, l.source_id AS here_id, l.target_entity AS other_entity, l.target_id AS other_id, true AS forward "
            "FROM xrm_sys.record_link l WHERE l.kind = 'connection' AND l.source_id = ANY($1::uuid[]) AND l.source_entity = $2 "
            "UNION ALL "
            "SELECT l.*, l.target_id, l.source_entity, l.source_id, false "
            "FROM xrm_sys.record_link l WHERE l.kind = 'connection' AND l.target_id = ANY($1::uuid[]) AND l.target_entity = $2"
        )
        async with self.db.connection() as connection:
            return await connection.fetch(
                f"SELECT * FROM (SELECT c.*, r.label, r.inverse_label, row_number() OVER (PARTITION BY c.here_id "
                f"ORDER BY c.valid_from NULLS FIRST, c.created_at, c.id) AS n FROM ({sides}) c "
                f"JOIN xrm_sys.connection_role r ON r.name = c.name WHERE ({ends}){validity}) x WHERE n <= {int(limit)} ORDER BY n",
                *params,
            )

    async def expand_connections(self, entity: str, ids: Sequence[uuid.UUID], limit: int | None = None,
                                 with_records: bool = True) -> dict[uuid.UUID, list[dict[str, Any]]]:
        """Connections of each record in `ids`, as `connections` gives them, at most `limit` each, plus the other record
        ("record", as RecordService shows it) when `with_records`; one query for the connections, one per other entity."""
        rows = await self._connection_rows(entity, ids, limit or EXPAND_LIMIT)
        wanted: dict[str, set[uuid.UUID]] = {}
        for row in rows:
            wanted.setdefault(row["other_entity"], set()).add(row["other_id"])
        records = await self._records_of(wanted)
        today = dt.date.today()
        result: dict[uuid.UUID, list[dict[str, Any]]] = {}
        for row in rows:
            other = records.get((row["other_entity"], row["other_id"]))
            if other is None:
                continue
            item = {
                "id": row["id"], "role": row["name"], "direction": "forward" if row["forward"] else "reverse",
                "label": row["label"] if row["forward"] else row["inverse_label"],
                "other": {"entity": row["other_entity"], "id": row["other_id"], "display": other["_display"]},
                "valid_from": row["valid_from"], "valid_until": row["valid_until"],
                "active": (row["valid_from"] is None or row["valid_from"] <= today) and (row["valid_until"] is None or row["valid_until"] >= today),
            }
            if with_records:
                item["record"] = other
            result.setdefault(row["here_id"], []).append(item)
        return result

    # -- connection roles ----------------------------------------------------------
    async def roles(self) -> list[dict[str, Any]]:
        async with self.db.connection() as connection:
            rows = await connection.fetch("SELECT name, label, inverse_label, source_entities, target_entities, plugin FROM xrm_sys.connection_role ORDER BY name")
        return [dict(row) for row in rows]

    async def role(self, name: str) -> dict[str, Any] | None:
        async with self.db.connection() as connection:
            row = await connection.fetchrow(
                "SELECT name, label, inverse_label, source_entities, target_entities, plugin FROM xrm_sys.connection_role WHERE name = $1", name)
        return dict(row) if row else None

    async def create_role(self, body: Any) -> dict[str, Any]:
        if "admin" not in self.principal.roles:
            raise PermissionDenied("Connection roles are managed by admins")
        problems: list[Problem] = []
        if not isinstance(body, Mapping):
            raise ValidationFailed("connection_role", [Problem("", "must be a JSON object")])
        for key in body:
            if key not in ("name", "label", "inverse_label", "source_entities", "target_entities"):
                problems.append(Problem(pointer(key), "is not part of a connection role"))
        name = body.get("name")
        import re

        if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_]{0,62}", name):
            problems.append(Problem("/name", "must be a name of lower-case letters, digits and _ (starting with a letter)"))
        labels = {}
        for key in ("label", "inverse_label"):
            value = body.get(key)
            if key == "inverse_label" and value is None:
                value = body.get("label")  # symmetric: "partner of" both ways
            if isinstance(value, str):
                value = {"en": value}
            if not isinstance(value, Mapping) or not isinstance(value.get("en"), str) or not value["en"].strip() \
                    or any(k not in ("en", "de") or not isinstance(v, str) or len(v) > 100 or "\x00" in v for k, v in value.items()):
                problems.append(Problem(pointer(key), 'must be {"en": "...", "de": "..."} (English required, at most 100 characters)'))
            else:
                labels[key] = {k: v.strip() for k, v in value.items() if v.strip()}
        allowed = {}
        for key in ("source_entities", "target_entities"):
            value = body.get(key)
            if value is None:
                allowed[key] = None
            elif not isinstance(value, list) or not value or any(not isinstance(v, str) or v not in self.registry for v in value):
                problems.append(Problem(pointer(key), "must be a list of entity names (or absent: any entity)"))
            else:
                allowed[key] = sorted(set(value))
        if problems:
            raise ValidationFailed("connection_role", problems)
        async with self.db.transaction() as tx:
            try:
                async with tx.connection.transaction():
                    await tx.connection.execute(
                        "INSERT INTO xrm_sys.connection_role (name, label, inverse_label, source_entities, target_entities, created_by) "
                        "VALUES ($1, $2, $3, $4, $5, $6)",
                        name, labels["label"], labels["inverse_label"], allowed["source_entities"], allowed["target_entities"], self.principal.id)
            except asyncpg.UniqueViolationError:
                raise ValidationFailed("connection_role", [Problem("/name", "a connection role with this name exists already")]) from None
            await AuditLog.write(tx.connection, self.principal, "connection_role.created", details={"name": name, **labels, **allowed})
        return {"name": name, **labels, **allowed, "plugin": None}

    async def delete_role(self, name: str) -> None:
        if "admin" not in self.principal.roles:
            raise PermissionDenied("Connection roles are managed by admins")
        async with self.db.transaction() as tx:
            owner = await tx.connection.fetchval("SELECT plugin FROM xrm_sys.connection_role WHERE name = $1", name)
            if owner is not None and _plugin_loaded(owner):
                raise ValidationFailed("connection_role", [Problem("/name", f"this role comes from the plugin {owner!r}; it goes when the plugin is disabled")])
            used = await tx.connection.fetchval("SELECT count(*) FROM xrm_sys.record_link WHERE kind = 'connection' AND name = $1", name)
            if used:
                raise ValidationFailed("connection_role", [Problem("/name", f"{used} connection(s) use this role; remove them first")])
            deleted = await tx.connection.fetchval("DELETE FROM xrm_sys.connection_role WHERE name = $1 RETURNING name", name)
            if deleted is None:
                raise NotFound(f"No connection role {name!r}")
            await AuditLog.write(tx.connection, self.principal, "connection_role.deleted", details={"name": name})

    # -- connections --------------------------------------------------------------------
    async def connections(self, entity: str, record_id: Any, *, at: dt.date | None = None) -> list[dict[str, Any]]:
        """Both directions, each with the role as seen from this record (label or inverse label)."""
        record = await self._require_record(entity, record_id)
        params: list[Any] = [record["id"], entity]
        ends = []
        for other in self.registry.names():
            ends.append(f"(CASE WHEN l.source_id = $1 AND l.source_entity = $2 THEN l.target_entity ELSE l.source_entity END = '{other}' "
                        f"AND {self._readable(other, 'CASE WHEN l.source_id = $1 AND l.source_entity = $2 THEN l.target_id ELSE l.source_id END', params)})")
        visible = " OR ".join(ends) or "FALSE"
        validity = ""
        if at is not None:
            params.append(at)
            validity = f" AND (l.valid_from IS NULL OR l.valid_from <= ${len(params)}) AND (l.valid_until IS NULL OR l.valid_until >= ${len(params)})"
        async with self.db.connection() as connection:
            rows = await connection.fetch(
                "SELECT l.*, r.label, r.inverse_label FROM xrm_sys.record_link l JOIN xrm_sys.connection_role r ON r.name = l.name "
                "WHERE l.kind = 'connection' AND ((l.source_id = $1 AND l.source_entity = $2) OR (l.target_id = $1 AND l.target_entity = $2)) "
                f"AND ({visible}){validity} ORDER BY l.valid_from NULLS FIRST, l.created_at, l.id",
                *params,
            )
        wanted: dict[str, set[uuid.UUID]] = {}
        for row in rows:
            forward = row["source_id"] == record["id"] and row["source_entity"] == entity
            there = "target" if forward else "source"
            wanted.setdefault(row[f"{there}_entity"], set()).add(row[f"{there}_id"])
        names = await self._names(wanted)
        today = dt.date.today()
        result = []
        for row in rows:
            forward = row["source_id"] == record["id"] and row["source_entity"] == entity
            there = "target" if forward else "source"
            result.append({
                "id": row["id"], "role": row["name"], "direction": "forward" if forward else "reverse",
                "label": row["label"] if forward else row["inverse_label"],
                "other": {"entity": row[f"{there}_entity"], "id": row[f"{there}_id"], "display": names.get(row[f"{there}_id"], "")},
                "valid_from": row["valid_from"], "valid_until": row["valid_until"],
                "active": (row["valid_from"] is None or row["valid_from"] <= today) and (row["valid_until"] is None or row["valid_until"] >= today),
                "created_at": row["created_at"], "created_by": row["created_by"],
            })
        return result

    async def connect(self, entity: str, record_id: Any, body: Any) -> dict[str, Any]:
        """A connection from this record: {"role", "other_entity", "other_id", "direction"?, "valid_from"?, "valid_until"?}.

        direction "forward" (default): this record has the role towards the other
        ("advisor of"); "reverse": the other has it towards this one ("advised by").
        """
        if not isinstance(body, Mapping):
            raise ValidationFailed(entity, [Problem("", "a connection must be a JSON object")])
        problems: list[Problem] = []
        for key in body:
            if key not in ("role", "other_entity", "other_id", "direction", "valid_from", "valid_until"):
                problems.append(Problem(pointer(key), "is not part of a connection (role, other_entity, other_id, direction, valid_from, valid_until)"))
        role = await self.role(body["role"]) if isinstance(body.get("role"), str) else None
        if role is None:
            problems.append(Problem("/role", "must name a connection role (GET /api/v1/_connection_roles lists them)"))
        other_entity = body.get("other_entity")
        if not isinstance(other_entity, str) or other_entity not in self.registry:
            problems.append(Problem("/other_entity", "must name an entity"))
        other_id = as_uuid(body.get("other_id"))
        if other_id is None:
            problems.append(Problem("/other_id", "must be a record id"))
        direction = body.get("direction", "forward")
        if direction not in ("forward", "reverse"):
            problems.append(Problem("/direction", "must be forward or reverse"))
        valid_from = _date(body.get("valid_from"), "/valid_from", problems)
        valid_until = _date(body.get("valid_until"), "/valid_until", problems)
        if valid_from and valid_until and valid_from > valid_until:
            problems.append(Problem("/valid_until", "must not be before valid_from"))
        if role is not None and isinstance(other_entity, str) and direction in ("forward", "reverse"):
            source, target = (entity, other_entity) if direction == "forward" else (other_entity, entity)
            if role["source_entities"] and source not in role["source_entities"]:
                problems.append(Problem("/role" if direction == "forward" else "/other_entity",
                                        f"the role {role['name']!r} starts at {', '.join(role['source_entities'])}, not {source}"))
            if role["target_entities"] and target not in role["target_entities"]:
                problems.append(Problem("/other_entity" if direction == "forward" else "/role",
                                        f"the role {role['name']!r} points at {', '.join(role['target_entities'])}, not {target}"))
        if problems:
            raise ValidationFailed(entity, problems)
        async with self.db.transaction() as tx:
            record = await self._require_update(entity, record_id)
            if other_id == record["id"] and other_entity == entity:
                raise ValidationFailed(entity, [Problem("/other_id", "a record cannot be connected to itself")])
            try:
                await self._require_record(other_entity, other_id)
            except NotFound:
                raise ValidationFailed(entity, [Problem("/other_id", f"no {other_entity} record with this id that you may read")]) from None
            ends = [(entity, record["id"]), (other_entity, other_id)]
            if direction == "reverse":
                ends.reverse()
            try:
                async with tx.connection.transaction():
                    row = await tx.connection.fetchrow(
                        "INSERT INTO xrm_sys.record_link (kind, name, source_entity, source_id, target_entity, target_id, valid_from, valid_until, created_by) "
                        "VALUES ('connection', $1, $2, $3, $4, $5, $6, $7, $8) RETURNING *",
                        role["name"], ends[0][0], ends[0][1], ends[1][0], ends[1][1], valid_from, valid_until, self.principal.id,
                    )
            except asyncpg.UniqueViolationError:
                raise ValidationFailed(entity, [Problem("/other_id", "these records are connected in this role from this date already")]) from None
            await self._record_change(tx.connection, "connection.created", row)
        found = [c for c in await self.connections(entity, record["id"]) if c["id"] == row["id"]]
        return found[0]

    # -- hierarchy ---------------------------------------------------------------------
    def hierarchy(self, entity: str) -> Hierarchy:
        found = hierarchy_of(self.registry.get(entity).definition)
        if found is None:
            raise NotFound(f"{entity} has no hierarchy")
        return found

    def _permitted(self, entity: str, columns: str, params: list[Any]) -> str:
        """A sub-select of the entity's live rows the principal may read (the tree never leaves it)."""
        compiled = self.registry.get(entity)
        predicate = self.policy.row_filter(self.principal, entity, "read", params)
        return f"(SELECT {columns} FROM {compiled.table} WHERE deleted_at IS NULL AND ({predicate}))"

    def _descendants_sql(self, entity: str, root: str, columns: str, params: list[Any]) -> str:
        """WITH RECURSIVE tree(...) over permitted rows: the root and everything below it (a hidden record hides its subtree)."""
        parent = quote_ident(self.registry.get(entity).fields[self.hierarchy(entity).parent].columns()[0].name)
        anchor = self._permitted(entity, f"id, {parent} AS parent_id{columns}", params)
        below = self._permitted(entity, f"id, {parent} AS parent_id{columns}", params)
        return (
            f"WITH RECURSIVE tree AS ("
            f" SELECT r.*, 0 AS depth FROM {anchor} r WHERE r.id = {root}"
            f" UNION ALL"
            f" SELECT c.*, tree.depth + 1 FROM {below} c JOIN tree ON c.parent_id = tree.id WHERE tree.depth < 100"
            f") CYCLE id SET looped USING path "
        )

    async def tree(self, entity: str, record_id: Any) -> dict[str, Any]:
        """The record, its readable ancestors (root first) and its readable descendants as nested nodes."""
        hierarchy = self.hierarchy(entity)
        compiled = self.registry.get(entity)
        record = await self._require_record(entity, record_id)
        service = self.records(entity)
        display = compiled.definition.display_field
        display_sql = ""
        if display and display not in service.hidden_fields:
            display_sql = f", {quote_ident(compiled.fields[display].columns()[0].name)}::text AS display"
        params: list[Any] = [record["id"]]
        sql = self._descendants_sql(entity, "$1", display_sql, params) + \
            f"SELECT id, parent_id, depth{', display' if display_sql else ''} FROM tree WHERE NOT looped ORDER BY depth, {'display, ' if display_sql else ''}id LIMIT {TREE_LIMIT + 1}"
        async with self.db.connection() as connection:
            rows = await connection.fetch(sql, *params)
        nodes: dict[uuid.UUID, dict[str, Any]] = {}
        for row in rows[:TREE_LIMIT]:
            node = {"id": row["id"], "display": (row["display"] if display_sql and row["display"] else str(row["id"])[:8]),
                    "depth": row["depth"], "children": []}
            nodes[row["id"]] = node
            if row["parent_id"] in nodes and row["depth"] > 0:
                nodes[row["parent_id"]]["children"].append(node)
        ancestors = await self.ancestors(entity, record["id"])
        return {"entity": entity, "root": nodes[record["id"]], "ancestors": ancestors, "truncated": len(rows) > TREE_LIMIT,
                "count": min(len(rows), TREE_LIMIT), "rollups": await self.rollups(entity, record["id"]), "parent_field": hierarchy.parent}

    async def ancestors(self, entity: str, record_id: uuid.UUID) -> list[dict[str, Any]]:
        """Readable ancestors, the top first; the walk stops at the first one the principal may not read."""
        hierarchy = self.hierarchy(entity)
        compiled = self.registry.get(entity)
        parent = quote_ident(compiled.fields[hierarchy.parent].columns()[0].name)
        params: list[Any] = [record_id]
        rows_sql = self._permitted(entity, f"id, {parent} AS parent_id", params)
        start = self._permitted(entity, f"id, {parent} AS parent_id", params)
        sql = (f"WITH RECURSIVE up AS (SELECT s.parent_id AS id, 1 AS depth FROM {start} s WHERE s.id = $1"
               f" UNION ALL SELECT p.parent_id, up.depth + 1 FROM {rows_sql} p JOIN up ON p.id = up.id WHERE up.depth < 100)"
               f" CYCLE id SET looped USING path"
               f" SELECT up.id, up.depth FROM up JOIN {self._permitted(entity, 'id', params)} v ON v.id = up.id WHERE NOT up.looped ORDER BY up.depth DESC")
        async with self.db.connection() as connection:
            rows = await connection.fetch(sql, *params)
        names = await self._names({entity: {row["id"] for row in rows}})
        return [{"id": row["id"], "display": names.get(row["id"], str(row["id"])[:8])} for row in rows]

    async def rollups(self, entity: str, record_id: uuid.UUID) -> list[dict[str, Any]]:
        """Each declared roll-up over the record and its readable descendants, computed in SQL.

        A roll-up over a sensitive field the principal may not read is left out.
        Currency sums are per currency ([{"amount", "currency"}]).
        """
        hierarchy = self.hierarchy(entity)
        compiled = self.registry.get(entity)
        hidden = self.records(entity).hidden_fields
        results = []
        for rollup in hierarchy.rollups:
            if rollup.field in hidden:
                continue
            f = compiled.fields[rollup.field] if rollup.field else None
            params: list[Any] = [record_id]
            if f is None:
                columns, select = "", "SELECT count(*) AS value FROM tree WHERE NOT looped AND depth > 0"
            elif f.type.name == "currency":
                amount, currency = (quote_ident(c.name) for c in f.columns())
                columns = f", {amount} AS amount, {currency} AS currency"
                aggregate = "count(amount)" if rollup.aggregate == "count" else f"{rollup.aggregate}(amount)"
                select = f"SELECT currency, {aggregate} AS value FROM tree WHERE NOT looped AND amount IS NOT NULL GROUP BY currency ORDER BY currency"
            else:
                columns = f", {quote_ident(f.columns()[0].name)} AS v"
                aggregate = "count(v)" if rollup.aggregate == "count" else f"{rollup.aggregate}(v)"
                select = f"SELECT {aggregate} AS value FROM tree WHERE NOT looped"
            sql = self._descendants_sql(entity, "$1", columns, params) + select
            async with self.db.connection() as connection:
                rows = await connection.fetch(sql, *params)
            if f is not None and f.type.name == "currency":
                value: Any = [{"amount": row["value"], "currency": row["currency"]} for row in rows] \
                    if rollup.aggregate != "count" else sum(row["value"] for row in rows)
            else:
                value = rows[0]["value"] if rows else None
            results.append({"name": rollup.name, "field": rollup.field, "aggregate": rollup.aggregate, "value": value,
                            "label": rollup.label("en", f.label("en") if f else None)})
        return results
