"""Export the records of an entity as CSV or JSON Lines, streamed page by page.

Records are read through RecordService.list with its keyset cursor, one page
(1,000 records) at a time, and written out before the next page is read, so
memory stays flat however many records there are. The importer reads what
the exporter writes (round trip): see docs/import-export.md.
"""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import io
import json
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import IO, Any, Literal

import msgspec

from ..audit import AuditLog
from ..db.database import Database
from ..errors import XrmError
from ..records.policy import ExportPolicy, Policy
from ..records.principal import SYSTEM_PRINCIPAL, Principal
from ..records.service import RecordService
from ..registry import Registry
from ..schema.definition import FieldDefinition
from .coerce import CoercionError, CoercionOptions, coerce_value
from .lookup import ReferenceResolver, find_by_values

__all__ = ["csv_columns", "export_records", "iter_export", "where_from_text"]

PAGE_SIZE = 1000
_DISPLAY_CACHE_LIMIT = 100_000
_json = msgspec.json.Encoder(decimal_format="number")

ExportFormat = Literal["csv", "jsonl"]


def csv_columns(fields: Mapping[str, FieldDefinition]) -> list[str]:
    """"id", then one column per field; a currency field has "<f>" (amount) and "<f>_currency"."""
    columns = ["id"]
    for name, f in fields.items():
        columns.append(name)
        if f.type.name == "currency":
            columns.append(f"{name}_currency")
    return columns


async def iter_export(db: Database, registry: Registry, entity: str, **options: Any) -> AsyncIterator[str]:
    """Text chunks of the export: the CSV header, then one chunk per page.

    Options: format ("csv" or "jsonl"); where, search, order_by (passed to
    RecordService.list as given); references ("id", or "display" to write a
    reference as the target's display value: readable, but it only
    round-trips when display values are unique); principal, policy, page_size.
    """
    async for text, _ in _chunks(db, registry, entity, **options):
        yield text


async def export_records(db: Database, registry: Registry, entity: str, out: IO[str], **options: Any) -> int:
    """Write the export to a text file object (open files with newline=""); return the number of records."""
    count = 0
    async for text, records in _chunks(db, registry, entity, **options):
        out.write(text)
        count += records
    return count


async def _chunks(
    db: Database,
    registry: Registry,
    entity: str,
    *,
    format: ExportFormat = "csv",
    where: Any = None,
    search: str | None = None,
    order_by: Any = None,
    references: Literal["id", "display"] = "id",
    principal: Principal = SYSTEM_PRINCIPAL,
    policy: Policy | None = None,
    page_size: int = PAGE_SIZE,
) -> AsyncIterator[tuple[str, int]]:
    if format not in ("csv", "jsonl"):
        raise XrmError(f"unknown export format {format!r} (use csv or jsonl)")
    if references not in ("id", "display"):
        raise XrmError(f"references must be 'id' or 'display', not {references!r}")
    # Reads held to the export scope too: the user exports what they may read and export.
    service = RecordService(db, registry, entity, principal, ExportPolicy(policy))
    service.policy.authorize(service.principal, service.name, "export")
    # Who took which data out, with which filters (personal data leaving the system),
    # and how they came: through which API token, a login session, or the CLI.
    await AuditLog(db).write_now(
        service.principal, "export", entity=entity,
        details={"format": format, "where": where, "search": search, "order_by": order_by, "references": references,
                 "via": _via(service.principal), "token_id": service.principal.token_id},
    )
    fields = service.visible_fields  # sensitive fields the user may not read: no column, no key
    displays = _Displays(db, registry, principal, policy, fields) if references == "display" else None
    arguments: dict[str, Any] = {"limit": max(1, min(page_size, 1000))}
    if where:
        arguments["where"] = where
    if search:
        arguments["search"] = search
    if order_by:
        arguments["order_by"] = order_by
    if format == "csv":
        yield _csv_line(csv_columns(fields)), 0
    after = None
    while True:
        page = await service.list(after=after, **arguments)
        if displays is not None:
            await displays.fill(page.records)
        if format == "csv":
            buffer = io.StringIO()
            writer = csv.writer(buffer)
            for record in page.records:
                writer.writerow(_csv_row(record, fields, displays))
            yield buffer.getvalue(), len(page.records)
        else:
            yield "".join(_json_line(record, fields, displays) for record in page.records), len(page.records)
        if not page.next_cursor:
            return
        after = page.next_cursor


def _via(principal: Principal) -> str:
    """How the exporting principal came: "token", "session", "cli" (the system principal), else "service" (in-process)."""
    if principal.via:
        return principal.via
    if principal.token_id is not None:
        return "token"
    return "cli" if principal.is_system else "service"


