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

from typing import Literal, Protocol

from .principal import Principal

__all__ = ["Action", "ExportPolicy", "OpenPolicy", "Policy"]

Action = Literal["create", "read", "update", "delete", "export", "assign", "share"]


class Policy(Protocol):
    def authorize(self, principal: Principal, entity: str, action: Action) -> None:
        """Raise PermissionDenied if the principal may not do `action` on `entity`."""

    def row_filter(self, principal: Principal, entity: str, action: Action, params: list[object]) -> str:
        """An SQL predicate over the entity table; may append bind parameters to `params`."""


class OpenPolicy:
    """Everything is permitted (single-user and pre-permission-model setups)."""

    def authorize(self, principal: Principal, entity: str, action: Action) -> None:
        return None

    def row_filter(self, principal: Principal, entity: str, action: Action, params: list[object]) -> str:
        return "TRUE"


class ExportPolicy:
    """Wraps a policy so that reads are also held to the export scope (the exporter reads with it).

    An export lists the records the user may both read and export.
    """

    def __init__(self, policy: Policy | None) -> None:
        self.policy: Policy = policy or OpenPolicy()

    def authorize(self, principal: Principal, entity: str, action: Action) -> None:
        self.policy.authorize(principal, entity, action)

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
