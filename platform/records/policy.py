"""Authorisation hook points of the one door.

RecordService asks a Policy two things: may this principal perform this action
on this entity at all (`authorize`), and which rows may it touch (`row_filter`,
an SQL predicate placed inside every query so lists, counts and pages only
ever see permitted rows). The role/team/sharing model that fills these in is
xrm.security.RolePolicy (roles, teams, shares; docs/security.md); `OpenPolicy`
permits everything (tests, single-user setups), and every call site passes
through these two functions.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from .principal import Principal

__all__ = ["Action", "ExportPolicy", "OpenPolicy", "Policy", "RowPartition", "field_access"]

Action = Literal["create", "read", "update", "delete", "export", "assign", "share"]


class Policy(Protocol):
    def authorize(self, principal: Principal, entity: str, action: Action) -> None:
        """Raise PermissionDenied if the principal may not do `action` on `entity`."""

    def row_filter(self, principal: Principal, entity: str, action: Action, params: list[object]) -> str:
        """An SQL predicate over the entity table; may append bind parameters to `params`."""

    # Optional (field-level security, docs/security.md): a policy without these
    # methods lets everyone read and update every field (see `field_access`).
    #
    #   readable_fields(principal, entity, sensitive) -> the sensitive fields the principal may read
    #   writable_fields(principal, entity, sensitive) -> the sensitive fields the principal may update
    #
    # Optional (faster pages for users who see few owners' records): without it, lists use row_filter.
    #
    #   row_partition(principal, entity, action, params) -> RowPartition | None, the same rows as row_filter


@dataclass(frozen=True)
class RowPartition:
    """A row filter as two disjoint parts: rows owned by one of `owners`, and the rest it grants (`others`).

    The predicate is `owner_id = ANY($owners_param) OR (others)`. Split this
    way, a page in (created_at, id) order can walk the (owner_id, created_at,
    id) index once per owner and merge the walks (RecordService.list), reading
    about one page of rows per owner instead of walking the whole table's
    created_at index until enough permitted rows turn up, which for a user who
    sees 1% of the records reads ~100 rows per row shown.
    """

    owners: list[uuid.UUID]
    owners_param: int
    """The bind parameter ($n) holding `owners` as uuid[]."""
    others: str | None
    """SQL for the rows granted otherwise (shares), with its bind parameters already appended; None if none."""

    @property
    def predicate(self) -> str:
        owned = f"(owner_id = ANY(${self.owners_param}::uuid[]))"
        return owned if self.others is None else f"{owned} OR ({self.others})"

    @property
    def others_not_owned(self) -> str | None:
        """`others` without the owned rows (so the parts never return a row twice)."""
        if self.others is None:
            return None
        return f"({self.others}) AND (owner_id IS NULL OR owner_id <> ALL(${self.owners_param}::uuid[]))"


def field_access(policy: Any, principal: Principal, entity: str, sensitive: Iterable[str]) -> tuple[frozenset[str], frozenset[str]]:
    """(readable, writable) among the entity's `sensitive` fields; a policy without field rules allows all.

    The one place RecordService asks; update implies read, so writable <= readable.
    """
    names = frozenset(sensitive)
    if not names:
        return names, names
    readable = getattr(policy, "readable_fields", None)
    writable = getattr(policy, "writable_fields", None)
    can_read = names if readable is None else frozenset(readable(principal, entity, names)) & names
    can_write = names if writable is None else frozenset(writable(principal, entity, names)) & can_read
    return can_read, can_write


class OpenPolicy:
    """Everything is permitted (single-user and pre-permission-model setups)."""

    def authorize(self, principal: Principal, entity: str, action: Action) -> None:
        return None

    def row_filter(self, principal: Principal, entity: str, action: Action, params: list[object]) -> str:
        return "TRUE"

    def readable_fields(self, principal: Principal, entity: str, sensitive: frozenset[str]) -> frozenset[str]:
        return sensitive

    def writable_fields(self, principal: Principal, entity: str, sensitive: frozenset[str]) -> frozenset[str]:
        return sensitive


class ExportPolicy:
    """Wraps a policy so that reads are also held to the export scope (the exporter reads with it).

    An export lists the records the user may both read and export.
    """

    def __init__(self, policy: Policy | None) -> None:
        self.policy: Policy = policy or OpenPolicy()

    def authorize(self, principal: Principal, entity: str, action: Action) -> None:
        self.policy.authorize(principal, entity, action)

    def readable_fields(self, principal: Principal, entity: str, sensitive: frozenset[str]) -> frozenset[str]:
        return field_access(self.policy, principal, entity, sensitive)[0]

    def writable_fields(self, principal: Principal, entity: str, sensitive: frozenset[str]) -> frozenset[str]:
        return field_access(self.policy, principal, entity, sensitive)[1]

    def row_filter(self, principal: Principal, entity: str, action: Action, params: list[object]) -> str:
        predicate = self.policy.row_filter(principal, entity, action, params)
        if action != "read":
            return predicate
        export = self.policy.row_filter(principal, entity, "export", params)
        if export == "TRUE":
            return predicate
        if predicate == "TRUE":
            return export
        return f"({predicate}) AND ({export})"
