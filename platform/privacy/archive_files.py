"""Erasure reaches the audit trail's archive files too (xrm audit archive wrote them).

Entries archived by audit retention leave the database for gzip-compressed JSON
Lines files, but they are still audit entries of the person: an erasure reads
every archive file the database knows of (xrm_sys.audit_archive_file, written
when the file is made), takes the person's former values from their records'
entries as the trail in the database does, and rewrites each file that holds
something to redact (a temporary file, fsynced, then renamed over the old one,
so a crash leaves the old or the new file, never half of one). A dry run only
counts. A file that was moved or deleted since is skipped and reported.
"""

from __future__ import annotations

import gzip
import json
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from ..db.database import json_dumps
from .redaction import Redaction, redact_text

__all__ = ["ArchiveFile", "archive_files", "former_values", "redact_files"]


@dataclass
class ArchiveFile:
    path: Path
    entries: list[dict[str, Any]]


async def archive_files(connection: asyncpg.Connection) -> tuple[list[ArchiveFile], list[str]]:
    """The archive files still on disk (with their entries), and the paths of those that are gone."""
    found, missing = [], []
    for row in await connection.fetch("SELECT path FROM xrm_sys.audit_archive_file ORDER BY path"):
        path = Path(row["path"])
        if not path.is_file():
            missing.append(row["path"])
            continue
        with gzip.open(path, "rt", encoding="utf-8") as lines:
            found.append(ArchiveFile(path, [json.loads(line) for line in lines if line.strip()]))
    return found, missing


def former_values(files: list[ArchiveFile], identifying: Mapping[uuid.UUID, set[str]]) -> list[Any]:
    """Old and new values of the identifying fields in the archived entries of these records."""
    values: list[Any] = []
    for archive in files:
        for entry in archive.entries:
            fields = identifying.get(_uuid(entry.get("record_id")))
            if fields and isinstance(entry.get("changes"), Mapping):
                values.extend(v for k, v in entry["changes"].items() if k in fields)
    return values


def redact_files(files: list[ArchiveFile], redaction: Redaction, *, dry_run: bool) -> int:
    """Redact the entries of every file as the trail in the database is; how many entries changed."""
    changed = 0
    for archive in files:
        entries = []
        for entry in archive.entries:
            redacted = dict(entry, changes=redaction.apply(entry.get("changes"), _uuid(entry.get("record_id"))),
                            details=redact_text(entry.get("details"), redaction.needles))
            changed += redacted != entry
            entries.append(redacted)
        if dry_run or entries == archive.entries:
            continue
        temporary = archive.path.with_name(archive.path.name + ".redacting")
        with gzip.open(temporary, "wt", encoding="utf-8") as out:
            for entry in entries:
                out.write(json_dumps(entry) + "\n")
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        os.replace(temporary, archive.path)
    return changed


def _uuid(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value)) if value is not None else None
    except ValueError:
        return None
