"""Import CSV and JSON Lines into an entity, through RecordService.

    report = await import_file(db, registry, "contact", "contacts.csv",
                               mapping={"Firma": "account"}, upsert_key="email")

Rows are read as a stream and written in chunks (create_many per chunk; an
update per existing record when an upsert key is given). A row is written
whole or not at all: when a chunk fails, the rows its problems name are
reported and dropped and the rest is written. Bad rows never stop good ones.
Rules for mapping, coercion and references: docs/import-export.md.
"""

from __future__ import annotations

import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import asyncpg

from ..db.database import Database
from ..plugins import ImportTarget, await_me_maybe, get_plugin_manager
from ..errors import NotFound, PermissionDenied, Problem, ValidationFailed, XrmError
from ..records.policy import Policy
from ..records.principal import SYSTEM_PRINCIPAL, Principal
from ..records.service import RecordService
from ..registry import SYSTEM_FIELDS, Registry
from ..schema.definition import EntityDefinition
from .coerce import CoercionError, CoercionOptions, NumberFormat, coerce_value
from .lookup import ReferenceResolver, find_by_values
from .sources import _EXTRA, _INVALID, Format, RecordsSource, Source, open_source

__all__ = ["ApproximateMatch", "ImportReport", "RowError", "import_file", "import_records", "import_target"]

CHUNK_SIZE = 500
MAX_STORED_ERRORS = 10_000
_CREATE_ATTEMPTS = 3

Progress = Callable[[int], None]
"""Called with the number of rows read so far (after each chunk)."""


@dataclass(frozen=True)
class RowError:
    row: int
    """Row number as a spreadsheet shows it (CSV: header is row 1) or the JSON Lines line."""
    column: str | None
    """The file's column, if the problem is in one cell."""
    field: str | None
    """The entity's field, if the problem concerns one."""
    message: str

    def __str__(self) -> str:
        where = f"row {self.row}"
        if self.column is not None:
            where += f", column {self.column!r}"
            if self.field and self.field != self.column:
                where += f" ({self.field})"
        elif self.field:
            where += f", field {self.field}"
        return f"{where}: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {"row": self.row, "column": self.column, "field": self.field, "message": self.message}


@dataclass(frozen=True)
class ApproximateMatch:
    """A reference found ignoring case (and spaces): the file said `value`, the record is `matched`."""

    column: str
    value: str
    matched: str
    rows: int


@dataclass
class ImportReport:
    entity: str
    dry_run: bool = False
    rows: int = 0
    """Data rows read (blank rows are not counted)."""
    created: int = 0
    updated: int = 0
    skipped: int = 0
    """Rows not written because of errors."""
    errors: list[RowError] = field(default_factory=list)
    """The first MAX_STORED_ERRORS row errors (a row may have several)."""
    error_count: int = 0
    mapping: dict[str, str] = field(default_factory=dict)
    """Column -> field ("id" for the record id, "<field>.currency" for a currency code column)."""
    unmapped_columns: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """Why columns were not mapped, and similar remarks."""
    approximate_matches: list[ApproximateMatch] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.skipped == 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "entity": self.entity,
            "dry_run": self.dry_run,
            "rows": self.rows,
            "created": self.created,
            "updated": self.updated,
            "skipped": self.skipped,
            "error_count": self.error_count,
            "errors": [e.as_dict() for e in self.errors],
            "mapping": self.mapping,
            "unmapped_columns": self.unmapped_columns,
            "notes": self.notes,
            "approximate_matches": [vars(m) for m in self.approximate_matches],
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class ImportOptions:
    mapping: Mapping[str, str | None] | None = None
    """Column -> field name (or None: ignore the column); overrides automatic mapping."""
    upsert_key: str | None = None
    """A unique field (or "id"): rows whose key exists update that record."""
    dry_run: bool = False
    default_currency: str | None = None
    timezone: str | None = None
    number_format: NumberFormat = "auto"
    date_format: str | None = None
    chunk_size: int = CHUNK_SIZE
    max_errors: int = MAX_STORED_ERRORS

    def coercion(self) -> CoercionOptions:
        return CoercionOptions(self.number_format, self.timezone, self.default_currency, self.date_format)


# -- column mapping --------------------------------------------------------------
def normalise(name: str) -> str:
    """Column and field names compared ignoring case, spaces, "_" and "-"."""
    return re.sub(r"[\s_\-]+", "", name).casefold()


