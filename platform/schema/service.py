"""SchemaService: plan, apply, revert and restore entity definitions.

Every change runs in ONE transaction (PostgreSQL DDL is transactional) under an
advisory lock: the checks, the DDL, the archive copies, the new definition
versions and the outbox event commit together or not at all.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from ..audit import AuditLog
from ..db.database import Database
from ..errors import DefinitionInvalid, NotFound, Problem, Refusal, SchemaChangeRefused, XrmError, pointer
from ..records.principal import SYSTEM_PRINCIPAL, Principal
from ..registry import SCHEMA_CHANNEL, Registry
from .definition import EntityDefinition, check_definition_set, parse_definition, same_document
from .evolution import DESTRUCTIVE, Change, ExecutionContext, Hints, Step, plan_changes

__all__ = ["Plan", "SchemaService"]

SCHEMA_LOCK = 7406002


@dataclass
class Plan:
    steps: list[Step]
    refusals: list[Refusal] = field(default_factory=list)
    changeset_id: int | None = None
    """Set once applied."""

    @property
    def destructive(self) -> list[Step]:
        return [s for s in self.steps if s.kind == DESTRUCTIVE]

    def render(self) -> str:
        if not self.steps:
            return "No changes: the database already matches these definitions."
        lines = []
        for number, step in enumerate(self.steps, 1):
            impact = f"  [{step.impact}]" if step.impact else ""
            lines.append(f"{number:>3}. {step.kind:<11} {step.summary}{impact}")
        for refusal in self.refusals:
            where = f"{refusal.entity}.{refusal.field}" if refusal.field else refusal.entity
            ids = f" (records: {', '.join(refusal.record_ids)})" if refusal.record_ids else ""
            lines.append(f"  REFUSED     {where}: {refusal.reason}{ids}")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "changeset_id": self.changeset_id,
            "steps": [s.as_dict() for s in self.steps],
            "refusals": [r.__dict__ for r in self.refusals],
        }


@dataclass
class _Current:
    ids: dict[str, uuid.UUID]
    versions: dict[str, int]
    definitions: dict[str, EntityDefinition]


@dataclass
class _Proposal:
    desired: dict[str, EntityDefinition]
    """Entities to create or change, by new name."""
    removed: list[str]
    hints: Hints
    sources: dict[str, str]
    """new name -> current name, for renamed or changed entities."""


class SchemaService:
    def __init__(self, db: Database, registry: Registry | None = None) -> None:
        self.db = db
        self.registry = registry

    # -- public ----------------------------------------------------------------
    async def plan(self, documents: Sequence[Any], *, remove: Iterable[str] = (), sources: Sequence[str] | None = None) -> Plan:
        """What `apply` would do, with data impact and refusals; changes nothing."""
        async with self.db.transaction() as tx:
            current = await self._current(tx.connection)
            proposal = self._propose(current, documents, list(remove), sources)
            await _check_patterns(tx.connection, proposal.desired)
            changes = plan_changes(current.definitions, proposal.desired, proposal.removed, proposal.hints)
            return await self._evaluate(tx.connection, changes)

    async def apply(
        self,
        documents: Sequence[Any],
        *,
        remove: Iterable[str] = (),
        principal: Principal = SYSTEM_PRINCIPAL,
        allow_destructive: bool = False,
        sources: Sequence[str] | None = None,
    ) -> Plan:
        return await self._run(
            lambda current: self._propose(current, documents, list(remove), sources),
            principal=principal, allow_destructive=allow_destructive, kind="apply",
        )

    async def revert(self, *, principal: Principal = SYSTEM_PRINCIPAL) -> Plan:
        """Undo the newest schema change still in effect, putting back the data it touched."""
        async with self.db.connection() as connection:
            # An undo stack: reverts are not themselves undone; each call takes
            # the newest change that is still in effect.
            last = await connection.fetchrow(
                "SELECT * FROM xrm_sys.schema_changeset WHERE kind <> 'revert' AND reverted_by IS NULL ORDER BY id DESC LIMIT 1"
            )
        if last is None:
            raise NotFound("There is no schema change to revert")
        details = last["details"]

        async def propose(current: _Current) -> _Proposal:
            return await self._revert_proposal(current, last["id"], details)

        return await self._run(propose, principal=principal, allow_destructive=True, kind="revert", reverts=last["id"])

    async def restore_field(self, batch_id: int, *, principal: Principal = SYSTEM_PRINCIPAL) -> Plan:
        """Put an archived (removed) field back, with its values."""
        async with self.db.connection() as connection:
            batch = await connection.fetchrow(
                "SELECT b.*, e.name AS entity, e.removed_at FROM xrm_sys.archive_batch b JOIN xrm_sys.entity e ON e.id = b.entity_id WHERE b.id = $1",
                batch_id,
            )
        if batch is None or batch["reason"] != "removed":
            raise NotFound(f"No archived field with archive id {batch_id}")
        if batch["restored_at"] is not None:
            raise XrmError(f"Archive {batch_id} was already restored")
        if batch["removed_at"] is not None:
            raise XrmError(f"Entity {batch['entity']} is itself archived; restore the entity first")

        def propose(current: _Current) -> _Proposal:
            entity = batch["entity"]
            document = copy.deepcopy(dict(current.definitions[entity].document))
            name = batch["field"]
            if name in document["properties"]:
                raise XrmError(f"{entity} already has a field {name!r}; rename it before restoring the archived one")
            document["properties"][name] = batch["field_definition"]["schema"]
            if batch["field_definition"]["required"]:
                document.setdefault("required", []).append(name)
            proposal = self._propose(current, [document], [], None)
            proposal.hints.restore_values[(entity, name)] = batch_id
            return proposal

        return await self._run(propose, principal=principal, allow_destructive=False, kind="restore")

    async def restore_entity(self, name: str, *, principal: Principal = SYSTEM_PRINCIPAL) -> Plan:
        """Move an archived (removed) entity back, with all its records."""
        async with self.db.connection() as connection:
            row = await connection.fetchrow(
                "SELECT id, definition, archived_table FROM xrm_sys.entity WHERE name = $1 AND removed_at IS NOT NULL "
                "ORDER BY removed_at DESC LIMIT 1",
                name,
            )
        if row is None:
            raise NotFound(f"No archived entity named {name!r}")

        def propose(current: _Current) -> _Proposal:
            if name in current.definitions:
                raise XrmError(f"An entity named {name!r} exists; rename it before restoring the archived one")
            proposal = self._propose(current, [row["definition"]], [], None)
            proposal.hints.restore_entities[name] = row["archived_table"]
            current.ids[name] = row["id"]
            return proposal

        return await self._run(propose, principal=principal, allow_destructive=False, kind="restore")

    async def history(self, entity: str | None = None) -> list[dict[str, Any]]:
        """Definition versions, newest first (all entities, or one by current or former name)."""
        if entity is not None and "\x00" in entity:
            return []  # no name holds NUL; PostgreSQL text could not even carry it
        async with self.db.connection() as connection:
            rows = await connection.fetch(
                """
                SELECT v.entity_id, v.version, v.name, v.definition, v.created_at, c.id AS changeset_id,
                       c.kind, c.applied_by, c.reverted_by
                FROM xrm_sys.entity_version v JOIN xrm_sys.schema_changeset c ON c.id = v.changeset_id
                WHERE $1::text IS NULL OR v.entity_id IN (SELECT entity_id FROM xrm_sys.entity_version WHERE name = $1)
                ORDER BY v.created_at DESC, v.version DESC
                """,
                entity,
            )
        return [dict(r) for r in rows]

    async def archives(self) -> list[dict[str, Any]]:
        """Removed fields and entities that can be restored.

        (Values a conversion or default fill overwrote are archived too, but
        they come back through `revert`, not one by one.)
        """
        async with self.db.connection() as connection:
            fields = await connection.fetch(
                """SELECT b.id, e.name AS entity, b.field, b.reason, b.row_count, b.created_at, b.changeset_id
                   FROM xrm_sys.archive_batch b JOIN xrm_sys.entity e ON e.id = b.entity_id
                   WHERE b.restored_at IS NULL AND b.reason = 'removed' ORDER BY b.id"""
            )
            entities = await connection.fetch(
                "SELECT name, archived_table, removed_at FROM xrm_sys.entity WHERE removed_at IS NOT NULL ORDER BY removed_at"
            )
        return [{"kind": "field", **dict(r)} for r in fields] + [{"kind": "entity", **dict(r)} for r in entities]

    # -- internals -------------------------------------------------------------
    async def _current(self, connection: asyncpg.Connection) -> _Current:
        rows = await connection.fetch(
            "SELECT id, name, version, definition FROM xrm_sys.entity WHERE removed_at IS NULL"
        )
        names = [r["name"] for r in rows]
        return _Current(
            ids={r["name"]: r["id"] for r in rows},
            versions={r["name"]: r["version"] for r in rows},
            definitions={r["name"]: parse_definition(r["definition"], known_entities=names) for r in rows},
        )

    def _propose(self, current: _Current, documents: Sequence[Any], remove: list[str], sources: Sequence[str] | None) -> _Proposal:
        names = [s for s in sources] if sources else [None] * len(documents)
        parsed: dict[str, EntityDefinition] = {}
        problems: list[Problem] = []
        # First pass without references, to learn every name in this change.
        shallow = []
        for document, source in zip(documents, names):
            definition = parse_definition(document, known_entities=None, source=source)
            if definition.name in parsed:
                raise DefinitionInvalid([Problem("/x-xrm/name", f"entity {definition.name!r} is defined twice")], source)
            parsed[definition.name] = definition
            shallow.append((document, source))
        for name in remove:
            if name not in current.definitions:
                raise NotFound(f"Unknown entity {name!r}")
        renamed = {
            d.renamed_from: d.name
            for d in parsed.values()
            if d.renamed_from in current.definitions and d.renamed_from not in parsed and d.name not in current.definitions
        }
        final_names = (set(current.definitions) - set(renamed) - set(remove)) | set(parsed)
        desired: dict[str, EntityDefinition] = {}
        for document, source in shallow:
            definition = parse_definition(document, known_entities=final_names, source=source)
            if definition.name in current.definitions and definition.name not in renamed.values():
                if same_document(current.definitions[definition.name].document, definition.document):
                    continue
            desired[definition.name] = definition
        # Untouched entities that reference a renamed entity follow the rename.
        for name, definition in current.definitions.items():
            if name in parsed or name in remove or name in renamed:
                continue
            targets = definition.references() & set(renamed)
            if targets:
                document = copy.deepcopy(dict(definition.document))
                for prop in document["properties"].values():
                    target = prop.get("x-xrm", {}).get("references")
                    if target in renamed:
                        prop["x-xrm"]["references"] = renamed[target]
                desired[name] = parse_definition(document, known_entities=final_names)
        full = {n: d for n, d in current.definitions.items() if n in final_names}
        full.update(parsed)
        full.update(desired)  # includes the entities whose references follow a rename
        for problem in check_definition_set(full):
            problems.append(problem)
        for name in remove:
            for other in full.values():
                for f in other.fields.values():
                    if f.references == name:
                        problems.append(Problem(pointer(other.name, "properties", f.name, "x-xrm", "references"),
                                                f"{other.name}.{f.name} references {name!r}, which is being removed; remove or change that field first"))
        if problems:
            raise DefinitionInvalid(problems)
        sources_map = {new: old for old, new in renamed.items()}
        return _Proposal(desired, list(remove), Hints(), sources_map)

    async def _revert_proposal(self, current: _Current, changeset_id: int, details: Mapping[str, Any]) -> _Proposal:
        hints = Hints()
        desired: dict[str, EntityDefinition] = {}
        removed: list[str] = []
        by_id = {str(v): k for k, v in current.ids.items()}
        before: Mapping[str, Any] = details["before"]
        after: Mapping[str, Any] = details["after"]
        async with self.db.connection() as connection:
            batches = await connection.fetch(
                "SELECT id, entity_id, field, reason FROM xrm_sys.archive_batch WHERE changeset_id = $1", changeset_id
            )
            archived_rows = await connection.fetch("SELECT id, name, archived_table FROM xrm_sys.entity WHERE removed_at IS NOT NULL")
        archived = {str(r["id"]): r for r in archived_rows}
        final_names = set(current.definitions)
        for entity_id, state in before.items():
            now_name = by_id.get(entity_id)
            if state is None:
                if now_name:
                    removed.append(now_name)
                    final_names.discard(now_name)
                continue
            final_names.discard(now_name) if now_name else None
            final_names.add(state["name"])
        for entity_id, state in before.items():
            if state is None:
                continue
            name = state["name"]
            now_name = by_id.get(entity_id)
            definition = parse_definition(state["definition"], known_entities=final_names)
            desired[name] = definition
            if now_name is None:
                row = archived.get(entity_id)
                if row is None:
                    raise XrmError(f"Cannot revert: entity {name!r} is neither live nor archived")
                hints.restore_entities[name] = row["archived_table"]
                current.ids[name] = row["id"]
            elif now_name != name:
                hints.entity_renames[name] = now_name
            for new_field, old_field in (after.get(entity_id) or {}).get("field_renames", {}).items():
                # the change renamed old_field -> new_field; the revert renames it back
                hints.field_renames[(name, old_field)] = new_field
        for batch in batches:
            state = before.get(str(batch["entity_id"]))
            if state is not None:
                hints.restore_values[(state["name"], batch["field"])] = batch["id"]
        return _Proposal(desired, removed, hints, {})

    async def _evaluate(self, connection: asyncpg.Connection, changes: list[Change]) -> Plan:
        refusals = []
        for change in changes:
            for check in change.checks:
                refusal = await check(connection)
                if refusal is not None:
                    refusals.append(refusal)
            if change.impact is not None:
                change.step.impact = await change.impact(connection)
        return Plan([c.step for c in changes], refusals)

    async def _run(self, propose: Any, *, principal: Principal, allow_destructive: bool, kind: str, reverts: int | None = None) -> Plan:
        async with self.db.transaction() as tx:
            connection = tx.connection
            await connection.execute(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK})")
            current = await self._current(connection)
            proposal = propose(current)
            if hasattr(proposal, "__await__"):
                proposal = await proposal
            await _check_patterns(connection, proposal.desired)
            changes = plan_changes(current.definitions, proposal.desired, proposal.removed, proposal.hints)
            plan = await self._evaluate(connection, changes)
            if plan.refusals:
                raise SchemaChangeRefused(plan.refusals)
            if plan.destructive and not allow_destructive:
                raise SchemaChangeRefused(
                    [Refusal(s.entity, s.field, f"{s.summary}: destructive, confirm with allow_destructive / --allow-destructive") for s in plan.destructive]
                )
            if not changes:
                return plan
            changeset_id = await connection.fetchval(
                "INSERT INTO xrm_sys.schema_changeset (kind, applied_by, details, reverts) VALUES ($1, $2, '{}'::json, $3) RETURNING id",
                kind, principal.id, reverts,
            )
            ids = dict(current.ids)
            for new_name, old_name in {**proposal.sources, **proposal.hints.entity_renames}.items():
                if old_name in ids:
                    ids[new_name] = ids[old_name]
            for name in proposal.desired:
                if name not in ids:
                    ids[name] = await connection.fetchval(
                        "INSERT INTO xrm_sys.entity (name, version, definition, removed_at) VALUES ($1, 0, $2, now()) RETURNING id",
                        name, dict(proposal.desired[name].document),
                    )
            context = ExecutionContext(connection, changeset_id, ids)
            operations = sorted(
                ((phase, index, op, change.step) for index, change in enumerate(changes) for phase, op in change.operations),
                key=lambda item: (item[0], item[1]),
            )
            for _, _, operation, step in operations:
                try:
                    if isinstance(operation, str):
                        await connection.execute(operation)
                    else:
                        await operation(context)
                except asyncpg.PostgresError as error:
                    raise SchemaChangeRefused(
                        [Refusal(step.entity, step.field, f"PostgreSQL refused the step '{step.summary}': {error}")]
                    ) from None
            details = await self._record_versions(connection, changeset_id, current, proposal, ids, context, changes)
            await connection.execute(
                "UPDATE xrm_sys.schema_changeset SET details = $2 WHERE id = $1",
                changeset_id, {**details, "steps": [c.step.as_dict() for c in changes]},
            )
            if reverts is not None:
                await connection.execute("UPDATE xrm_sys.schema_changeset SET reverted_by = $2 WHERE id = $1", reverts, changeset_id)
            await connection.execute(
                "INSERT INTO xrm_sys.outbox (topic, principal_id, payload) VALUES ('schema.changed', $1, $2)",
                principal.id, {"changeset_id": changeset_id, "kind": kind, "entities": sorted(proposal.desired) + proposal.removed},
            )
            await AuditLog.write(
                connection, principal, "schema.changed",
                details={"changeset_id": changeset_id, "kind": kind, "entities": sorted(proposal.desired) + proposal.removed,
                         "steps": [c.step.as_dict() for c in changes]},
            )
            await connection.execute(f"NOTIFY {SCHEMA_CHANNEL}, '{int(changeset_id)}'")
            plan.changeset_id = changeset_id
        if self.registry is not None:
            await self.registry.load(self.db)
        return plan

    async def _record_versions(
        self, connection: asyncpg.Connection, changeset_id: int, current: _Current, proposal: _Proposal,
        ids: dict[str, uuid.UUID], context: ExecutionContext, changes: list[Change],
    ) -> dict[str, Any]:
        before: dict[str, Any] = {}
        after: dict[str, Any] = {}
        renames: dict[str, dict[str, str]] = {}
        for change in changes:
            step = change.step
            if step.action == "rename_field" and step.field and step.previous:
                renames.setdefault(step.entity, {})[step.field] = step.previous
        for name, definition in proposal.desired.items():
            entity_id = ids[name]
            source = proposal.sources.get(name) or proposal.hints.entity_renames.get(name) or name
            existed = source in current.definitions
            before[str(entity_id)] = {"name": source, "definition": dict(current.definitions[source].document)} if existed else None
            version = await connection.fetchval(
                "UPDATE xrm_sys.entity SET name = $2, definition = $3, version = version + 1, removed_at = NULL, archived_table = NULL "
                "WHERE id = $1 RETURNING version",
                entity_id, name, dict(definition.document),
            )
            await connection.execute(
                "INSERT INTO xrm_sys.entity_version (entity_id, version, name, definition, changeset_id) VALUES ($1, $2, $3, $4, $5)",
                entity_id, version, name, dict(definition.document), changeset_id,
            )
            after[str(entity_id)] = {"name": name, "definition": dict(definition.document), "field_renames": renames.get(name, {})}
        for name in proposal.removed:
            entity_id = ids[name]
            before[str(entity_id)] = {"name": name, "definition": dict(current.definitions[name].document)}
            version = await connection.fetchval(
                "UPDATE xrm_sys.entity SET removed_at = now(), archived_table = $2, version = version + 1 WHERE id = $1 RETURNING version",
                entity_id, context.archived_tables[name],
            )
            await connection.execute(
                "INSERT INTO xrm_sys.entity_version (entity_id, version, name, definition, changeset_id) VALUES ($1, $2, $3, NULL, $4)",
                entity_id, version, name, changeset_id,
            )
            after[str(entity_id)] = None
        return {"before": before, "after": after}


async def _check_patterns(connection: asyncpg.Connection, definitions: Mapping[str, EntityDefinition]) -> None:
    """Patterns are checked by Python when validating and by PostgreSQL in CHECK
    constraints; refuse one PostgreSQL cannot compile (e.g. Python's (?P<name>...))
    here, rather than at the first insert."""
    problems = []
    for definition in definitions.values():
        for f in definition.fields.values():
            pattern = f.schema.get("pattern")
            if pattern is None:
                continue
            try:
                await connection.fetchval("SELECT '' ~ $1", pattern)
            except asyncpg.InvalidRegularExpressionError as error:
                problems.append(Problem(pointer(definition.name, "properties", f.name, "pattern"),
                                        f"PostgreSQL cannot use this regular expression: {error}"))
    if problems:
        raise DefinitionInvalid(problems)
