"""Who is asking: every service call carries a principal."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

__all__ = ["SYSTEM_PRINCIPAL", "Principal"]


@dataclass(frozen=True)
class Principal:
    id: uuid.UUID
    name: str
    roles: frozenset[str] = field(default_factory=frozenset)
    teams: frozenset[uuid.UUID] = field(default_factory=frozenset)
    """Teams the user is a direct member of."""
    team_owners: frozenset[uuid.UUID] = field(default_factory=frozenset)
    """Owner ids of scope "team": the user's teams and their members (xrm.security resolves them)."""
    tree_owners: frozenset[uuid.UUID] = field(default_factory=frozenset)
    """Owner ids of scope "team_tree": the user's teams, every team below them, and their members."""
    read_only: bool = False
    """Acting through a read-only API token: only reads (and exports) are allowed, whatever the roles say."""
    token_id: uuid.UUID | None = None
    """The API token the request came with (xrm_sys.api_token.id); None when no token is involved."""
    via: str | None = None
    """How the principal came: "token" (an API token), "session" (a login's session cookie); None for
    in-process callers (the CLI, workers, tests), which the audit trail tells apart by the system principal."""

    @property
    def is_system(self) -> bool:
        return self.id == SYSTEM_PRINCIPAL.id


SYSTEM_PRINCIPAL = Principal(uuid.UUID(int=0), "system", frozenset({"admin"}))
"""The platform itself (CLI schema commands, demo loader, start-up)."""
