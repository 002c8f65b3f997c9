"""Audit retention: entries of an entity kept N days (x-xrm audit_retention), then archived.

Old entries are written to a gzip-compressed JSON Lines file and only then
deleted, in one transaction per entity. The audit trigger (db/bootstrap.sql)
allows that DELETE only inside `SET LOCAL xrm.audit_archive = 'on'` and only
for entries older than their entity's live retention: the database itself
refuses to drop anything younger, whatever the code asks.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Any

from ..audit import AuditLog, _entry
from ..db.database import Database, json_dumps
from ..records.principal import Principal

__all__ = ["archive_expired_audit"]

BATCH = 5000


async def archive_expired_audit(db: Database, principal: Principal, directory: Path, *, dry_run: bool = False) -> list[dict[str, Any]]:
    """Per entity with a retention: how many entries were (or would be) archived, and where."""
    reports = []
    async with db.connection() as connection:
        rules = await connection.fetch(
            "SELECT name, (definition -> 'x-xrm' -> 'audit_retention' ->> 'days')::integer AS days FROM xrm_sys.entity "
            "WHERE removed_at IS NULL AND definition -> 'x-xrm' -> 'audit_retention' IS NOT NULL ORDER BY name"
        )
    for rule in rules:
        async with db.transaction() as tx:
            connection = tx.connection
            cutoff, last_id, count = await connection.fetchrow(
                "SELECT now() - make_interval(days => $2), max(id), count(*) FROM xrm_sys.audit_log "
                "WHERE entity = $1 AND at < now() - make_interval(days => $2)",
                rule["name"], rule["days"],
            )
            report: dict[str, Any] = {"entity": rule["name"], "days": rule["days"], "before": cutoff, "entries": count, "file": None}
            reports.append(report)
            if dry_run or not count:
                continue
            directory.mkdir(parents=True, exist_ok=True)
            path = directory / f"audit-{rule['name']}-{cutoff:%Y%m%dT%H%M%S}-to-{last_id}.jsonl.gz"
            with gzip.open(path, "wt", encoding="utf-8") as out:
                after = 0
                while True:
                    rows = await connection.fetch(
                        "SELECT * FROM xrm_sys.audit_log WHERE entity = $1 AND at < $2 AND id > $3 AND id <= $4 ORDER BY id LIMIT $5",
                        rule["name"], cutoff, after, last_id, BATCH,
                    )
                    for row in rows:
                        out.write(json_dumps(_entry(row).as_dict()) + "\n")
                    if len(rows) < BATCH:
                        break
                    after = rows[-1]["id"]
            with open(path, "rb") as written:
                os.fsync(written.fileno())
            # The file is on disk before the entries go; should the commit fail, the next run archives them again.
            await connection.execute("SET LOCAL xrm.audit_archive = 'on'")
            deleted = await connection.execute(
                "DELETE FROM xrm_sys.audit_log WHERE entity = $1 AND at < $2 AND id <= $3", rule["name"], cutoff, last_id
            )
            await connection.execute("SET LOCAL xrm.audit_archive = 'off'")
            report.update(entries=int(deleted.split()[-1]), file=str(path))
            await connection.execute(
                "INSERT INTO xrm_sys.audit_archive_file (path, entity, entries) VALUES ($1, $2, $3) "
                "ON CONFLICT (path) DO UPDATE SET entries = EXCLUDED.entries", str(path.resolve()), rule["name"], report["entries"],
            )
            await AuditLog.write(connection, principal, "audit.archived", entity=rule["name"], details={
                "entries": report["entries"], "before": cutoff, "file": path.name,
            })
    return reports
