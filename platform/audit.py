"""The audit trail: who did what, when, to which record, field by field.

Writers call `write` / `write_many` on the connection of the change's own
transaction, so an entry exists exactly when the change does. The table
(xrm_sys.audit_log, see db/bootstrap.sql) refuses UPDATE, DELETE and TRUNCATE
by trigger: the trail is append-only for everyone, the application included.

Actions: record.created, record.updated, record.deleted, record.restored,
schema.changed, auth.login, auth.login_failed, export — and the permission
changes of the security model.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from .db.database import Database, json_dumps
from .errors import Problem, ValidationFailed
from .records.principal import Principal

__all__ = ["AuditEntry", "AuditLog", "field_changes"]

MAX_PAGE = 1000


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: dt.datetime
    principal_id: uuid.UUID | None
    principal_name: str
    action: str
    entity: str | None
    record_id: uuid.UUID | None
    changes: dict[str, Any] | None
    details: dict[str, Any] | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at,
            "user_id": self.principal_id,
            "user": self.principal_name,
            "action": self.action,
            "entity": self.entity,
            "record_id": self.record_id,
            "changes": self.changes,
            "details": self.details,
        }


def _jsonable(value: Any) -> Any:
    return None if value is None else json.loads(json_dumps(value))


def field_changes(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None, fields: Iterable[str]) -> dict[str, Any]:
    """{field: {"old": ..., "new": ...}} for the fields whose value differs (JSON values)."""
    changes: dict[str, Any] = {}
    for name in fields:
        before = old.get(name) if old else None
        after = new.get(name) if new else None
        if before != after:
            changes[name] = {"old": _jsonable(before), "new": _jsonable(after)}
    return changes


_INSERT = """
    INSERT INTO xrm_sys.audit_log (principal_id, principal_name, action, entity, record_id, changes, details)
    SELECT $1, $2, $3, $4, r.record_id, r.changes, $5
    FROM unnest($6::uuid[], $7::jsonb[]) AS r(record_id, changes)
"""


class AuditLog:
    """Write and read the audit trail."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @staticmethod
    async def write(
        connection: asyncpg.Connection,
        principal: Principal,
        action: str,
        *,
        entity: str | None = None,
        record_id: uuid.UUID | None = None,
        changes: Mapping[str, Any] | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        await AuditLog.write_many(connection, principal, action, entity=entity, records=[(record_id, changes)], details=details)

    @staticmethod
    async def write_many(
        connection: asyncpg.Connection,
        principal: Principal,
        action: str,
        *,
        entity: str | None,
        records: Sequence[tuple[uuid.UUID | None, Mapping[str, Any] | None]],
        details: Mapping[str, Any] | None = None,
    ) -> None:
        """One entry per (record id, changes), in one statement."""
        if not records:
            return
        await connection.execute(
            _INSERT,
            None if principal.is_system else principal.id,
            principal.name,
            action,
            entity,
            details,  # the connection's jsonb codec writes dates, decimals and uuids
            [record_id for record_id, _ in records],
            [changes for _, changes in records],
        )

    async def write_now(self, principal: Principal, action: str, **arguments: Any) -> None:
        """An entry in its own transaction (events that change no table, e.g. a login)."""
        async with self.db.connection() as connection:
            await self.write(connection, principal, action, **arguments)

    async def history(self, record_id: uuid.UUID) -> list[AuditEntry]:
        """Every entry of one record, oldest first. The caller checks that the user may read it."""
        async with self.db.connection() as connection:
            rows = await connection.fetch("SELECT * FROM xrm_sys.audit_log WHERE record_id = $1 ORDER BY id", record_id)
        return [_entry(r) for r in rows]

    async def search(
        self,
        *,
        entity: str | None = None,
        record_id: uuid.UUID | None = None,
        user: str | None = None,
        action: str | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        field: str | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> list[AuditEntry]:
        """Entries matching every given filter, newest first; page with before_id (the last id seen)."""
        problems = []
        for name, value in (("user", user), ("entity", entity), ("action", action), ("field", field)):
            if value is not None and "\x00" in value:
                problems.append(Problem(f"/{name}", "must not contain the NUL character (\\u0000)"))
        if not 1 <= limit <= MAX_PAGE:
            problems.append(Problem("/limit", f"must be between 1 and {MAX_PAGE}"))
        for name, moment in (("since", since), ("until", until)):
            if moment is not None and moment.utcoffset() is None:
                problems.append(Problem(f"/{name}", "needs a time zone offset"))
        if problems:
            raise ValidationFailed("audit", problems)
        params: list[Any] = []

        def bind(value: Any) -> str:
            params.append(value)
            return f"${len(params)}"

        filters = [
            ("entity =", entity), ("record_id =", record_id), ("principal_name =", user), ("action =", action),
            ("at >=", since), ("at <", until), ("changes ?", field), ("id <", before_id),
        ]
        conditions = [f"{condition} {bind(value)}" for condition, value in filters if value is not None]
        where = " AND ".join(conditions) or "TRUE"
        async with self.db.connection() as connection:
            rows = await connection.fetch(
                f"SELECT * FROM xrm_sys.audit_log WHERE {where} ORDER BY id DESC LIMIT {bind(limit)}", *params
            )
        return [_entry(r) for r in rows]


def _entry(row: Any) -> AuditEntry:
    return AuditEntry(
        id=row["id"],
        at=row["at"],
        principal_id=row["principal_id"],
        principal_name=row["principal_name"],
        action=row["action"],
        entity=row["entity"],
        record_id=row["record_id"],
        changes=row["changes"],
        details=row["details"],
    )