@dataclass(frozen=True)
class Target:
    field: str
    """A field name, or "id"."""
    role: str = "value"
    """"value", "currency" (the code of a currency field) or "id"."""

    def __str__(self) -> str:
        return f"{self.field}.currency" if self.role == "currency" else self.field


class ColumnMapper:
    """Which field each column fills: the explicit mapping, else the field's name,
    else "<currency field>_currency", else a field label (en or de)."""

    def __init__(self, entity: EntityDefinition, explicit: Mapping[str, str | None] | None) -> None:
        self.entity = entity
        self.explicit: dict[str, Target | None] = {}
        problems = []
        for column, name in (explicit or {}).items():
            target = None if name is None or name == "" else self._named_target(name)
            if name and target is None:
                problems.append(Problem(f"/mapping/{column}", f"{name!r} is not a field of {entity.name}"))
            self.explicit[column] = target
        if problems:
            raise XrmError(f"Invalid column mapping for {entity.name}", problems)
        self._explicit_normalised = {normalise(c): t for c, t in self.explicit.items()}
        self._reserved = {t: c for c, t in self.explicit.items() if t is not None}
        self._taken: dict[Target, str] = {}
        self.exclusive = True
        """One column per field (files with a header). JSON Lines rows may name a
        field by different keys; there only one row using two of them is an error."""
        self._by_key: dict[Any, Target | None] = {}
        self.mapping: dict[str, str] = {}
        self.unmapped: list[str] = []
        self.notes: list[str] = []
        self.names: dict[str, list[Target]] = {}
        self.labels: dict[str, list[Target]] = {}
        for f in entity.fields.values():
            self.names.setdefault(normalise(f.name), []).append(Target(f.name))
            if f.type.name == "currency":
                self.names.setdefault(normalise(f.name + "_currency"), []).append(Target(f.name, "currency"))
                self.names.setdefault(normalise(f.name + "_amount"), []).append(Target(f.name))
            labels = {f.label("en"), f.label("de"), *(f.xrm.get("label") or {}).values()}
            for label in labels:
                targets = self.labels.setdefault(normalise(label), [])
                if Target(f.name) not in targets:
                    targets.append(Target(f.name))

    def _named_target(self, name: str) -> Target | None:
        if name == "id":
            return Target("id", "id")
        if name in self.entity.fields:
            return Target(name)
        if name.endswith("_currency") and self.entity.fields.get(name[: -len("_currency")]) is not None:
            base = self.entity.fields[name[: -len("_currency")]]
            if base.type.name == "currency":
                return Target(base.name, "currency")
        return None

    def target(self, key: Any, column: str) -> Target | None:
        if key not in self._by_key:
            self._by_key[key] = self._decide(column)
        return self._by_key[key]

    def _decide(self, column: str) -> Target | None:
        norm = normalise(column)
        if column in self.explicit or norm in self._explicit_normalised:
            target = self.explicit[column] if column in self.explicit else self._explicit_normalised[norm]
            if target is None:
                self.notes.append(f"column {column!r} is ignored (mapping)")
                return None
            return self._take(column, target, explicit=True)
        if not column:
            return self._unmapped(column, "has no name")
        if column == "id" or norm == "id":
            return self._take(column, Target("id", "id"))
        if column in self.entity.fields:
            return self._take(column, Target(column))
        for how, index in (("field names", self.names), ("field labels", self.labels)):
            targets = index.get(norm, [])
            if len(targets) == 1:
                return self._take(column, targets[0])
            if len(targets) > 1:
                shown = ", ".join(str(t) for t in targets)
                return self._unmapped(column, f"matches the {how} of {shown}; map it explicitly")
        if column in SYSTEM_FIELDS or norm in {normalise(s) for s in SYSTEM_FIELDS}:
            return self._unmapped(column, "is set by the system")
        return self._unmapped(column, "matches no field")

    def _take(self, column: str, target: Target, explicit: bool = False) -> Target | None:
        if not explicit and target in self._reserved and self._reserved[target] != column:
            return self._unmapped(column, f"{target} is mapped from column {self._reserved[target]!r}")
        if self.exclusive and target in self._taken:
            return self._unmapped(column, f"{target} is already filled from column {self._taken[target]!r}")
        self._taken.setdefault(target, column)
        self.mapping[column] = str(target)
        return target

    def _unmapped(self, column: str, reason: str) -> None:
        shown = column or "(no name)"
        self.unmapped.append(shown)
        self.notes.append(f"column {shown!r} {reason}")
        return None

    def check_columns(self, columns: Iterable[str]) -> None:
        """For files with a header: explicit mappings must name columns that exist."""
        present = set(columns)
        present_normalised = {normalise(c) for c in present}
        missing = [c for c in self.explicit if c not in present and normalise(c) not in present_normalised]
        if missing:
            raise XrmError(
                f"The file has no column {', '.join(repr(c) for c in missing)} (its columns: {', '.join(sorted(present))})"
            )

    def targets(self) -> set[Target]:
        return set(self._taken)


