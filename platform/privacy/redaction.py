"""Remove erased values from the places that keep copies: audit trail, outbox, field archive.

The audit trail is append-only; its trigger (db/bootstrap.sql) lets a
transaction that says `SET LOCAL xrm.audit_redaction = 'on'` replace values by
"[redacted]" and nothing else, so redaction can only take information away.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg

__all__ = ["REDACTED", "Redaction", "like_patterns", "needles_of", "redact", "redact_text"]

REDACTED = "[redacted]"
MIN_NEEDLE = 4
"""Shorter values are not searched for elsewhere (a two-letter name would redact half the trail)."""


@dataclass
class Redaction:
    """What to take out: per record the keys (field and column names; None = every value), and values anywhere."""

    keys_by_record: dict[uuid.UUID, frozenset[str] | None]
    needles: frozenset[str]

    def apply(self, value: Any, record_id: uuid.UUID | None) -> Any:
        if record_id in self.keys_by_record:
            keys = self.keys_by_record[record_id]
            value = _redact_keys(value, keys)
        return _redact_strings(value, self.needles)


def needles_of(values: Iterable[Any]) -> frozenset[str]:
    """The text forms of scalar values long enough to search for, case-folded."""
    found = set()
    for value in values:
        for leaf in _leaves(value):
            text = str(leaf).strip().casefold()
            if len(text) >= MIN_NEEDLE and text != REDACTED:
                found.add(text)
    return frozenset(found)


async def redact(connection: asyncpg.Connection, redaction: Redaction) -> dict[str, int]:
    """Redact audit entries, outbox events and archived values; counts of rows changed."""
    record_ids = list(redaction.keys_by_record)
    patterns = [_like_pattern(n) for n in redaction.needles]  # none: LIKE ANY (empty) is false
    await connection.execute("SET LOCAL xrm.audit_redaction = 'on'")
    counts = {}
    rows = await connection.fetch(
        "SELECT id, record_id, changes, details FROM xrm_sys.audit_log "
        "WHERE record_id = ANY($1::uuid[]) OR lower(coalesce(changes::text, '') || ' ' || coalesce(details::text, '')) LIKE ANY($2::text[])",
        record_ids, patterns,
    )
    updates = []
    for row in rows:
        changes = redaction.apply(row["changes"], row["record_id"])
        details = _redact_strings(row["details"], redaction.needles)
        if changes != row["changes"] or details != row["details"]:
            updates.append((row["id"], changes, details))
    await connection.executemany("UPDATE xrm_sys.audit_log SET changes = $2, details = $3 WHERE id = $1", updates)
    counts["audit_entries"] = len(updates)

    rows = await connection.fetch(
        "SELECT id, record_id, payload FROM xrm_sys.outbox WHERE record_id = ANY($1::uuid[]) OR lower(payload::text) LIKE ANY($2::text[])",
        record_ids, patterns,
    )
    updates = [(row["id"], payload) for row in rows if (payload := redaction.apply(row["payload"], row["record_id"])) != row["payload"]]
    await connection.executemany("UPDATE xrm_sys.outbox SET payload = $2 WHERE id = $1", updates)
    counts["outbox_events"] = len(updates)

    # Values a schema change archived (removed or converted fields) of these records.
    rows = await connection.fetch(
        "SELECT v.batch_id, v.record_id, v.value, (b.field_definition -> 'schema' -> 'x-xrm' ->> 'personal') = 'true' AS personal "
        "FROM xrm_sys.archive_value v JOIN xrm_sys.archive_batch b ON b.id = v.batch_id WHERE v.record_id = ANY($1::uuid[])",
        record_ids,
    )
    updates = []
    for row in rows:
        value = None if row["personal"] or redaction.keys_by_record[row["record_id"]] is None else _redact_strings(row["value"], redaction.needles)
        if value != row["value"]:
            updates.append((row["batch_id"], row["record_id"], value))
    await connection.executemany("UPDATE xrm_sys.archive_value SET value = $3 WHERE batch_id = $1 AND record_id = $2", updates)
    counts["archived_values"] = len(updates)

    # Plugins' own tables (rendered e-mails, jobs, link attributes, ...).
    from ..plugins import await_me_maybe, get_plugin_manager

    purged = all(keys is None for keys in redaction.keys_by_record.values())
    plugin_rows = 0
    for _, result in get_plugin_manager().each("xrm_redact", connection=connection, record_ids=record_ids,
                                               needles=sorted(redaction.needles), purged=purged):
        plugin_rows += int(await await_me_maybe(result) or 0)
    counts["plugin_rows"] = plugin_rows
    return counts


def redact_text(value: Any, needles: Collection[str]) -> Any:
    """A JSON value or text with every string containing one of `needles` replaced by REDACTED (for plugins)."""
    return _redact_strings(value, needles)


def like_patterns(needles: Collection[str]) -> list[str]:
    """LIKE patterns that find the needles in a jsonb or text column's (lower-cased) text (for plugins)."""
    return [_like_pattern(n) for n in needles]


def _like_pattern(needle: str) -> str:
    # Match the needle as it appears inside jsonb's text form (JSON-escaped).
    escaped = json.dumps(needle, ensure_ascii=False)[1:-1]
    return "%" + escaped.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _leaves(value: Any) -> Iterable[Any]:
    if isinstance(value, Mapping):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _leaves(item)
    elif value is not None and not isinstance(value, bool):
        yield value


def _redact_keys(value: Any, keys: Collection[str] | None) -> Any:
    """Every value under one of `keys` (None: every scalar) becomes REDACTED, at any depth."""
    if isinstance(value, Mapping):
        # Under a named key every value goes, but the shape stays ({"old": ..., "new": ...}).
        return {k: _redact_keys(v, None if keys is None or k in keys else keys) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_keys(v, keys) for v in value]
    if keys is None and value is not None:
        return REDACTED
    return value


def _redact_strings(value: Any, needles: Collection[str]) -> Any:
    if not needles or value is None:
        return value
    if isinstance(value, Mapping):
        return {k: _redact_strings(v, needles) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_strings(v, needles) for v in value]
    if isinstance(value, str) and value != REDACTED:
        folded = value.casefold()
        if any(n in folded for n in needles):
            return REDACTED
    return value
