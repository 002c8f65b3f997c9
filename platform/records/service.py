"""RecordService: the one door for reading and writing records.

Every entry point (API, web UI, import/export, workflows, plugins, the
assistant) calls these methods with its principal. Each write validates with
the entity's RecordValidator, checks the policy, and writes the row together
with its outbox event in one transaction.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from ..db.database import Database, json_dumps
from ..errors import NotFound, Problem, ValidationFailed, VersionConflict, pointer
from ..identifiers import quote_ident, short_name
from ..registry import SYSTEM_FIELDS, CompiledEntity, Registry
from ..schema.ddl import object_name, unique_index_name
from .policy import OpenPolicy, Policy
from .principal import Principal

__all__ = ["Page", "RecordService"]

BATCH_LIMIT = 1000
"""Rows per INSERT statement in create_many (larger inputs are chunked)."""


@dataclass(frozen=True)
class Page:
    records: list[dict[str, Any]]
    next_cursor: str | None


class RecordService:
    """Create, read, update, soft-delete and restore records of one entity."""

    def __init__(
        self,
        db: Database,
        registry: Registry,
        entity: str,
        principal: Principal,
        policy: Policy | None = None,
    ) -> None:
        self.db = db
        self.entity: CompiledEntity = registry.get(entity)
        self.principal = principal
        self.policy: Policy = policy or OpenPolicy()

    @property
    def name(self) -> str:
        return self.entity.name

    # -- reads ---------------------------------------------------------------
    async def get(self, record_id: Any, *, include_deleted: bool = False) -> dict[str, Any]:
        self.policy.authorize(self.principal, self.name, "read")
        key = _as_uuid(record_id)
        params: list[Any] = [key]
        predicate = self.policy.row_filter(self.principal, self.name, "read", params)
        live = "" if include_deleted else " AND deleted_at IS NULL"
        async with self.db.connection() as connection:
            row = await connection.fetchrow(
                f"SELECT {self.entity.select_list} FROM {self.entity.table} "
                f"WHERE id = $1{live} AND ({predicate})",
                *params,
            )
        if row is None:
            raise NotFound(f"No {self.name} record with id {record_id}")
        return self.entity.record_from_row(row)

    async def list(
        self,
        *,
        where: Mapping[str, Any] | None = None,
        search: str | None = None,
        limit: int = 50,
        after: str | None = None,
        include_deleted: bool = False,
    ) -> Page:
        """Records in creation order; `where` holds field = value filters."""
        self.policy.authorize(self.principal, self.name, "read")
        params: list[Any] = []
        conditions = [self.policy.row_filter(self.principal, self.name, "read", params)]
        if not include_deleted:
            conditions.append("deleted_at IS NULL")
        for name, value in (where or {}).items():
            conditions.append(self._equals(name, value, params))
        if search:
            params.append(search)
            conditions.append(f"search_vector @@ websearch_to_tsquery('simple', ${len(params)})")
        if after:
            created_at, last_id = _decode_cursor(after)
            params.extend([created_at, last_id])
            conditions.append(f"(created_at, id) > (${len(params) - 1}, ${len(params)})")
        limit = max(1, min(int(limit), 1000))
        sql = (
            f"SELECT {self.entity.select_list} FROM {self.entity.table} WHERE "
            + " AND ".join(f"({c})" for c in conditions)
            + f" ORDER BY created_at, id LIMIT {limit + 1}"
        )
        async with self.db.connection() as connection:
            rows = await connection.fetch(sql, *params)
        records = [self.entity.record_from_row(r) for r in rows[:limit]]
        cursor = _encode_cursor(records[-1]) if len(rows) > limit else None
        return Page(records, cursor)

    async def count(self, *, where: Mapping[str, Any] | None = None) -> int:
        self.policy.authorize(self.principal, self.name, "read")
        params: list[Any] = []
        conditions = [self.policy.row_filter(self.principal, self.name, "read", params), "deleted_at IS NULL"]
        for name, value in (where or {}).items():
            conditions.append(self._equals(name, value, params))
        async with self.db.connection() as connection:
            return await connection.fetchval(
                f"SELECT count(*) FROM {self.entity.table} WHERE " + " AND ".join(f"({c})" for c in conditions),
                *params,
            )

    def _equals(self, name: str, value: Any, params: list[Any]) -> str:
        if name == "id":
            params.append(_as_uuid(value))
            return f"id = ${len(params)}"
        f = self.entity.fields.get(name)
        if f is None:
            raise ValidationFailed(self.name, [Problem(pointer(name), "is not a field of this entity")])
        columns = f.columns()
        if len(columns) != 1:
            raise ValidationFailed(self.name, [Problem(pointer(name), f"a {f.type.name} field cannot be filtered by equality")])
        if value is None:
            return f"{quote_ident(columns[0].name)} IS NULL"
        problems = self.entity.validator.problems({name: f.type.to_json(value)})
        # Only this field's problems ("/name", "/name/..."), not those of
        # other fields such as a missing required "name_2".
        problems = [p for p in problems if p.pointer == pointer(name) or p.pointer.startswith(pointer(name) + "/")]
        if problems:
            raise ValidationFailed(self.name, problems)
        params.append(f.type.to_db(f, f.type.to_json(value))["value"])
        return f"{quote_ident(columns[0].name)} = ${len(params)}"

    # -- writes --------------------------------------------------------------
    async def create(self, data: Mapping[str, Any]) -> dict[str, Any]:
        return (await self._create_rows([data], batch=False))[0]

    async def create_many(self, records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """All or nothing: if any record is invalid, none is written.

        Problems name the record by its index: pointer "/3/email".
        """
        return await self._create_rows(records, batch=True)

    async def _create_rows(self, records: Sequence[Mapping[str, Any]], *, batch: bool) -> list[dict[str, Any]]:
        self.policy.authorize(self.principal, self.name, "create")
        prepared: list[dict[str, Any]] = []
        problems: list[Problem] = []
        for index, data in enumerate(records):
            row, row_problems = self._prepare_new(data)
            if row_problems:
                prefix = pointer(index) if batch else ""
                problems.extend(Problem(prefix + p.pointer, p.message) for p in row_problems)
            prepared.append(row)
        if problems:
            first_row = int(problems[0].pointer.split("/")[1]) if batch else None
            raise ValidationFailed(self.name, problems, row=first_row)

        columns = ["id"] + [col.name for f in self.entity.fields.values() for col in f.columns()]
        types = ["uuid"] + [col.sql_type for f in self.entity.fields.values() for col in f.columns()]
        record_type = ", ".join(f"{quote_ident(c)} {t}" for c, t in zip(columns, types))
        column_list = ", ".join(quote_ident(c) for c in columns)
        sql = f"""
            WITH input AS (
                SELECT * FROM jsonb_to_recordset($1::jsonb) AS x({record_type})
            ), inserted AS (
                INSERT INTO {self.entity.table} ({column_list}, created_by, updated_by, owner_id)
                SELECT {column_list}, $2, $2, $2 FROM input
                RETURNING {self.entity.select_list}
            ), events AS (
                INSERT INTO xrm_sys.outbox (topic, entity, record_id, principal_id, payload)
                SELECT 'record.created', $3, i.id, $2, jsonb_build_object('version', 1, 'record', to_jsonb(i))
                FROM inserted i
            )
            SELECT * FROM inserted"""
        by_id: dict[uuid.UUID, dict[str, Any]] = {}
        async with self.db.transaction() as tx:
            for start in range(0, len(prepared), BATCH_LIMIT):
                chunk = prepared[start : start + BATCH_LIMIT]
                try:
                    rows = await tx.connection.fetch(sql, chunk, self.principal.id, self.name)
                except asyncpg.PostgresError as error:
                    raise self._database_problem(error, chunk, start if batch else None) from None
                for r in rows:
                    by_id[r["id"]] = self.entity.record_from_row(r)
        return [by_id[uuid.UUID(row["id"])] for row in prepared]

    def _prepare_new(self, data: Any) -> tuple[dict[str, Any], list[Problem]]:
        """Validate a new record; return its column values (JSON-ready) or problems."""
        if not isinstance(data, Mapping):
            return {}, [Problem("", "a record must be a JSON object")]
        problems = []
        record_id = data.get("id")
        if record_id is None:
            record_id = uuid.uuid4()
        else:
            try:
                record_id = _as_uuid(record_id, strict=True)
            except ValueError:
                problems.append(Problem("/id", f"{record_id!r} is not a valid record id (uuid)"))
        for key in data:
            if key in SYSTEM_FIELDS and key != "id":
                problems.append(Problem(pointer(key), "is set by the system and cannot be written"))
        values = {k: v for k, v in data.items() if k not in SYSTEM_FIELDS}
        for name, f in self.entity.fields.items():
            if values.get(name) is None and f.has_default:
                values[name] = f.default
        row, value_problems = self._columns(values)
        row["id"] = str(record_id)
        return row, problems + value_problems

    def _columns(self, values: Mapping[str, Any]) -> tuple[dict[str, Any], list[Problem]]:
        """Validate a complete record (field values); map fields to column values."""
        json_form = self.entity.validator.to_json_form(values)
        problems = self.entity.validator.problems(json_form)
        if problems:
            return {}, problems
        row: dict[str, Any] = {}
        for name, f in self.entity.fields.items():
            by_role = f.type.to_db(f, json_form.get(name))
            for column in f.columns():
                row[column.name] = by_role[column.role]
        return row, []

    async def update(
        self, record_id: Any, changes: Mapping[str, Any], *, expected_version: int | None = None
    ) -> dict[str, Any]:
        """Partial update: fields not in `changes` keep their values; None clears one."""
        self.policy.authorize(self.principal, self.name, "update")
        if not isinstance(changes, Mapping):
            raise ValidationFailed(self.name, [Problem("", "changes must be a JSON object")])
        problems = [
            Problem(pointer(k), "is set by the system and cannot be written" if k in SYSTEM_FIELDS else "is not a field of this entity")
            for k in changes
            if k not in self.entity.fields
        ]
        if problems:
            raise ValidationFailed(self.name, problems)
        async with self.db.transaction() as tx:
            current = await self._current_for_write(tx.connection, record_id, "update")
            _check_version(self.name, record_id, current, expected_version)
            merged = {name: current[name] for name in self.entity.fields}
            merged.update(changes)
            row, problems = self._columns(merged)
            if problems:
                raise ValidationFailed(self.name, problems)
            assignments = ", ".join(f"{quote_ident(column)} = r.{quote_ident(column)}" for column in row)
            record_type = ", ".join(
                f"{quote_ident(col.name)} {col.sql_type}" for f in self.entity.fields.values() for col in f.columns()
            )
            sql = f"""
                UPDATE {self.entity.table} AS t SET {assignments},
                    version = t.version + 1, updated_at = now(), updated_by = $3
                FROM jsonb_to_record($1::jsonb) AS r({record_type})
                WHERE t.id = $2
                RETURNING {', '.join('t.' + quote_ident(c) for c in self._select_columns())}"""
            try:
                updated = await tx.connection.fetchrow(sql, row, current["id"], self.principal.id)
            except asyncpg.PostgresError as error:
                raise self._database_problem(error, [row], None) from None
            record = self.entity.record_from_row(updated)
            diff = {
                name: {"old": current[name], "new": record[name]}
                for name in self.entity.fields
                if current[name] != record[name]
            }
            await self._event(tx.connection, "record.updated", record, {"changes": diff})
        return record

    async def delete(self, record_id: Any, *, expected_version: int | None = None) -> dict[str, Any]:
        """Soft delete: the row stays (restorable) but leaves lists and lookups."""
        self.policy.authorize(self.principal, self.name, "delete")
        async with self.db.transaction() as tx:
            current = await self._current_for_write(tx.connection, record_id, "delete")
            _check_version(self.name, record_id, current, expected_version)
            row = await tx.connection.fetchrow(
                f"UPDATE {self.entity.table} SET deleted_at = now(), version = version + 1, "
                f"updated_at = now(), updated_by = $2 WHERE id = $1 RETURNING {self.entity.select_list}",
                current["id"],
                self.principal.id,
            )
            record = self.entity.record_from_row(row)
            await self._event(tx.connection, "record.deleted", record, {})
        return record

    async def restore(self, record_id: Any) -> dict[str, Any]:
        self.policy.authorize(self.principal, self.name, "delete")
        async with self.db.transaction() as tx:
            current = await self._current_for_write(tx.connection, record_id, "delete", deleted=True)
            try:
                row = await tx.connection.fetchrow(
                    f"UPDATE {self.entity.table} SET deleted_at = NULL, version = version + 1, "
                    f"updated_at = now(), updated_by = $2 WHERE id = $1 RETURNING {self.entity.select_list}",
                    current["id"],
                    self.principal.id,
                )
            except asyncpg.PostgresError as error:
                raise self._database_problem(error, [], None) from None
            record = self.entity.record_from_row(row)
            await self._event(tx.connection, "record.restored", record, {})
        return record

    # -- helpers -------------------------------------------------------------
    def _select_columns(self) -> list[str]:
        return list(SYSTEM_FIELDS) + [col for _, _, cols in self.entity.column_fields for _, col in cols]

    async def _current_for_write(
        self, connection: asyncpg.Connection, record_id: Any, action: Any, *, deleted: bool = False
    ) -> dict[str, Any]:
        key = _as_uuid(record_id)
        params: list[Any] = [key]
        predicate = self.policy.row_filter(self.principal, self.name, action, params)
        state = "IS NOT NULL" if deleted else "IS NULL"
        row = await connection.fetchrow(
            f"SELECT {self.entity.select_list} FROM {self.entity.table} "
            f"WHERE id = $1 AND deleted_at {state} AND ({predicate}) FOR UPDATE",
            *params,
        )
        if row is None:
            what = "deleted " if deleted else ""
            raise NotFound(f"No {what}{self.name} record with id {record_id}")
        return self.entity.record_from_row(row)

    async def _event(self, connection: asyncpg.Connection, topic: str, record: Mapping[str, Any], extra: Mapping[str, Any]) -> None:
        payload = {"version": record["version"], **extra}
        await connection.execute(
            "INSERT INTO xrm_sys.outbox (topic, entity, record_id, principal_id, payload) VALUES ($1, $2, $3, $4, $5)",
            topic,
            self.name,
            record["id"],
            self.principal.id,
            json.loads(json_dumps(payload)),
        )

    def _database_problem(self, error: asyncpg.PostgresError, rows: list[Mapping[str, Any]], offset: int | None) -> ValidationFailed:
        """Turn a constraint violation into a field problem (never a server error)."""
        constraint = getattr(error, "constraint_name", None) or ""
        field_name = None
        for name in self.entity.fields:
            # Exact names (xrm.schema.ddl): a suffix test would blame field
            # "number" for a duplicate in "vat_number".
            if constraint in (short_name("ck", name), short_name("fk", name), unique_index_name(self.name, name)):
                field_name = name
        if field_name is None and constraint == object_name(self.name, "pkey"):
            field_name = "id"
        prefix = ""
        if offset is not None and field_name:
            column = "id" if field_name == "id" else self.entity.fields[field_name].columns()[0].name
            detail = getattr(error, "detail", "") or ""
            for i, row in enumerate(rows):
                if f"=({row.get(column)})" in detail:  # "Key (col)=(value) ..."
                    prefix = pointer(offset + i)
                    break
        at = prefix + (pointer(field_name) if field_name else "")
        if isinstance(error, asyncpg.UniqueViolationError):
            message = "a record with this id exists already" if field_name == "id" else "this value is already used by another record"
        elif isinstance(error, asyncpg.ForeignKeyViolationError):
            target = self.entity.fields[field_name].references if field_name else "the referenced entity"
            message = f"no {target} record has this id"
        elif isinstance(error, asyncpg.CheckViolationError):
            message = "violates the field's rules"
        elif isinstance(error, asyncpg.NotNullViolationError):
            message = "is required"
            at = prefix + pointer(getattr(error, "column_name", "") or "")
        else:
            raise error
        return ValidationFailed(self.name, [Problem(at, message)])


def _check_version(entity: str, record_id: Any, current: Mapping[str, Any], expected: int | None) -> None:
    if expected is not None and current["version"] != expected:
        raise VersionConflict(entity, record_id, expected, current["version"])


def _as_uuid(value: Any, *, strict: bool = False) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        if strict:
            raise
        raise NotFound(f"No record with id {value!r}") from None


def _encode_cursor(record: Mapping[str, Any]) -> str:
    raw = json.dumps([record["created_at"].isoformat(), str(record["id"])])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[dt.datetime, uuid.UUID]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created_at, record_id = json.loads(base64.urlsafe_b64decode(padded))
        return dt.datetime.fromisoformat(created_at), uuid.UUID(record_id)
    except (ValueError, TypeError) as error:
        raise ValidationFailed("cursor", [Problem("/after", "is not a cursor this service issued")]) from error
