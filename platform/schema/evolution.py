"""The planner: from the current definitions to the desired ones, step by step.

Every step is classified:
  safe         metadata only, or validated without rewriting data
  backfill     rewrites existing values (type conversion, filling a default)
  destructive  takes data out of the live table (it is archived, never dropped)

A step may carry checks (queries that find the rows in the way; any hit
refuses the whole change) and operations, each with a phase, so that e.g. all
constraints are dropped before any column is converted and re-created after.
Phases: 0 drop constraints/indexes/search column, 1 archive removed fields,
2 rename entities, 3 rename fields, 4 create/add/convert/restore,
5 constraints, foreign keys, search column, indexes, 6 archive entities.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from ..db.database import json_dumps
from ..errors import Refusal
from ..identifiers import quote_ident, quote_literal, short_name
from .ddl import (
    ARCHIVE_SCHEMA,
    DATA_SCHEMA,
    create_table_statements,
    drop_field_constraints,
    drop_index_statements,
    field_constraint_statements,
    foreign_key_statements,
    index_name,
    index_statement,
    index_statements,
    object_name,
    qualified,
    search_vector_column,
    reference_index_name,
    unique_index_name,
)
from .definition import EntityDefinition, FieldDefinition, same_document

__all__ = ["Change", "ExecutionContext", "Hints", "Step", "index_upgrades", "plan_changes"]

SAFE, BACKFILL, DESTRUCTIVE = "safe", "backfill", "destructive"
MAX_IDS = 20


@dataclass
class ExecutionContext:
    connection: asyncpg.Connection
    changeset_id: int
    entity_ids: dict[str, uuid.UUID]
    """Entity id by name (old and new names of renamed entities both map)."""
    archived_tables: dict[str, str] = field(default_factory=dict)


Operation = str | Callable[[ExecutionContext], Awaitable[None]]
Check = Callable[[asyncpg.Connection], Awaitable[Refusal | None]]


@dataclass
class Step:
    kind: str
    action: str
    entity: str
    field: str | None
    summary: str
    impact: str | None = None
    previous: str | None = None
    """For renames: the former name of the field."""

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


@dataclass
class Change:
    step: Step
    operations: list[tuple[int, Operation]] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    impact: Callable[[asyncpg.Connection], Awaitable[str | None]] | None = None


@dataclass
class Hints:
    """What revert and restore add to a plan beyond the definitions."""

    entity_renames: dict[str, str] = field(default_factory=dict)
    """new name -> current name, as x-xrm.renamed_from would say."""
    field_renames: dict[tuple[str, str], str] = field(default_factory=dict)
    """(entity new name, field new name) -> current field name."""
    restore_values: dict[tuple[str, str], int] = field(default_factory=dict)
    """(entity new name, field new name) -> archive batch whose values to put back."""
    restore_entities: dict[str, str] = field(default_factory=dict)
    """entity name -> archived table to move back instead of creating a table."""


# -- helpers -------------------------------------------------------------------

def _columns_sql(f: FieldDefinition) -> dict[str, str]:
    return {c.role: quote_ident(c.name) for c in f.columns()}


def _value_literals(f: FieldDefinition, value: Any) -> dict[str, str]:
    """SQL literals of a (validated) value by column role, for DDL defaults."""
    by_role = f.type.to_db(f, f.type.to_json(value))
    literals = {}
    for column in f.columns():
        v = by_role[column.role]
        if v is None:
            literals[column.role] = "NULL"
        elif isinstance(v, list):
            literals[column.role] = "ARRAY[" + ", ".join(quote_literal(str(x)) for x in v) + "]::text[]"
        elif column.sql_type == "jsonb":
            literals[column.role] = quote_literal(json_dumps(v)) + "::jsonb"
        else:
            literals[column.role] = f"{quote_literal(str(v))}::{column.sql_type}"
    return literals


def _predicate(checks: list[str]) -> str:
    return " AND ".join(f"({c})" for c in checks) if checks else "true"


async def _refusal(connection: asyncpg.Connection, table: str, condition: str, entity: str, f: str | None, reason: str) -> Refusal | None:
    rows = await connection.fetch(
        f"SELECT id, count(*) OVER () AS total FROM {table} WHERE {condition} ORDER BY id LIMIT {MAX_IDS}"
    )
    if not rows:
        return None
    total = rows[0]["total"]
    return Refusal(entity, f, reason.format(n=total, s="" if total == 1 else "s", have="has" if total == 1 else "have"), [str(r["id"]) for r in rows], total)


def conversion(old: FieldDefinition, new: FieldDefinition, cols: Mapping[str, str]) -> tuple[dict[str, str], str] | str:
    """SQL turning `old`'s columns into `new`'s: (expressions by role, convertible predicate).

    Returns a message instead when there is no sensible conversion.
    """
    if old.storage() == new.storage():
        return dict(cols), "true"
    old_cols, new_cols = old.columns(), new.columns()
    what = f"a {old.type.name} field cannot become a {new.type.name} field"
    if old.type.name == "currency":
        amount = cols["amount"]
        if new.type.name == "text" or new.type.name == "long_text":
            return {"value": f"({amount})::text || ' ' || {cols['currency']}"}, "true"
        if new_cols[0].sql_type.startswith("numeric"):
            return {"value": f"({amount})::{new_cols[0].sql_type}"}, "true"
        if new_cols[0].sql_type == "bigint":
            return {"value": f"({amount})::bigint"}, f"({amount}) = trunc({amount})"
        return what
    if new.type.name == "currency":
        code = new.xrm.get("default_currency")
        if not code:
            return what + " without x-xrm.default_currency (the currency of the existing amounts)"
        (old_col,) = old_cols
        currency = f"CASE WHEN {cols['value']} IS NULL THEN NULL ELSE {quote_literal(code)} END"
        if old_col.sql_type.startswith("numeric") or old_col.sql_type == "bigint":
            return {"amount": f"({cols['value']})::{new_cols[0].sql_type}", "currency": currency}, "true"
        if old_col.sql_type == "text":
            return (
                {"amount": f"({cols['value']})::{new_cols[0].sql_type}", "currency": currency},
                f"xrm_sys.input_is_valid({cols['value']}, 'numeric')",
            )
        return what
    (old_col,), (new_col,) = old_cols, new_cols
    value, old_sql, new_sql = cols["value"], old_col.sql_type, new_col.sql_type
    if new_sql == "text":
        if old_sql == "text[]":
            return {"value": f"array_to_string({value}, ', ')"}, "true"
        return {"value": f"({value})::text"}, "true"
    if old_sql in ("text[]", "jsonb") or new_sql == "jsonb":
        if old_sql == "text[]" and new_sql == "text[]":
            return {"value": value}, "true"
        return what
    if new_sql == "text[]":
        if old_sql != "text":
            return what
        if old.type.name == "select":
            # A select value is one option, even if the option holds a comma.
            return {"value": f"CASE WHEN {value} IS NULL THEN NULL ELSE ARRAY[{value}] END"}, "true"
        return {"value": f"regexp_split_to_array(btrim({value}), '\\s*[,;]\\s*')"}, "true"
    if old_sql.startswith("numeric") and new_sql == "bigint":
        return {"value": f"({value})::bigint"}, f"({value}) = trunc({value}) AND abs({value}) < 9223372036854775807"
    return {"value": f"(({value})::text)::{new_sql}"}, f"xrm_sys.input_is_valid(({value})::text, {quote_literal(new_sql)})"


def _signature(f: FieldDefinition) -> tuple:
    """What the table holds of a field: equal signatures need no DDL."""
    cols = {c.role: f"c_{c.role}" for c in f.columns()}
    return (f.storage(), tuple(f.check_predicates(cols)), f.required, f.unique, f.references)


# -- planning ------------------------------------------------------------------

def plan_changes(
    current: Mapping[str, EntityDefinition],
    desired: Mapping[str, EntityDefinition],
    removed: list[str],
    hints: Hints,
) -> list[Change]:
    """Changes turning `current` into `desired` for the entities in `desired` and `removed`.

    `desired` holds only the entities to create or change.
    """
    changes: list[Change] = []
    for new in desired.values():
        source_name = hints.entity_renames.get(new.name) or (
            new.renamed_from if new.renamed_from in current and new.renamed_from not in desired else None
        )
        old = current.get(source_name) if source_name else current.get(new.name)
        if old is None:
            changes.extend(_create_entity(new, hints))
        else:
            changes.extend(_change_entity(old, new, hints))
    for name in removed:
        changes.append(_archive_entity(current[name]))
    return changes


async def index_upgrades(connection: asyncpg.Connection, definitions: Iterable[EntityDefinition]) -> list[Change]:
    """Planned steps that rebuild declared non-unique indexes still of the old shape.

    Before, a non-unique x-xrm.indexes entry was built as (<fields>) and named
    <entity>__ix_<n>; now it is (<fields>, created_at, id), named
    <entity>__ix_<n>_sorted (ddl.index_statement). The planner compares
    definitions, not the database, and an unchanged definition plans nothing,
    so an existing install would keep the slow index for good. The name
    change is what makes the old shape visible without parsing index
    definitions: a non-unique index declared at position n whose table has
    `<entity>__ix_<n>` (not unique) and no `<entity>__ix_<n>_sorted` is old.
    One SAFE step per entity: CREATE the new index (IF NOT EXISTS, so a
    repeated run is a no-op), then DROP the old one; lists use the old index
    until the new one is there. The step says how many rows it indexes, since
    CREATE INDEX blocks writes to the table while it runs.

    `definitions`: the live definitions that this plan does not otherwise
    change (a changed entity's indexes are rebuilt or kept by
    _change_entity, and a rename moves its index names).
    """
    changes: list[Change] = []
    for entity in definitions:
        rows = await connection.fetch(
            "SELECT c.relname AS name, i.indisunique AS is_unique FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = to_regclass($1)",
            qualified(entity.name),
        )
        existing = {r["name"]: r["is_unique"] for r in rows}
        operations: list[tuple[int, Operation]] = []
        for position, index in enumerate(entity.indexes):
            if index.get("unique"):
                continue
            old_name = index_name(entity.name, position, unique=True)
            if existing.get(old_name) is False and index_name(entity.name, position, unique=False) not in existing:
                operations.append((5, index_statement(entity, position, if_not_exists=True)))
                operations.append((5, f"DROP INDEX IF EXISTS {quote_ident(DATA_SCHEMA)}.{quote_ident(old_name)}"))
        if not operations:
            continue
        table = qualified(entity.name)

        async def impact(connection: asyncpg.Connection, table: str = table, n: int = len(operations) // 2) -> str:
            records = await connection.fetchval(f"SELECT count(*) FROM {table}")
            return f"indexes {records:,} records {n} time{'s' if n != 1 else ''}"

        step = Step(
            SAFE, "upgrade_indexes", entity.name, None,
            f"rebuild {len(operations) // 2} index(es) of {entity.name} as (fields, created_at, id) "
            "so filtered lists in the default order walk the index",
        )
        changes.append(Change(step, operations, impact=impact))
    return changes


def _create_entity(new: EntityDefinition, hints: Hints) -> list[Change]:
    archived = hints.restore_entities.get(new.name)
    if archived:
        async def move_back(ctx: ExecutionContext) -> None:
            await ctx.connection.execute(f"ALTER TABLE {qualified(archived, ARCHIVE_SCHEMA)} SET SCHEMA {quote_ident(DATA_SCHEMA)}")
            await ctx.connection.execute(f"ALTER TABLE {qualified(archived)} RENAME TO {quote_ident(new.name)}")

        async def impact(connection: asyncpg.Connection) -> str:
            n = await connection.fetchval(f"SELECT count(*) FROM {qualified(archived, ARCHIVE_SCHEMA)}")
            return f"restores {n:,} records from the archive"

        step = Step(SAFE, "restore_entity", new.name, None, f"restore entity {new.name} from archive table {archived}")
        return [Change(step, [(4, move_back)], impact=impact)]
    operations: list[tuple[int, Operation]] = [(4, sql) for sql in create_table_statements(new)]
    for f in new.fields.values():
        operations.extend((5, sql) for sql in foreign_key_statements(new.name, f))
    step = Step(SAFE, "create_entity", new.name, None, f"create entity {new.name} with {len(new.fields)} fields")
    return [Change(step, operations)]


def _archive_entity(old: EntityDefinition) -> Change:
    async def move(ctx: ExecutionContext) -> None:
        archived = object_name(old.name, f"cs{ctx.changeset_id}")
        await ctx.connection.execute(f"ALTER TABLE {qualified(old.name)} SET SCHEMA {quote_ident(ARCHIVE_SCHEMA)}")
        await ctx.connection.execute(f"ALTER TABLE {qualified(old.name, ARCHIVE_SCHEMA)} RENAME TO {quote_ident(archived)}")
        ctx.archived_tables[old.name] = archived

    async def impact(connection: asyncpg.Connection) -> str:
        n = await connection.fetchval(f"SELECT count(*) FROM {qualified(old.name)}")
        return f"moves {n:,} records to the archive (restorable)"

    step = Step(DESTRUCTIVE, "archive_entity", old.name, None, f"remove entity {old.name} (table moved to the archive)")
    return Change(step, [(6, move)], impact=impact)


def _change_entity(old: EntityDefinition, new: EntityDefinition, hints: Hints) -> list[Change]:
    changes: list[Change] = []
    old_table, new_table = qualified(old.name), qualified(new.name)
    if old.name != new.name:
        changes.append(_rename_entity(old, new))

    sources: dict[str, FieldDefinition | None] = {}
    for f in new.fields.values():
        hinted = hints.field_renames.get((new.name, f.name))
        renamed = hinted or (f.renamed_from if f.renamed_from in old.fields and f.renamed_from not in new.fields else None)
        sources[f.name] = old.fields.get(renamed) if renamed else old.fields.get(f.name)
    matched = {s.name for s in sources.values() if s is not None}
    removed = [f for name, f in old.fields.items() if name not in matched]
    new_name_of = {s.name: n for n, s in sources.items() if s is not None}

    converted = {n for n, s in sources.items() if s is not None and s.storage() != new.fields[n].storage()}
    search_before = [new_name_of.get(n) for n in old.search_fields]
    rebuild_search = (
        search_before != new.search_fields
        or any(f.name in old.search_fields for f in removed)
        or any(new_name_of.get(n) in converted for n in old.search_fields)
    )
    mapped_indexes = [
        {**i, "fields": [new_name_of.get(n) for n in i["fields"]]} for i in old.indexes
    ]
    rebuild_indexes = mapped_indexes != new.indexes or any(
        n in converted for i in new.indexes for n in i["fields"]
    )

    if rebuild_search:
        step = Step(BACKFILL, "rebuild_search", new.name, None, f"rebuild full-text column of {new.name} over {', '.join(new.search_fields) or 'no fields'}")
        changes.append(
            Change(
                step,
                [
                    (0, f"ALTER TABLE {old_table} DROP COLUMN IF EXISTS search_vector"),
                    (5, f"ALTER TABLE {new_table} ADD COLUMN {search_vector_column(new)}"),
                    (5, f"CREATE INDEX {quote_ident(object_name(new.name, 'search'))} ON {new_table} USING gin (search_vector)"),
                ],
            )
        )
    if rebuild_indexes:
        step = Step(SAFE, "rebuild_indexes", new.name, None, f"rebuild indexes of {new.name}")
        changes.append(Change(step, [(0, s) for s in drop_index_statements(old)] + [(5, s) for s in index_statements(new)]))

    for f in removed:
        changes.append(_archive_field(old, f))
    for name, f in new.fields.items():
        source = sources[name]
        restore = hints.restore_values.get((new.name, name))
        if source is None:
            changes.append(_add_field(old, new, f, restore))
            continue
        if source.name != f.name:
            changes.append(_rename_field(old, new, source, f, altered=_signature(source) != _signature(f)))
        if _signature(source) != _signature(f) or restore:
            changes.append(_alter_field(old, new, source, f, restore))
    if not changes and not same_document(old.document, new.document):
        changes.append(Change(Step(SAFE, "update_metadata", new.name, None, f"update labels/options of {new.name} (no table change)")))
    return changes


def _rename_entity(old: EntityDefinition, new: EntityDefinition) -> Change:
    async def rename(ctx: ExecutionContext) -> None:
        await ctx.connection.execute(f"ALTER TABLE {qualified(old.name)} RENAME TO {quote_ident(new.name)}")
        indexes = await ctx.connection.fetch(
            "SELECT indexname FROM pg_indexes WHERE schemaname = $1 AND tablename = $2", DATA_SCHEMA, new.name
        )
        prefix = old.name + "__"
        for row in indexes:
            index = row["indexname"]
            if index.startswith(prefix):
                target = object_name(new.name, index[len(prefix):])
                await ctx.connection.execute(f"ALTER INDEX {quote_ident(DATA_SCHEMA)}.{quote_ident(index)} RENAME TO {quote_ident(target)}")

    step = Step(SAFE, "rename_entity", new.name, None, f"rename entity {old.name} to {new.name} (data kept)")
    return Change(step, [(2, rename)])


def _rename_field(old_entity: EntityDefinition, new_entity: EntityDefinition, source: FieldDefinition, f: FieldDefinition, *, altered: bool) -> Change:
    table = qualified(new_entity.name)
    operations: list[tuple[int, Operation]] = []
    old_columns = {c.role: c.name for c in source.columns()}
    for column in f.columns():
        if column.role in old_columns and old_columns[column.role] != column.name:
            operations.append((3, f"ALTER TABLE {table} RENAME COLUMN {quote_ident(old_columns[column.role])} TO {quote_ident(column.name)}"))
    if not altered:
        async def rename_objects(ctx: ExecutionContext) -> None:
            for prefix in ("ck", "fk"):
                old_name, new_name = short_name(prefix, source.name), short_name(prefix, f.name)
                exists = await ctx.connection.fetchval(
                    "SELECT 1 FROM pg_constraint WHERE conrelid = $1::regclass AND conname = $2", table, old_name
                )
                if exists:
                    await ctx.connection.execute(f"ALTER TABLE {table} RENAME CONSTRAINT {quote_ident(old_name)} TO {quote_ident(new_name)}")
            for index_name_of in (unique_index_name, reference_index_name):
                await ctx.connection.execute(
                    f"ALTER INDEX IF EXISTS {quote_ident(DATA_SCHEMA)}.{quote_ident(index_name_of(new_entity.name, source.name))} "
                    f"RENAME TO {quote_ident(index_name_of(new_entity.name, f.name))}"
                )

        operations.append((3, rename_objects))
    step = Step(SAFE, "rename_field", new_entity.name, f.name, f"rename field {new_entity.name}.{source.name} to {f.name} (data kept)", previous=source.name)
    return Change(step, operations)


async def _archive_values(
    ctx: ExecutionContext, entity: EntityDefinition, table: str, f: FieldDefinition, reason: str, condition: str, field_name: str
) -> int:
    """Copy a field's values (where `condition`) into the archive; returns the batch id."""
    definition = {"schema": dict(f.schema), "required": f.required}
    batch = await ctx.connection.fetchval(
        "INSERT INTO xrm_sys.archive_batch (changeset_id, entity_id, field, reason, field_definition) "
        "VALUES ($1, $2, $3, $4, $5) RETURNING id",
        ctx.changeset_id,
        ctx.entity_ids[entity.name],
        field_name,
        reason,
        definition,
    )
    pairs = ", ".join(f"{quote_literal(c.role)}, {quote_ident(c.name)}" for c in f.columns())
    result = await ctx.connection.execute(
        f"INSERT INTO xrm_sys.archive_value (batch_id, record_id, value) "
        f"SELECT {int(batch)}, id, jsonb_build_object({pairs}) FROM {table} WHERE {condition}"
    )
    await ctx.connection.execute(
        "UPDATE xrm_sys.archive_batch SET row_count = $2 WHERE id = $1", batch, int(result.split()[-1])
    )
    return batch