# -- rows ------------------------------------------------------------------------
@dataclass(eq=False)
class _Row:
    number: int
    values: dict[str, Any] = field(default_factory=dict)
    columns: dict[str, str] = field(default_factory=dict)
    """field -> the column it came from."""
    refs: dict[str, str] = field(default_factory=dict)
    """reference field -> text to resolve."""
    errors: list[RowError] = field(default_factory=list)
    record_id: str | None = None
    existing: str | None = None
    pending: bool = False
    approximate: list[tuple[str, str, str]] = field(default_factory=list)

    def error(self, column: str | None, field_name: str | None, message: str) -> None:
        self.errors.append(RowError(self.number, column, field_name, message))

    def record(self) -> dict[str, Any]:
        data = dict(self.values)
        if self.record_id is not None:
            data["id"] = self.record_id
        return data


class _DryRun(Exception):
    """Raised to roll back a dry run."""


class Importer:
    def __init__(
        self,
        db: Database,
        registry: Registry,
        entity: str,
        principal: Principal = SYSTEM_PRINCIPAL,
        policy: Policy | None = None,
        options: ImportOptions | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.db = db
        self.options = options or ImportOptions()
        self.coercion = self.options.coercion()
        self.service = RecordService(db, registry, entity, principal, policy)
        self.definition = self.service.entity.definition
        self.fields = self.definition.fields
        self.mapper = ColumnMapper(self.definition, self.options.mapping)
        self.progress = progress
        self.report = ImportReport(entity=self.service.name, dry_run=self.options.dry_run)
        self.resolvers: dict[str, ReferenceResolver] = {}
        for name, f in self.fields.items():
            if f.references:
                target = RecordService(db, registry, f.references, principal, policy)
                self.resolvers[name] = ReferenceResolver(target, self_reference=f.references == self.service.name)
        key = self.options.upsert_key
        if key is not None and key != "id" and (key not in self.fields or not self.fields[key].unique):
            raise XrmError(f"The upsert key must be 'id' or a unique field of {entity}; {key!r} is not")
        if key is not None and key in self.service.hidden_fields:
            raise XrmError(f"The upsert key {key!r} is a sensitive field you may not read (matching on it would reveal its values)")
        if self.options.chunk_size < 1:
            raise XrmError("The chunk size must be at least 1")
        self.unique_fields = [n for n, f in self.fields.items() if f.unique and n != key]
        self._deferred: list[_Row] = []
        self._approximate: Counter[tuple[str, str, str]] = Counter()
        self._written = 0

    # -- running -------------------------------------------------------------
    async def run(self, source: Source) -> ImportReport:
        started = time.monotonic()
        self.mapper.exclusive = bool(source.columns)
        if source.columns:  # a header: check the mapping up front
            self._map_header(source)
        if self.options.dry_run:
            try:
                async with self.db.transaction() as tx, tx.connection.transaction():
                    await self._run(source)
                    raise _DryRun
            except _DryRun:
                pass
        else:
            await self._run(source)
        self.report.errors.sort(key=lambda e: e.row)  # stable: a row's errors keep their order
        self.report.mapping = dict(self.mapper.mapping)
        self.report.unmapped_columns = list(self.mapper.unmapped)
        self.report.notes = list(self.mapper.notes)
        self.report.approximate_matches = [
            ApproximateMatch(column, value, matched, rows) for (column, value, matched), rows in sorted(self._approximate.items())
        ]
        self.report.seconds = time.monotonic() - started
        return self.report

    def _map_header(self, source: Source) -> None:
        self.mapper.check_columns(source.columns.values())
        for key, name in source.columns.items():
            self.mapper.target(key, name)
        mapped = {t.field for t in self.mapper.targets()}
        key = self.options.upsert_key
        if key is not None and key not in mapped:
            raise XrmError(f"The upsert key {key!r} has no column in the file")
        if key is None:
            missing = [n for n, f in self.fields.items() if f.required and not f.has_default and n not in mapped]
            if missing:
                raise XrmError(
                    f"Required field{'s' if len(missing) > 1 else ''} {', '.join(missing)} of {self.service.name} "
                    f"{'have' if len(missing) > 1 else 'has'} no column in the file (map a column to it: --map COLUMN=FIELD, or mapping in the API); nothing was imported"
                )

    async def _run(self, source: Source) -> None:
        chunk: list[_Row] = []
        for number, raw in source.rows():
            row = self._prepare(number, raw, source.columns)
            if row is None:
                continue
            self.report.rows += 1
            chunk.append(row)
            if len(chunk) >= self.options.chunk_size:
                await self._process(chunk)
                chunk = []
                self._progress()
        if chunk:
            await self._process(chunk)
        self._progress()
        # Rows whose reference names a record of this entity that a later row
        # creates: retry while that makes progress, then report what is left.
        while self._deferred:
            rows, self._deferred = self._deferred, []
            before = self._written
            for start in range(0, len(rows), self.options.chunk_size):
                await self._process(rows[start : start + self.options.chunk_size])
            if self._written == before:
                rows, self._deferred = self._deferred, []
                for start in range(0, len(rows), self.options.chunk_size):
                    await self._process(rows[start : start + self.options.chunk_size], last_pass=True)

    def _progress(self) -> None:
        if self.progress is not None:
            self.progress(self.report.rows)

    # -- one row -----------------------------------------------------------------
    def _prepare(self, number: int, raw: Mapping[Any, Any], columns: Mapping[Any, str]) -> _Row | None:
        row = _Row(number)
        if _INVALID in raw:
            row.error(None, None, raw[_INVALID])
            self.report.rows += 1
            self._fail(row)
            return None
        if all(v is None or (isinstance(v, str) and not v.strip()) for k, v in raw.items() if k is not _EXTRA):
            return None  # a blank row
        if _EXTRA in raw:
            row.error(None, None, f"has {raw[_EXTRA]} cells, the header has {len(columns)}")
        values: dict[str, tuple[str, Any]] = {}
        codes: dict[str, tuple[str, Any]] = {}
        seen: dict[Target, str] = {}
        for key, value in raw.items():
            if key is _EXTRA:
                continue
            column = columns.get(key, str(key))
            target = self.mapper.target(key, column)
            if target is None:
                continue
            if target in seen:
                if value is not None and not (isinstance(value, str) and not value.strip()):
                    row.error(column, target.field, f"{target} is also given by column {seen[target]!r}")
                continue
            seen[target] = column
            if target.role == "id":
                row.columns["id"] = column
                self._read_id(row, column, value)
            elif target.role == "currency":
                codes[target.field] = (column, value)
            else:
                values[target.field] = (column, value)
        for name, (column, value) in values.items():
            f = self.fields[name]
            row.columns[name] = column
            try:
                coerced = coerce_value(f, value, self.coercion, currency=codes.get(name, (None, None))[1])
            except CoercionError as error:
                row.error(column, name, str(error))
                continue
            if f.type.name == "reference" and coerced is not None:
                row.refs[name] = coerced if isinstance(coerced, str) else str(coerced)
            else:
                row.values[name] = coerced
        return row

    def _read_id(self, row: _Row, column: str, value: Any) -> None:
        if value is None or (isinstance(value, str) and not value.strip()):
            return
        try:
            row.record_id = str(uuid.UUID(str(value).strip()))
        except ValueError:
            row.error(column, "id", f"{value!r} is not a record id (uuid)")

    def _fail(self, row: _Row) -> None:
        self.report.skipped += 1
        for error in row.errors:
            self.report.error_count += 1
            if len(self.report.errors) < self.options.max_errors:
                self.report.errors.append(error)

    # -- one chunk -----------------------------------------------------------------
    async def _process(self, rows: list[_Row], last_pass: bool = False) -> None:
        await self._resolve(rows, last_pass)
        ready = []
        for row in rows:
            if row.errors:
                self._fail(row)
            elif row.pending:
                self._deferred.append(row)
            else:
                ready.append(row)
        while ready:
            batch, ready = self._first_of_each_key(ready)
            await self._match_existing(batch)
            batch = self._drop_duplicates(batch)
            await self._write(batch)

    async def _resolve(self, rows: list[_Row], last_pass: bool) -> None:
        for row in rows:  # a waiting row is resolved again: start afresh
            row.pending = False
            row.approximate = []
        for name, resolver in self.resolvers.items():
            texts = {row.refs[name] for row in rows if name in row.refs}
            if not texts:
                continue
            results = await resolver.resolve(texts)
            for row in rows:
                text = row.refs.get(name)
                if text is None:
                    continue
                found = results[text]
                if found.id is not None:
                    row.values[name] = found.id
                    if found.matched is not None:
                        row.approximate.append((row.columns[name], text, found.matched))
                elif found.pending and not last_pass:
                    row.pending = True
                else:
                    row.error(row.columns[name], name, found.error or "cannot be resolved")
        for row in rows:
            if row.errors:
                row.pending = False

    def _first_of_each_key(self, rows: list[_Row]) -> tuple[list[_Row], list[_Row]]:
        """Rows with an upsert key seen earlier in `rows` wait for the next round (the later row wins)."""
        key = self.options.upsert_key
        if key is None:
            return rows, []
        seen: set[Any] = set()
        now, later = [], []
        for row in rows:
            value = self._key_value(row)
            if value is not None and value in seen:
                later.append(row)
            else:
                seen.add(value)
                now.append(row)
        return now, later

    def _key_value(self, row: _Row) -> Any:
        key = self.options.upsert_key
        if key == "id":
            return row.record_id
        return row.values.get(key) if key else None

    async def _match_existing(self, rows: list[_Row]) -> None:
        key = self.options.upsert_key
        if key is None:
            return
        values = [v for v in (self._key_value(r) for r in rows) if v is not None]
        found = await find_by_values(self.service, key, values)
        for row in rows:
            value = self._key_value(row)
            if value is None:
                continue
            records = found.get(value, [])
            if len(records) > 1:
                row.error(row.columns.get(key), key, f"{len(records)} records have this {key}")
            elif records:
                row.existing = str(records[0]["id"])
                if row.record_id is not None and row.record_id != row.existing:
                    row.error(row.columns.get("id"), "id", f"names another record than {key} {value!r} finds")

    def _drop_duplicates(self, batch: list[_Row]) -> list[_Row]:
        """Fail rows with errors, and new rows repeating a unique value of an earlier new row."""
        seen: dict[str, dict[Any, int]] = {name: {} for name in [*self.unique_fields, "id"]}
        kept = []
        for row in batch:
            if not row.errors and row.existing is None:
                for name, values in seen.items():
                    value = row.record_id if name == "id" else row.values.get(name)
                    if value is not None and value in values:
                        row.error(row.columns.get(name), name, f"has the same value as row {values[value]}; {name} is unique")
                        break
            if row.errors:
                self._fail(row)
                continue
            if row.existing is None:
                for name, values in seen.items():
                    value = row.record_id if name == "id" else row.values.get(name)
                    if value is not None:
                        values.setdefault(value, row.number)
            kept.append(row)
        return kept

    # -- writing ---------------------------------------------------------------------
    async def _write(self, rows: list[_Row]) -> None:
        if not rows:
            return
        creates = [r for r in rows if r.existing is None]
        updates = [r for r in rows if r.existing is not None]
        async with self.db.transaction() as tx:
            if creates:
                await self._create(tx, creates)
            for row in updates:
                await self._update(tx, row)

    async def _create(self, tx: Any, rows: list[_Row]) -> None:
        pending = rows
        for _ in range(_CREATE_ATTEMPTS):
            if not pending:
                return
            try:
                async with tx.connection.transaction():
                    records = await self.service.create_many([r.record() for r in pending])
            except ValidationFailed as error:
                blamed = _blame(error.problems, len(pending))
                if not blamed:
                    break
                for index, problems in blamed.items():
                    self._fail_with(pending[index], problems)
                pending = [r for i, r in enumerate(pending) if i not in blamed]
                continue
            except asyncpg.PostgresError:
                break
            self._done(pending, records, created=True)
            return
        for row in pending:  # could not tell which rows are at fault: one by one
            try:
                async with tx.connection.transaction():
                    records = await self.service.create_many([row.record()])
            except ValidationFailed as error:
                self._fail_with(row, [Problem(_drop_index(p.pointer), p.message) for p in error.problems])
            except asyncpg.PostgresError as error:
                row.error(None, None, f"the database refused the record: {error}")
                self._fail(row)
            else:
                self._done([row], records, created=True)

    async def _update(self, tx: Any, row: _Row) -> None:
        try:
            async with tx.connection.transaction():
                record = await self.service.update(row.existing, row.values)
        except ValidationFailed as error:
            self._fail_with(row, error.problems)
        except (NotFound, PermissionDenied) as error:  # a record the user may see but not update: that row fails
            row.error(None, None, error.message)
            self._fail(row)
        except asyncpg.PostgresError as error:
            row.error(None, None, f"the database refused the record: {error}")
            self._fail(row)
        else:
            self._done([row], [record], created=False)

    def _fail_with(self, row: _Row, problems: list[Problem]) -> None:
        """Problems of one record (pointers "/field/..."), as the row's errors."""
        for problem in problems:
            parts = _pointer_parts(problem.pointer)
            name = parts[0] if parts else None
            detail = "/".join(parts[1:])
            column = row.columns.get(name) if name else None
            row.error(column, name, f"{detail}: {problem.message}" if detail else problem.message)
        self._fail(row)

    def _done(self, rows: list[_Row], records: list[dict[str, Any]], *, created: bool) -> None:
        if created:
            self.report.created += len(rows)
        else:
            self.report.updated += len(rows)
        self._written += len(rows)
        for row in rows:
            for note in row.approximate:
                self._approximate[note] += 1
        for resolver in self.resolvers.values():
            if resolver.self_reference:
                resolver.learn(records, changed=not created)


def _pointer_parts(pointer: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:]]


