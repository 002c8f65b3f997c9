"""Data-subject requests: find everything stored about a person, hand it out, erase it.

A person is found by the values of fields marked `"x-xrm": {"personal": true}`
(e-mail and phone fields compared case- and format-insensitively) or by naming
one of their records; records of any entity that reference those records are
"related" (a deal of the contact, a ticket they raised). Erasure anonymises the
personal fields of the person's own records, keeps the related business facts,
and redacts the erased values from the audit trail, the outbox and the field
archive (xrm.privacy.redaction). Admins only; every request is audited without
the values it was about.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..audit import AuditLog
from ..db.database import Database
from ..errors import NotFound, PermissionDenied, Problem, XrmError
from ..identifiers import quote_ident
from ..records.policy import OpenPolicy, Policy
from ..records.principal import Principal
from ..records.service import RecordService
from ..registry import Registry
from .archive_files import archive_files, former_values, redact_files
from .redaction import Redaction, needles_of, redact

__all__ = ["PrivacyService", "SubjectQuery"]


@dataclass(frozen=True)
class SubjectQuery:
    """How the person is named: an e-mail address, a phone number and/or one of their records."""

    email: str | None = None
    phone: str | None = None
    entity: str | None = None
    record_id: str | None = None

    def problems(self) -> list[Problem]:
        if not (self.email or self.phone or self.record_id):
            return [Problem("", "name the person: an e-mail address, a phone number or a record (entity and id)")]
        problems = []
        if self.phone and len(_digits(self.phone)) < 4:
            problems.append(Problem("/phone", f"{self.phone!r} has too few digits to identify anyone"))
        if self.record_id and not self.entity:
            problems.append(Problem("/entity", "a record needs its entity"))
        return problems


@dataclass
class SubjectRecord:
    entity: str
    id: uuid.UUID
    matched_by: list[str] = field(default_factory=list)
    """"email", "phone", "record", or "reference:<entity>.<field>" for related records."""


class PrivacyService:
    def __init__(self, db: Database, registry: Registry, principal: Principal, policy: Policy | None = None) -> None:
        if "admin" not in principal.roles:
            raise PermissionDenied("Data-protection requests (access, erasure, retention) need the admin role")
        self.db = db
        self.registry = registry
        self.principal = principal
        self.policy = policy or OpenPolicy()

    def _records(self, entity: str) -> RecordService:
        return RecordService(self.db, self.registry, entity, self.principal, self.policy)

    # -- finding the person --------------------------------------------------
    async def find(self, query: SubjectQuery) -> tuple[list[SubjectRecord], list[SubjectRecord]]:
        """(the person's own records, records that reference them), soft-deleted ones included."""
        problems = query.problems()
        if query.entity and query.entity not in self.registry:
            problems.append(Problem("/entity", f"no entity named {query.entity!r}"))
        if problems:
            raise XrmError("The data subject is not named clearly", problems)
        own: dict[tuple[str, uuid.UUID], SubjectRecord] = {}
        async with self.db.connection() as connection:
            if query.record_id:
                entity = self.registry.get(query.entity)
                try:
                    key = uuid.UUID(str(query.record_id))
                except ValueError:
                    raise XrmError("The data subject is not named clearly", [Problem("/record_id", "is not a record id (uuid)")]) from None
                if await connection.fetchval(f"SELECT 1 FROM {entity.table} WHERE id = $1", key) is None:
                    raise NotFound(f"No {query.entity} record with id {query.record_id}")
                own.setdefault((entity.name, key), SubjectRecord(entity.name, key)).matched_by.append("record")
            for entity in self.registry:
                # One query per personal field, each with its own single parameter ($1).
                conditions: list[tuple[str, Any, str]] = []
                for name in entity.definition.personal_fields:
                    f = entity.fields[name]
                    column = quote_ident(name)
                    if f.type.name == "email" and query.email:
                        conditions.append((f"lower({column}) = $1", query.email.strip().lower(), "email"))
                    elif f.type.name == "phone" and query.phone:
                        conditions.append((f"regexp_replace({column}, '[^0-9]', '', 'g') = $1", _digits(query.phone), "phone"))
                for condition, value, how in conditions:
                    for row in await connection.fetch(f"SELECT id FROM {entity.table} WHERE {condition}", value):
                        match = own.setdefault((entity.name, row["id"]), SubjectRecord(entity.name, row["id"]))
                        if how not in match.matched_by:
                            match.matched_by.append(how)
            related: dict[tuple[str, uuid.UUID], SubjectRecord] = {}
            for entity in self.registry:
                for name, f in entity.fields.items():
                    targets = [key for (target, key) in own if target == f.references]
                    if not targets:
                        continue
                    rows = await connection.fetch(f"SELECT id FROM {entity.table} WHERE {quote_ident(name)} = ANY($1::uuid[])", targets)
                    for row in rows:
                        if (entity.name, row["id"]) not in own:
                            related.setdefault((entity.name, row["id"]), SubjectRecord(entity.name, row["id"])).matched_by.append(
                                f"reference:{entity.name}.{name}"
                            )
        return list(own.values()), list(related.values())

    # -- access (GDPR Art. 15, 20) --------------------------------------------
    async def access(self, query: SubjectQuery) -> dict[str, Any]:
        """Everything stored about the person: their records with history, and related records."""
        own, related = await self.find(query)
        bundle: dict[str, Any] = {
            "format": "xrm-data-subject-access/1",
            "requested_by": self.principal.name,
            "subject_records": [],
            "related_records": [],
        }
        for match in own:
            service = self._records(match.entity)
            record = await service.get(match.id, include_deleted=True)
            history = [entry.as_dict() for entry in await service.history(match.id)]
            bundle["subject_records"].append({
                "entity": match.entity, "id": match.id, "matched_by": match.matched_by,
                "personal_fields": self.registry.get(match.entity).definition.personal_fields,
                "record": record, "history": history,
            })
        for match in related:
            record = await self._records(match.entity).get(match.id, include_deleted=True)
            bundle["related_records"].append({"entity": match.entity, "id": match.id, "matched_by": match.matched_by, "record": record})
        async with self.db.transaction() as tx:
            bundle["generated_at"] = await tx.connection.fetchval("SELECT now()")
            await AuditLog.write(tx.connection, self.principal, "privacy.access", details={
                "subject_records": [{"entity": m.entity, "id": m.id} for m in own],
                "related_records": len(related),
            })
        return bundle

    # -- erasure (GDPR Art. 17) ------------------------------------------------
    async def erase(self, query: SubjectQuery, *, dry_run: bool = False) -> dict[str, Any]:
        """Anonymise the person's personal fields everywhere and redact their old values.

        One transaction: all of it or nothing. A dry run does the same work and
        rolls it back, so its counts are exact.
        """
        own, related = await self.find(query)
        report: dict[str, Any] = {"dry_run": dry_run, "records": [], "related_records_kept": len(related)}
        try:
            async with self.db.transaction() as tx:
                report.update(await self._erase_records(tx.connection, [(m.entity, m.id) for m in own], report["records"], dry_run=dry_run))
                await AuditLog.write(tx.connection, self.principal, "privacy.erased", details={
                    "records": report["records"], "related_records_kept": len(related),
                    **{k: report[k] for k in ("audit_entries_redacted", "outbox_events_redacted", "archived_values_redacted",
                                              "plugin_rows_redacted", "archive_file_entries_redacted", "archive_files_missing")},
                })
                if dry_run:
                    raise _RollBack
        except _RollBack:
            pass
        return report

    async def _erase_records(
        self, connection: Any, records: list[tuple[str, uuid.UUID]], erased: list[dict[str, Any]], *, dry_run: bool = False
    ) -> dict[str, Any]:
        keys: dict[uuid.UUID, frozenset[str] | None] = {}
        values: list[Any] = []
        identifying_by_record: dict[uuid.UUID, set[str]] = {}
        for entity_name, record_id in records:
            entity = self.registry.get(entity_name)
            personal = entity.definition.personal_fields
            if not personal:
                continue
            columns = [c.name for name in personal for c in entity.fields[name].columns()]
            # Values that identify the person (names, addresses, numbers as text) are also searched for in
            # the rest of the trail; a birthday or an amount is not: the same date elsewhere is someone else's.
            identifying = {name for name in personal if entity.fields[name].type.name in IDENTIFYING_TYPES}
            row = await connection.fetchrow(f"SELECT {', '.join(map(quote_ident, identifying or ['id']))} FROM {entity.table} WHERE id = $1",
                                            record_id)
            values.extend(row.values() if identifying else [])
            # Personal fields a schema change removed since: their values wait in the archive, restorable.
            archived = await connection.fetch(
                "SELECT b.field, b.field_definition -> 'schema' AS schema, v.value FROM xrm_sys.archive_value v "
                "JOIN xrm_sys.archive_batch b ON b.id = v.batch_id "
                "WHERE v.record_id = $1 AND (b.field_definition -> 'schema' -> 'x-xrm' ->> 'personal') = 'true'",
                record_id,
            )
            for item in archived:
                if _type_of(item["schema"]) in IDENTIFYING_TYPES:
                    identifying.add(item["field"])
                    values.append(item["value"])
            redacted_keys = frozenset(personal) | frozenset(columns) | frozenset(a["field"] for a in archived)
            # Former values too: the trail of the record keeps every old e-mail address.
            for changes in await connection.fetch(
                "SELECT changes FROM xrm_sys.audit_log WHERE record_id = $1 AND changes IS NOT NULL", record_id
            ):
                values.extend(v for k, v in changes["changes"].items() if k in identifying)
            fields = await self._records(entity_name).erase_personal(record_id)
            keys[record_id] = redacted_keys
            identifying_by_record[record_id] = identifying
            erased.append({"entity": entity_name, "id": record_id, "fields": fields})
        # Entries audit retention moved to archive files: their former values count, and they are redacted too.
        files, missing = await archive_files(connection)
        values.extend(former_values(files, identifying_by_record))
        redaction = Redaction(keys, needles_of(values))
        counts = await redact(connection, redaction)
        counts["archive_file_entries"] = redact_files(files, redaction, dry_run=dry_run)
        result: dict[str, Any] = {f"{kind}_redacted": n for kind, n in counts.items()}
        result["archive_files_missing"] = missing
        return result


    # -- retention (GDPR Art. 5(1)(e): kept no longer than needed) -------------
    async def retention(self, entity: str | None = None, *, dry_run: bool = False) -> list[dict[str, Any]]:
        """Apply each entity's x-xrm retention rule: anonymise or delete records untouched for N days.

        A record another record still references is not deleted (it is kept
        and counted), so no reference ever dangles. A dry run lists what would go.
        """
        if entity is not None and entity not in self.registry:
            raise NotFound(f"No entity named {entity!r}")
        reports = []
        for compiled in self.registry:
            rule = compiled.definition.retention
            if (entity is not None and compiled.name != entity) or rule is None:
                continue
            reports.append(await self._retain(compiled, rule, dry_run))
        if entity is not None and not reports:
            raise XrmError(f"{entity} has no retention rule (x-xrm retention, see docs/privacy.md)")
        return reports

    async def _retain(self, entity: Any, rule: Mapping[str, Any], dry_run: bool) -> dict[str, Any]:
        conditions = [f"{quote_ident(rule['after'])} < now() - make_interval(days => $1)"]
        if rule["action"] == "anonymise":
            conditions.append("(" + " OR ".join(_not_erased(entity.fields[name]) for name in entity.definition.personal_fields) + ")")
        referencing = [
            f"EXISTS (SELECT 1 FROM {other.table} r WHERE r.{quote_ident(name)} = t.id)"
            for other in self.registry for name, f in other.fields.items() if f.references == entity.name
        ]
        referenced = " OR ".join(referencing) if rule["action"] == "delete" and referencing else "false"
        report: dict[str, Any] = {"entity": entity.name, **rule, "dry_run": dry_run}
        async with self.db.transaction() as tx:
            rows = await tx.connection.fetch(
                f"SELECT id, ({referenced}) AS referenced FROM {entity.table} t WHERE {' AND '.join(conditions)} ORDER BY id",
                rule["days"],
            )
            due = [row["id"] for row in rows if not row["referenced"]]
            report.update(due=len(due), kept_referenced=len(rows) - len(due), sample=due[:10])
            if dry_run or not due:
                return report
            if rule["action"] == "anonymise":
                counts = await self._erase_records(tx.connection, [(entity.name, key) for key in due], [])
            else:
                service = self._records(entity.name)
                for key in due:
                    await service.purge(key)
                counts = {f"{kind}_redacted": n for kind, n in (await redact(tx.connection, Redaction(dict.fromkeys(due), frozenset()))).items()}
            report.update(counts)
            await AuditLog.write(tx.connection, self.principal, "privacy.retention", entity=entity.name, details={
                k: v for k, v in report.items() if k != "sample"
            })
        return report


def _not_erased(f: Any) -> str:
    """SQL: the personal field still holds a real value (not NULL, not an erasure placeholder)."""
    column = quote_ident(f.columns()[0].name)
    if not f.required:
        return f"{column} IS NOT NULL"
    return f"({column} NOT LIKE '[erased%' AND {column} NOT LIKE 'erased-%@erased.invalid')"


IDENTIFYING_TYPES = frozenset({"text", "long_text", "email", "phone", "url"})
"""Personal fields whose values are searched for across the trail on erasure (see _erase_records)."""


def _type_of(schema: Any) -> str | None:
    import json

    from ..schema.field_types import infer_field_type

    if isinstance(schema, str):
        schema = json.loads(schema)
    if not isinstance(schema, Mapping):
        return None
    return (schema.get("x-xrm") or {}).get("type") or infer_field_type(schema)


class _RollBack(Exception):
    """Ends a dry run's transaction."""


def _digits(text: str) -> str:
    return re.sub(r"[^0-9]", "", text)


def as_query(data: Mapping[str, Any]) -> SubjectQuery:
    return SubjectQuery(**{k: (str(v) if v is not None else None) for k, v in data.items() if k in SubjectQuery.__dataclass_fields__})