def _restore_operation(entity_name: str, f: FieldDefinition, batch: int) -> Operation:
    async def restore(ctx: ExecutionContext) -> None:
        table = qualified(entity_name)
        pairs = ", ".join(f"{quote_literal(c.name)}, v.value -> {quote_literal(c.role)}" for c in f.columns())
        targets = ", ".join(quote_ident(c.name) for c in f.columns())
        sources = ", ".join(f"r.{quote_ident(c.name)}" for c in f.columns())
        await ctx.connection.execute(
            f"UPDATE {table} AS t SET ({targets}) = ROW({sources}) "
            f"FROM xrm_sys.archive_value AS v, LATERAL jsonb_populate_record(NULL::{table}, jsonb_build_object({pairs})) AS r "
            f"WHERE v.batch_id = $1 AND t.id = v.record_id",
            batch,
        )
        await ctx.connection.execute("UPDATE xrm_sys.archive_batch SET restored_at = now() WHERE id = $1", batch)

    return restore


def _archive_field(old: EntityDefinition, f: FieldDefinition) -> Change:
    table = qualified(old.name)
    not_null = " OR ".join(f"{quote_ident(c.name)} IS NOT NULL" for c in f.columns())

    async def archive(ctx: ExecutionContext) -> None:
        await _archive_values(ctx, old, table, f, "removed", not_null, f.name)
        for column in f.columns():
            await ctx.connection.execute(f"ALTER TABLE {table} DROP COLUMN {quote_ident(column.name)}")

    async def impact(connection: asyncpg.Connection) -> str:
        n = await connection.fetchval(f"SELECT count(*) FROM {table} WHERE {not_null}")
        return f"archives {n:,} values (restorable)"

    step = Step(DESTRUCTIVE, "archive_field", old.name, f.name, f"remove field {old.name}.{f.name} (values moved to the archive)")
    operations: list[tuple[int, Operation]] = [(0, s) for s in drop_field_constraints(old.name, f)]
    operations.append((1, archive))
    return Change(step, operations, impact=impact)