def _csv_line(cells: list[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerow(cells)
    return buffer.getvalue()


def _csv_row(record: Mapping[str, Any], fields: Mapping[str, FieldDefinition], displays: _Displays | None) -> list[str]:
    cells = [str(record["id"])]
    for name, f in fields.items():
        value = record.get(name)
        if f.type.name == "currency":
            cells.append("" if value is None else _number(value["amount"]))
            cells.append("" if value is None else str(value["currency"]).strip())
        elif f.type.name == "reference" and displays is not None and value is not None:
            cells.append(displays.get(f.references, value))  # type: ignore[arg-type]
        else:
            cells.append(_text(f, value))
    return cells


def _text(f: FieldDefinition, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, decimal.Decimal):
        return _number(value)
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if f.type.name == "multiselect":
        # Joined when that reads back unambiguously, else a JSON array.
        if value == [] or any("," in o or ";" in o or o != o.strip() or o.startswith("[") for o in value):
            return json.dumps(value, ensure_ascii=False)
        return ", ".join(value)
    if f.type.name == "json":
        return _json.encode(value).decode()
    return str(value)


def _number(value: Any) -> str:
    return format(decimal.Decimal(value), "f")


def _json_line(record: Mapping[str, Any], fields: Mapping[str, FieldDefinition], displays: _Displays | None) -> str:
    data: dict[str, Any] = {"id": record["id"]}
    for name, f in fields.items():
        value = record.get(name)
        if f.type.name == "currency" and value is not None:
            value = {"amount": value["amount"], "currency": str(value["currency"]).strip()}
        elif f.type.name == "reference" and displays is not None and value is not None:
            value = displays.get(f.references, value)  # type: ignore[arg-type]
        data[name] = value
    return _json.encode(data).decode() + "\n"


class _Displays:
    """Display values of referenced records, fetched in bulk per page (bounded cache)."""

    def __init__(self, db: Database, registry: Registry, principal: Principal, policy: Policy | None, fields: Mapping[str, FieldDefinition]) -> None:
        self.fields = {name: f.references for name, f in fields.items() if f.references}
        self.services = {
            target: RecordService(db, registry, target, principal, policy) for target in set(self.fields.values()) if target
        }
        self.cache: dict[tuple[str, str], str] = {}

    async def fill(self, records: list[dict[str, Any]]) -> None:
        if len(self.cache) > _DISPLAY_CACHE_LIMIT:
            self.cache.clear()
        wanted: dict[str, set[str]] = {}
        for name, target in self.fields.items():
            for record in records:
                value = record.get(name)
                if value is not None and (target, str(value)) not in self.cache:
                    wanted.setdefault(target, set()).add(str(value))  # type: ignore[arg-type]
        for target, ids in wanted.items():
            service = self.services[target]
            display = service.entity.definition.display_field
            found = await find_by_values(service, "id", ids)
            for record_id in ids:
                records_found = found.get(record_id) or []
                shown = records_found[0].get(display) if records_found and display else None
                self.cache[(target, record_id)] = shown if isinstance(shown, str) else record_id

    def get(self, target: str, value: Any) -> str:
        return self.cache.get((target, str(value)), str(value))


async def where_from_text(
    db: Database,
    registry: Registry,
    entity: str,
    conditions: Mapping[str, str],
    *,
    principal: Principal = SYSTEM_PRINCIPAL,
    policy: Policy | None = None,
    options: CoercionOptions | None = None,
) -> dict[str, Any]:
    """FIELD=VALUE texts (as typed on a command line) as an equality filter for
    RecordService.list: each value is read like an import cell of that field
    (a reference by display value or id); an empty value means "no value"."""
    service = RecordService(db, registry, entity, principal, policy)
    options = options or CoercionOptions()
    where: dict[str, Any] = {}
    for name, text in conditions.items():
        if name == "id":
            where[name] = text.strip()
            continue
        f = service.entity.fields.get(name)
        if f is None:
            raise XrmError(f"{name!r} is not a field of {entity} (fields: {', '.join(service.entity.fields)})")
        try:
            value = coerce_value(f, text, options)
        except CoercionError as error:
            raise XrmError(f"--where {name}: {error}") from None
        if f.references and value is not None:
            target = RecordService(db, registry, f.references, principal, policy)
            found = (await ReferenceResolver(target).resolve([value]))[value]
            if found.id is None:
                raise XrmError(f"--where {name}: {found.error}")
            value = found.id
        where[name] = value
    return where
