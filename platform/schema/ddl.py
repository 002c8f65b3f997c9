"""SQL DDL for entity tables, built from definitions with quoted identifiers.

Naming (so every later change can find what an earlier one created):
  table            public.<entity>
  primary key      <entity>__pkey
  CHECK            ck_<field>            (one per field, all its value rules)
  foreign key      fk_<field>
  unique index     <entity>__<field>__key (partial: live rows only)
  reference index  <entity>__<field>__ref (the reference, created_at, id)
  extra index      <entity>__ix_<n>         (unique: the fields, live rows only)
                   <entity>__ix_<n>_sorted  (non-unique: the fields, created_at, id)
  full text        column search_vector (generated), index <entity>__search
  order            <entity>__created        (created_at, id)
  owner            <entity>__owner_sorted   (owner_id, created_at, id)
Index names live in the schema's namespace next to table names; the double
underscore, which entity and field names may not contain, keeps them apart
(an entity `deal_search` cannot clash with the index of `deal`).
"""

from __future__ import annotations

from ..identifiers import quote_ident, short_name
from .definition import EntityDefinition, FieldDefinition

__all__ = [
    "ARCHIVE_SCHEMA",
    "DATA_SCHEMA",
    "create_table_statements",
    "drop_field_constraints",
    "field_constraint_statements",
    "foreign_key_statements",
    "reference_index_name",
    "reference_index_statement",
    "index_name",
    "index_statement",
    "index_statements",
    "owner_index_statement",
    "qualified",
    "search_vector_column",
]

DATA_SCHEMA = "public"
ARCHIVE_SCHEMA = "xrm_archive"


def object_name(entity_name: str, *parts: str) -> str:
    """Name of a schema-scoped object (index) belonging to an entity's table."""
    return short_name(entity_name, "", *parts)


def qualified(entity_name: str, schema: str = DATA_SCHEMA) -> str:
    return f"{quote_ident(schema)}.{quote_ident(entity_name)}"


def search_vector_expression(entity: EntityDefinition) -> str:
    parts = [f"coalesce({quote_ident(name)}, '')" for name in entity.search_fields]
    text = " || ' ' || ".join(parts) if parts else "''"
    # 'simple': no stemming, so German and English words both match as typed.
    return f"to_tsvector('simple'::regconfig, {text})"


def search_vector_column(entity: EntityDefinition) -> str:
    return f"search_vector tsvector GENERATED ALWAYS AS ({search_vector_expression(entity)}) STORED"


def create_table_statements(entity: EntityDefinition) -> list[str]:
    """CREATE TABLE with system and field columns, checks and indexes (no FKs)."""
    columns = [
        f"id uuid CONSTRAINT {quote_ident(object_name(entity.name, 'pkey'))} PRIMARY KEY DEFAULT gen_random_uuid()",
        "created_at timestamptz NOT NULL DEFAULT now()",
        "created_by uuid",
        "updated_at timestamptz NOT NULL DEFAULT now()",
        "updated_by uuid",
        "owner_id uuid",
        "version integer NOT NULL DEFAULT 1",
        "deleted_at timestamptz",
    ]
    for f in entity.fields.values():
        for column in f.columns():
            columns.append(f"{quote_ident(column.name)} {column.sql_type}")
    columns.append(search_vector_column(entity))
    table = qualified(entity.name)
    statements = [f"CREATE TABLE {table} (\n  " + ",\n  ".join(columns) + "\n)"]
    for f in entity.fields.values():
        statements.extend(field_constraint_statements(entity.name, f))
    statements.append(
        f"CREATE INDEX {quote_ident(object_name(entity.name, 'search'))} ON {table} USING gin (search_vector)"
    )
    statements.append(
        f"CREATE INDEX {quote_ident(object_name(entity.name, 'created'))} ON {table} (created_at, id)"
    )
    # Scopes own/team/team_tree filter on owner_id (xrm.security.policy).
    statements.append(owner_index_statement(entity.name))
    statements.extend(index_statements(entity))
    return statements


def owner_index_statement(entity_name: str) -> str:
    """The index of the permission predicate: `owner_id = ANY(...)`, and per-owner pages in the default order.

    (owner_id, created_at, id) serves both the predicate's bitmap scan (its
    leading column) and RecordService.list's one ordered walk per owner
    (xrm.records.policy.RowPartition). Named `<entity>__owner_sorted`; tables
    from before have `<entity>__owner` on (owner_id) alone, which start-up
    replaces (xrm.runtime._ensure_owner_indexes).
    """
    return (
        f"CREATE INDEX IF NOT EXISTS {quote_ident(object_name(entity_name, 'owner_sorted'))} "
        f"ON {qualified(entity_name)} (owner_id, created_at, id)"
    )