def _add_field(old: EntityDefinition, new: EntityDefinition, f: FieldDefinition, restore: int | None) -> Change:
    table = qualified(new.name)
    operations: list[tuple[int, Operation]] = []
    literals = _value_literals(f, f.default) if f.has_default else {}
    for column in f.columns():
        default = f" DEFAULT {literals[column.role]}" if literals else ""
        operations.append((4, f"ALTER TABLE {table} ADD COLUMN {quote_ident(column.name)} {column.sql_type}{default}"))
        if default:
            # PostgreSQL stores the default once (no rewrite); dropping it after
            # keeps defaults in the application, where the validator sees them.
            operations.append((4, f"ALTER TABLE {table} ALTER COLUMN {quote_ident(column.name)} DROP DEFAULT"))
    checks: list[Check] = []
    kind, summary = SAFE, f"add field {new.name}.{f.name} ({f.type.name})"
    if restore is not None:
        operations.append((4, _restore_operation(new.name, f, restore)))
        kind, summary = BACKFILL, f"restore field {new.name}.{f.name} ({f.type.name}) with its archived values"
        if f.required:
            async def missing_archive(connection: asyncpg.Connection) -> Refusal | None:
                return await _refusal(
                    connection, qualified(old.name),
                    f"id NOT IN (SELECT record_id FROM xrm_sys.archive_value WHERE batch_id = {int(restore)})",
                    new.name, f.name, "{n} record{s} {have} no archived value for this required field",
                )
            checks.append(missing_archive)
    elif f.has_default:
        kind, summary = BACKFILL, f"add field {new.name}.{f.name} ({f.type.name}) with default {json_dumps(f.default)}"
    elif f.required:
        async def no_value(connection: asyncpg.Connection) -> Refusal | None:
            return await _refusal(
                connection, qualified(old.name), "true", new.name, f.name,
                "{n} existing record{s} would have no value for this new required field; give it a default",
            )
        checks.append(no_value)
    fresh = restore is None  # restored values were valid once, but check them again
    operations.extend((5, s) for s in field_constraint_statements(new.name, f, new_column=fresh))
    operations.extend((5, s) for s in foreign_key_statements(new.name, f, new_column=fresh and not f.has_default))

    async def impact(connection: asyncpg.Connection) -> str | None:
        if restore is not None:
            n = await connection.fetchval("SELECT row_count FROM xrm_sys.archive_batch WHERE id = $1", restore)
            return f"restores {n:,} archived values"
        if kind != BACKFILL:
            return None
        n = await connection.fetchval(f"SELECT count(*) FROM {qualified(old.name)}")
        return f"fills {n:,} existing records"

    return Change(Step(kind, "add_field", new.name, f.name, summary), operations, checks, impact)


