"""Importing links and connections from CSV or JSON Lines: the import targets `_connections` and `<entity>.<link>`.

`xrm import _connections FILE`, `POST /api/v1/_connections/_import` and the
import wizard run these through xrm.transfer.import_file, which hands every
name that is not an entity to the plugins' xrm_import_targets.

A connections file has the columns role, from_entity, from, to_entity, to,
valid_from, valid_until; a links file (`project.members`) the columns from
(the record of the entity), to (the linked record) and one per attribute.
Records are named by id or by their display value (as reference cells are,
docs/import-export.md), entities and roles by name or label (en/de), dates
German or ISO. Every row is written through Relationships (permissions,
validation, audit, events), the whole file in one transaction: one bad row
and nothing is written; a dry run always rolls back.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from xrm.errors import NotFound, PermissionDenied, Problem, ValidationFailed, XrmError
from xrm.plugins import ImportTarget
from xrm.records.policy import OpenPolicy
from xrm.records.service import RecordService
from xrm.transfer.coerce import CoercionError, match_option, parse_boolean, parse_date, parse_datetime, parse_integer, parse_number
from xrm.transfer.importer import ImportReport, RowError
from xrm.transfer.lookup import ReferenceResolver
from xrm.transfer.sources import _EXTRA, _INVALID, Source

from .model import LinkDefinition, link_definitions

__all__ = ["CONNECTION_COLUMNS", "import_targets"]

CONNECTIONS = "_connections"
ROW_LIMIT = 100_000
"""Rows one import may hold (it is one transaction)."""

CONNECTION_COLUMNS: dict[str, dict[str, str]] = {
    "role": {"en": "Role", "de": "Rolle"},
    "from_entity": {"en": "From entity", "de": "Von Entität"},
    "from": {"en": "From record", "de": "Von Datensatz"},
    "to_entity": {"en": "To entity", "de": "Zu Entität"},
    "to": {"en": "To record", "de": "Zu Datensatz"},
    "valid_from": {"en": "Valid from", "de": "Gültig ab"},
    "valid_until": {"en": "Valid until", "de": "Gültig bis"},
}
_ALIASES = {"source": "from", "target": "to", "source_entity": "from_entity", "target_entity": "to_entity",
            "von": "from", "zu": "to", "nach": "to"}


def _norm(text: str) -> str:
    return re.sub(r"[\s_\-]+", "", str(text)).casefold()


def _link_columns(link: LinkDefinition, inverse: bool) -> dict[str, dict[str, str]]:
    here, there = (link.target, link.source) if inverse else (link.source, link.target)
    columns = {"from": {"en": f"From record ({here})", "de": f"Von Datensatz ({here})"},
               "to": {"en": f"To record ({there})", "de": f"Zu Datensatz ({there})"}}
    for name in link.attributes:
        columns[name] = {"en": link.attribute_label(name, "en"), "de": link.attribute_label(name, "de")}
    return columns


def import_targets(registry: Any) -> list[ImportTarget]:
    targets = [ImportTarget(CONNECTIONS, {"en": "Connections", "de": "Verbindungen"}, CONNECTION_COLUMNS,
                            lambda **kw: _Import(CONNECTIONS, None, False, **kw).run())]
    seen: set[tuple[str, str]] = set()
    for inverse in (False, True):  # own link names win over inverse names (as resolve_link decides)
        for link in link_definitions(registry):
            entity = link.target if inverse else link.source
            name = link.inverse_name if inverse else link.name
            if (entity, name) in seen or entity not in registry:
                continue
            seen.add((entity, name))
            label = {lang: f"{link.label(lang, inverse=inverse)}" for lang in ("en", "de")}
            targets.append(ImportTarget(f"{entity}.{name}", label, _link_columns(link, inverse),
                                        (lambda entity, name: lambda **kw: _Import(f"{entity}.{name}", entity, name, **kw).run())(entity, name),
                                        entity=entity))
    return targets


class _Rollback(Exception):
    """Raised to roll the import back (errors, or a dry run)."""


class _Import:
    def __init__(self, target: str, entity: str | None, link: str | bool, *, db: Any, registry: Any, source: Source,
                 principal: Any, policy: Any, options: Any) -> None:
        from .store import Door, Relationships

        self.db, self.registry, self.source, self.principal, self.options = db, registry, source, principal, options
        self.policy = policy or OpenPolicy()
        self.rel = Relationships(Door(db, registry, self.policy), principal)
        self.entity = entity
        self.link_name = link if isinstance(link, str) else None
        self.definition: LinkDefinition | None = None
        if self.link_name:
            self.definition, self.inverse = self.rel.link(entity or "", self.link_name)
            self.columns_known = _link_columns(self.definition, self.inverse)
        else:
            self.columns_known = CONNECTION_COLUMNS
        self.report = ImportReport(entity=target, dry_run=bool(options.dry_run))
        if options.upsert_key:
            raise XrmError("Links and connections have no upsert key: a row that exists already is reported as an error")
        self.column_of: dict[str, str] = {}

    # -- columns ---------------------------------------------------------------------------
    def _names(self) -> dict[str, str]:
        """Normalised column name -> canonical column: the name, its English and German label, aliases."""
        names: dict[str, str] = {}
        for name, labels in self.columns_known.items():
            for text in (name, *labels.values()):
                names.setdefault(_norm(text), name)
        for alias, name in _ALIASES.items():
            if name in self.columns_known:
                names.setdefault(_norm(alias), name)
        return names

    def _map(self, columns: list[str]) -> dict[str, str]:
        explicit = dict(self.options.mapping or {})
        for column, name in explicit.items():
            if name and name not in self.columns_known:
                raise XrmError(f"Invalid column mapping: {name!r} is not a column of {self.report.entity} "
                               f"({', '.join(self.columns_known)})", [Problem(f"/mapping/{column}", f"{name!r} is not one of {', '.join(self.columns_known)}")])
        missing = [c for c in explicit if c not in columns]
        if missing and columns:
            raise XrmError(f"The file has no column {', '.join(repr(c) for c in missing)} (its columns: {', '.join(columns)})")
        names = self._names()
        mapping: dict[str, str] = {}
        taken: dict[str, str] = {}
        for column in columns:
            if column in explicit:
                target = explicit[column] or None
                if target is None:
                    self.report.notes.append(f"column {column!r} is ignored (mapping)")
                    continue
            else:
                target = names.get(_norm(column))
            if target is None:
                self.report.unmapped_columns.append(column)
                self.report.notes.append(f"column {column!r} matches no column of {self.report.entity} ({', '.join(self.columns_known)})")
            elif target in taken:
                self.report.unmapped_columns.append(column)
                self.report.notes.append(f"column {column!r}: {target} is already filled from column {taken[target]!r}")
            else:
                taken[target] = column
                mapping[column] = target
        return mapping

    # -- running -----------------------------------------------------------------------------
    async def run(self) -> ImportReport:
        import time

        started = time.monotonic()
        header = [self.source.columns[k] for k in sorted(self.source.columns)] if self.source.columns else []
        mapping = self._map(header) if header else {}
        if header:
            required = ("role", "from_entity", "from", "to_entity", "to") if not self.link_name else ("from", "to")
            absent = [name for name in required if name not in mapping.values()]
            if absent:
                raise XrmError(f"The file has no column for {', '.join(absent)} (its columns: {', '.join(header)}); "
                               f"{self.report.entity} needs {', '.join(required)}")
        rows: list[dict[str, Any]] = []
        for number, raw in self.source.rows():
            if _INVALID in raw:
                rows.append({"number": number, "errors": [RowError(number, None, None, raw[_INVALID])], "cells": {}})
                continue
            if all(v is None or (isinstance(v, str) and not v.strip()) for k, v in raw.items() if k is not _EXTRA):
                continue
            row: dict[str, Any] = {"number": number, "errors": [], "cells": {}}
            if _EXTRA in raw:
                row["errors"].append(RowError(number, None, None, f"has {raw[_EXTRA]} cells, the header has {len(header)}"))
            for key, value in raw.items():
                if key is _EXTRA:
                    continue
                column = self.source.columns.get(key, str(key))
                target = mapping.get(column) if header else self._json_target(column)
                if target is None or value is None or (isinstance(value, str) and not value.strip()):
                    continue
                row["cells"][target] = (column, value)
            rows.append(row)
            if len(rows) > ROW_LIMIT:
                raise XrmError(f"At most {ROW_LIMIT} rows per import of links or connections; split the file")
        self.report.rows = len(rows)
        self.report.mapping = mapping
        self.column_of = {target: column for column, target in mapping.items()}
        for row in rows:
            if not row["errors"]:
                self._read(row)
        await self._resolve(rows)
        try:
            async with self.db.transaction() as tx:
                for row in rows:
                    if row["errors"]:
                        continue
                    try:
                        async with tx.connection.transaction():  # a savepoint: one row's refusal leaves the others checkable
                            await self._write(row)
                    except ValidationFailed as error:
                        for problem in error.problems:
                            self._fail(row, problem.pointer, problem.message)
                    except (NotFound, PermissionDenied) as error:
                        self._fail(row, "", error.message)
                    else:
                        self.report.created += 1
                if self.options.dry_run or any(row["errors"] for row in rows):
                    raise _Rollback
        except _Rollback:
            pass
        errors = [error for row in rows for error in row["errors"]]
        if errors:
            # All or nothing: nothing was written; every row counts as skipped.
            self.report.created = 0
            self.report.skipped = len(rows)
            self.report.notes.append(f"nothing was imported: {len({e.row for e in errors})} row(s) have errors; fix them and import the file again")
        self.report.error_count = len(errors)
        self.report.errors = sorted(errors, key=lambda e: e.row)[: self.options.max_errors]
        self.report.seconds = time.monotonic() - started
        return self.report

    def _json_target(self, key: str) -> str | None:
        return self._names().get(_norm(key)) if key not in (self.options.mapping or {}) else (self.options.mapping or {}).get(key)

    # -- one row -------------------------------------------------------------------------------
    def _error(self, row: dict[str, Any], name: str | None, message: str) -> None:
        column = (row["cells"].get(name, (None, None))[0] or self.column_of.get(name) or name) if name else None
        row["errors"].append(RowError(row["number"], column, name, message))

    def _fail(self, row: dict[str, Any], at: str, message: str) -> None:
        """A refusal of Relationships (pointer /role, /other_id, /target, /attributes/x ...) as the row's error at its column."""
        parts = [p for p in at.split("/") if p]
        column = {"other_entity": "to_entity", "other_id": "to", "target": "to", "direction": "role"}.get(parts[0], parts[0]) if parts else None
        if column not in self.columns_known:
            column = None
        if parts and parts[0] == "attributes" and len(parts) > 1:
            column = parts[1]
        self._error(row, column, message)

    def _text(self, row: dict[str, Any], name: str) -> str | None:
        cell = row["cells"].get(name)
        return None if cell is None else str(cell[1]).strip()

    def _entity(self, row: dict[str, Any], name: str) -> str | None:
        text = self._text(row, name)
        if text is None:
            self._error(row, name, "is required")
            return None
        for entity in self.registry:
            labels = {entity.name, entity.definition.label("en"), entity.definition.label("de")}
            if text in labels or _norm(text) in {_norm(label) for label in labels}:
                return entity.name
        self._error(row, name, f"{text!r} is not an entity (name or label, e.g. {', '.join(self.registry.names()[:3])})")
        return None

    def _read(self, row: dict[str, Any]) -> None:
        """Cells -> what Relationships takes; problems become the row's errors."""
        if self.link_name:
            row["ends"] = {"from": self.entity, "to": self.definition.source if self.inverse else self.definition.target}
            attributes: dict[str, Any] = {}
            for name, schema in self.definition.attributes.items():
                cell = row["cells"].get(name)
                if cell is None:
                    continue
                try:
                    attributes[name] = self._attribute(schema, cell[1])
                except CoercionError as error:
                    self._error(row, name, str(error))
            row["attributes"] = attributes
        else:
            role_text = self._text(row, "role")
            ends = {"from": self._entity(row, "from_entity"), "to": self._entity(row, "to_entity")}
            row["role_text"] = role_text
            if role_text is None:
                self._error(row, "role", "is required")
            row["ends"] = ends
            for name in ("valid_from", "valid_until"):
                text = self._text(row, name)
                if text is None:
                    row[name] = None
                    continue
                try:
                    row[name] = parse_date(text, self.options.date_format)
                except CoercionError as error:
                    self._error(row, name, str(error))
        for end in ("from", "to"):
            if self._text(row, end) is None:
                self._error(row, end, "is required")

    def _attribute(self, schema: Mapping[str, Any], value: Any) -> Any:
        if not isinstance(value, str):
            return value  # typed JSON Lines values go to the validator as they are
        kind = schema.get("type")
        if kind == "boolean":
            return parse_boolean(value)
        if kind == "integer":
            return parse_integer(value, self.options.number_format)
        if kind == "number":
            return float(parse_number(value, self.options.number_format))
        text = value.strip()
        if schema.get("format") == "date":
            return parse_date(text, self.options.date_format).isoformat()
        if schema.get("format") == "date-time":
            return parse_datetime(text, self.options.coercion().zone, self.options.date_format).isoformat()
        if schema.get("enum"):
            return match_option(text, [str(o) for o in schema["enum"]])
        return value

    async def _resolve(self, rows: list[dict[str, Any]]) -> None:
        """Record cells (id or display value) -> ids, in bulk per entity, as reference cells are resolved."""
        wanted: dict[str, set[str]] = {}
        for row in rows:
            if row["errors"]:
                continue
            for end in ("from", "to"):
                wanted.setdefault(row["ends"][end], set()).add(self._text(row, end))
        found: dict[str, dict[str, Any]] = {}
        for entity, texts in wanted.items():
            resolver = ReferenceResolver(RecordService(self.db, self.registry, entity, self.principal, self.policy))
            try:
                found[entity] = await resolver.resolve(texts)
            except PermissionDenied as error:
                found[entity] = {text: error.message for text in texts}
        for row in rows:
            if row["errors"]:
                continue
            for end in ("from", "to"):
                result = found[row["ends"][end]][self._text(row, end)]
                if isinstance(result, str):
                    self._error(row, end, result)
                elif result.id is None:
                    self._error(row, end, result.error or "cannot be resolved")
                else:
                    row[f"{end}_id"] = result.id

    async def _write(self, row: dict[str, Any]) -> None:
        if self.link_name:
            await self.rel.create_link(self.entity or "", row["from_id"], self.link_name,
                                       {"target": row["to_id"], "attributes": row["attributes"]})
            return
        role = await self._role(row["role_text"])
        if role is None:
            raise ValidationFailed("connection", [Problem("/role", f"{row['role_text']!r} is not a connection role (name or label)")])
        name, reverse, allowed = role
        ends = row["ends"]
        # The role's entity restrictions, checked here to name the file's column (from_entity or to_entity).
        problems = []
        for end, key in (("from", "source_entities"), ("to", "target_entities")):
            column = end if not reverse else ("to" if end == "from" else "from")
            if allowed[key] and ends[column] not in allowed[key]:
                problems.append(Problem(f"/{column}_entity", f"the role {name!r} {'starts' if end == 'from' else 'ends'} at "
                                                            f"{', '.join(allowed[key])}, not {ends[column]}"))
        if problems:
            raise ValidationFailed("connection", problems)
        await self.rel.connect(ends["from"], row["from_id"], {
            "role": name, "other_entity": ends["to"], "other_id": row["to_id"], "direction": "reverse" if reverse else "forward",
            "valid_from": row["valid_from"], "valid_until": row["valid_until"]})

    async def _role(self, text: str) -> tuple[str, bool, dict[str, Any]] | None:
        """(role name, reverse?) for a role's name, label or reverse label (en/de); a reverse label swaps the direction."""
        if not hasattr(self, "_roles"):
            self._roles = await self.rel.roles()
        for role in self._roles:
            if role["name"] == text:
                return role["name"], False, role
        folded = _norm(text)
        for role in self._roles:
            if folded in {_norm(v) for v in role["label"].values()}:
                return role["name"], False, role
        for role in self._roles:
            if folded in {_norm(v) for v in role["inverse_label"].values()}:
                return role["name"], True, role
        return None
