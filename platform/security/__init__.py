"""The permission model: roles with scoped grants, teams, ownership, sharing (docs/security.md)."""

from .policy import ACTIONS, SCOPES, SECURITY_CHANNEL, RolePolicy

__all__ = ["ACTIONS", "SCOPES", "SECURITY_CHANNEL", "RolePolicy"]
