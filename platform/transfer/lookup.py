"""Finding records by field values through RecordService (the one door).

`find_by_values` asks for many values in one call
(`where=[Condition(field, "in", values)]`), and one by one only for values
the field cannot hold (which no record has). `ReferenceResolver` turns the
text of a reference cell (a display value or a record id) into a record id,
in bulk and cached.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import NotFound, ValidationFailed
from ..records.query import Condition
from ..records.service import RecordService

__all__ = ["ReferenceResolver", "Resolution", "find_by_values", "squash"]

IN_BATCH = 500
"""Values per `in` condition."""

FALLBACK_SCAN_LIMIT = 50_000
"""Targets up to this many records are read once for the case- and
space-insensitive fallback; larger ones use full-text search candidates."""


async def find_by_values(service: RecordService, field: str, values: Iterable[Any]) -> dict[Any, list[dict[str, Any]]]:
    """Live records whose `field` ("id" or a one-column field) equals one of `values`, by value.

    Only fields the service's principal may read match anything (a hidden
    sensitive field finds no record, whatever its values).
    """
    key = _id_key if field == "id" else _key
    wanted = list(dict.fromkeys(values))
    found: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    if not wanted:
        return found
    if field in service.hidden_fields:
        # Never match on a sensitive field the principal may not read: which values
        # exist would leak through found / not found. (The service refuses the
        # condition too; this keeps the look-up's own promise and sends no query.)
        return {value: [] for value in wanted}
    seen: set[Any] = set()

    def add(record: dict[str, Any]) -> None:
        if record["id"] not in seen:  # a record once, even if pages were to overlap
            seen.add(record["id"])
            found[key(record[field])].append(record)

    remaining: list[Any] = []
    for start in range(0, len(wanted), IN_BATCH):
        batch = wanted[start : start + IN_BATCH]
        try:
            async for record in _pages(service, where=[Condition(field, "in", batch)]):
                add(record)
        except ValidationFailed:
            remaining.extend(batch)  # a value the field cannot hold: ask one by one
    for value in remaining:
        try:
            async for record in _pages(service, where=[Condition(field, "eq", value)]):
                add(record)
        except (ValidationFailed, NotFound):
            continue  # not a value this field can hold, so no record has it
    return {value: found.get(key(value), []) for value in wanted}


def _key(value: Any) -> Any:
    return str(value) if isinstance(value, uuid.UUID) else value


def _id_key(value: Any) -> str:
    try:
        return str(value if isinstance(value, uuid.UUID) else uuid.UUID(str(value)))
    except ValueError:
        return str(value)


async def _pages(service: RecordService, **arguments: Any) -> Any:
    after = None
    while True:
        page = await service.list(limit=1000, after=after, **arguments)
        for record in page.records:
            yield record
        if not page.next_cursor:
            return
        after = page.next_cursor


def squash(text: str) -> str:
    """Case- and space-insensitive form: "GTX Pro" and "GTXPro" are equal."""
    return "".join(text.split()).casefold()


def _fold(text: str) -> str:
    return " ".join(text.split()).casefold()


@dataclass(frozen=True)
class Resolution:
    id: str | None = None
    error: str | None = None
    matched: str | None = None
    """The display value found when it differs from the text (case or spaces)."""
    pending: bool = False
    """Not found yet, but the target is the entity being imported: a later row may create it."""


class ReferenceResolver:
    """Text of a reference cell -> record id of the target entity.

    An id (uuid) is looked up as an id. Other text is the target's display
    value: an exact match first, then ignoring case, then ignoring case and
    spaces. More than one match at the first tier that has any is an error
    (ambiguous); so is none at all.
    """

    def __init__(self, target: RecordService, *, self_reference: bool = False) -> None:
        self.target = target
        self.entity = target.name
        display = target.entity.definition.display_field
        # Only a field the importing principal may read is matched on (a definition
        # never makes a sensitive field the display field; this holds if one did).
        self.display = display if display not in target.hidden_fields else None
        self.self_reference = self_reference
        self._cache: dict[str, Resolution] = {}
        self._by_squash: dict[str, set[str]] = defaultdict(set)
        self._index: dict[str, dict[str, set[str]]] | None = None
        self._small: bool | None = None

    def forget(self) -> None:
        """Drop what is cached (the target entity changed)."""
        self._cache.clear()
        self._by_squash.clear()
        self._index = None

    def learn(self, records: Iterable[dict[str, Any]], *, changed: bool = False) -> None:
        """New records of the target (created by this import): answers about
        their display values may change. `changed`: existing records were
        updated (display values may have moved), so forget everything."""
        if changed:
            self.forget()
            return
        for record in records:
            display = record.get(self.display) if self.display else None
            if not isinstance(display, str):
                continue
            key = squash(display)
            if self._index is not None:
                self._index[key][display].add(str(record["id"]))
            for text in self._by_squash.pop(key, ()):
                self._cache.pop(text, None)

    async def resolve(self, texts: Iterable[str]) -> dict[str, Resolution]:
        wanted = set(texts)
        missing = [t for t in wanted if t not in self._cache]
        ids = [t for t in missing if _is_uuid(t)]
        names = [t for t in missing if not _is_uuid(t)]
        results: dict[str, Resolution] = {}
        if ids:
            found = await find_by_values(self.target, "id", ids)
            for text in ids:
                if found[text]:
                    results[text] = Resolution(id=str(found[text][0]["id"]))
                else:
                    results[text] = self._not_found(f"no {self.entity} record has the id {text}")
        if names and self.display is None:
            for text in names:
                results[text] = Resolution(error=f"{self.entity} records have no display field: give a record id, not {text!r}")
            names = []
        if names:
            found = await find_by_values(self.target, self.display, names)  # type: ignore[arg-type]
            unmatched = []
            for text in names:
                records = found[text]
                if len(records) == 1:
                    results[text] = Resolution(id=str(records[0]["id"]))
                elif records:
                    results[text] = self._ambiguous(text, len(records), "")
                else:
                    unmatched.append(text)
            for text in unmatched:
                results[text] = await self._approximate(text)
        for text, resolution in results.items():
            if not resolution.pending:
                self._cache[text] = resolution
                self._by_squash[squash(text)].add(text)
        return {t: self._cache.get(t) or results[t] for t in wanted}

    def _not_found(self, message: str) -> Resolution:
        return Resolution(error=message, pending=self.self_reference)

    def _ambiguous(self, text: str, count: int, how: str) -> Resolution:
        return Resolution(error=f"{text!r} matches {count} {self.entity} records{how}; give the record id instead")

    async def _approximate(self, text: str) -> Resolution:
        candidates = await self._candidates(text)
        for how, form in ((" (ignoring case)", _fold), (" (ignoring case and spaces)", squash)):
            matches = {(record_id, display) for record_id, display in candidates if form(display) == form(text)}
            ids = {record_id for record_id, _ in matches}
            if len(ids) == 1:
                record_id, display = next(iter(matches))
                return Resolution(id=record_id, matched=display)
            if len(ids) > 1:
                return self._ambiguous(text, len(ids), how)
        return self._not_found(f"no {self.entity} record is called {text!r}")

    async def _candidates(self, text: str) -> list[tuple[str, str]]:
        """(id, display value) pairs that may match `text` approximately."""
        if self._small is None:
            self._small = await self.target.count() <= FALLBACK_SCAN_LIMIT
        if self._small:
            index = await self._load_index()
            return [(record_id, display) for display, ids in index.get(squash(text), {}).items() for record_id in ids]
        page = await self.target.list(search=text, limit=100)
        return [(str(r["id"]), r[self.display]) for r in page.records if isinstance(r.get(self.display), str)]  # type: ignore[index]

    async def _load_index(self) -> dict[str, dict[str, set[str]]]:
        """squashed display value -> display value -> ids, over every live record (read once)."""
        if self._index is None:
            index: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
            async for record in _pages(self.target):
                display = record.get(self.display)  # type: ignore[arg-type]
                if isinstance(display, str):
                    index[squash(display)][display].add(str(record["id"]))
            self._index = index
        return self._index


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True
