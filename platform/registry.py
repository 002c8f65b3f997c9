"""In-memory view of the current entity definitions, compiled for use.

Reloaded from the database after every schema change (and, in a server, when
another process announces one with NOTIFY xrm_schema).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .db.database import Database
from .errors import NotFound
from .identifiers import quote_ident
from .records.validation import RecordValidator
from .schema.ddl import qualified
from .schema.definition import EntityDefinition, FieldDefinition, parse_definition

__all__ = ["CompiledEntity", "Registry", "SYSTEM_FIELDS"]

SCHEMA_CHANNEL = "xrm_schema"
SYSTEM_FIELDS = ("id", "created_at", "created_by", "updated_at", "updated_by", "owner_id", "version", "deleted_at")


@dataclass(eq=False)
class CompiledEntity:
    definition: EntityDefinition
    version: int
    validator: RecordValidator = field(init=False)
    table: str = field(init=False)
    select_list: str = field(init=False)
    """Quoted columns a record is read from (system columns, then fields)."""
    column_fields: list[tuple[str, FieldDefinition, list[tuple[str, str]]]] = field(init=False)
    """(field name, field, [(role, column name)]) in definition order."""

    def __post_init__(self) -> None:
        self.validator = RecordValidator(self.definition)
        self.table = qualified(self.definition.name)
        self.column_fields = [
            (name, f, [(c.role, c.name) for c in f.columns()]) for name, f in self.definition.fields.items()
        ]
        columns = list(SYSTEM_FIELDS) + [col for _, _, cols in self.column_fields for _, col in cols]
        self.select_list = ", ".join(quote_ident(c) for c in columns)

    @property
    def name(self) -> str:
        return self.definition.name

    @property
    def fields(self) -> Mapping[str, FieldDefinition]:
        return self.definition.fields

    def record_from_row(self, row: Mapping[str, Any]) -> dict[str, Any]:
        record = {name: row[name] for name in SYSTEM_FIELDS}
        for name, f, columns in self.column_fields:
            record[name] = f.type.from_db(f, {role: row[col] for role, col in columns})
        return record


class Registry:
    """Current entity definitions by name."""

    def __init__(self) -> None:
        self._entities: dict[str, CompiledEntity] = {}
        self.generation = 0

    def __contains__(self, name: object) -> bool:
        return name in self._entities

    def __iter__(self) -> Iterator[CompiledEntity]:
        return iter(sorted(self._entities.values(), key=lambda e: e.name))

    def names(self) -> list[str]:
        return sorted(self._entities)

    def get(self, name: str) -> CompiledEntity:
        try:
            return self._entities[name]
        except KeyError:
            raise NotFound(f"Unknown entity {name!r}") from None

    def definitions(self) -> dict[str, EntityDefinition]:
        return {name: e.definition for name, e in self._entities.items()}

    async def load(self, db: Database) -> Registry:
        async with db.connection() as connection:
            rows = await connection.fetch(
                "SELECT name, version, definition FROM xrm_sys.entity WHERE removed_at IS NULL ORDER BY name"
            )
        names = [r["name"] for r in rows]
        entities = {}
        for row in rows:
            definition = parse_definition(row["definition"], known_entities=names, source=f"stored {row['name']}")
            entities[row["name"]] = CompiledEntity(definition, row["version"])
        self._entities = entities
        self.generation += 1
        return self
