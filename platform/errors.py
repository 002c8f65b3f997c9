"""Errors users see. Each names where the problem is (a JSON pointer) and why."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DefinitionInvalid",
    "NotFound",
    "PermissionDenied",
    "Problem",
    "Refusal",
    "SchemaChangeRefused",
    "ValidationFailed",
    "Veto",
    "VersionConflict",
    "XrmError",
    "pointer",
]


def pointer(*parts: object) -> str:
    """A JSON pointer (RFC 6901) from path parts."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


@dataclass(frozen=True)
class Problem:
    pointer: str
    """Where: a JSON pointer into the submitted document ("" is the whole)."""
    message: str
    """Why, in a sentence a user can act on."""

    def as_dict(self) -> dict[str, str]:
        return {"pointer": self.pointer, "message": self.message}

    def __str__(self) -> str:
        return f"{self.pointer or '/'}: {self.message}"


class XrmError(Exception):
    """Base of errors that are the caller's to fix (never a server fault)."""

    title = "Error"

    def __init__(self, message: str, problems: list[Problem] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.problems: list[Problem] = problems or []

    def __str__(self) -> str:
        if not self.problems:
            return self.message
        return self.message + "\n" + "\n".join(f"  {p}" for p in self.problems)


class DefinitionInvalid(XrmError):
    """An entity definition breaks the meta-schema or the x-xrm rules."""

    title = "Invalid entity definition"

    def __init__(self, problems: list[Problem], source: str | None = None) -> None:
        where = f" in {source}" if source else ""
        super().__init__(f"Invalid entity definition{where}", problems)
        self.source = source


class ValidationFailed(XrmError):
    """A record (or part of a batch) does not satisfy its entity's schema."""

    title = "Invalid record"

    def __init__(self, entity: str, problems: list[Problem], row: int | None = None) -> None:
        at = f" (row {row})" if row is not None else ""
        super().__init__(f"Invalid {entity} record{at}", problems)
        self.entity = entity
        self.row = row


class Veto(ValidationFailed):
    """A plugin refuses a write (raised in an `xrm_before_write` hook): HTTP 422, nothing is written.

    `message` is shown to the user as is; `pointer` says which part of the
    record it is about ("" for the whole record, "/email" for a field).
    RecordService fills in the entity and, in a batch, the record's index.
    """

    title = "Refused by a plugin"

    def __init__(self, message: str, pointer: str = "", *, entity: str = "", row: int | None = None) -> None:
        super().__init__(entity, [Problem(pointer, message)], row=row)
        at = f" (row {row})" if row is not None else ""
        self.message = f"{entity} record{at} refused: {message}" if entity else f"Refused: {message}"
        self.reason = message

    def for_entity(self, entity: str, *, prefix: str = "", row: int | None = None) -> Veto:
        """The same refusal, naming the entity (and the record's index in a batch)."""
        veto = Veto(self.reason, prefix + self.problems[0].pointer if self.problems else prefix, entity=entity, row=row)
        veto.problems = [Problem(prefix + p.pointer, p.message) for p in self.problems]
        return veto


class NotFound(XrmError):
    title = "Not found"


class PermissionDenied(XrmError):
    """The principal may not do this action at all (HTTP 403)."""

    title = "Forbidden"


class VersionConflict(XrmError):
    """Optimistic concurrency: the record changed since the caller read it."""

    title = "Version conflict"

    def __init__(self, entity: str, record_id: Any, expected: int, current: int) -> None:
        super().__init__(
            f"{entity} {record_id} was changed by someone else: you edited version "
            f"{expected}, the current version is {current}"
        )
        self.expected = expected
        self.current = current


@dataclass
class Refusal:
    """Why one step of a schema change cannot run, with the rows in the way."""

    entity: str
    field: str | None
    reason: str
    record_ids: list[Any] = field(default_factory=list)
    total: int = 0


class SchemaChangeRefused(XrmError):
    """A planned schema change would fail or lose data; nothing was changed."""

    title = "Schema change refused"

    def __init__(self, refusals: list[Refusal]) -> None:
        lines = []
        for r in refusals:
            where = f"{r.entity}.{r.field}" if r.field else r.entity
            line = f"{where}: {r.reason}"
            if r.record_ids:
                shown = ", ".join(str(i) for i in r.record_ids)
                more = f" (showing {len(r.record_ids)} of {r.total})" if r.total > len(r.record_ids) else ""
                line += f"; records: {shown}{more}"
            lines.append(line)
        super().__init__("Schema change refused, nothing was changed:\n  " + "\n  ".join(lines))
        self.refusals = refusals

    def __str__(self) -> str:
        return self.message