def _drop_index(pointer: str) -> str:
    """"/0/email" -> "/email" (problems of a one-record create_many)."""
    parts = pointer.split("/")
    return "/" + "/".join(parts[2:]) if len(parts) > 2 else ""


def _blame(problems: list[Problem], size: int) -> dict[int, list[Problem]]:
    """Problems of a create_many by record index ("/3/email" -> 3: "/email")."""
    blamed: dict[int, list[Problem]] = {}
    for problem in problems:
        parts = problem.pointer.split("/")
        if len(parts) > 1 and parts[1].isdigit() and int(parts[1]) < size:
            blamed.setdefault(int(parts[1]), []).append(Problem(_drop_index(problem.pointer), problem.message))
    return blamed


# -- entry points ---------------------------------------------------------------------
def _options(values: dict[str, Any]) -> ImportOptions:
    try:
        return ImportOptions(**values)
    except TypeError as error:
        raise XrmError(f"Unknown import option: {error}") from None


async def import_file(
    db: Database,
    registry: Registry,
    entity: str,
    source: str | Path | IO[bytes],
    *,
    format: Format | None = None,
    encoding: str | None = None,
    delimiter: str | None = None,
    principal: Principal = SYSTEM_PRINCIPAL,
    policy: Policy | None = None,
    progress: Progress | None = None,
    **options: Any,
) -> ImportReport:
    """Import a CSV or JSON Lines file (a path or a binary file object) into `entity`.

    `format` defaults to the file name's extension (.jsonl/.ndjson, else CSV).
    Options: mapping, upsert_key, dry_run, default_currency, timezone,
    number_format ("auto", "de", "en"), date_format, chunk_size, max_errors.
    """
    if entity not in registry:
        target = import_target(registry, entity)
        if target is not None:
            opened = open_source(source, format, encoding=encoding, delimiter=delimiter)
            try:
                return await await_me_maybe(target.run(db=db, registry=registry, source=opened, principal=principal,
                                                       policy=policy, options=_options(options)))
            finally:
                opened.close()
    importer = Importer(db, registry, entity, principal, policy, _options(options), progress)
    opened = open_source(source, format, encoding=encoding, delimiter=delimiter)
    try:
        return await importer.run(opened)
    finally:
        opened.close()


def import_target(registry: Registry, name: str) -> ImportTarget | None:
    """What a plugin imports under `name` (xrm_import_targets: links, connections), when it is not an entity."""
    if name in registry:
        return None
    return get_plugin_manager().import_targets(registry).get(name)


async def import_records(
    db: Database,
    registry: Registry,
    entity: str,
    records: Iterable[Mapping[str, Any]],
    *,
    principal: Principal = SYSTEM_PRINCIPAL,
    policy: Policy | None = None,
    progress: Progress | None = None,
    **options: Any,
) -> ImportReport:
    """Import rows given as mappings (column -> cell text or JSON value); row numbers start at 1."""
    importer = Importer(db, registry, entity, principal, policy, _options(options), progress)
    return await importer.run(RecordsSource(iter(records)))
