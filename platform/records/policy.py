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

from collections.abc import Iterable
from typing import Any, Literal, Protocol

from .principal import Principal

__all__ = ["Action", "ExportPolicy", "OpenPolicy", "Policy", "field_access"]

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