def _alter_field(old: EntityDefinition, new: EntityDefinition, source: FieldDefinition, f: FieldDefinition, restore: int | None) -> Change:
    old_table, new_table = qualified(old.name), qualified(new.name)
    old_cols = _columns_sql(source)
    converts = source.storage() != f.storage()
    result = conversion(source, f, old_cols)
    checks: list[Check] = []
    operations: list[tuple[int, Operation]] = [(0, s) for s in drop_field_constraints(old.name, source)]
    label = f"{new.name}.{f.name}"
    not_null = " OR ".join(f"{c} IS NOT NULL" for c in old_cols.values())
    all_null = f"NOT ({not_null})"
    restored_ids = f"id IN (SELECT record_id FROM xrm_sys.archive_value WHERE batch_id = {int(restore)})" if restore else "false"

    if isinstance(result, str):
        async def impossible(connection: asyncpg.Connection, message: str = result) -> Refusal:
            return Refusal(new.name, f.name, message)
        return Change(Step(BACKFILL, "convert_field", new.name, f.name, f"convert {label} from {source.type.name} to {f.type.name}"), [], [impossible])

    expressions, convertible = result
    new_checks = _predicate(f.check_predicates(expressions))

    async def invalid_values(connection: asyncpg.Connection) -> Refusal | None:
        what = f"converted to {f.type.name}" if converts else "kept under the new rules"
        return await _refusal(
            connection, old_table,
            f"({not_null}) AND NOT ({restored_ids}) AND NOT (CASE WHEN {convertible} THEN {new_checks} ELSE false END)",
            new.name, f.name, f"{{n}} record{{s}} {{have}} a value that cannot be {what}",
        )
    checks.append(invalid_values)

    fill_default = f.required and not (source.required and not converts) and f.has_default
    if f.required and not f.has_default:
        async def missing(connection: asyncpg.Connection) -> Refusal | None:
            return await _refusal(
                connection, old_table, f"{all_null} AND NOT ({restored_ids})", new.name, f.name,
                "{n} record{s} {have} no value, so the field cannot become required; give it a default",
            )
        checks.append(missing)

    if f.unique:
        # CASE keeps the cast behind the convertibility test (WHERE/GROUP BY
        # order of evaluation is not guaranteed).
        key = f"CASE WHEN {convertible} THEN {next(iter(expressions.values()))} END"

        async def duplicates(connection: asyncpg.Connection) -> Refusal | None:
            rows = await connection.fetch(
                f"SELECT ids FROM (SELECT array_agg(id ORDER BY id) AS ids FROM {old_table} "
                f"WHERE deleted_at IS NULL AND {key} IS NOT NULL GROUP BY {key} HAVING count(*) > 1) d"
            )
            if not rows:
                return None
            ids = [str(i) for r in rows for i in r["ids"]]
            return Refusal(
                new.name, f.name,
                f"{len(rows)} value(s) occur more than once ({len(ids)} records), so the field cannot be unique",
                ids[:MAX_IDS], len(ids),
            )
        checks.append(duplicates)

    if converts:
        async def convert(ctx: ExecutionContext) -> None:
            await _archive_values(ctx, new, new_table, f_as_source_named(source, f.name), "converted", not_null_new, source.name)
            current_cols = {c.role: quote_ident(c.name) for c in f_as_source_named(source, f.name).columns()}
            converted = conversion(source, f, current_cols)
            assert not isinstance(converted, str)
            exprs, _ = converted
            old_columns, new_columns = f_as_source_named(source, f.name).columns(), f.columns()
            if len(old_columns) == 1 and len(new_columns) == 1:
                (column,) = new_columns
                await ctx.connection.execute(
                    f"ALTER TABLE {new_table} ALTER COLUMN {quote_ident(column.name)} TYPE {column.sql_type} USING {exprs['value']}"
                )
                return
            temporary = {c.role: f"xrm_tmp_{i}" for i, c in enumerate(new_columns)}
            for column in new_columns:
                await ctx.connection.execute(f"ALTER TABLE {new_table} ADD COLUMN {quote_ident(temporary[column.role])} {column.sql_type}")
            assignments = ", ".join(f"{quote_ident(temporary[c.role])} = {exprs[c.role]}" for c in new_columns)
            await ctx.connection.execute(f"UPDATE {new_table} SET {assignments}")
            for column in old_columns:
                await ctx.connection.execute(f"ALTER TABLE {new_table} DROP COLUMN {quote_ident(column.name)}")
            for column in new_columns:
                await ctx.connection.execute(f"ALTER TABLE {new_table} RENAME COLUMN {quote_ident(temporary[column.role])} TO {quote_ident(column.name)}")

        not_null_new = " OR ".join(f"{quote_ident(c.name)} IS NOT NULL" for c in f_as_source_named(source, f.name).columns())
        operations.append((4, convert))
    if fill_default:
        literals = _value_literals(f, f.default)
        null_now = " AND ".join(f"{quote_ident(c.name)} IS NULL" for c in f.columns())

        async def backfill(ctx: ExecutionContext) -> None:
            await _archive_values(ctx, new, new_table, f, "backfilled", null_now, source.name)
            assignments = ", ".join(f"{quote_ident(c.name)} = {literals[c.role]}" for c in f.columns())
            await ctx.connection.execute(f"UPDATE {new_table} SET {assignments} WHERE {null_now}")
        operations.append((4, backfill))
    if restore is not None:
        operations.append((4, _restore_operation(new.name, f, restore)))
    operations.extend((5, s) for s in field_constraint_statements(new.name, f))
    operations.extend((5, s) for s in foreign_key_statements(new.name, f))

    if converts:
        kind, summary = BACKFILL, f"convert {label} from {source.type.name} to {f.type.name} (old values archived)"
    elif fill_default:
        kind, summary = BACKFILL, f"make {label} required, filling empty values with {json_dumps(f.default)}"
    elif restore is not None:
        kind, summary = BACKFILL, f"change rules of {label} and restore its archived values"
    else:
        kind, summary = SAFE, f"change rules of {label} (required, unique, limits or options)"

    async def impact(connection: asyncpg.Connection) -> str | None:
        if converts:
            n = await connection.fetchval(f"SELECT count(*) FROM {old_table} WHERE {not_null}")
            return f"converts {n:,} values"
        if fill_default:
            n = await connection.fetchval(f"SELECT count(*) FROM {old_table} WHERE {all_null}")
            return f"fills {n:,} empty values"
        return None

    return Change(Step(kind, "alter_field", new.name, f.name, summary), operations, checks, impact)


def f_as_source_named(source: FieldDefinition, name: str) -> FieldDefinition:
    """`source` as it is after its rename to `name` (same type, new column names)."""
    return FieldDefinition(name=name, type=source.type, schema=source.schema, required=source.required, default=source.default)