def field_constraint_statements(entity_name: str, field: FieldDefinition, *, new_column: bool = False) -> list[str]:
    """NOT NULL, CHECK and unique index of one field (FKs come separately).

    `new_column`: the column was just added, holding only NULL or the
    (validated) default, so the CHECK need not scan existing rows (NOT VALID
    still applies it to every new and changed row). This keeps adding a field
    to a table of millions of rows a metadata-only change.
    """
    table = qualified(entity_name)
    statements = []
    if field.required:
        for column in field.columns():
            if column.role != "currency":
                statements.append(f"ALTER TABLE {table} ALTER COLUMN {quote_ident(column.name)} SET NOT NULL")
    checks = field.check_predicates()
    if checks:
        condition = " AND ".join(f"({c})" for c in checks)
        statements.append(
            f"ALTER TABLE {table} ADD CONSTRAINT {quote_ident(short_name('ck', field.name))} CHECK ({condition})"
            + (" NOT VALID" if new_column else "")
        )
    if field.unique:
        (column,) = field.columns()
        statements.append(
            f"CREATE UNIQUE INDEX {quote_ident(unique_index_name(entity_name, field.name))} "
            f"ON {table} ({quote_ident(column.name)}) WHERE deleted_at IS NULL"
        )
    return statements


def unique_index_name(entity_name: str, field_name: str) -> str:
    return object_name(entity_name, field_name, "", "key")


def drop_field_constraints(entity_name: str, field: FieldDefinition) -> list[str]:
    table = qualified(entity_name)
    statements = [
        f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {quote_ident(short_name('ck', field.name))}",
        f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {quote_ident(short_name('fk', field.name))}",
        f"DROP INDEX IF EXISTS {quote_ident(DATA_SCHEMA)}.{quote_ident(unique_index_name(entity_name, field.name))}",
        f"DROP INDEX IF EXISTS {quote_ident(DATA_SCHEMA)}.{quote_ident(reference_index_name(entity_name, field.name))}",
    ]
    for column in field.columns():
        statements.append(f"ALTER TABLE {table} ALTER COLUMN {quote_ident(column.name)} DROP NOT NULL")
    return statements


def foreign_key_statements(entity_name: str, field: FieldDefinition, *, new_column: bool = False) -> list[str]:
    """A reference's foreign key, and the index that finds the records pointing at one record."""
    if not field.references:
        return []
    (column,) = field.columns()
    return [
        f"ALTER TABLE {qualified(entity_name)} ADD CONSTRAINT {quote_ident(short_name('fk', field.name))} "
        f"FOREIGN KEY ({quote_ident(column.name)}) REFERENCES {qualified(field.references)} (id)"
        + (" NOT VALID" if new_column else ""),
        reference_index_statement(entity_name, field),
    ]


def reference_index_name(entity_name: str, field_name: str) -> str:
    return object_name(entity_name, field_name, "", "ref")


def reference_index_statement(entity_name: str, field: FieldDefinition) -> str:
    """(reference, created_at, id): related-records panels, `account=<id>` filters in the default order, expand
    look-ups and on_delete checks read the records pointing at one record without scanning the table."""
    (column,) = field.columns()
    return (
        f"CREATE INDEX IF NOT EXISTS {quote_ident(reference_index_name(entity_name, field.name))} "
        f"ON {qualified(entity_name)} ({quote_ident(column.name)}, created_at, id)"
    )


def index_name(entity_name: str, position: int, *, unique: bool = True) -> str:
    # Positional, not by field names: a field rename must not strand an index.
    # Non-unique indexes carry the suffix `_sorted` since they end with the
    # default sort key (see index_statement); `<entity>__ix_<n>` without it is
    # either a unique index or a non-unique one of the old shape (fields only).
    return object_name(entity_name, f"ix_{position}" if unique else f"ix_{position}_sorted")


def index_statement(entity: EntityDefinition, position: int, *, if_not_exists: bool = False) -> str:
    """CREATE INDEX for the declared index at `position` of x-xrm.indexes.

    A non-unique index is built as (<fields>, created_at, id): a list filtered
    on the fields (`stage = 'won'`) in the default order (created_at, id) then
    walks the index in order and stops after one page, instead of a bitmap
    scan + sort over every match or a walk of the unfiltered (created_at, id)
    index that throws most rows away (bench/README.md, permissions: 3x slower
    for a user who sees 1% of the rows before). The same index serves keyset
    pages (`after=`) of such lists and a sort on the fields themselves.
    A unique index stays on the fields alone: uniqueness is on them.
    """
    index = entity.indexes[position]
    unique = bool(index.get("unique"))
    columns = [quote_ident(entity.fields[name].columns()[0].name) for name in index["fields"]]
    if not unique:
        columns += ["created_at", "id"]
    exists = "IF NOT EXISTS " if if_not_exists else ""
    return (
        f"CREATE {'UNIQUE ' if unique else ''}INDEX {exists}"
        f"{quote_ident(index_name(entity.name, position, unique=unique))} "
        f"ON {qualified(entity.name)} ({', '.join(columns)})"
        + (" WHERE deleted_at IS NULL" if unique else "")
    )


def index_statements(entity: EntityDefinition) -> list[str]:
    return [index_statement(entity, position) for position in range(len(entity.indexes))]


def drop_index_statements(entity: EntityDefinition) -> list[str]:
    # Both names of every position: an index of the old shape (fields only,
    # named <entity>__ix_<n>) is dropped as well as a current one.
    return [
        f"DROP INDEX IF EXISTS {quote_ident(DATA_SCHEMA)}.{quote_ident(index_name(entity.name, p, unique=unique))}"
        for p in range(len(entity.indexes))
        for unique in (True, False)
    ]
