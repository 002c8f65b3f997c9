"""RecordService: the one door for reading and writing records.

Every entry point (API, web UI, import/export, workflows, plugins, the
assistant) calls these methods with its principal. Each write validates with
the entity's RecordValidator, checks the policy, and writes the row together
with its outbox event in one transaction.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from ..db.database import Database
from ..events import emit
from ..errors import NotFound, PermissionDenied, Problem, ValidationFailed, Veto, VersionConflict, pointer
from ..identifiers import quote_ident, short_name
from ..registry import SYSTEM_FIELDS, CompiledEntity, Registry
from ..schema.ddl import object_name, unique_index_name
from ..schema.definition import FieldDefinition
from . import query
from ..audit import AuditEntry, AuditLog, field_changes
from .aggregate import compile_request as compile_aggregate
from .policy import OpenPolicy, Policy, RowPartition, field_access
from .principal import Principal
from .query import Condition
from .. import plugins

__all__ = ["AggregateResult", "Page", "RecordService"]

BATCH_LIMIT = 1000
"""Rows per INSERT statement in create_many (larger inputs are chunked)."""


@dataclass(frozen=True)
class Page:
    records: list[dict[str, Any]]
    next_cursor: str | None
    """Pass as `after` (with the same order_by) for the next page; None on the last."""
    total: int | None = None
    """Every matching record (with_total=True), else None; with total_limit at most that many."""
    total_capped: bool = False
    """True when more records match than total_limit: total is then a lower bound ("10,000+")."""


@dataclass(frozen=True)
class AggregateResult:
    """What RecordService.aggregate returns: one row per group, keys "field"/"field:bucket" and "op:field"."""

    groups: list[str]
    measures: list[str]
    rows: list[dict[str, Any]]
    labels: dict[str, dict[Any, str]]
    """Per reference group: id -> display value of the referenced records the principal may read."""
    truncated: bool = False
    """More groups than the limit matched."""


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
        self.registry = registry
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
        return self._shown(self.entity.record_from_row(row))

    async def list(
        self,
        *,
        where: Mapping[str, Any] | Sequence[Condition] | None = None,
        search: str | None = None,
        order_by: Sequence[str] | None = None,
        limit: int = 50,
        after: str | None = None,
        include_deleted: bool = False,
        fields: Sequence[str] | None = None,
        with_total: bool = False,
        expand: Sequence[str] | None = None,
        total_limit: int | None = None,
    ) -> Page:
        """One page of records (see xrm.records.query for the language).

        `where`: {field: value} (equality) or a list of Condition; `search`:
        full-text words; `order_by`: keys "field" / "-field" (default
        created_at), id always breaks ties; `after`: the previous page's
        next_cursor (same order_by); `fields`: names to return (id and version
        always); `with_total`: count every matching row into Page.total;
        `expand`: reference fields whose records to add as "<field>_expanded";
        `total_limit`: count at most this many (a full count of a million rows
        takes ~0.1 s; screens show "10,000+" instead).
        """
        self.policy.authorize(self.principal, self.name, "read")
        problems: list[Problem] = []
        params: list[Any] = []
        partition = self._read_partition(params)
        conditions = self._conditions(where, search, include_deleted, params, problems, predicate=partition is None)
        self._refuse_hidden_order(order_by, problems)
        if problems:
            raise ValidationFailed(self.name, problems)
        keys = query.parse_order(self.entity, order_by, problems)
        names = query.field_selection(self.entity, fields, SYSTEM_FIELDS, problems)
        hidden = self.hidden_fields
        if names is not None and hidden:
            selected = [p.strip() for p in fields.split(",") if p.strip()] if isinstance(fields, str) else fields
            for index, name in enumerate(selected):
                if isinstance(name, str) and name in hidden:
                    problems.append(Problem(pointer("fields", index), _HIDDEN.format(name=name, what="selected")))
        offered = self._expansions() if expand else {}
        expanded = query.expand_selection(self.entity, expand, problems, list(offered))
        if hidden and expanded:
            wanted = [p.strip() for p in expand.split(",") if p.strip()] if isinstance(expand, str) else expand
            for index, name in enumerate(wanted):
                if isinstance(name, str) and name in hidden:
                    problems.append(Problem(pointer("expand", index), _HIDDEN.format(name=name, what="expanded")))
        cursor_values = query.decode_cursor(after, keys, problems) if after and not problems else None
        if problems:
            raise ValidationFailed(self.name, problems)
        limit = max(1, min(int(limit), 1000))

        columns = self._page_columns(names, keys, [n for n in expanded if n in self.entity.fields])
        if partition is not None and not _walks_owner_index(keys):
            conditions.insert(0, partition.predicate)
            partition = None
        base = " AND ".join(f"({c})" for c in conditions)
        arms = [("", params)] if cursor_values is None else query.keyset_conditions(keys, cursor_values, params)
        order = query.order_sql(keys)

        def page_sql(arm: str, rows_wanted: int) -> str:
            where_sql = base + (f" AND ({arm})" if arm else "")
            if partition is None:
                return f"SELECT {columns} FROM {self.entity.table} WHERE {where_sql} ORDER BY {order} LIMIT {rows_wanted}"
            # One ordered walk of (owner_id, created_at, id) per owner, plus the shared rows owned by
            # nobody in the set; PostgreSQL merges the arms (Merge Append), pulling from each only
            # as far as the page needs: see RowPartition.
            # (Each arm needs its own ORDER BY ... LIMIT: arms without one are flattened into one
            # Append, which PostgreSQL then sorts whole.)
            owners = f"${partition.owners_param}::uuid[]"
            parts = [f"owner_id = ({owners})[{index}]" for index in range(1, len(partition.owners) + 1)]
            if partition.others_not_owned is not None:
                parts.append(partition.others_not_owned)
            arms_sql = " UNION ALL ".join(
                f"(SELECT {columns} FROM {self.entity.table} WHERE {part} AND {where_sql} ORDER BY {order} LIMIT {rows_wanted})"
                for part in parts
            )
            return f"SELECT * FROM ({arms_sql}) AS permitted_page ORDER BY {order} LIMIT {rows_wanted}"

        async def fetch(connection: asyncpg.Connection) -> tuple[list[asyncpg.Record], int | None]:
            rows: list[asyncpg.Record] = []
            for arm, arm_params in arms:  # in sort order; the first usually fills the page
                rows.extend(await connection.fetch(page_sql(arm, limit + 1 - len(rows)), *arm_params))
                if len(rows) > limit:
                    break
            total = None
            if with_total:
                counted = base if partition is None else f"({partition.predicate}) AND {base}"
                total = await connection.fetchval(_count_sql(self.entity.table, counted, total_limit), *params)
            return rows, total

        async with self.db.connection() as connection:
            if (with_total or len(arms) > 1) and not connection.is_in_transaction():
                # Every statement of the page (and the total) sees one snapshot.
                async with connection.transaction(isolation="repeatable_read", readonly=True):
                    rows, total = await fetch(connection)
            else:
                rows, total = await fetch(connection)

        page_rows = rows[:limit]
        records = [self._shown(self._record(row, names), hidden) for row in page_rows]
        next_cursor = None
        if len(rows) > limit:
            last = page_rows[-1]
            next_cursor = query.encode_cursor(keys, [last[k.column] for k in keys])
        for name in expanded:
            if name in self.entity.fields:
                await self._expand(name, page_rows, records)
            else:  # a plugin's (links, connections): one load per page, through this service's principal
                loaded = await plugins.await_me_maybe(offered[name].load(service=self, ids=[row["id"] for row in page_rows])) if page_rows else {}
                for record in records:
                    record[f"{name}_expanded"] = loaded.get(record["id"], [])
        capped = total_limit is not None and total is not None and total > total_limit
        return Page(records, next_cursor, total_limit if capped else total, capped)

    def _expansions(self) -> dict[str, Any]:
        """What plugins offer to `expand` here (xrm_record_expansions); a field's name stays the field's."""
        offered = plugins.get_plugin_manager().expansions(self.name, self.registry)
        return {name: item for name, item in offered.items() if name not in self.entity.fields}

    async def read_many(self, ids: Sequence[Any]) -> dict[uuid.UUID, dict[str, Any]]:
        """Live records by id that the principal may read (as `get` shows them), in one query; the others are absent."""
        keys = []
        for value in ids:
            try:
                keys.append(_as_uuid(value))
            except NotFound:
                continue  # not an id: no record has it
        return await self._read_many(list(dict.fromkeys(keys))) if keys else {}

    async def allowed_actions(self, record_id: Any, actions: Sequence[str] = ("update", "delete", "share", "assign")) -> set[str]:
        """Which of `actions` the principal may take on this record (for showing only the buttons that work).

        One query: each action's row predicate evaluated on the row.
        """
        key = _as_uuid(record_id)
        params: list[Any] = [key]
        granted = [a for a in actions if not self.principal.read_only and self.policy_scope(a) != "none"]
        if not granted:
            return set()
        columns = ", ".join(f"({self.policy.row_filter(self.principal, self.name, a, params)}) AS {quote_ident(a)}" for a in granted)
        async with self.db.connection() as connection:
            row = await connection.fetchrow(f"SELECT {columns} FROM {self.entity.table} WHERE id = $1", *params)
        return {a for a in granted if row is not None and row[a]}

    def policy_scope(self, action: str) -> str:
        """The principal's scope for an action on this entity ("none" .. "all"); "all" under OpenPolicy."""
        scope = getattr(self.policy, "scope", None)
        return scope(self.principal, self.name, action) if scope else "all"

    async def count(
        self,
        *,
        where: Mapping[str, Any] | Sequence[Condition] | None = None,
        search: str | None = None,
        include_deleted: bool = False,
        limit: int | None = None,
    ) -> int:
        """How many records match (the same `where` and `search` as list); with `limit`, at most limit + 1."""
        self.policy.authorize(self.principal, self.name, "read")
        problems: list[Problem] = []
        params: list[Any] = []
        conditions = self._conditions(where, search, include_deleted, params, problems)
        if problems:
            raise ValidationFailed(self.name, problems)
        async with self.db.connection() as connection:
            return await connection.fetchval(
                _count_sql(self.entity.table, " AND ".join(f"({c})" for c in conditions), limit), *params
            )

    async def aggregate(
        self,
        *,
        group_by: Sequence[Any] = (),
        measures: Sequence[Any] = ("count",),
        where: Mapping[str, Any] | Sequence[Condition] | None = None,
        search: str | None = None,
        order_by: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> AggregateResult:
        """Grouped counts, sums, averages, minima, maxima over the permitted records (see xrm.records.aggregate).

        One statement whose WHERE starts with the read predicate, so no number
        ever includes a record the principal could not open. Groups over a
        reference field get the referenced records' display values in
        `labels` (only of those the principal may read).
        """
        self.policy.authorize(self.principal, self.name, "read")
        problems: list[Problem] = []
        params: list[Any] = []
        conditions = self._conditions(where, search, False, params, problems)
        compiled = compile_aggregate(self.entity, group_by, measures, order_by, limit, self.hidden_fields, problems)
        if problems or compiled is None:
            raise ValidationFailed(self.name, problems)
        select = ", ".join(f"{expression} AS {quote_ident(key)}" for key, expression, _ in compiled.columns)
        grouped = f" GROUP BY {', '.join(compiled.group_sql)}" if compiled.group_sql else ""
        sql = (f"SELECT {select} FROM {self.entity.table} WHERE {' AND '.join(f'({c})' for c in conditions)}"
               f"{grouped}{' ORDER BY ' + compiled.order_sql if compiled.order_sql else ''} LIMIT {compiled.limit + 1}")
        async with self.db.connection() as connection:
            rows = await connection.fetch(sql, *params)
        result = [{key: row[key] for key, _, _ in compiled.columns} for row in rows[: compiled.limit]]
        labels: dict[str, dict[Any, str]] = {}
        for group in compiled.groups:
            f = self.entity.fields.get(group.field)
            if f is None or not f.references or group.bucket is not None:
                continue
            ids = list({row[group.key] for row in result if row[group.key] is not None})
            target = RecordService(self.db, self.registry, f.references, self.principal, self.policy)
            labels[group.key] = await target.display_values(ids) if ids else {}
        return AggregateResult(
            groups=compiled.group_keys, measures=[m.key for m in compiled.measures], rows=result,
            labels=labels, truncated=len(rows) > compiled.limit,
        )

    def read_conditions(self, params: list[Any]) -> str:
        """The WHERE that limits a read of this entity's table to the live rows the principal may open.

        For components that write their own SQL over the table (the
        assistant's hybrid retrieval ranks rows by text and vector similarity
        with this predicate inside the same statement, so its top-k is full
        and never holds a record the principal could not open). Refuses like
        every read when the principal may not read the entity at all.
        """
        self.policy.authorize(self.principal, self.name, "read")
        problems: list[Problem] = []
        conditions = self._conditions(None, None, False, params, problems)
        return " AND ".join(f"({c})" for c in conditions)

    async def display_values(self, ids: Sequence[Any]) -> dict[Any, str]:
        """Display value per id, for the ids among `ids` the principal may read (others are left out)."""
        if not ids or self.policy_scope("read") == "none":
            return {}
        display = self.entity.definition.display_field
        page = await self.list(where=[Condition("id", "in", [str(i) for i in ids])], fields=[display] if display else None,
                               limit=len(ids))
        return {record["id"]: str(record.get(display) or record["id"]) for record in page.records}

    def _read_partition(self, params: list[Any]) -> RowPartition | None:
        """The read filter split by owner, when the policy can split it and the owners are few enough to walk one by one."""
        split = getattr(self.policy, "row_partition", None)
        if split is None:
            return None
        trial: list[Any] = list(params)
        partition = split(self.principal, self.name, "read", trial)
        if partition is None or len(partition.owners) > _MAX_OWNER_WALKS:
            return None
        params[:] = trial
        return partition

    def _conditions(
        self, where: Any, search: str | None, include_deleted: bool, params: list[Any], problems: list[Problem],
        *, predicate: bool = True,
    ) -> list[str]:
        """The WHERE of list and count: the permission predicate always comes first (the caller adds it if not `predicate`)."""
        conditions = [self.policy.row_filter(self.principal, self.name, "read", params)] if predicate else ["TRUE"]
        if not include_deleted:
            conditions.append("deleted_at IS NULL")
        if self._refuse_hidden_where(where, problems):
            return conditions
        conditions.extend(query.where_sql(self.entity, where, params, problems))
        if search is not None and not isinstance(search, str):
            problems.append(Problem("/search", "must be text"))
        elif search and "\x00" in search:
            problems.append(Problem("/search", "must not contain the NUL character (\\u0000)"))
        elif search:
            params.append(search)
            conditions.append(f"search_vector @@ websearch_to_tsquery('simple', ${len(params)})")
        return conditions

    # -- field-level security (docs/security.md) ------------------------------
    @property
    def sensitive_fields(self) -> frozenset[str]:
        """Fields marked "x-xrm": {"sensitive": true}."""
        return frozenset(name for name, f in self.entity.fields.items() if f.xrm.get("sensitive"))

    def _field_access(self) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
        """(sensitive, readable, writable) for this principal: the policy decides."""
        sensitive = self.sensitive_fields
        readable, writable = field_access(self.policy, self.principal, self.name, sensitive)
        return sensitive, readable, writable

    @property
    def hidden_fields(self) -> frozenset[str]:
        """Sensitive fields this principal may not read: absent from every result, refused in queries and writes."""
        sensitive, readable, _ = self._field_access()
        return sensitive - readable

    @property
    def read_only_fields(self) -> frozenset[str]:
        """Sensitive fields this principal may read but not change."""
        _, readable, writable = self._field_access()
        return readable - writable

    @property
    def visible_fields(self) -> dict[str, Any]:
        """The entity's fields (name -> FieldDefinition) this principal may read, in definition order."""
        hidden = self.hidden_fields
        return {name: f for name, f in self.entity.fields.items() if name not in hidden}

    def _shown(self, record: dict[str, Any], hidden: frozenset[str] | None = None) -> dict[str, Any]:
        """The record without the fields the principal may not read (the keys are absent, not blanked)."""
        for name in self.hidden_fields if hidden is None else hidden:
            record.pop(name, None)
        return record

    def _refuse_hidden_where(self, where: Any, problems: list[Problem]) -> bool:
        """Problems for conditions on hidden fields (a filter would leak their values); True if any."""
        hidden = self.hidden_fields
        if not hidden or where is None:
            return False
        if isinstance(where, Mapping):
            items = [(pointer("where", name), name) for name in where]
        elif isinstance(where, (list, tuple)):
            items = []
            for index, item in enumerate(where):
                if isinstance(item, Condition):
                    name = item.field
                elif isinstance(item, Mapping):
                    name = item.get("field")
                elif isinstance(item, (list, tuple)) and item:
                    name = item[0]
                else:
                    name = None
                items.append((pointer("where", index), name))
        else:
            return False
        found = False
        for at, name in items:
            if isinstance(name, str) and name.split(".")[0] in hidden:
                problems.append(Problem(at, _HIDDEN.format(name=name.split(".")[0], what="filtered on")))
                found = True
        return found

    def _refuse_hidden_order(self, order_by: Any, problems: list[Problem]) -> None:
        hidden = self.hidden_fields
        if not hidden or order_by is None:
            return
        specs = [p.strip() for p in order_by.split(",") if p.strip()] if isinstance(order_by, str) else order_by
        if not isinstance(specs, (list, tuple)):
            return
        for index, spec in enumerate(specs):
            if isinstance(spec, str):
                name = (spec[1:] if spec[:1] in "-+" else spec).split(".")[0]
                if name in hidden:
                    problems.append(Problem(pointer("order_by", index), _HIDDEN.format(name=name, what="sorted by")))

    def _write_problems(self, keys: Any, *, creating: bool, values: Mapping[str, Any]) -> list[Problem]:
        """Sensitive fields in a write the principal may not change (the caller decides about read-only ones)."""
        sensitive, readable, writable = self._field_access()
        problems = []
        for name in keys:
            if name in sensitive and name not in writable:
                if creating and values.get(name) is None:
                    continue  # not given a value: nothing is written
                if name not in readable:
                    problems.append(Problem(pointer(name), _HIDDEN.format(name=name, what="written")))
                elif creating:
                    problems.append(Problem(pointer(name), _READ_ONLY.format(name=name)))
        return problems

    def _page_columns(self, names: list[str] | None, keys: list[query.SortKey], expanded: list[str]) -> str:
        if names is None:
            return self.entity.select_list
        columns: list[str] = []
        for name in names:
            if name in SYSTEM_FIELDS:
                columns.append(name)
            else:
                columns.extend(c.name for c in self.entity.fields[name].columns())
        columns.extend(k.column for k in keys)
        columns.extend(self.entity.fields[name].columns()[0].name for name in expanded)
        return ", ".join(quote_ident(c) for c in dict.fromkeys(columns))

    def _record(self, row: Mapping[str, Any], names: list[str] | None) -> dict[str, Any]:
        if names is None:
            return self.entity.record_from_row(row)
        record: dict[str, Any] = {}
        for name in names:
            if name in SYSTEM_FIELDS:
                record[name] = row[name]
            else:
                f = self.entity.fields[name]
                record[name] = f.type.from_db(f, {c.role: row[c.name] for c in f.columns()})
        return record

    async def _expand(self, name: str, rows: Sequence[Mapping[str, Any]], records: list[dict[str, Any]]) -> None:
        """Add "<name>_expanded" (the referenced record, or None) to each record."""
        f = self.entity.fields[name]
        column = f.columns()[0].name
        target = RecordService(self.db, self.registry, f.references or "", self.principal, self.policy)
        ids = list(dict.fromkeys(row[column] for row in rows if row[column] is not None))
        found = await target._read_many(ids) if ids else {}
        display = target.entity.definition.display_field
        for row, record in zip(rows, records):
            referenced = found.get(row[column])
            if referenced is not None:
                referenced = {**referenced, "_display": referenced.get(display) if display else None}
            record[f"{name}_expanded"] = referenced

    async def _read_many(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, dict[str, Any]]:
        """Live records by id that the principal may read, in one query."""
        self.policy.authorize(self.principal, self.name, "read")
        params: list[Any] = [list(ids)]
        predicate = self.policy.row_filter(self.principal, self.name, "read", params)
        async with self.db.connection() as connection:
            rows = await connection.fetch(
                f"SELECT {self.entity.select_list} FROM {self.entity.table} "
                f"WHERE id = ANY($1::uuid[]) AND deleted_at IS NULL AND ({predicate})",
                *params,
            )
        hidden = self.hidden_fields
        return {row["id"]: self._shown(self.entity.record_from_row(row), hidden) for row in rows}

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
        hooked = _hooked()
        proposed: list[dict[str, Any]] = []
        for index, data in enumerate(records):
            row, row_problems = self._prepare_new(data, proposed if hooked else None)
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
            if hooked:
                for index, record in enumerate(proposed):
                    await self._before_write("create", record, None, index if batch else None)
            for start in range(0, len(prepared), BATCH_LIMIT):
                chunk = prepared[start : start + BATCH_LIMIT]
                try:
                    rows = await tx.connection.fetch(sql, chunk, self.principal.id, self.name)
                except asyncpg.PostgresError as error:
                    raise self._database_problem(error, chunk, start if batch else None) from None
                created = [self.entity.record_from_row(r) for r in rows]
                await AuditLog.write_many(
                    tx.connection, self.principal, "record.created", entity=self.name,
                    records=[(record["id"], field_changes(None, record, self._audited)) for record in created],
                )
                for record in created:
                    by_id[record["id"]] = record
                if hooked:
                    for index, record in enumerate(created, start):
                        await self._after_write(tx.connection, "create", record, None, index if batch else None)
        hidden = self.hidden_fields
        return [self._shown(by_id[uuid.UUID(row["id"])], hidden) for row in prepared]

    def _prepare_new(self, data: Any, proposed: list[dict[str, Any]] | None = None) -> tuple[dict[str, Any], list[Problem]]:
        """Validate a new record; return its column values (JSON-ready) or problems.

        With `proposed`, append the record as the write hooks see it (JSON form, with id).
        """
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
        problems.extend(self._write_problems(values, creating=True, values=values))
        for name, f in self.entity.fields.items():
            if values.get(name) is None and f.has_default:
                values[name] = f.default
        for stamp, watched in self._change_stamps:
            if values.get(watched) is not None and values.get(stamp) is None:
                values[stamp] = _now_text()
        row, value_problems = self._columns(values)
        row["id"] = str(record_id)
        if proposed is not None:
            json_form = self.entity.validator.to_json_form({name: values.get(name) for name in self.entity.fields})
            proposed.append({"id": record_id, **json_form})
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
        problems += self._write_problems(changes, creating=False, values=changes)
        if problems:
            raise ValidationFailed(self.name, problems)
        read_only = [name for name in changes if name in self.read_only_fields]
        async with self.db.transaction() as tx:
            current = await self._current_for_write(tx.connection, record_id, "update")
            _check_version(self.name, record_id, current, expected_version)
            merged = {name: current[name] for name in self.entity.fields}
            merged.update(changes)
            for stamp, watched in self._change_stamps:
                field_type = self.entity.fields[watched].type
                if stamp not in changes and watched in changes and field_type.to_json(changes[watched]) != field_type.to_json(current[watched]):
                    merged[stamp] = _now_text()
            row, problems = self._columns(merged)
            if problems:
                raise ValidationFailed(self.name, problems)
            if read_only:
                # Readable but not writable: sending the value unchanged (a form round trip) is fine.
                before, _ = self._columns({name: current[name] for name in self.entity.fields})
                problems = [
                    Problem(pointer(name), _READ_ONLY.format(name=name)) for name in read_only
                    if any(row[c.name] != before.get(c.name) for c in self.entity.fields[name].columns())
                ]
                if problems:
                    raise ValidationFailed(self.name, problems)
            if _hooked():
                proposed = {"id": current["id"], **self.entity.validator.to_json_form(merged)}
                await self._before_write("update", proposed, current)
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
            await AuditLog.write(
                tx.connection, self.principal, "record.updated", entity=self.name, record_id=record["id"],
                changes=field_changes(current, record, self._audited),
            )
            if _hooked():
                await self._after_write(tx.connection, "update", record, current)
        return self._shown(record)

    async def delete(self, record_id: Any, *, expected_version: int | None = None) -> dict[str, Any]:
        """Soft delete: the row stays (restorable) but leaves lists and lookups."""
        self.policy.authorize(self.principal, self.name, "delete")
        async with self.db.transaction() as tx:
            current = await self._current_for_write(tx.connection, record_id, "delete")
            _check_version(self.name, record_id, current, expected_version)
            if _hooked():
                await self._before_write("delete", current, current)
            row = await tx.connection.fetchrow(
                f"UPDATE {self.entity.table} SET deleted_at = now(), version = version + 1, "
                f"updated_at = now(), updated_by = $2 WHERE id = $1 RETURNING {self.entity.select_list}",
                current["id"],
                self.principal.id,
            )
            record = self.entity.record_from_row(row)
            await self._event(tx.connection, "record.deleted", record, {})
            await AuditLog.write(tx.connection, self.principal, "record.deleted", entity=self.name, record_id=record["id"])
            if _hooked():
                await self._after_write(tx.connection, "delete", record, current)
        return self._shown(record)

    async def restore(self, record_id: Any) -> dict[str, Any]:
        self.policy.authorize(self.principal, self.name, "delete")
        async with self.db.transaction() as tx:
            current = await self._current_for_write(tx.connection, record_id, "delete", deleted=True)
            if _hooked():
                await self._before_write("restore", current, current)
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
            await AuditLog.write(tx.connection, self.principal, "record.restored", entity=self.name, record_id=record["id"])
            if _hooked():
                await self._after_write(tx.connection, "restore", record, current)
        return self._shown(record)

    async def erase_personal(self, record_id: Any) -> list[str]:
        """Anonymise the record's personal fields (x-xrm personal), deleted or not; return their names.

        For data-protection erasure and retention (xrm.privacy), which also
        redact the old values from the audit trail and the outbox. The event
        and the audit entry name the fields, never their values.
        """
        self.policy.authorize(self.principal, self.name, "update")
        fields = self.entity.definition.personal_fields
        key = _as_uuid(record_id)
        values: list[Any] = [key, self.principal.id]
        assignments = []
        for name in fields:
            f = self.entity.fields[name]
            by_role = f.type.to_db(f, erasure_value(f, key))
            for column in f.columns():
                values.append(by_role[column.role])
                assignments.append(f"{quote_ident(column.name)} = ${len(values)}::{column.sql_type}")
        params: list[Any] = [key]
        predicate = self.policy.row_filter(self.principal, self.name, "update", params)
        async with self.db.transaction() as tx:
            visible = await tx.connection.fetchval(f"SELECT 1 FROM {self.entity.table} WHERE id = $1 AND ({predicate}) FOR UPDATE", *params)
            if visible is None:
                raise NotFound(f"No {self.name} record with id {record_id}")
            row = await tx.connection.fetchrow(
                f"UPDATE {self.entity.table} SET {', '.join(assignments + ['version = version + 1', 'updated_at = now()', 'updated_by = $2'])} "
                f"WHERE id = $1 RETURNING {self.entity.select_list}",
                *values,
            )
            record = self.entity.record_from_row(row)
            await self._event(tx.connection, "record.erased", record, {"fields": fields})
            await AuditLog.write(tx.connection, self.principal, "record.erased", entity=self.name, record_id=key, details={"fields": fields})
        return fields

    async def purge(self, record_id: Any) -> None:
        """Delete the row for good (retention "delete"); the caller redacts its trail."""
        self.policy.authorize(self.principal, self.name, "delete")
        key = _as_uuid(record_id)
        params: list[Any] = [key]
        predicate = self.policy.row_filter(self.principal, self.name, "delete", params)
        async with self.db.transaction() as tx:
            deleted = await tx.connection.fetchval(f"DELETE FROM {self.entity.table} WHERE id = $1 AND ({predicate}) RETURNING version", *params)
            if deleted is None:
                raise NotFound(f"No {self.name} record with id {record_id}")
            await self._event(tx.connection, "record.purged", {"id": key, "version": deleted}, {})
            await AuditLog.write(tx.connection, self.principal, "record.purged", entity=self.name, record_id=key)

    async def history(self, record_id: Any) -> list[AuditEntry]:
        """The record's audit trail, oldest first, for a user who may read the record (deleted or not)."""
        self.policy.authorize(self.principal, self.name, "read")
        key = _as_uuid(record_id)
        params: list[Any] = [key]
        predicate = self.policy.row_filter(self.principal, self.name, "read", params)
        async with self.db.connection() as connection:
            visible = await connection.fetchval(f"SELECT 1 FROM {self.entity.table} WHERE id = $1 AND ({predicate})", *params)
        if visible is None:
            raise NotFound(f"No {self.name} record with id {record_id}")
        entries = await AuditLog(self.db).history(key)
        hidden = self.hidden_fields
        if not hidden:
            return entries
        # The trail keeps old and new values of sensitive fields; a reader who may not read them does not see them.
        return [
            entry if not entry.changes or not hidden & entry.changes.keys()
            else dataclasses.replace(entry, changes={k: v for k, v in entry.changes.items() if k not in hidden})
            for entry in entries
        ]

    # -- plugin hooks (xrm.hookspecs: xrm_before_write, xrm_after_write) ---------
    async def _before_write(self, action: str, record: Mapping[str, Any], previous: Mapping[str, Any] | None, index: int | None = None) -> None:
        """Let plugins refuse the write (a Veto or ValidationFailed becomes a 422 naming this entity)."""
        try:
            await plugins.call_write_hook(
                "xrm_before_write", entity=self.name, action=action, record=record, previous=previous, principal=self.principal,
                definition=self.entity.definition, db=self.db, registry=self.registry,
            )
        except ValidationFailed as error:
            raise _refusal(self.name, error, index) from None

    async def _after_write(
        self, connection: asyncpg.Connection, action: str, record: Mapping[str, Any], previous: Mapping[str, Any] | None,
        index: int | None = None,
    ) -> None:
        try:
            await plugins.call_write_hook(
                "xrm_after_write", entity=self.name, action=action, record=record, previous=previous,
                principal=self.principal, connection=connection, definition=self.entity.definition, db=self.db, registry=self.registry,
            )
        except ValidationFailed as error:
            raise _refusal(self.name, error, index) from None

    # -- helpers -------------------------------------------------------------
    @property
    def _audited(self) -> list[str]:
        """Fields whose old and new values the audit trail keeps (x-xrm "audit": false opts out)."""
        return [name for name, f in self.entity.fields.items() if f.xrm.get("audit", True)]

    @property
    def _change_stamps(self) -> list[tuple[str, str]]:
        """(datetime field, watched field) pairs: x-xrm set_on_change_of, e.g. consent_email_at."""
        return [(name, f.xrm["set_on_change_of"]) for name, f in self.entity.fields.items() if "set_on_change_of" in f.xrm]

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
            if action != "read":
                # Visible but not writable for this principal: 403; invisible stays 404 (no leak).
                read_params: list[Any] = [key]
                readable = self.policy.row_filter(self.principal, self.name, "read", read_params)
                if await connection.fetchval(
                    f"SELECT 1 FROM {self.entity.table} WHERE id = $1 AND deleted_at {state} AND ({readable})", *read_params
                ):
                    raise PermissionDenied(f"You may not {action} this {self.name} record")
            raise NotFound(f"No {what}{self.name} record with id {record_id}")
        return self.entity.record_from_row(row)

    async def _event(self, connection: asyncpg.Connection, topic: str, record: Mapping[str, Any], extra: Mapping[str, Any]) -> None:
        await emit(connection, topic, {"version": record["version"], **extra}, entity=self.name, record_id=record["id"],
                   principal=self.principal)

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


_HIDDEN = "{name}: is a sensitive field you may not read, so it cannot be {what} (it needs a field grant, see docs/security.md)"
_READ_ONLY = "{name}: is a sensitive field you may read but not change (it needs an update field grant, see docs/security.md)"


ERASED = "[erased]"


def _hooked() -> bool:
    """Whether any plugin implements the write hooks (else the service skips building what they get)."""
    return plugins.has_implementations("xrm_before_write") or plugins.has_implementations("xrm_after_write")


def _refusal(entity: str, error: ValidationFailed, index: int | None) -> ValidationFailed:
    """A hook's refusal for this entity; in a batch the pointers name the record ("/3/email")."""
    prefix = pointer(index) if index is not None else ""
    if isinstance(error, Veto):
        return error.for_entity(entity, prefix=prefix, row=index)
    return ValidationFailed(entity, [Problem(prefix + p.pointer, p.message) for p in error.problems], row=index)


def erasure_value(f: FieldDefinition, record_id: uuid.UUID) -> Any:
    """What an erased personal field holds: nothing, or for a required one a placeholder.

    Placeholders are per record where the field is unique or an e-mail (a
    unique index or the e-mail pattern would refuse a shared one).
    """
    if not f.required:
        return None
    if f.type.name == "email":
        return f"erased-{record_id}@erased.invalid"
    return f"[erased {record_id}]" if f.unique else ERASED


_MAX_OWNER_WALKS = 64
"""Up to this many owners, a page merges one index walk per owner (RowPartition); more, and one walk of
the table's order index filtered by the predicate is cheaper (each walk costs a few index pages)."""


def _walks_owner_index(keys: Sequence[query.SortKey]) -> bool:
    """Whether the order is (created_at, id), either way: the order the owner index (owner_id, created_at, id) holds."""
    return [k.column for k in keys] == ["created_at", "id"] and keys[0].desc == keys[1].desc


def _count_sql(table: str, where: str, limit: int | None) -> str:
    """count(*) of the matching rows; with a limit it stops after limit + 1 of them."""
    if limit is None:
        return f"SELECT count(*) FROM {table} WHERE {where}"
    return f"SELECT count(*) FROM (SELECT 1 FROM {table} WHERE {where} LIMIT {int(limit) + 1}) AS capped"


def _now_text() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()


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

